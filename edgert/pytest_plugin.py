"""edgert's pytest plugin: model sessions, fakes, and device-timed pytest-benchmark results.

Installed as a ``pytest11`` entry point, so it loads wherever edgert is installed (or use
``-p edgert.pytest_plugin``). It adds:

* ``--edgert-model PATH`` and the ``@pytest.mark.edgert_model(path, **session_options)`` marker
  (the marker wins), read by the ``edgert_model`` and ``edgert_session`` fixtures;
* ``edgert_session``: a warmed-up :class:`~edgert.session.InferenceSession` of that model on the
  best backend here (the bundled model by default; see :mod:`edgert.bench`), closed afterwards;
* ``fake_tensorrt``: :mod:`edgert.testing.fake_tensorrt`;
* ``fake_jetson``: a fake Jetson tree under ``tmp_path`` (``@pytest.mark.edgert_jetson(flavour,
  **options)`` picks another; see :func:`edgert.testing.jetson.build_jetson_tree`);
* ``edgert_benchmark``: like pytest-benchmark's ``benchmark``, but each round's time is the
  request's *device* time (CUDA events; on the host, the synchronous run), so suites compare
  what the GPU did rather than Python wall time. It counts as a benchmark for pytest-benchmark
  (``--benchmark-only`` runs it); a test may also request ``benchmark`` to read its stats.

How the device time reaches pytest-benchmark: at collection, every test that uses
``edgert_benchmark`` gets a ``@pytest.mark.benchmark(timer=...)`` marker (merged with one the test
already has), and ``edgert_benchmark`` depends on pytest-benchmark's ``benchmark`` fixture, which
reads that marker. The timer is a clock that only advances by each request's device time, so
pytest-benchmark's own ``timer(); target(); timer()`` measures exactly that, and every statistic,
comparison and JSON file it produces is in device time. Because the test then uses ``benchmark``
(through ``edgert_benchmark``), pytest-benchmark counts it as a benchmark: ``--benchmark-only``
runs it and ``--benchmark-skip`` skips it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import pytest

__all__ = ["DeviceBenchmark", "DeviceClock"]

_STAGES = {"compute": "compute_ns", "device": "device_ns", "h2d": "h2d_ns", "d2h": "d2h_ns",
           "enqueue": "enqueue_ns", "total": "latency_ns"}
_CLOCK = pytest.StashKey["DeviceClock"]()
_MISSING: Any = object()
#: The name pytest-benchmark's plugin is registered under (its pytest11 entry point).
_BENCHMARK_PLUGIN = "benchmark"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgert", "edgert: model sessions and device-timed benchmarks")
    group.addoption("--edgert-model", metavar="PATH", default=None,
                    help="model for the edgert_session fixture (.plan/.engine/.onnx); "
                         "default: edgert's bundled control policy")


def pytest_configure(config: pytest.Config) -> None:
    # Which edgert_benchmark fixture exists depends on whether pytest-benchmark is active here
    # (installed and not disabled with -p no:benchmark).
    active = config.pluginmanager.hasplugin(_BENCHMARK_PLUGIN)
    config.pluginmanager.register(_DeviceTimed() if active else _NoPytestBenchmark(),
                                  "edgert-benchmark-fixture")
    if not active:
        # pytest-benchmark's own marker, so a suite that uses it is skipped, not refused by
        # --strict-markers, when pytest-benchmark is absent or disabled (new user's trial).
        config.addinivalue_line(
            "markers", "benchmark(**options): pytest-benchmark's options for the test "
                       "(unused: pytest-benchmark is not active)")
    config.addinivalue_line(
        "markers", "edgert_model(path=None, **session_options): the model the edgert_session "
                   "fixture loads, and InferenceSession options (io=, slots=, cuda_graph=, "
                   "sync=, runtime=...)")
    config.addinivalue_line(
        "markers", "edgert_jetson(flavour='jp6-orin-nx', **options): the fake Jetson that the "
                   "fake_jetson fixture builds (options as build_jetson_tree)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test that uses ``edgert_benchmark`` the device clock as its timer.

    This has to happen before pytest-benchmark makes the test's ``benchmark`` fixture, which
    reads the marker; ``edgert_benchmark`` depends on that fixture, so it is too late there.
    """
    if not config.pluginmanager.hasplugin(_BENCHMARK_PLUGIN):
        return
    for item in items:
        if "edgert_benchmark" not in getattr(item, "fixturenames", ()):
            continue
        clock = item.stash[_CLOCK] = DeviceClock()
        user = item.get_closest_marker("benchmark")
        options = {**(user.kwargs if user is not None else {}), "timer": clock}
        item.add_marker(pytest.mark.benchmark(**options), append=False)


class DeviceClock:
    """A pytest-benchmark timer that advances only by the device time fed to it.

    It is readable only while :class:`DeviceBenchmark` measures: pytest-benchmark's own
    ``benchmark(fn)`` calibrates its timer until it sees it advance, which this clock never
    does by itself, so reading it there raises instead of looping for ever.

    Attributes:
        calls: How often pytest-benchmark read it (0 means it was not used as the timer).
    """

    def __init__(self) -> None:
        self.__name__ = "edgert_device_clock"  # how pytest-benchmark names the timer
        self._ns = 0
        self.calls = 0
        self.armed = False

    def advance(self, ns: int) -> None:
        """Add one request's device time."""
        self._ns += ns

    def __call__(self) -> float:
        """The device time so far, in seconds: pytest-benchmark's timer reading.

        Raises:
            pytest.UsageError: The clock was read outside ``edgert_benchmark`` (a plain
                ``benchmark(fn)`` in a test that uses it), where it cannot time anything.
        """
        if not self.armed:
            raise pytest.UsageError(
                "this test's pytest-benchmark timer is edgert's device clock (the test uses "
                "edgert_benchmark), and only edgert_benchmark(session, inputs) advances it: "
                "benchmark(fn) cannot be timed by it. Time plain functions in a test that does "
                "not use edgert_benchmark")
        self.calls += 1
        return self._ns / 1e9


class DeviceBenchmark:
    """What the ``edgert_benchmark`` fixture returns: call it like ``benchmark.pedantic``."""

    def __init__(self, benchmark: Any, clock: DeviceClock) -> None:
        self.benchmark = benchmark
        self.clock = clock
        self.times_ns: list[int] = []
        """The device time of every measured round, in order."""
        self.used = False  # one measured series per test, as pytest-benchmark allows

    def __call__(self, session: Any, inputs: Any = _MISSING, *args: Any, stage: str = "compute",
                 rounds: int = 200, warmup_rounds: int = 20, **kwargs: Any) -> Mapping[str, Any]:
        """Run ``rounds`` requests, each timed by the device; returns the last outputs (copies).

        Args:
            session: An :class:`~edgert.session.InferenceSession` with ``timing="stages"`` (the
                default).
            inputs: The request's inputs, as for ``session.infer``.
            *args: Refused: pytest-benchmark's ``benchmark(fn, *args, **kwargs)`` convention
                does not apply (a plain function has no device time).
            stage: Which time counts: ``compute`` (the executable), ``device`` (copies and
                compute), ``h2d``, ``d2h``, ``enqueue`` or ``total`` (host round trip).
            rounds: Measured requests.
            warmup_rounds: Requests run first and not counted.
            **kwargs: Refused, as ``*args``.

        Raises:
            InvalidArgumentError: Not a session and its inputs (e.g. a function, as
                pytest-benchmark's ``benchmark`` takes), unknown stage, the session does not
                record it (e.g. ``device`` on the host, or copies in zero-copy I/O), or a
                second call in one test (one series per test, as pytest-benchmark allows).
            UsageError: pytest-benchmark did not use the device clock.
        """
        from edgert.errors import InvalidArgumentError

        if not callable(getattr(session, "submit", None)) or inputs is _MISSING or args \
                or kwargs:
            _wrong_call(session, inputs, args, kwargs)
        field = _STAGES.get(stage)
        if field is None:
            raise InvalidArgumentError(f"stage must be one of {sorted(_STAGES)}, not {stage!r}",
                                       hint="'compute' times the executable alone, 'device' "
                                            "the copies with it, 'total' the host round trip")
        if self.used:  # pytest-benchmark's own error would blame a pedantic() call never made
            raise InvalidArgumentError(
                "edgert_benchmark measures one series per test, and this test already ran one",
                hint="measure each case in a test of its own, e.g. with "
                     "@pytest.mark.parametrize")
        for name, value, least in (("rounds", rounds, 1), ("warmup_rounds", warmup_rounds, 0)):
            try:
                count = operator.index(value)  # numpy integers too
            except TypeError:
                count = -1
            if isinstance(value, bool) or count < least:
                raise InvalidArgumentError(f"{name} must be an int >= {least}, not {value!r}",
                                           hint="e.g. edgert_benchmark(session, inputs, "
                                                "rounds=200, warmup_rounds=20)")
        rounds, warmup_rounds = operator.index(rounds), operator.index(warmup_rounds)
        clock, times = self.clock, self.times_ns

        def target() -> Mapping[str, Any]:
            pending = session.submit(inputs)
            out: Mapping[str, Any] = pending.result()
            timings = pending.timings
            value = None if timings is None else getattr(timings, field)
            if value is None:
                raise InvalidArgumentError(
                    f"this session records no {stage} time (device {session.device}, io "
                    f"{session.options.io}, timing {session.options.timing})",
                    hint="use stage='compute' (recorded everywhere with timing='stages'); "
                         "h2d/d2h exist only with copy I/O on a GPU")
            clock.advance(value)
            times.append(value)
            return out

        bench = self.benchmark
        calls = clock.calls
        self.used = True
        clock.armed = True
        try:
            result = bench.pedantic(target, rounds=rounds, warmup_rounds=warmup_rounds,
                                    iterations=1)
        finally:
            clock.armed = False
        if bench.enabled and clock.calls == calls:
            raise pytest.UsageError(
                "pytest-benchmark timed this test with its own clock, not edgert's device "
                "clock: was edgert.pytest_plugin loaded after the tests were collected?")
        del times[:-rounds]
        if bench.enabled:
            bench.extra_info.update({
                "edgert_stage": stage,
                "edgert_clock": "CUDA events" if isinstance(session.device, int) and
                stage != "total" else "host perf_counter_ns",
                "edgert_device": str(session.device),
            })
        return {name: np.array(value, copy=True) for name, value in result.items()}


def _wrong_call(session: Any, inputs: Any, args: tuple[Any, ...],
                kwargs: Mapping[str, Any]) -> NoReturn:
    from edgert.errors import InvalidArgumentError

    if callable(session) and not hasattr(session, "submit"):
        got = f"a function ({getattr(session, '__name__', type(session).__name__)})"
    elif not callable(getattr(session, "submit", None)):
        got = f"a {type(session).__name__} as the session"
    elif inputs is _MISSING:
        got = "a session without inputs"
    else:
        extra = [repr(a) for a in args] + [f"{k}=" for k in kwargs]
        got = f"extra arguments ({', '.join(extra)})"
    raise InvalidArgumentError(
        f"edgert_benchmark(session, inputs, stage=..., rounds=..., warmup_rounds=...) times an "
        f"InferenceSession's requests by the device; it was given {got}",
        hint="pass the session and one request's inputs, e.g. edgert_benchmark(edgert_session, "
             "{'obs': obs}); to time a plain function by the host clock, use pytest-benchmark's "
             "benchmark(fn, *args) in a test that does not use edgert_benchmark")


def _model_marker(request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    marker = request.node.get_closest_marker("edgert_model")
    if marker is None:
        return None, {}
    path = marker.args[0] if marker.args else marker.kwargs.get("path")
    kwargs = {k: v for k, v in marker.kwargs.items() if k != "path"}
    return path, kwargs


@pytest.fixture
def edgert_model(request: pytest.FixtureRequest) -> Path | str:
    """The model under test: the marker's path, else ``--edgert-model``, else ``"bundled"``."""
    path, _ = _model_marker(request)
    if path is None:
        path = request.config.getoption("--edgert-model")
    return "bundled" if path is None or str(path) == "bundled" else Path(path)


@pytest.fixture
def edgert_session(request: pytest.FixtureRequest, edgert_model: Path | str) -> Iterator[Any]:
    """A warmed-up InferenceSession of ``edgert_model`` (options from the marker), closed after.

    The bundled model runs as CUDA kernels on a GPU and through ONNX Runtime without one; a
    ``.plan`` on TensorRT; an ``.onnx`` on ONNX Runtime. Marker option ``runtime=`` picks the
    runtime for files (``fake`` for :mod:`edgert.testing.fake_tensorrt`); ``warmup=`` the input
    shapes to warm up with (a list of mappings, as :meth:`InferenceSession.warmup` takes; the
    default is the opt shapes), or ``False`` to skip warming up.
    """
    from edgert.bench._backend import open_backend
    from edgert.errors import EdgeRTError, InvalidArgumentError
    from edgert.session import InferenceSession

    _, kwargs = _model_marker(request)
    runtime = kwargs.pop("runtime", "auto")
    warmup = kwargs.pop("warmup", True)
    if isinstance(warmup, Mapping):
        warmup = [warmup]  # one set of shapes
    elif warmup is not True and warmup is not False and not (
            isinstance(warmup, (list, tuple)) and all(isinstance(w, Mapping) for w in warmup)):
        raise InvalidArgumentError(
            f"the edgert_model marker's warmup must be True, False, or shapes to warm up with, "
            f"not {warmup!r}", hint="e.g. warmup=[{'input': (1, 512)}]")
    # A benchmark fixture reads per-stage device times (edgert_benchmark(stage="compute")):
    # stage timing is opt-in for sessions, so the fixture opts in unless the marker says else.
    kwargs.setdefault("timing", "stages")
    backend = open_backend(edgert_model, runtime=runtime, device=kwargs.get("device"))
    try:
        session = InferenceSession(backend.model, **kwargs)
    except BaseException:
        backend.close()
        raise
    try:
        if warmup is not False:
            try:
                session.warmup(None if warmup is True else warmup)
            except EdgeRTError as err:
                if warmup is True:
                    # Zero-filled opt shapes do not suit every model (an audio model refuses a
                    # 1-sample frame): say how to give the fixture its own (new user's trial).
                    err.reword(hint="give the marker the shapes to warm up with, e.g. "
                                    "@pytest.mark.edgert_model(path, warmup=[{'input': (1, "
                                    "512)}]), or warmup=False to skip it")
                raise
        yield session
    finally:
        session.close()
        backend.close()


@pytest.fixture
def fake_tensorrt() -> ModuleType:
    """:mod:`edgert.testing.fake_tensorrt`, for ``Engine.load(..., trt_module=fake_tensorrt)``."""
    from edgert.testing import fake_tensorrt as module

    return module


@pytest.fixture
def fake_jetson(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fake Jetson (:class:`~edgert.testing.jetson.JetsonTree`) under ``tmp_path``."""
    from edgert.testing.jetson import build_jetson_tree

    marker = request.node.get_closest_marker("edgert_jetson")
    args = marker.args if marker is not None else ()
    kwargs = dict(marker.kwargs) if marker is not None else {}
    tree = build_jetson_tree(tmp_path / "jetson", *args, **kwargs)
    try:
        yield tree
    finally:
        tree.close()


class _DeviceTimed:
    """The ``edgert_benchmark`` fixture where pytest-benchmark is active."""

    @pytest.fixture
    def edgert_benchmark(self, request: pytest.FixtureRequest,
                         benchmark: Any) -> DeviceBenchmark:
        """pytest-benchmark's ``benchmark``, timed by each request's device time."""
        clock = request.node.stash.get(_CLOCK, None)
        if clock is None:  # not collected through this plugin's hook
            raise pytest.UsageError("edgert_benchmark was set up for a test that "
                                    "edgert.pytest_plugin did not see collected")
        return DeviceBenchmark(benchmark, clock)


class _NoPytestBenchmark:
    """The ``edgert_benchmark`` fixture where pytest-benchmark is missing or disabled."""

    @pytest.fixture
    def edgert_benchmark(self) -> DeviceBenchmark:
        """Skips the test: device-timed benchmarks report through pytest-benchmark."""
        pytest.skip("edgert_benchmark needs pytest-benchmark (pip install pytest-benchmark; "
                    "it is in edgert's test extra), and it is not active here")
