"""Hot swap: replace a running session's model between two requests.

The new model gets a complete session of its own on the side -- execution context, buffers,
streams, graphs -- made and warmed (graphs captured) on the calling thread, while the old model
keeps serving. Then it is handed over: the next request (``infer``/``submit``) on the session's
own thread takes it at its start, which is a handful of attribute assignments, so the request
that takes it is not delayed by loading or warming anything. Requests submitted before the swap
complete on the old model; their results can no longer be collected (``result()`` raises), and
the old model's memory is freed on the swapping thread once the new model has served ``slots``
requests -- the point after which no view returned before the swap may still be read -- or at
``close()``.

Python's cyclic garbage collector is the other way a swap can stall a control loop: the swap
allocates, an allocation can start a full collection on the swapping thread, and a collection
holds the interpreter for every thread (10.4 ms measured on the CI VM: the loop woke 9.5 ms
late). Run the loop with ``RealtimePolicy(freeze_gc=True)``; a swap with the collector on says
so once and counts the collections that ran during it (:attr:`SwapResult.gc_collections`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edgert.errors import (
    ConcurrentUseError,
    InputError,
    InvalidArgumentError,
    RequestTimeoutError,
)
from edgert.realtime._gc import GcCounter
from edgert.session._options import OutputMode, SessionOptions
from edgert.session._pending import SessionStats
from edgert.session._resources import Resources
from edgert.session._runner import Runner
from edgert.session._slot import Slot
from edgert.session._use import UseGuard
from edgert.session._warmup import default_shapes, shape_sets
from edgert.session._warmup import warmup_runs as check_runs

if TYPE_CHECKING:
    from edgert.cuda import GpuPartition, Stream

__all__ = ["SwapResult", "SwapTarget", "apply_pending_swap", "swap_model"]

_CLAIM = threading.Lock()  # makes "no swap pending? then this one is" one step

# What a session holds for its model; swapped as a whole between the session and the side one.
_STATE = ("_choice", "_options", "_runner", "_slots", "_n", "_next", "_after", "_outputs_mode",
          "_timing", "_raise_when_busy", "_pipelined")


class SwapTarget(Protocol):
    """What a hot swap reads and exchanges of a session (the session and its side session).

    The per-model attributes named in ``_STATE`` are exchanged as well; a test checks that
    they are all of the session's attributes other than the session-wide ones.
    """

    _runner: Runner
    _options: SessionOptions
    _slots: list[Slot]
    _outputs_mode: OutputMode
    _resources: Resources
    _stats: SessionStats
    _swap_pending: Any
    _use: UseGuard
    _partition: GpuPartition | None

    @property
    def stream(self) -> Stream | None: ...

    @property
    def device(self) -> int | str: ...

    @property
    def closed(self) -> bool: ...

    def _check_open(self) -> None: ...

    def warmup(self, shapes: Sequence[Mapping[str, Sequence[int]]] | None = None, *,
               runs: int = 2) -> None: ...

    def close(self) -> None: ...


#: Makes the side session: ``make(model, options, device=..., **kwargs)``.
SideFactory = Callable[..., SwapTarget]


@dataclass(frozen=True, kw_only=True, slots=True)
class SwapResult:
    """What :meth:`InferenceSession.swap` did.

    Attributes:
        prepare_s: Seconds to load, set up and warm the new model on the side.
        handoff_s: Seconds from ready to swapped (until the next request took it).
        applied_by: ``"request"`` (a request took it) or ``"swap"`` (the session was idle).
        old_freed: Whether the old model's resources were freed before returning (else they
            are freed when the session closes).
        gc_collections: Garbage collections (any thread) while the swap ran: each held the
            interpreter, so the control loop too (0 with ``RealtimePolicy(freeze_gc=True)``).
    """

    prepare_s: float
    handoff_s: float
    applied_by: str
    old_freed: bool
    gc_collections: int = 0


class _Handoff:
    """A prepared side session waiting to be taken; ``lock`` makes take/cancel exclusive."""

    def __init__(self, side: SwapTarget) -> None:
        self.side = side
        self.lock = threading.Lock()
        self.state = "pending"
        self.done = threading.Event()
        self.taken_by = ""
        self.generations = 0
        self.model: tuple[Any, Any] | None = None  # the (slots, runner) this swap brought in


def _signature(specs: Any) -> list[tuple[str, str]]:
    return [(s.name, str(s.dtype)) for s in specs]


def _check_compatible(session: SwapTarget, specs: Any, what: str) -> None:
    runner = session._runner
    old_in, old_out = _signature(runner.in_specs), _signature(runner.out_specs)
    new_in = _signature(t for t in specs if t.is_input)
    new_out = _signature(t for t in specs if not t.is_input)
    if sorted(old_in) != sorted(new_in) or sorted(old_out) != sorted(new_out):
        raise InvalidArgumentError(
            f"{what} does not fit this session: inputs {new_in} and outputs {new_out}, the "
            f"session's are {old_in} and {old_out}; nothing was changed",
            hint="a hot swap needs the same input and output names and dtypes; make a new "
                 "session for a model with a different interface")


def _ran(target: SwapTarget) -> dict[tuple[Any, ...], dict[str, tuple[int, ...]]]:
    """The output shapes of each input-shape signature a session's slots hold, keyed by
    ``(name, shape)`` pairs. Read without the session's guard (its thread keeps running): a
    slot whose signature changed while it was read is left out."""
    ran: dict[tuple[Any, ...], dict[str, tuple[int, ...]]] = {}
    for slot in tuple(target._slots):
        sig = slot.sig
        if sig is None:
            continue
        key = tuple(sorted((tb.name, tb.shape) for tb in slot.inputs))
        shapes = {tb.name: tb.shape for tb in slot.outputs if tb.shape is not None}
        if slot.sig is sig:
            ran[key] = shapes
    return ran


def _check_output_shapes(session: SwapTarget, side: SwapTarget, what: str) -> None:
    """Refuse a new model whose outputs have other shapes than the session's for the same
    input shapes (a trial swapped a 13-wide action vector in for a 12-wide one and the loop got
    it without a word). Compared where both have shapes for one signature (the swap warms the
    new model at the session's initial shapes): what the models really give, as a declared shape
    can be wrong (a review found a model declared 13 wide that gave 12, and one the other way)."""
    mine, theirs = _ran(session), _ran(side)
    for key in mine.keys() & theirs.keys():
        for name, shape in theirs[key].items():
            old = mine[key].get(name)
            if old is not None and old != shape:
                given = ", ".join(f"{n} {s}" for n, s in key)
                raise InvalidArgumentError(
                    f"{what} does not fit this session: for inputs {given} its output {name!r} "
                    f"has shape {shape}, the session's {old}; nothing was changed",
                    hint="a hot swap keeps what the outputs hold; make a new session for a "
                         "model whose outputs differ")


def _requests(session: SwapTarget, model: tuple[Any, Any] | None = None) -> int:
    """Requests run so far by the session's current model, or by ``model`` (the slots and
    runner a swap brought in): what its slots served and ``infer``'s short way (no slot)."""
    slots, runner = (session._slots, session._runner) if model is None else model
    return sum(s.served for s in slots) + runner.shortcuts


def apply_pending_swap(session: SwapTarget) -> None:
    """Take a prepared swap (called by the session with its use lock held)."""
    handoff: _Handoff | None = session._swap_pending
    if handoff is None:
        return
    with handoff.lock:
        if handoff.state != "pending":
            return
        handoff.state = "applying"
    session._swap_pending = None
    side = handoff.side
    session._runner.disown()  # results of requests submitted before the swap are not collectable
    res, side_res = session._resources, side._resources
    res.runner, side_res.runner = side_res.runner, res.runner
    res.slots, side_res.slots = side_res.slots, res.slots
    res.closers, side_res.closers = side_res.closers, res.closers
    for name in _STATE:
        mine = getattr(session, name)
        setattr(session, name, getattr(side, name))
        setattr(side, name, mine)
    session._runner.stats = session._stats  # one history of timings across models
    session._runner.last_sig = side._runner.last_sig  # the previous request, not a warm-up's
    # Counted on this model, never on whatever the session runs later: a second swap applied
    # while this one waits would count its own warm-up runs (found by review: the oldest model
    # was freed while its last view was still valid).
    handoff.model = (session._slots, session._runner)
    handoff.generations = _requests(session, handoff.model)
    handoff.state = "applied"
    handoff.done.set()


def _prepare(session: SwapTarget, make: SideFactory, model: Any, kwargs: dict[str, Any], *,
             warmup_shapes: Any, warmup_runs: int) -> SwapTarget:
    if model is session._runner.exe:
        raise InvalidArgumentError("the session already runs this executable",
                                   hint="swap in another Engine or Executable")
    specs = getattr(model, "tensors", None)
    if specs is not None:
        _check_compatible(session, specs, repr(model))
    o = session._options
    # the warm-up's arguments refused before anything is loaded
    in_specs = session._runner.in_specs
    sets: list[Any] = [None, default_shapes(in_specs, o.profile)] if warmup_shapes is None \
        else shape_sets(warmup_shapes, in_specs, o.profile)
    warmup_runs = check_runs(warmup_runs)
    if kwargs.get("stream") is None:
        # The new model runs where the old one did: on the session's SM partition (a control
        # model must not lose its reserved SMs to a swap) and at its stream's priority.
        kwargs["partition"] = session._partition
        stream = session.stream
        if kwargs.get("priority") is None and stream is not None:
            kwargs["priority"] = stream.priority
    side = make(model, o, device=session.device, **kwargs)
    try:
        _check_compatible(session, (*side._runner.in_specs, *side._runner.out_specs),
                          repr(model))
        for shape_set in sets:
            try:
                side.warmup(None if shape_set is None else [shape_set], runs=warmup_runs)
            except InputError as err:
                raise InvalidArgumentError(
                    f"the new model refuses input shapes this session runs with "
                    f"({shape_set}): {err.message}; nothing was changed",
                    hint="build the new model with the same optimization profile") from err
        _check_output_shapes(session, side, repr(model))
    except BaseException:
        side.close()
        raise
    return side


_log = logging.getLogger("edgert.session")
_gc_warned = False


def swap_model(session: SwapTarget, make: SideFactory, model: Any, *, handoff_s: float,
               timeout_s: float | None, warmup_shapes: Any, warmup_runs: int,
               **kwargs: Any) -> SwapResult:
    """What :meth:`InferenceSession.swap` does (see there); ``make`` makes the side session."""
    global _gc_warned
    if gc.isenabled() and not _gc_warned:
        _gc_warned = True
        _log.warning("swap() with Python's garbage collector on: a collection started by the "
                     "swap's allocations holds the interpreter for every thread (milliseconds; "
                     "a control loop misses periods). Run the loop with "
                     "RealtimePolicy(freeze_gc=True) (docs/lifecycle.md, the recipe)")
    counter = GcCounter()
    counter.install()
    try:
        result = _swap(session, make, model, handoff_s=handoff_s, timeout_s=timeout_s,
                       warmup_shapes=warmup_shapes, warmup_runs=warmup_runs, **kwargs)
    finally:
        counter.remove()
    return SwapResult(prepare_s=result.prepare_s, handoff_s=result.handoff_s,
                      applied_by=result.applied_by, old_freed=result.old_freed,
                      gc_collections=counter.collections)


def _swap(session: SwapTarget, make: SideFactory, model: Any, *, handoff_s: float,
          timeout_s: float | None, warmup_shapes: Any, warmup_runs: int,
          **kwargs: Any) -> SwapResult:
    session._check_open()
    if session._swap_pending is not None:
        raise ConcurrentUseError("another swap of this session is in progress",
                                 hint="wait for it to return")
    for name, value in (("handoff_s", handoff_s), ("timeout_s", timeout_s)):
        if value is not None and (not isinstance(value, (int, float)) or not value >= 0):
            raise InvalidArgumentError(f"{name} must be seconds >= 0, got {value!r}")
    start = time.monotonic()
    side = _prepare(session, make, model, kwargs, warmup_shapes=warmup_shapes,
                    warmup_runs=warmup_runs)
    ready = time.monotonic()
    handoff = _Handoff(side)
    # Check and claim in one step: two swaps may both have passed the check above while
    # preparing, and a second assignment would drop the first's handoff while it reports success.
    with _CLAIM:
        claimed = session._swap_pending is None
        if claimed:
            session._swap_pending = handoff
    if not claimed:
        side.close()
        raise ConcurrentUseError("another swap of this session was applied or is in progress; "
                                 "this one changed nothing", hint="wait for it to return")
    applied_by = "request"
    try:
        if not handoff.done.wait(handoff_s):
            deadline = None if timeout_s is None else ready + max(timeout_s, handoff_s)
            while not handoff.done.is_set():
                # No request took it within handoff_s: the session is idle; apply it here.
                use, me = session._use, threading.get_ident()
                use.applying = me  # a request meeting this hold waits (see _use)
                try:
                    if use.owner.setdefault(0, me) == me and not use.inside:
                        use.inside = True  # the inline steps of edgert.session._use
                        try:
                            session._check_open()  # closed while the new model was prepared
                            apply_pending_swap(session)
                            applied_by = "swap" if handoff.state == "applied" else applied_by
                        finally:
                            use.inside = False
                            del use.owner[0]
                        break
                finally:
                    use.applying = 0
                if deadline is not None and time.monotonic() > deadline:
                    raise RequestTimeoutError(
                        f"the swap was not taken within {timeout_s} s; nothing was changed",
                        hint="the session's thread must make a request (or be idle) for the "
                             "swap to happen")
                handoff.done.wait(0.001)
    except BaseException:
        with handoff.lock:
            cancelled = handoff.state == "pending"
            if cancelled:
                handoff.state = "cancelled"
                session._swap_pending = None
        if cancelled:
            side.close()
            raise
        # it was applied after all: fall through and free the old model
    swapped = time.monotonic()
    # An idle session (applied here) is unlikely to make requests soon: do not wait for them.
    old_freed = _free_old(session, handoff, 1.0 if applied_by == "request" else 0.0)
    return SwapResult(prepare_s=ready - start, handoff_s=swapped - ready,
                      applied_by=applied_by, old_freed=old_freed)


def _free_old(session: SwapTarget, handoff: _Handoff, wait_s: float) -> bool:
    """Close the side session (which now holds the old model) once no old view can be live.

    That is once as many requests as there are slots ran on the new model, which also keeps
    the close (it competes for the interpreter) away from the request that took the swap. With
    owned outputs nothing of the old model is in the caller's hands: past ``wait_s`` it is
    freed anyway, never kept until ``close()`` (idle swaps would pile old models up).
    """
    side = handoff.side
    n = len(session._slots)
    deadline = time.monotonic() + wait_s
    while True:
        if session.closed or _requests(session, handoff.model) - handoff.generations >= n:
            side.close()
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.001)
    if session._outputs_mode is OutputMode.COPY:
        side.close()
        return True
    # Idle session: the last views of the old model may still be read; free it at close().
    session._resources.closers.append(side.close)
    return False
