"""copy() on the host path, and what device memory says on a machine without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

import edgert.cuda
from edgert.errors import InvalidArgumentError, NotSupportedError, ResourceClosedError
from edgert.memory import BufferPool, DeviceBuffer, HostBuffer, PoolOptions, copy
from edgert.testing.memory import FakeAllocator

no_cuda = pytest.mark.skipif(edgert.cuda.is_available(), reason="checks the no-CUDA answers")


def test_host_copies_between_buffers_leases_and_arrays() -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 10_000, dtype=np.uint8)
    pool = BufferPool(FakeAllocator(), PoolOptions(max_bytes=1 << 20))
    with HostBuffer(10_000, device="host") as buf, pool.acquire(10_000) as lease:
        copy(buf, data)
        lease.copy_from(buf)
        out = np.zeros_like(data)
        lease.copy_to(out)
        np.testing.assert_array_equal(out, data)
        part = np.zeros(16, np.uint8)
        copy(part, buf, nbytes=16)
        np.testing.assert_array_equal(part, data[:16])
        copy(buf, bytearray(b"\x01\x02\x03"))  # any buffer-protocol object
        assert bytes(buf.view()[:3]) == b"\x01\x02\x03"


def test_copy_refuses_what_does_not_fit_or_cannot_be_written() -> None:
    with HostBuffer(64, device="host") as buf:
        with pytest.raises(InvalidArgumentError, match="cannot copy 128 bytes"):
            copy(buf, np.zeros(128, np.uint8))
        with pytest.raises(InvalidArgumentError):
            copy(buf, np.zeros(16, np.uint8), nbytes=32)
        with pytest.raises(InvalidArgumentError, match="read-only"):
            copy(b"0123", buf, nbytes=4)
        with pytest.raises(InvalidArgumentError, match="non-contiguous"):
            copy(buf, np.zeros((8, 8), np.uint8)[:, ::2])
        with pytest.raises(InvalidArgumentError, match="pageable must be"):
            copy(buf, np.zeros(8, np.uint8), pageable="sometimes")
        with pytest.raises(InvalidArgumentError, match="cannot copy"):
            copy(buf, object())
    with pytest.raises(ResourceClosedError):
        copy(buf, np.zeros(8, np.uint8))


@no_cuda
def test_device_memory_needs_cuda() -> None:
    with pytest.raises(NotSupportedError, match="CUDA is not available"):
        DeviceBuffer(1024)
    with pytest.raises(NotSupportedError):
        BufferPool.for_device(max_bytes=1 << 20)
    with pytest.raises(NotSupportedError, match="needs CUDA"):
        BufferPool.for_host(max_bytes=1 << 20, mapped=True)
    # without CUDA, the default host pool is OS-locked, not an error
    with BufferPool.for_host(max_bytes=1 << 20) as pool:
        assert pool.kind == "os_locked"
