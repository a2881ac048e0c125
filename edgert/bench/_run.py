"""edgert.bench.run: the benchmark as a library call.

The run happens in its own thread ("edgert-bench"), so the real-time policy changes that thread
only and the caller's thread is left alone (docs/realtime.md: go real time in the loop thread).
In that thread, in this order: open the backend and make the session, warm it up (graphs are
captured, helper threads created as ordinary threads), start the sensor sampler (before the
policy, so its thread does not inherit SCHED_FIFO), apply the policy, run the warm-up phase,
run the measured phase, restore the policy, close everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from typing_extensions import Unpack

from edgert._options import check_or_create_options
from edgert._version import __version__
from edgert.bench._backend import Backend, BackendInfo, open_backend
from edgert.bench._options import BenchOptions, BenchOverrides
from edgert.bench._phase import PhaseRunner
from edgert.bench._report import (
    BenchProgress,
    BenchReport,
    RealtimeOutcome,
    ThermalSummary,
)
from edgert.bench._sampler import Sampler, SensorSample
from edgert.bench._warnings import RtBudget, find_warnings, read_rt_budget
from edgert.errors import (
    EdgeRTError,
    InferenceError,
    InputError,
    InvalidArgumentError,
    RealtimeError,
)
from edgert.realtime import LoopReport, PolicyReport, RealtimePolicy, SettingOutcome
from edgert.session import InferenceSession

if TYPE_CHECKING:
    from edgert._executable import Executable
    from edgert.engine import Engine

__all__ = ["run", "run_options"]

#: ``progress(BenchProgress)``, called as a run advances; the return value is ignored.
Progress = Callable[[BenchProgress], object]
#: ``notify(message)``, called with each line a run reports as it goes (a warning, a phase).
Notify = Callable[[str], object]


def run(model_or_executable: str | os.PathLike[str] | Engine | Executable | None = None,
        options: BenchOptions | None = None, *, progress: Progress | None = None,
        notify: Notify | None = None, **overrides: Unpack[BenchOverrides]) -> BenchReport:
    """Benchmark a model the way a robot runs it, and return the report.

    Requests run in a :class:`~edgert.realtime.PeriodicLoop` at ``rate_hz`` (or back to back
    with ``rate_hz=0``) under a real-time policy where the OS permits it, with thermal, power
    and NVML readings sampled alongside. See :class:`BenchOptions` for every option, and
    docs/bench.md for what each figure means.

    Args:
        model_or_executable: None or ``"bundled"`` (the bundled control policy on the best
            backend here), a model path (``.plan``/``.engine``/``.onnx``), an
            :class:`~edgert.engine.Engine` or an :class:`~edgert.engine.Executable` (both
            borrowed: the caller closes them).
        options: A :class:`BenchOptions`; the option keywords below override its fields
            (unknown keywords raise :class:`~edgert.InvalidArgumentError`).
        rate_hz: See :class:`BenchOptions` (as are the other keyword options).
        duration_s: Length of the measured phase.
        warmup_s: Length of the warm-up phase before it.
        rt: Apply the real-time policy (refusals are reported, not raised).
        priority: SCHED_FIFO priority of the loop thread.
        cpus: CPUs to pin the loop thread to.
        io: Session I/O mode.
        cuda_graph: Session graph mode.
        slots: Requests in flight at once.
        batch: Batch size of each request.
        sync: ``adaptive`` (default), ``blocking`` or ``spin``.
        runtime: Runtime for model paths (``auto``, ``full``, ``lean``, ``dispatch``,
            ``onnxruntime``, ``fake``).
        device: CUDA ordinal, ``"host"`` or None.
        root: Where sensors are read (a fake tree in tests).
        sample_interval_s: Sensor sampling period.
        environment: Include the doctor's summary.
        progress: Called with a :class:`BenchProgress` after each sensor sample (from the
            sampler's thread; keep it short).
        notify: Called with one-line notices (the real-time refusal line, backend fallbacks).

    Returns:
        The :class:`BenchReport`.

    Raises:
        InvalidArgumentError: An option is out of range, or the batch does not fit the model.
        EngineLoadError: The model could not be loaded (or a subclass of it).
        NotSupportedError: What was asked needs what this machine lacks.
        InferenceError: A request failed.
        KeyboardInterrupt: Interrupted before the measured phase began (during it, the run
            stops early and the report says ``stopped_by="interrupted"``).
    """
    resolved = check_or_create_options(BenchOptions, options, overrides, what="bench.run")
    return run_options(model_or_executable, resolved, progress=progress, notify=notify)


def run_options(model_or_executable: str | os.PathLike[str] | Engine | Executable | None,
                options: BenchOptions, *,
                progress: Progress | None = None, notify: Notify | None = None) -> BenchReport:
    """:func:`run` with the options already made.

    Raises:
        EdgeRTError: As :func:`run`.
    """
    if options.rt and options.cpus is not None:
        check_cpus(options.cpus)
    environment = None
    if options.environment:
        from edgert.doctor import run_doctor

        environment = run_doctor(options.root).to_dict()
    job = _Job(model_or_executable, options, progress, notify)
    thread = threading.Thread(target=job.main, name="edgert-bench", daemon=True)
    thread.start()
    try:
        _wait(job.done)
    except KeyboardInterrupt:
        job.stop()
        _wait(job.done)
    thread.join()
    if job.error is not None:
        raise job.error
    if job.report is None:  # stopped before anything was measured
        raise KeyboardInterrupt
    return dataclasses.replace(job.report, environment=environment)


def check_cpus(cpus: Collection[int]) -> None:
    """Pin a short-lived thread to ``cpus`` the way the loop thread will be pinned.

    CPUs that do not exist, are offline or lie outside this process's cpuset are a mistake in
    the arguments, not an OS refusal to report after the run: they are raised here, before
    anything runs, in the policy's own words.

    Raises:
        InvalidArgumentError: The policy could not pin a thread to exactly these CPUs.
    """
    failed: list[RealtimeError] = []

    def probe() -> None:
        try:
            RealtimePolicy(cpus=cpus, strict=True).apply().close()
        except RealtimeError as err:  # a permission refusal is reported by the run itself
            failed.append(err)

    thread = threading.Thread(target=probe, name="edgert-bench-cpus")
    thread.start()
    thread.join()
    if failed:
        err = failed[0]
        raise InvalidArgumentError(f"cpus {','.join(map(str, sorted(cpus)))}: {err.message}",
                                   hint=err.hint) from err


def _wait(done: threading.Event) -> None:
    """Wait for the run in short steps.

    Ctrl-C may be delivered to any thread of the process; Python runs the handler (raising
    KeyboardInterrupt) only when the main thread executes Python code again, so a single long
    wait would sleep through it. Nor is join() used for the waiting: a join() interrupted by
    Ctrl-C marks the thread as stopped on Python 3.11 (bpo-45274), so a second join() would
    return while the run goes on.
    """
    while not done.wait(0.1):
        pass


def input_arrays(specs: Any, batch: int,
                 shapes: Mapping[str, Sequence[int]] | None = None) -> dict[
                     str, np.ndarray[Any, Any]]:
    """Deterministic inputs: ``shapes`` where given, else the profile's opt shape, with
    ``batch`` as a dynamic first dim.

    Raises:
        InvalidArgumentError: The model's batch dimension is static and differs, ``batch``
            is outside the input's profile, or ``shapes`` names no input of the model or gives
            one a shape its declaration does not allow.
    """
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray[Any, Any]] = {}
    given = dict(shapes or {})
    names = [spec.name for spec in specs if spec.is_input]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InvalidArgumentError(f"shapes names {', '.join(map(repr, unknown))}, which the "
                                   f"model does not take as input",
                                   hint=f"its inputs are {', '.join(names)}")
    for spec in specs:
        if not spec.is_input:
            continue
        if spec.name in given:
            shape = list(given[spec.name])
            if not spec.unknown_rank and (len(shape) != len(spec.shape) or any(
                    d >= 0 and d != s for d, s in zip(spec.shape, shape, strict=True))):
                raise InvalidArgumentError(
                    f"shape {tuple(shape)} does not fit input {spec.name!r}, declared "
                    f"{list(spec.shape)} (-1: any size)",
                    hint="keep the rank and every fixed dimension")
            prof = spec.profiles[0] if spec.profiles else None
            if prof is not None and not all(lo <= d <= hi for lo, d, hi in zip(
                    prof.min, shape, prof.max, strict=True)):
                raise InvalidArgumentError(
                    f"shape {tuple(shape)} is outside the profile of input {spec.name!r} "
                    f"(min {list(prof.min)}, max {list(prof.max)})",
                    hint="pick sizes within the profile (edgert inspect MODEL lists it)")
            if batch != 1 and spec.shape and spec.shape[0] < 0 and shape[0] != batch:
                raise InvalidArgumentError(
                    f"batch {batch} and the shape {tuple(shape)} given for input "
                    f"{spec.name!r} disagree on its first dimension",
                    hint="give the batch in one place: in the shape, or as the batch")
        elif spec.is_dynamic and spec.profiles:
            shape = list(spec.profiles[0].opt)
        else:
            shape = [1 if d < 0 else d for d in spec.shape]
        if spec.name in given:
            pass  # the batch is in the shape given
        elif spec.shape and spec.shape[0] < 0:
            shape[0] = batch
            prof = spec.profiles[0] if spec.profiles else None
            if prof is not None and not prof.min[0] <= batch <= prof.max[0]:
                raise InvalidArgumentError(
                    f"batch {batch} is outside the profile of input {spec.name!r} "
                    f"({prof.min[0]} to {prof.max[0]})",
                    hint=f"pick a batch from {prof.min[0]} to {prof.max[0]}")
        elif batch != 1:
            raise InvalidArgumentError(
                f"input {spec.name!r} has a fixed first (batch) dimension of "
                f"{spec.shape[0] if spec.shape else 'none'} (shape {list(spec.shape)}): it "
                f"takes no batch of {batch}", hint="leave the batch at 1 for this model")
        if np.issubdtype(spec.dtype, np.floating):
            out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            out[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return out


def unsized_dims(specs: Any, shapes: Mapping[str, Any] | None = None) -> list[str]:
    """The inputs' dynamic dimensions past the batch that no profile sizes: each runs as 1
    (an input of unknown rank runs as a scalar).

    An ONNX model with, say, an image of ``[1, 3, H, W]`` declares no size for H and W, so
    :func:`input_arrays` makes them 1 and the figures describe a 1x1 image, not the robot's.
    """
    out = []
    for spec in specs:
        if not spec.is_input or spec.profiles or spec.name in (shapes or {}):
            continue
        if spec.unknown_rank:  # no shape at all: it runs as a 0-d array
            out.append(f"input {spec.name} (no shape)")
            continue
        dims = [spec.dim_names[i] if spec.dim_names and spec.dim_names[i] else f"dim {i}"
                for i, d in enumerate(spec.shape) if d < 0 and i > 0]
        if dims:
            out.append(f"input {spec.name} ({', '.join(dims)})")
    return out


_ERRNO_NAME = re.compile(r"\bE[A-Z0-9]{2,}\b")
_LABEL = {"scheduler": "SCHED_FIFO priority {p}", "affinity": "CPU pinning to {c}",
          "memory_lock": "locked memory", "gc": "a frozen garbage collector"}


def _label(setting: str, options: BenchOptions) -> str:
    cpus = ",".join(str(c) for c in sorted(options.cpus or ()))
    return _LABEL.get(setting, setting).format(p=options.priority, c=cpus)


def _why(outcome: SettingOutcome) -> str:
    """The errno name of a refusal (``EPERM``), from its number or its message."""
    if outcome.errno_value:
        return errno.errorcode.get(outcome.errno_value, f"errno {outcome.errno_value}")
    found = _ERRNO_NAME.search(outcome.detail)
    return found.group(0) if found else "refused"


def realtime_outcome(options: BenchOptions, report: PolicyReport | None) -> RealtimeOutcome:
    """The one-line summary of what the policy did."""
    if not options.rt or report is None:
        return RealtimeOutcome(requested=False, policy=None,
                               summary="off: the loop ran with the default scheduler")
    applied = ", ".join(_label(o.setting, options) for o in report.applied)
    if report.ok:
        return RealtimeOutcome(requested=True, policy=report, summary=applied)
    refused = " and ".join(f"{_label(o.setting, options)} ({_why(o)})" for o in report.refused)
    return RealtimeOutcome(requested=True, policy=report,
                           summary=f"running without {refused}: the OS refused "
                                   f"{'it' if len(report.refused) == 1 else 'them'}"
                                   + (f"; applied {applied}" if applied else ""))


class _Job:
    """One run, executed in the bench thread; the caller's thread only starts and joins it."""

    def __init__(self, model: Any, options: BenchOptions, progress: Progress | None,
                 notify: Notify | None) -> None:
        self.model = model
        self.options = options
        self.progress = progress
        self.notify = notify
        self.error: BaseException | None = None
        self.report: BenchReport | None = None
        self.notes: list[str] = []
        self.runner: PhaseRunner | None = None
        self.done = threading.Event()
        self._stop = False

    def stop(self) -> None:
        self._stop = True
        if self.runner is not None:
            self.runner.stop()

    def main(self) -> None:
        try:
            # Memory is locked before the session exists and unlocked after it is closed: the
            # realtime layer leaves memory locked (MCL_FUTURE included) when something was
            # locked before it locked, and the session's own page-locked pool would be that.
            memory = RealtimePolicy(lock_memory=True, strict=False).apply() \
                if self.options.rt else None
            try:
                with contextlib.ExitStack() as stack:
                    self.report = self._run(stack, memory.report if memory else None)
            finally:
                if memory is not None:
                    memory.close()
                    self._memory_restored(memory.restored)
        except BaseException as err:
            self.error = err
        finally:
            self.done.set()

    def _memory_restored(self, restored: tuple[SettingOutcome, ...]) -> None:
        kept = [o.detail for o in restored if o.setting == "memory_lock"
                and o.detail.startswith("left locked")]
        if kept and self.report is not None:
            note = f"memory stays locked after the run: {kept[0]}"
            self.report = dataclasses.replace(self.report, notes=(*self.report.notes, note))

    def _say(self, line: str) -> None:
        if self.notify is not None:
            self.notify(line)

    def _on_sample(self, sample: SensorSample) -> None:
        r = self.runner
        if self.progress is None or r is None or r.phase == "setup":
            return
        try:
            self.progress(BenchProgress(
                phase=r.phase, elapsed_s=(time.perf_counter_ns() - r.phase_start_ns) / 1e9,
                duration_s=r.phase_duration_s, requests=r.requests,
                mean_us=r.sum_ns / r.requests / 1e3 if r.requests else None,
                max_us=r.max_ns / 1e3 if r.requests else None, late=r.late, sample=sample))
        except Exception as err:  # a broken progress printer must not end the run
            self.notes.append(f"the progress callback failed: {type(err).__name__}: {err}")
            self.progress = None

    def _run(self, stack: contextlib.ExitStack,
             memory: PolicyReport | None) -> BenchReport | None:
        o = self.options
        started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        backend: Backend = open_backend(self.model, runtime=o.runtime, device=o.device)
        stack.callback(backend.close)
        for note in backend.notes:
            self.notes.append(note)
            self._say(f"edgert bench: {note}")
        session = InferenceSession(backend.model, device=o.device, io=o.io, slots=o.slots,
                                   cuda_graph=o.cuda_graph, sync=o.sync, timing="stages",
                                   stats_capacity=o.capacity())
        stack.callback(session.close)
        shapes = o.shape_map
        inputs = input_arrays(session.executable.tensors, o.batch, shapes)
        unsized = unsized_dims(session.executable.tensors, shapes)
        if unsized:
            note = ("the model gives no size to these input dimensions, so they ran as 1 (an "
                    "input without a shape as a scalar) and the figures are for that size: "
                    + "; ".join(unsized) + ". To measure the size the robot uses, pass it with "
                    "--shapes NAME:1x3x320x320,... (edgert.bench.run's shapes), declare it in "
                    "the model's edgert.profiles metadata (its opt shape is what runs; "
                    "docs/engines.md) or export the model with fixed sizes")
            self.notes.append(note)
            self._say(f"edgert bench: {note}")
        try:
            session.warmup([{k: v.shape for k, v in inputs.items()}])
        except (InputError, InferenceError) as err:
            # 0-d inputs have no size to pass (a spec NAME: is not valid); leave them out
            ran = ",".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in inputs.items()
                           if v.ndim)
            ints = sorted(k for k, v in inputs.items() if v.dtype.kind in "iub")
            cause = err.__cause__ if isinstance(err.__cause__, EdgeRTError) else err
            cls = InputError if isinstance(err, InputError) else InferenceError
            values = (f"; integer and boolean inputs ({', '.join(ints)}) are zeros, and a model "
                      "that needs real values in them (a sample rate, an index) cannot run on "
                      "made-up data: benchmark it with your own inputs "
                      "(edgert.pytest_plugin's edgert_benchmark, or a loop over "
                      "InferenceSession.infer)") if ints else ""
            raise cls(
                f"the model does not run at the input shapes {ran}: {cause.message}",
                hint=(f"pass the sizes the robot uses: --shapes {ran} with the real sizes "
                      f"(edgert.bench.run's shapes){values}") if unsized else
                f"check those sizes against the model (edgert inspect MODEL){values}") from err
        info = _describe(backend.info, session, o, inputs)
        runner = self.runner = PhaseRunner(session, inputs, slots=o.slots,
                                           period_ns=o.period_ns, capacity=o.capacity())
        sampler = Sampler(Path(o.root), interval_s=o.sample_interval_s,
                          nvml_index=session.device if isinstance(session.device, int) else None,
                          on_sample=self._on_sample)
        stack.callback(sampler.close)
        sampler.start()  # before the policy: threads inherit the creating thread's scheduler
        policy = RealtimePolicy(priority=o.priority, cpus=o.cpus, freeze_gc=True,
                                strict=False) if o.rt else None
        with policy.apply() if policy is not None else contextlib.nullcontext() as active:
            outcome = realtime_outcome(o, _merge(memory, active.report) if active else None)
            if outcome.refused:
                self._say(f"edgert bench: {outcome.summary}; `edgert doctor` shows how to "
                          "allow them")
            budget = self._throttled(outcome)
            if o.warmup_s > 0:
                runner.run("warmup", o.warmup_s)
            session.stats.reset()
            if self._stop or runner.stopped:
                return None
            sampler.restart_timeline()
            start = sampler.record()
            cpu_ns = time.process_time_ns()
            loop = runner.run("measure", o.duration_s)
            elapsed_s = (time.perf_counter_ns() - runner.phase_start_ns) / 1e9
            cpu_s = (time.process_time_ns() - cpu_ns) / 1e9
            end = sampler.finish()
        sampler.close()
        thermal = ThermalSummary(start=start, end=end, samples=sampler.samples,
                                 sources=tuple(sampler.sources),
                                 sensor_errors=sampler.errors, last_error=sampler.last_error,
                                 nvml_unavailable=sampler.nvml_unavailable)
        return self._report(info, session, runner, loop=loop, outcome=outcome, thermal=thermal,
                            elapsed_s=elapsed_s, cpu_s=cpu_s, started_at=started_at,
                            rt_budget=budget)

    def _throttled(self, outcome: RealtimeOutcome) -> RtBudget | None:
        """The RT budget that will stop a back-to-back loop at SCHED_FIFO, said up front."""
        if self.options.periodic or outcome.policy is None or \
                "scheduler" not in {o.setting for o in outcome.policy.applied}:
            return None
        budget = read_rt_budget(Path(self.options.root))
        if budget is not None:
            self._say(f"edgert bench: back to back under SCHED_FIFO, RT throttling may stop "
                      f"the loop for up to {(budget.period_us - budget.runtime_us) / 1000:g} ms "
                      f"of every {budget.period_us / 1000:g} ms (see the warnings)")
        return budget

    def _report(self, info: BackendInfo, session: InferenceSession, runner: PhaseRunner, *,
                loop: LoopReport | None, outcome: RealtimeOutcome, thermal: ThermalSummary,
                elapsed_s: float, cpu_s: float, started_at: str,
                rt_budget: RtBudget | None) -> BenchReport:
        st = session.stats
        recorders = {"total": st.latency, "enqueue": st.enqueue, "h2d": st.h2d,
                     "compute": st.compute, "d2h": st.d2h, "device": st.device}
        latency = {k: (r.summary() if r.count else None) for k, r in recorders.items()}
        samples = {"t": runner.times.samples()}
        samples.update({k: r.samples() for k, r in recorders.items() if r.count})
        info = dataclasses.replace(info, graph_captures=session.graph_captures)
        warnings = find_warnings(backend=info, latency=latency, loop=loop, realtime=outcome,
                                 thermal=thermal, rt_budget=rt_budget)
        return BenchReport(
            edgert_version=__version__, started_at=started_at, options=self.options,
            backend=info, elapsed_s=elapsed_s, cpu_s=cpu_s, requests=st.latency.count,
            stopped_by="interrupted" if runner.stopped else "duration", latency=latency,
            loop=loop, realtime=outcome, thermal=thermal, warnings=tuple(warnings),
            notes=tuple(self.notes), samples=samples)


def _merge(first: PolicyReport | None, second: PolicyReport) -> PolicyReport:
    if first is None:
        return second
    return PolicyReport(thread_id=second.thread_id, thread_name=second.thread_name,
                        applied=first.applied + second.applied,
                        refused=first.refused + second.refused)


def _describe(info: BackendInfo, session: InferenceSession, options: BenchOptions,
              inputs: Mapping[str, Any]) -> BackendInfo:
    device = session.device
    if isinstance(device, int):
        from edgert import cuda

        where, name = f"cuda:{device}", cuda.device_properties(device).name
    else:
        where, name = "host", "host CPU"
    o = session.options
    # The batch that ran: a shape given for an input with a dynamic first dimension sets it.
    batch = next((int(inputs[t.name].shape[0]) for t in session.executable.tensors
                  if t.is_input and t.name in options.shape_map and t.shape and t.shape[0] < 0
                  and inputs[t.name].ndim), options.batch)
    return dataclasses.replace(
        info, device=where, device_name=name, io=str(o.io), cuda_graph=str(o.cuda_graph),
        slots=o.slots, sync=str(o.sync), batch=batch,
        inputs=tuple((k, tuple(int(d) for d in v.shape)) for k, v in inputs.items()))
