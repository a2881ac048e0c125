"""RealtimePolicy: what to change for one thread, applied as a context manager that undoes it."""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import TracebackType

from edgert import _reaper
from edgert._owner import Owner
from edgert.errors import (
    EdgeRTError,
    InvalidArgumentError,
    NotSupportedError,
    PermissionDeniedError,
    RealtimeError,
)
from edgert.realtime._gc import hold_gc_frozen, release_gc
from edgert.realtime._memlock import LockHold
from edgert.realtime._pmqos import DmaLatencyHold
from edgert.realtime._prefault import prefault_heap, prefault_stack
from edgert.realtime._remedy import diagnose_affinity, errno_label
from edgert.realtime._report import PolicyReport, SettingOutcome
from edgert.realtime._sched import (
    SchedPolicy,
    get_affinity,
    get_timer_slack,
    set_affinity,
    set_timer_slack,
)
from edgert.realtime._sched_step import apply_sched
from edgert.realtime._undo import (
    NotRestored,
    Undo,
    UndoStack,
    close_stack,
    leaked,
    thread_watch,
)

__all__ = ["ActivePolicy", "PolicyReport", "RealtimePolicy", "SettingOutcome"]

_Refusable = (PermissionDeniedError, RealtimeError, NotSupportedError)


@dataclass(frozen=True, kw_only=True, slots=True)
class RealtimePolicy:
    """Real-time settings for the thread that applies them.

    A ``priority`` alone means SCHED_FIFO at that priority. Every field left at its default
    changes nothing. :meth:`apply` changes the *calling thread* (scheduling, affinity) and the
    process (memory lock, GC, PM QoS), and undoes all of it on exit.

    Attributes:
        policy: Scheduling policy; ``None`` with a priority means FIFO, ``None`` without one
            leaves scheduling alone.
        priority: 1-99 for FIFO/RR. 80 sits above the kernel's IRQ threads (50) and below
            watchdog-style tools (95+); avoid 99 (see docs/realtime.md).
        cpus: Pin the thread to these CPUs (ideally an isolated one).
        lock_memory: ``mlockall(MCL_CURRENT | MCL_FUTURE)`` while active.
        lock_onfault: Add MCL_ONFAULT: lock pages when first touched, not all at once.
        prefault_stack_bytes: Populate this much of the thread's stack up front.
        prefault_heap_bytes: Touch this much C heap and keep it mapped (glibc).
        freeze_gc: ``gc.collect(); gc.freeze(); gc.disable()`` while active.
        cpu_dma_latency_us: Hold /dev/cpu_dma_latency at this value (0: no deep C-states).
        timer_slack_ns: The thread's timer slack (``prctl(PR_SET_TIMERSLACK)``, >= 1). Linux
            lets a SCHED_OTHER thread's sleeps end up to 50 us late by default; RT threads get
            no slack anyway, so this matters for loops that cannot have an RT policy.
        reset_on_fork: Children forked by the RT thread start at SCHED_OTHER
            (SCHED_RESET_ON_FORK). Threads it creates still inherit the policy.
        strict: Raise on the first refused setting (after undoing the others). With
            ``strict=False`` every permitted setting is applied and the refused ones are listed
            in :attr:`ActivePolicy.report`.

    Raises:
        InvalidArgumentError: Inconsistent or out-of-range values.
    """

    policy: SchedPolicy | None = None
    priority: int | None = None
    cpus: Collection[int] | None = None
    lock_memory: bool = False
    lock_onfault: bool = False
    prefault_stack_bytes: int = 0
    prefault_heap_bytes: int = 0
    freeze_gc: bool = False
    cpu_dma_latency_us: int | None = None
    timer_slack_ns: int | None = None
    reset_on_fork: bool = True
    strict: bool = True

    def __post_init__(self) -> None:
        policy: object = self.policy  # callers may pass the string value, e.g. "fifo"
        if policy is not None and not isinstance(policy, SchedPolicy):
            try:
                policy = SchedPolicy(str(policy).lower())
            except ValueError:
                raise InvalidArgumentError(
                    f"unknown scheduling policy {self.policy!r}; choose one of "
                    f"{[p.value for p in SchedPolicy]}") from None
        if policy is None and self.priority is not None:
            policy = SchedPolicy.FIFO
        object.__setattr__(self, "policy", policy)
        prio = self.priority
        if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int)):
            raise InvalidArgumentError(f"priority must be an int, got {prio!r}")
        if policy is not None and policy.is_realtime:
            if prio is None:
                raise InvalidArgumentError(f"policy {policy.value} needs a priority (1-99)",
                                           hint="80 is a good default for a control loop")
            if not 1 <= prio <= 99:
                raise InvalidArgumentError(f"RT priority must be within 1-99, got {prio}")
        elif prio not in (None, 0):
            raise InvalidArgumentError(
                f"policy {policy.value if policy else None} takes no priority, got {prio}",
                hint="only fifo and rr take a 1-99 priority")
        if self.cpus is not None:
            cpus = frozenset(self.cpus)
            if not cpus or any(isinstance(c, bool) or not isinstance(c, int) or c < 0
                               for c in cpus):
                raise InvalidArgumentError(
                    f"cpus must be a non-empty set of CPU numbers, got {self.cpus!r}")
            object.__setattr__(self, "cpus", cpus)
        for name in ("prefault_stack_bytes", "prefault_heap_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(f"{name} must be a non-negative int, got {value!r}")
        if self.lock_onfault and not self.lock_memory:
            raise InvalidArgumentError("lock_onfault needs lock_memory=True")
        slack = self.timer_slack_ns
        if slack is not None and (isinstance(slack, bool) or not isinstance(slack, int)
                                  or slack < 1):
            raise InvalidArgumentError(
                f"timer_slack_ns must be a positive int or None, got {slack!r}",
                hint="1 is the smallest slack (0 would mean 'the default', 50 us)")
        lat = self.cpu_dma_latency_us
        if lat is not None and (isinstance(lat, bool) or not isinstance(lat, int) or lat < 0):
            raise InvalidArgumentError(
                f"cpu_dma_latency_us must be a non-negative int or None, got {lat!r}")

    @classmethod
    def control_loop(
        cls, *, priority: int = 80, cpus: Collection[int] | None = None, strict: bool = True
    ) -> RealtimePolicy:
        """The usual settings for a 100-1000 Hz control loop: FIFO, locked memory, GC frozen.

        Raises:
            InvalidArgumentError: Bad priority or cpus.
        """
        return cls(priority=priority, cpus=cpus, lock_memory=True, freeze_gc=True, strict=strict)

    def apply(self) -> ActivePolicy:
        """Apply to the calling thread; use the result as a context manager.

        Raises:
            PermissionDeniedError: A setting was refused by the OS (strict mode), with the
                exact remediation in ``hint``.
            RealtimeError: A setting failed for another reason (strict mode).
            NotSupportedError: The kernel or C library lacks a needed feature (strict mode).
        """
        return ActivePolicy(self)



def _hold_gc() -> tuple[str, Callable[[], str]]:
    """Freeze the collector for this thread; the undo releases this thread's hold wherever it
    runs (the reaper, another thread's close()), never another holder's."""
    me = threading.get_ident()
    return hold_gc_frozen(), functools.partial(release_gc, me)

class ActivePolicy(Owner):
    """A :class:`RealtimePolicy` in effect on one thread; closing it restores everything.

    Attributes:
        policy: The options that were applied.
        report: What was applied and what was refused.
    """

    def __init__(self, policy: RealtimePolicy) -> None:
        self.policy = policy
        self._tid = threading.get_native_id()
        thread = threading.current_thread()
        self._stack = UndoStack(self._tid, thread)
        self._watched = thread_watch().stacks
        self._applied: list[SettingOutcome] = []
        self._refused: list[SettingOutcome] = []
        # Here, before the thread turns real-time, not in the safety net that may need it.
        _reaper.start()
        try:
            self._apply_all()
        except BaseException:
            self._stack.run()
            raise
        self.report = PolicyReport(thread_id=self._tid, thread_name=thread.name,
                                   applied=tuple(self._applied), refused=tuple(self._refused))
        # Two safety nets, neither of which refers to self: the GC (Owner's finalizer) and the
        # end of the thread (its _ThreadWatch), whichever comes first.
        self._watched.add(self._stack)
        self._own(functools.partial(leaked, self._stack, self._watched),
                  "edgert.ActivePolicy")

    # -- applying -------------------------------------------------------------------------------

    def _step(self, setting: str, thread_bound: bool,
              fn: Callable[[], tuple[str, Callable[[], str] | None]]) -> None:
        try:
            detail, undo = fn()
        except _Refusable as err:
            if self.policy.strict:
                raise
            self._refuse(setting, err)
            return
        if undo is not None:
            self._stack.items.append(Undo(setting, thread_bound, undo))
        self._applied.append(SettingOutcome(setting=setting, applied=True, detail=detail))

    def _refuse(self, setting: str, err: EdgeRTError) -> None:
        self._refused.append(SettingOutcome(
            setting=setting, applied=False, detail=err.message, hint=err.hint,
            errno_value=getattr(err, "errno_value", None)))

    def _apply_all(self) -> None:
        p = self.policy
        # Pin first so the thread is on its CPU before anything else runs there; switch to RT
        # last, so the (possibly slow) locking and collecting do not run at RT priority.
        if p.cpus is not None:
            self._step("affinity", True, self._apply_affinity)
        if p.lock_memory:
            self._step("memory_lock", False, self._apply_memory_lock)
        if p.prefault_stack_bytes:
            self._step("prefault_stack", True,
                       lambda: (prefault_stack(p.prefault_stack_bytes), None))
        if p.prefault_heap_bytes:
            self._step("prefault_heap", False, self._apply_heap)
        if p.freeze_gc:
            self._step("gc", False, _hold_gc)
        if p.cpu_dma_latency_us is not None:
            self._step("cpu_dma_latency", False, self._apply_dma_latency)
        if p.timer_slack_ns is not None:
            self._step("timer_slack", True, self._apply_timer_slack)
        if p.policy is not None:
            self._step("scheduler", True, self._apply_sched)

    def _apply_affinity(self) -> tuple[str, Callable[[], str] | None]:
        assert self.policy.cpus is not None
        want = frozenset(self.policy.cpus)
        tid = self._tid
        before = get_affinity(0)
        try:
            set_affinity(0, want)
        except OSError as err:
            code = err.errno or 0
            diag = diagnose_affinity(code, want)
            message = (f"cannot pin thread {tid} to CPUs {sorted(want)}: {errno_label(code)}: "
                       f"{diag.reason}")
            if diag.permission:
                raise PermissionDeniedError(message, hint=diag.hint, errno_value=code) from err
            raise RealtimeError(message, hint=diag.hint) from err

        def undo() -> str:
            set_affinity(tid, before)
            return f"affinity back to CPUs {_cpu_text(before)}"

        got = get_affinity(0)
        if got != want:
            # The kernel silently drops CPUs outside the cpuset; a partial pin is not the pin
            # that was asked for.
            if self.policy.strict:
                undo()
            else:
                self._stack.items.append(Undo("affinity", True, undo))
            raise RealtimeError(
                f"thread {tid} could only be pinned to CPUs {_cpu_text(got)} of "
                f"{_cpu_text(want)}: CPUs {_cpu_text(want - got)} are offline or outside the "
                f"cpuset",
                hint="pick CPUs from `cat /sys/fs/cgroup/cpuset/cpuset.effective_cpus` (or "
                     "`nproc --all` / taskset -p $$)")
        return f"pinned thread {tid} to CPUs {_cpu_text(want)} (was {_cpu_text(before)})", undo

    def _apply_memory_lock(self) -> tuple[str, Callable[[], str] | None]:
        hold = LockHold(onfault=self.policy.lock_onfault)
        # The undo goes on the stack before mlockall runs: a KeyboardInterrupt arriving as the
        # call returns must still find it (it does nothing for a hold that never locked).
        undo = Undo("memory_lock", False, hold.release)
        self._stack.items.append(undo)
        try:
            return hold.acquire(), None
        except BaseException:
            if not hold.held:  # refused or rolled back: nothing to undo, nothing to report
                with contextlib.suppress(ValueError):
                    self._stack.items.remove(undo)
            raise

    def _apply_heap(self) -> tuple[str, Callable[[], str] | None]:
        held = prefault_heap(self.policy.prefault_heap_bytes)
        return f"prefaulted {held.nbytes // 1024} KiB of C heap", held.release

    def _apply_dma_latency(self) -> tuple[str, Callable[[], str] | None]:
        assert self.policy.cpu_dma_latency_us is not None
        hold = DmaLatencyHold(self.policy.cpu_dma_latency_us)

        def undo() -> str:
            hold.close()
            return "closed /dev/cpu_dma_latency"

        return f"holding /dev/cpu_dma_latency at {hold.latency_us} us", undo

    def _apply_timer_slack(self) -> tuple[str, Callable[[], str] | None]:
        assert self.policy.timer_slack_ns is not None
        try:
            before = get_timer_slack()
            set_timer_slack(self.policy.timer_slack_ns)
        except OSError as err:
            raise RealtimeError(f"prctl(PR_SET_TIMERSLACK) failed: {errno_label(err.errno)}",
                                hint="leave timer_slack_ns unset") from err

        tid = self._tid

        def undo() -> str:
            if threading.get_native_id() != tid:
                raise NotRestored(f"timer slack is per thread and only thread {tid} can "
                                  "restore it: close the policy on its thread")
            set_timer_slack(before)
            return f"timer slack back to {before} ns"

        return f"timer slack {before} ns -> {self.policy.timer_slack_ns} ns", undo

    def _apply_sched(self) -> tuple[str, Callable[[], str] | None]:
        pol = self.policy.policy
        assert pol is not None
        return apply_sched(pol, self.policy.priority or 0,
                           reset_on_fork=self.policy.reset_on_fork, tid=self._tid)

    # -- restoring ------------------------------------------------------------------------------

    @property
    def restored(self) -> tuple[SettingOutcome, ...]:
        """What :meth:`close` put back (empty until closed)."""
        return tuple(self._stack.restored)

    def close(self) -> None:
        """Restore everything that was changed, newest first. Idempotent.

        Call it on the thread that applied the policy: from another thread, per-thread settings
        are restored through the native id only while that thread is still alive.

        Raises:
            RealtimeError: A restore step failed (the others still ran).
        """
        if self.closed:
            return
        self._owner_closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        close_stack(self._stack, self._watched)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as err:  # never mask the body's exception with a restore failure
            warnings.warn(f"restoring the real-time policy failed: {err}", RuntimeWarning,
                          stacklevel=2)


def _cpu_text(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
