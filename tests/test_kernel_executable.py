"""KernelExecutable: the bundled MLP as NVRTC kernels behind the Executable protocol."""

from __future__ import annotations

import numpy as np
import pytest

from edgert.errors import NotSupportedError
from edgert.models import ACTION_DIM, MAX_BATCH, OBS_DIM, policy_reference


def test_refuses_without_cuda() -> None:
    import edgert.cuda
    from edgert.kernels import KernelExecutable

    if edgert.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(NotSupportedError, match="CUDA"):
        KernelExecutable()


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [True, False])
def test_matches_reference_directly(fused: bool) -> None:
    from edgert.cuda import Stream, capture_graph
    from edgert.kernels import KernelExecutable
    from edgert.memory import DeviceBuffer

    rng = np.random.default_rng(11)
    with KernelExecutable(fused=fused) as exe, Stream() as stream, \
            DeviceBuffer(MAX_BATCH * OBS_DIM * 4) as dx, \
            DeviceBuffer(MAX_BATCH * ACTION_DIM * 4) as dy:
        specs = {t.name: t for t in exe.tensors}
        assert specs["obs"].shape == (-1, OBS_DIM)
        assert specs["actions"].shape == (-1, ACTION_DIM)
        assert specs["obs"].profiles[0].max == (MAX_BATCH, OBS_DIM)
        assert exe.graph_capturable
        assert exe.placement == "device"
        assert exe.set_tensor_address("obs", dx.ptr)
        assert exe.set_tensor_address("actions", dy.ptr)
        for batch in (1, 2, 31, MAX_BATCH):
            x = rng.standard_normal((batch, OBS_DIM)).astype(np.float32)
            dx.copy_from(x)
            dy.fill(0xFF)  # NaN
            assert exe.set_input_shape("obs", x.shape)
            assert exe.execute_async_v3(stream.handle)
            stream.synchronize()
            y = np.empty((batch, ACTION_DIM), np.float32)
            dy.copy_to(y, nbytes=y.nbytes)
            np.testing.assert_allclose(y, policy_reference(x), rtol=1e-4, atol=1e-5)
        # Captured into a graph and replayed on new data.
        graph = capture_graph(stream, lambda: exe.execute_async_v3(stream.handle))
        with graph:
            for _ in range(3):
                x = rng.standard_normal((MAX_BATCH, OBS_DIM)).astype(np.float32)
                dx.copy_from(x)
                dy.fill(0xFF)
                graph.launch(stream)
                stream.synchronize()
                y = np.empty((MAX_BATCH, ACTION_DIM), np.float32)
                dy.copy_to(y)
                np.testing.assert_allclose(y, policy_reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_execute_without_addresses_fails_cleanly() -> None:
    from edgert.kernels import KernelExecutable

    with KernelExecutable() as exe:
        assert exe.execute_async_v3(0) is False
        assert "address" in " ".join(exe.last_errors())
    assert exe.closed


def test_old_testing_import_paths_resolve_to_the_product_class() -> None:
    # The executable moved from edgert.testing to edgert.kernels; old imports keep working.
    import edgert.testing
    from edgert.kernels import KernelExecutable
    from edgert.testing.kernel_executable import KernelExecutable as Old

    assert Old is KernelExecutable
    assert edgert.testing.KernelExecutable is KernelExecutable
    assert "KernelExecutable" not in edgert.testing.__all__
