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
  what the GPU did rather than Python wall time. Request it instead of ``benchmark``.

How the device time reaches pytest-benchmark: ``edgert_benchmark`` puts a
``@pytest.mark.benchmark(timer=...)`` marker on the test (merged with one the test already has)
before pytest-benchmark makes its fixture. That timer is a clock that only advances by each
request's device time, so pytest-benchmark's own ``timer(); target(); timer()`` measures exactly
that, and every statistic, comparison and JSON file it produces is in device time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

__all__ = ["DeviceBenchmark", "DeviceClock"]

_STAGES = {"compute": "compute_ns", "device": "device_ns", "h2d": "h2d_ns", "d2h": "d2h_ns",
           "enqueue": "enqueue_ns", "total": "latency_ns"}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgert", "edgert: model sessions and device-timed benchmarks")
    group.addoption("--edgert-model", metavar="PATH", default=None,
                    help="model for the edgert_session fixture (.plan/.engine/.onnx); "
                         "default: edgert's bundled control policy")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "edgert_model(path=None, **session_options): the model the edgert_session "
                   "fixture loads, and InferenceSession options (io=, slots=, cuda_graph=, "
                   "sync=, runtime=...)")
    config.addinivalue_line(
        "markers", "edgert_jetson(flavour='jp6-orin-nx', **options): the fake Jetson that the "
                   "fake_jetson fixture builds (options as build_jetson_tree)")


class DeviceClock:
    """A pytest-benchmark timer that advances only by the device time fed to it.

    Attributes:
        calls: How often pytest-benchmark read it (0 means it was not used as the timer).
    """

    def __init__(self) -> None:
        self.__name__ = "edgert_device_clock"  # how pytest-benchmark names the timer
        self._ns = 0
        self.calls = 0

    def advance(self, ns: int) -> None:
        """Add one request's device time."""
        self._ns += ns

    def __call__(self) -> float:
        self.calls += 1
        return self._ns / 1e9


class DeviceBenchmark:
    """What the ``edgert_benchmark`` fixture returns: call it like ``benchmark.pedantic``."""

    def __init__(self, benchmark: Any, clock: DeviceClock) -> None:
        self.benchmark = benchmark
        self.clock = clock
        self.times_ns: list[int] = []
        """The device time of every measured round, in order."""

    def __call__(self, session: Any, inputs: Any, *, stage: str = "compute", rounds: int = 200,
                 warmup_rounds: int = 20) -> Mapping[str, Any]:
        """Run ``rounds`` requests, each timed by the device; returns the last outputs (copies).

        Args:
            session: An :class:`~edgert.session.InferenceSession` with ``timing="stages"`` (the
                default).
            inputs: The request's inputs, as for ``session.infer``.
            stage: Which time counts: ``compute`` (the executable), ``device`` (copies and
                compute), ``h2d``, ``d2h``, ``enqueue`` or ``total`` (host round trip).
            rounds: Measured requests.
            warmup_rounds: Requests run first and not counted.

        Raises:
            InvalidArgumentError: Unknown stage, or the session does not record it (e.g.
                ``device`` on the host, or copies in zero-copy I/O).
            UsageError: pytest-benchmark did not use the device clock (the test requested
                ``benchmark`` itself before ``edgert_benchmark``).
        """
        from edgert.errors import InvalidArgumentError

        field = _STAGES.get(stage)
        if field is None:
            raise InvalidArgumentError(f"stage must be one of {sorted(_STAGES)}, not {stage!r}")
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
        result = bench.pedantic(target, rounds=rounds, warmup_rounds=warmup_rounds,
                                iterations=1)
        if bench.enabled and clock.calls == calls:
            raise pytest.UsageError(
                "pytest-benchmark timed this test with its own clock, not edgert's device "
                "clock: request only edgert_benchmark (not benchmark as well), so edgert can "
                "set the timer before pytest-benchmark makes its fixture")
        del times[:-rounds]
        if bench.enabled:
            bench.extra_info.update({
                "edgert_stage": stage,
                "edgert_clock": "CUDA events" if isinstance(session.device, int) and
                stage != "total" else "host perf_counter_ns",
                "edgert_device": str(session.device),
            })
        return {name: np.array(value, copy=True) for name, value in result.items()}


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
    runtime for files (``fake`` for :mod:`edgert.testing.fake_tensorrt`).
    """
    from edgert.bench._backend import open_backend
    from edgert.session import InferenceSession

    _, kwargs = _model_marker(request)
    runtime = kwargs.pop("runtime", "auto")
    backend = open_backend(edgert_model, runtime=runtime, device=kwargs.get("device"))
    try:
        session = InferenceSession(backend.model, **kwargs)
    except BaseException:
        backend.close()
        raise
    try:
        session.warmup()
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


@pytest.fixture
def edgert_benchmark(request: pytest.FixtureRequest) -> DeviceBenchmark:
    """pytest-benchmark's ``benchmark``, timed by each request's device time (needs
    pytest-benchmark; the test is skipped without it)."""
    clock = DeviceClock()
    user = request.node.get_closest_marker("benchmark")
    options = {**(user.kwargs if user is not None else {}), "timer": clock}
    request.node.add_marker(pytest.mark.benchmark(**options), append=False)
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip("edgert_benchmark needs pytest-benchmark (pip install pytest-benchmark)")
    return DeviceBenchmark(benchmark, clock)
