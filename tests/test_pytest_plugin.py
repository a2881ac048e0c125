"""edgert's pytest plugin, run in pytester sessions: fixtures, markers, device-timed benchmarks."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]


def plugin_args() -> list[str]:
    """``-p edgert.pytest_plugin`` unless the installed entry point already loads it."""
    for ep in importlib.metadata.entry_points(group="pytest11"):
        if ep.value == "edgert.pytest_plugin":
            return []
    return ["-p", "edgert.pytest_plugin"]


def test_fixtures_options_and_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import pytest
        from pathlib import Path
        from edgert.models import bundled_model_path, policy_reference

        def test_default_model_is_bundled(edgert_model, edgert_session):
            assert edgert_model == "bundled"
            obs = np.ones((1, 48), np.float32)
            out = edgert_session.infer({"obs": obs})["actions"]
            np.testing.assert_allclose(out, policy_reference(obs), rtol=1e-4, atol=1e-4)

        @pytest.mark.edgert_model(bundled_model_path(), slots=3, outputs="copy")
        def test_marker_path_and_session_options(edgert_model, edgert_session):
            assert edgert_model == bundled_model_path()
            assert edgert_session.options.slots == 3
            assert str(edgert_session.options.outputs) == "copy"

        def test_fake_tensorrt(fake_tensorrt):
            assert fake_tensorrt.EDGERT_REQUIRES_CUDA is False
            assert hasattr(fake_tensorrt, "make_plan")

        def test_fake_jetson_default(fake_jetson, tmp_path):
            from edgert.power import ThermalZones
            assert fake_jetson.root == tmp_path / "jetson" and fake_jetson.jetpack == 6
            assert ThermalZones(fake_jetson.root).read()["tj"] is not None

        @pytest.mark.edgert_jetson("jp5-agx-orin", temps={"tj": 80.0})
        def test_fake_jetson_marker(fake_jetson):
            from edgert.power import ThermalZones
            assert fake_jetson.flavour == "jp5-agx-orin"
            assert ThermalZones(fake_jetson.root).read()["tj"] == 80.0
        """)
    result = pytester.runpytest(*plugin_args(), "-q")
    result.assert_outcomes(passed=5)


def test_the_marker_gives_the_session_fixture_its_warm_up_shapes(
        pytester: pytest.Pytester) -> None:
    # A new user's trial: a model that refuses zero-filled opt shapes (an audio model at a
    # 1-sample frame) could not be used through the fixture at all, and the error's hint named
    # session.warmup(...), which a fixture user cannot call.
    pytester.makepyfile(
        """
        import pytest
        from edgert.models import bundled_model_path

        @pytest.mark.edgert_model(bundled_model_path(), warmup=[{"obs": (7, 48)}])
        def test_shapes(edgert_session):
            assert edgert_session._slots[0].inputs[0].shape == (7, 48)

        @pytest.mark.edgert_model(bundled_model_path(), warmup=False)
        def test_none(edgert_session):
            from edgert import Engine, InferenceSession
            with Engine.load(bundled_model_path()) as engine, \
                    InferenceSession(engine) as new:  # never warmed up
                want = [slot.generation for slot in new._slots]
            assert [slot.generation for slot in edgert_session._slots] == want

        @pytest.mark.edgert_model(bundled_model_path(), warmup={"obs": (5, 48)})
        def test_one_mapping(edgert_session):
            assert edgert_session._slots[0].inputs[0].shape == (5, 48)

        @pytest.mark.edgert_model(bundled_model_path(), warmup=[{"obs": (2, 47)}])
        def test_refused(edgert_session):
            pass

        @pytest.mark.edgert_model(bundled_model_path(), warmup="yes")
        def test_malformed(edgert_session):
            pass
        """)
    result = pytester.runpytest(*plugin_args(), "-q")
    result.assert_outcomes(passed=3, errors=2)
    out = result.stdout.str()
    assert "dimension 1 must be 48" in out  # shapes given: the session's own message and hint
    assert "warmup=False to skip it" not in out
    assert "the edgert_model marker's warmup must be True, False, or shapes" in out


def test_model_option_and_marker_precedence(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pathlib import Path

        def test_option(edgert_model):
            assert edgert_model == Path("from-option.onnx")

        @pytest.mark.edgert_model("from-marker.onnx")
        def test_marker_wins(edgert_model):
            assert edgert_model == Path("from-marker.onnx")
        """)
    result = pytester.runpytest(*plugin_args(), "-q", "--edgert-model", "from-option.onnx")
    result.assert_outcomes(passed=2)
    assert "--edgert-model" in "\n".join(pytester.runpytest(*plugin_args(), "--help").outlines)


def test_benchmark_stats_are_device_times(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import pytest

        OBS = np.zeros((1, 48), np.float32)

        @pytest.mark.benchmark(group="policy")
        def test_compute(edgert_session, edgert_benchmark, benchmark):
            out = edgert_benchmark(edgert_session, {"obs": OBS}, rounds=40, warmup_rounds=5)
            assert out["actions"].shape == (1, 12)
            assert len(edgert_benchmark.times_ns) == 40
            # pytest-benchmark's own data is exactly the device times, in seconds
            data = benchmark.stats.stats.data
            assert data == pytest.approx([t / 1e9 for t in edgert_benchmark.times_ns])
            assert benchmark.extra_info["edgert_stage"] == "compute"
            assert benchmark.group == "policy"  # the test's own marker options are kept

        @pytest.mark.edgert_model("bundled", device="host")
        def test_stage_the_host_does_not_record(edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": OBS}, stage="h2d", rounds=3)

        def test_no_rounds(edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": OBS}, rounds=0)

        def test_numpy_rounds(edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": OBS}, rounds=np.int64(3),
                             warmup_rounds=np.int32(1))
            assert len(edgert_benchmark.times_ns) == 3

        def test_twice(edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": OBS}, rounds=3)
            edgert_benchmark(edgert_session, {"obs": OBS}, rounds=3)

        def test_unknown_stage(edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": OBS}, stage="bogus", rounds=3)
        """)
    out = pytester.path / "bench.json"
    result = pytester.runpytest(*plugin_args(), "-q", f"--benchmark-json={out}")
    result.assert_outcomes(passed=2, failed=4)
    # a trial met pytest-benchmark's FixtureAlreadyUsed, which blames a pedantic() never called
    result.stdout.fnmatch_lines(["*InvalidArgumentError: edgert_benchmark measures one series "
                                 "per test*"])
    result.stdout.fnmatch_lines(["*Hint: measure each case in a test of its own*"])
    result.stdout.fnmatch_lines(["*stage must be one of*", "*Hint: 'compute' times*"])
    result.stdout.fnmatch_lines(["*InvalidArgumentError*records no h2d time*"])
    result.stdout.fnmatch_lines(["*InvalidArgumentError: rounds must be an int >= 1, not 0*"])
    data = json.loads(out.read_text())
    [bench] = [b for b in data["benchmarks"] if b["name"] == "test_compute"]
    assert bench["options"]["timer"] == "edgert_device_clock"
    assert bench["extra_info"]["edgert_device"] in ("host", "0")
    assert bench["stats"]["rounds"] == 40
    assert bench["stats"]["min"] > 0
    assert bench["stats"]["max"] < 0.1


def test_benchmark_requested_in_any_order_and_disable_still_runs(
        pytester: pytest.Pytester) -> None:
    # The device clock is set at collection, so a test may also request `benchmark` (to read
    # its stats), before or after edgert_benchmark.
    pytester.makepyfile(
        """
        import numpy as np

        def test_benchmark_first(benchmark, edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": np.zeros((1, 48), np.float32)}, rounds=3)
            assert benchmark.stats is None or len(benchmark.stats.stats.data) == 3
        """)
    result = pytester.runpytest(*plugin_args(), "-q")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest(*plugin_args(), "-q", "--benchmark-disable")
    result.assert_outcomes(passed=1)


def test_benchmark_only_runs_edgert_benchmarks_and_skip_skips_them(
        pytester: pytest.Pytester) -> None:
    """The documented `pytest SUITE --benchmark-only` measures edgert's benchmarks: pytest-
    benchmark counts only tests that use its `benchmark` fixture, and edgert_benchmark does."""
    pytester.makepyfile(
        """
        import numpy as np

        def test_device_timed(edgert_session, edgert_benchmark):
            edgert_benchmark(edgert_session, {"obs": np.zeros((1, 48), np.float32)}, rounds=5)

        def test_not_a_benchmark():
            pass
        """)
    out = pytester.path / "only.json"
    result = pytester.runpytest(*plugin_args(), "-q", "-rs", "--benchmark-only",
                                f"--benchmark-json={out}")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*Skipping non-benchmark (--benchmark-only active)*"])
    [bench] = json.loads(out.read_text())["benchmarks"]
    assert bench["name"] == "test_device_timed"
    assert bench["stats"]["rounds"] == 5
    result = pytester.runpytest(*plugin_args(), "-q", "--benchmark-skip")
    result.assert_outcomes(passed=1, skipped=1)  # now the benchmark is the one skipped


def test_pytest_benchmark_calling_convention_says_what_it_wants(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import pytest
        from edgert.errors import InvalidArgumentError

        def test_callable(edgert_session, edgert_benchmark):
            with pytest.raises(InvalidArgumentError) as info:
                edgert_benchmark(lambda: edgert_session.infer({"obs": np.zeros((1, 48))}))
            assert "given a function (<lambda>)" in info.value.message
            assert "edgert_benchmark(edgert_session, {'obs': obs})" in info.value.hint

        def test_extra_arguments(edgert_session, edgert_benchmark):
            with pytest.raises(InvalidArgumentError, match=r"extra arguments \\(3, iterations=\\)"):
                edgert_benchmark(edgert_session, {"obs": np.zeros((1, 48))}, 3, iterations=2)
            with pytest.raises(InvalidArgumentError, match="a session without inputs"):
                edgert_benchmark(edgert_session)

        def test_plain_benchmark_call_fails_instead_of_hanging(benchmark, edgert_benchmark):
            # pytest-benchmark would calibrate a timer that never advances for ever.
            benchmark(lambda: None)
        """)
    result = pytester.runpytest_subprocess(*plugin_args(), "-q", timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*UsageError*only edgert_benchmark(session, inputs) advances*"])
    assert "TypeError" not in result.stdout.str()


def test_without_pytest_benchmark_the_test_is_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_device_timed(edgert_benchmark):
            raise AssertionError("not reached")
        """)
    result = pytester.runpytest(*plugin_args(), "-q", "-rs", "-p", "no:benchmark")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*edgert_benchmark needs pytest-benchmark*"])


def test_without_pytest_benchmark_its_marker_is_not_refused(pytester: pytest.Pytester) -> None:
    """A suite marked with pytest-benchmark's ``benchmark`` marker is skipped, not refused by
    --strict-markers, when pytest-benchmark is disabled (found by a new user's trial)."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.benchmark(group="round trip")
        def test_device_timed(edgert_benchmark):
            raise AssertionError("not reached")
        """)
    result = pytester.runpytest(*plugin_args(), "-q", "-rs", "--strict-markers", "-p",
                                "no:benchmark")
    result.assert_outcomes(skipped=1)


def test_example_suite_runs_the_documented_way(pytester: pytest.Pytester) -> None:
    suite = REPO / "examples" / "bench_suite" / "test_policy_bench.py"
    pytester.makepyfile(test_policy_bench=suite.read_text())
    out = pytester.path / "suite.json"
    # As its docstring and docs/bench.md say: pytest examples/bench_suite --benchmark-only
    result = pytester.runpytest(*plugin_args(), "-q", "--benchmark-only",
                                f"--benchmark-json={out}")
    result.assert_outcomes(passed=4)
    names = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert set(names) == {"test_policy_compute", "test_policy_batches[1]",
                          "test_policy_batches[32]", "test_policy_round_trip"}
    assert names["test_policy_round_trip"]["extra_info"]["edgert_stage"] == "total"
    assert names["test_policy_round_trip"]["group"] == "round trip"


@pytest.mark.gpu
def test_device_times_come_from_cuda_events(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np

        def test_gpu(edgert_session, edgert_benchmark, benchmark):
            assert edgert_session.device == 0  # the bundled model as CUDA kernels
            edgert_benchmark(edgert_session, {"obs": np.zeros((1, 48), np.float32)},
                             stage="compute", rounds=50)
            assert benchmark.extra_info["edgert_clock"] == "CUDA events"
            assert max(edgert_benchmark.times_ns) < 10_000_000
        """)
    result = pytester.runpytest(*plugin_args(), "-q")
    result.assert_outcomes(passed=1)
