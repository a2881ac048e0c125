"""GPU tier: SM partitions (green contexts) on a real device.

Partitions are made and destroyed without leaks; kernels on a partition's stream really run on
its SMs only (read from ``%smid``); sessions on partitions give the reference outputs in every
I/O x graph mode; sizes that break the device's rules are refused; the fake driver answers as
the real one does. Skipped where the driver lacks green contexts (the reason is printed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgert.errors import InvalidArgumentError
from edgert.models import OBS_DIM, policy_reference

pytestmark = pytest.mark.gpu

RTOL, ATOL = 1e-4, 1e-5

_SMID = r"""
extern "C" __global__ void smids(unsigned int* out, long long spin) {
    unsigned int id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    long long t0 = clock64();
    while (clock64() - t0 < spin) { }
    if (threadIdx.x == 0) out[blockIdx.x] = id;
}
"""
_BLOCKS = 2048


@pytest.fixture(scope="module")
def layout() -> Any:
    from edgert.cuda import green_context_support

    support = green_context_support(0)
    if not support.supported:
        pytest.skip(f"no green contexts here: {support.reason}")
    return support.layout


@pytest.fixture(scope="module")
def exe() -> Iterator[Any]:
    from edgert.testing.kernel_executable import KernelExecutable

    with KernelExecutable() as kernel_exe:
        yield kernel_exe


@pytest.fixture(scope="module")
def smid_kernel() -> Iterator[Any]:
    from edgert.cuda import compile_module

    with compile_module(_SMID, ["smids"], program_name="smid.cu") as module:
        yield module.kernel("smids")


def _sms_used(kernel: Any, stream: Any, *, graph: bool = False) -> set[int]:
    from edgert.cuda import GraphCapture, KernelArgs
    from edgert.memory import DeviceBuffer

    with DeviceBuffer(_BLOCKS * 4) as buf:
        buf.fill(0xFF)
        args = KernelArgs(["ptr", "i64"], [buf.ptr, 20_000])
        if graph:
            with GraphCapture(stream) as cap:
                kernel.launch((_BLOCKS, 1, 1), (64, 1, 1), args, stream=stream)
            with cap.graph as g:
                g.launch(stream)
                stream.synchronize()
        else:
            kernel.launch((_BLOCKS, 1, 1), (64, 1, 1), args, stream=stream)
            stream.synchronize()
        out = np.empty(_BLOCKS, np.uint32)
        buf.copy_to(out)
    assert (out != 0xFFFFFFFF).all()
    return {int(v) for v in out}


def test_layout_matches_the_device(layout: Any) -> None:
    from edgert.cuda import device_properties

    assert layout.sm_count == device_properties(0).multiprocessor_count
    assert 1 <= layout.min_partition_sms <= layout.sm_count
    assert 1 <= layout.alignment_sms <= layout.sm_count
    print(f"\nSM layout: {layout}")


def test_fake_driver_answers_like_the_real_one(layout: Any) -> None:
    from edgert.cuda import partition_sms
    from edgert.testing import FakeGreenDriver

    fake = FakeGreenDriver(sm_count=layout.sm_count, min_partition_sms=layout.min_partition_sms,
                           alignment_sms=layout.alignment_sms)
    for sizes in ([layout.legal_size(1)], [layout.legal_size(16)],
                  [layout.legal_size(16)] * 2):
        with partition_sms(sizes) as real, partition_sms(sizes, driver=fake) as faked:
            assert [p.sm_count for p in real] == [p.sm_count for p in faked] == sizes
            assert real.rest is not None
            assert faked.rest is not None
            assert real.rest.sm_count == faked.rest.sm_count
        for bad in ([layout.sm_count + layout.alignment_sms], [layout.min_partition_sms + 1]):
            if bad[0] % layout.alignment_sms == 0 and bad[0] <= layout.sm_count:
                continue
            with pytest.raises(InvalidArgumentError):
                partition_sms(bad)
            with pytest.raises(InvalidArgumentError):
                partition_sms(bad, driver=fake)


def _raw_driver_cycle(size: int) -> None:
    """What edgert's partition cycle does, in plain cuda.bindings calls: the driver's own cost."""
    from cuda.bindings import driver as d

    def ok(result: Any) -> Any:
        assert int(result[0]) == 0, result
        return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)

    dev = ok(d.cuDeviceGet(0))
    res = ok(d.cuDeviceGetDevResource(dev, d.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM))
    groups, _made, rest = ok(d.cuDevSmResourceSplitByCount(1, res, 0, size))
    ctxs = []
    for r in (groups[0], rest):
        desc = ok(d.cuDevResourceGenerateDesc([r], 1))
        ctxs.append(ok(d.cuGreenCtxCreate(
            desc, dev, int(d.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM))))
    streams = [ok(d.cuGreenCtxStreamCreate(c, int(d.CUstream_flags.CU_STREAM_NON_BLOCKING), 0))
               for c in ctxs]
    for st in streams:
        ok(d.cuStreamSynchronize(st))
        ok(d.cuStreamDestroy(st))
    for c in ctxs:
        ok(d.cuGreenCtxDestroy(c))


def test_partitions_are_made_and_destroyed_without_leaks(layout: Any) -> None:
    from cuda.bindings import runtime as rt

    from edgert.cuda import partition_sms

    def free_bytes() -> int:
        err, free, _total = rt.cudaMemGetInfo()
        assert int(err) == 0
        return int(free)

    def ours(size: int) -> None:
        with partition_sms([size]) as parts:
            streams = [parts[0].stream(priority="highest"), parts.rest.stream()]
            for s in streams:
                s.synchronize()
                s.close()

    size = layout.legal_size(16)
    ours(size)  # the first ones may initialise driver state
    _raw_driver_cycle(size)
    raw_loss = our_loss = 0
    for _ in range(20):  # interleaved, so lazy release inside the driver hits both alike
        m0 = free_bytes()
        _raw_driver_cycle(size)
        m1 = free_bytes()
        ours(size)
        m2 = free_bytes()
        raw_loss += m0 - m1
        our_loss += m1 - m2
    print(f"\ndevice memory kept over 20 cycles: driver alone {raw_loss >> 20} MiB, "
          f"edgert {our_loss >> 20} MiB")
    assert our_loss <= raw_loss + (2 << 20)


def test_sizes_the_device_refuses(layout: Any) -> None:
    from edgert.cuda import partition_sms

    align = layout.alignment_sms
    too_big = -(-(layout.sm_count + 1) // align) * align  # aligned, one step past the device
    with pytest.raises(InvalidArgumentError, match=f"need {too_big} SMs; device 0 has"):
        partition_sms([too_big], rest=False)
    if layout.alignment_sms > 1:
        with pytest.raises(InvalidArgumentError, match="alignment"):
            partition_sms([layout.legal_size(16) + 1])
    if layout.min_partition_sms > 1:
        with pytest.raises(InvalidArgumentError, match="minimum"):
            partition_sms([layout.min_partition_sms - 1])


def test_kernels_run_on_their_partition_only(layout: Any, smid_kernel: Any) -> None:
    from edgert.cuda import Stream, partition_sms

    with Stream() as whole:
        everywhere = _sms_used(smid_kernel, whole)
    assert len(everywhere) > layout.legal_size(16)  # the probe can see a leak when there is one
    with partition_sms([layout.legal_size(16)]) as parts:
        control, rest = parts[0], parts.rest
        with control.stream() as s1, rest.stream() as s2:
            mine = _sms_used(smid_kernel, s1)
            theirs = _sms_used(smid_kernel, s2)
            mine_graph = _sms_used(smid_kernel, s1, graph=True)
    print(f"\nSMs used: whole GPU {len(everywhere)}, partition {len(mine)} (graph "
          f"{len(mine_graph)}), rest {len(theirs)}")
    assert len(mine) <= control.sm_count
    assert len(theirs) <= rest.sm_count
    assert len(mine_graph) <= control.sm_count
    assert not mine_graph & theirs
    assert not mine & theirs


@pytest.mark.parametrize("slots", [1, 2])
@pytest.mark.parametrize("graphs", ["off", "on"])
@pytest.mark.parametrize("io", ["copy", "zero_copy"])
def test_sessions_on_a_partition_match_the_reference(layout: Any, exe: Any, io: str,
                                                     graphs: str, slots: int) -> None:
    from edgert.cuda import partition_sms
    from edgert.session import InferenceSession

    rng = np.random.default_rng(hash((io, graphs, slots)) % 2**32)
    with partition_sms([layout.legal_size(16)]) as parts, InferenceSession(
            exe, partition=parts[0], priority="highest", io=io, cuda_graph=graphs,
            slots=slots) as s:
        assert s.stream.priority == min(s.stream.priority, -1)  # the highest is below 0
        for batch in (1, 1, 7, 1):
            x = rng.standard_normal((batch, OBS_DIM)).astype(np.float32)
            out = s.infer({"obs": x})["actions"]
            np.testing.assert_allclose(out, policy_reference(x), rtol=RTOL, atol=ATOL)
        xs = [rng.standard_normal((1, OBS_DIM)).astype(np.float32) for _ in range(slots)]
        pending = [s.submit({"obs": x}) for x in xs]
        for x, p in zip(xs, pending, strict=True):
            np.testing.assert_allclose(p.result()["actions"], policy_reference(x), rtol=RTOL,
                                       atol=ATOL)


def test_concurrent_sessions_on_different_partitions(layout: Any, exe: Any) -> None:
    from edgert.cuda import partition_sms
    from edgert.session import InferenceSession
    from edgert.testing.kernel_executable import KernelExecutable

    errors: list[BaseException] = []
    with partition_sms([layout.legal_size(16)]) as parts, KernelExecutable() as other:
        sessions = [InferenceSession(exe, partition=parts[0], priority="highest"),
                    InferenceSession(other, partition=parts.rest)]

        def work(session: Any, seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for _ in range(300):
                    x = rng.standard_normal((3, OBS_DIM)).astype(np.float32)
                    np.testing.assert_allclose(session.infer(x)["actions"], policy_reference(x),
                                               rtol=RTOL, atol=ATOL)
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in sessions:
            s.close()
    assert not errors, errors


def test_model_group_places_control_first(layout: Any, exe: Any) -> None:
    from edgert.session import ModelGroup
    from edgert.testing.kernel_executable import KernelExecutable

    with KernelExecutable() as other, ModelGroup(control_sms=10) as group:
        policy, camera = group.control(exe), group.add(other)
        control, shared = group.placements
        assert group.partitioned
        assert control.sm_count == layout.legal_size(10)
        assert control.partition == "partition 0"
        assert shared.sm_count == layout.sm_count - control.sm_count
        assert control.priority < shared.priority
        x = np.ones((1, OBS_DIM), np.float32)
        for s in (policy, camera):
            np.testing.assert_allclose(s.infer(x)["actions"], policy_reference(x), rtol=RTOL,
                                       atol=ATOL)
    assert policy.closed
    assert camera.closed


def test_gemm_load_does_all_its_work(layout: Any) -> None:
    from edgert.bench import GpuLoad
    from edgert.cuda import partition_sms

    with partition_sms([layout.legal_size(16)]) as parts, \
            GpuLoad("gemm", partition=parts.rest) as load:
        k = load.kernels
        a_buf, b_buf, c_buf, counter = k.buffers
        n = 2048
        rng = np.random.default_rng(0)
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        a_buf.copy_from(a)
        b_buf.copy_from(b)
        c_buf.fill(0xFF)  # NaN: every element checked below must be written
        done = load.measure(0.3)
        assert done.iterations >= load.per_graph
        assert done.iterations % load.per_graph == 0
        assert done.gflops is not None
        assert done.gflops > 0
        assert f"{parts.rest.sm_count} SMs" in done.description
        assert k.grid_blocks % parts.rest.sm_count == 0
        grabs = np.empty(1, np.uint32)
        counter.copy_to(grabs)
        assert int(grabs[0]) == k.units + k.grid_blocks  # every unit, one grab past each
        c = np.empty((8, n, n), np.float32)
        c_buf.copy_to(c)
        assert not np.isnan(c).any()
        for s in (0, 7):  # slice s: A[:, 256 s : 256 (s + 1)] @ B[256 s : 256 (s + 1), :]
            k = slice(256 * s, 256 * (s + 1))
            ref = a[:, k].astype(np.float64) @ b[k, :].astype(np.float64)
            err = np.linalg.norm(c[s] - ref) / np.linalg.norm(ref)
            assert err < 1e-5, err


@pytest.mark.parametrize("kind", ["gemm", "conv"])
def test_load_executable_runs_in_a_session_on_a_partition(layout: Any, kind: str) -> None:
    from edgert.bench import LoadExecutable, LoadKernels, SessionLoad
    from edgert.cuda import partition_sms
    from edgert.session import InferenceSession

    with partition_sms([layout.legal_size(16)]) as parts:
        rest = parts.rest
        with LoadKernels(kind, sm_count=rest.sm_count) as kernels, \
                LoadExecutable(kernels) as exe, \
                InferenceSession(exe, partition=rest, priority="lowest", slots=2,
                                 cuda_graph="on", timing="off") as session:
            x = np.zeros(1, np.float32)
            y = float(session.infer({"x": x})["y"][0])
            if kind == "gemm":
                assert y == kernels.units + kernels.grid_blocks
            else:
                assert y >= 0.0  # a ReLU output
                assert np.isfinite(y)
            load = SessionLoad(session, {"x": x}, description=kind,
                               iterations_per_request=kernels.per_batch,
                               flop_per_iteration=kernels.flop_per_iteration)
            done = load.measure(0.2)
            assert done.iterations > 0
            assert done.gflops is not None


def test_run_under_load_reports_placements(layout: Any) -> None:
    from edgert.bench import run_under_load

    report = run_under_load(load="conv", reserve_sms=8, rate_hz=1000, duration_s=0.3)
    assert report.control.partition == "partition 0"
    assert report.control.sm_count == layout.legal_size(8)
    assert report.load.partition == "rest"
    assert report.load.sm_count == layout.sm_count - report.control.sm_count
    assert report.control.priority < report.load.priority
    assert report.idle.count == report.loaded.count == 300
    assert report.load_solo.iterations > 0
    print("\n" + report.render())


@pytest.mark.trt
def test_tensorrt_engine_on_a_partition(layout: Any) -> None:
    """A real TensorRT execution context enqueues on a green-context stream (tier 3)."""
    trt = pytest.importorskip("tensorrt")
    from edgert.cuda import partition_sms
    from edgert.engine import Engine
    from edgert.session import InferenceSession

    w = (np.arange(16, dtype=np.float32).reshape(4, 4) - 6.0) / 10.0
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(0)
    x_in = network.add_input("x", trt.float32, (-1, 4))
    weights = network.add_constant((4, 4), trt.Weights(np.ascontiguousarray(w)))
    product = network.add_matrix_multiply(x_in, trt.MatrixOperation.NONE,
                                          weights.get_output(0), trt.MatrixOperation.NONE)
    relu = network.add_activation(product.get_output(0), trt.ActivationType.RELU)
    relu.get_output(0).name = "y"
    network.mark_output(relu.get_output(0))
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (2, 4), (8, 4))
    config = builder.create_builder_config()
    config.add_optimization_profile(profile)
    plan = bytes(memoryview(builder.build_serialized_network(network, config)))
    rng = np.random.default_rng(3)
    with partition_sms([layout.legal_size(16)]) as parts, \
            Engine.load(plan, runtime="full") as engine:
        for io in ("copy", "zero_copy"):
            with InferenceSession(engine, partition=parts[0], priority="highest", io=io) as s:
                for batch in (1, 8, 3):
                    x = rng.standard_normal((batch, 4)).astype(np.float32)
                    np.testing.assert_allclose(s.infer({"x": x})["y"], np.maximum(x @ w, 0),
                                               rtol=1e-3, atol=1e-4)
