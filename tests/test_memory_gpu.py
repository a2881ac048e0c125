"""The memory layer on a real GPU (``pytest -m gpu`` on the device machine).

Skipped cleanly where CUDA is unavailable (tests/conftest.py); torch tests also skip without torch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from _gpu_gate import gate as _gate

from edgert import cuda
from edgert.errors import InvalidArgumentError, NotSupportedError, PoolExhausted
from edgert.memory import (
    BufferPool,
    DeviceBuffer,
    HostBuffer,
    MemoryKind,
    PageableCopyWarning,
    copy,
)

pytestmark = pytest.mark.gpu

MIB = 1 << 20


@pytest.fixture
def stream() -> Iterator[cuda.Stream]:
    with cuda.Stream() as s:
        yield s


def _memapi():  # type: ignore[no-untyped-def]
    from edgert.cuda import _memapi

    return _memapi


def test_pinned_mapped_and_write_combined_allocation() -> None:
    api = _memapi()
    with HostBuffer(MIB) as pinned:
        assert pinned.kind is MemoryKind.PINNED
        assert pinned.is_pinned
        assert api.pointer_info(pinned.ptr).memory_type == "host"
        assert not hasattr(pinned, "__cuda_array_interface__")
    with HostBuffer(MIB, mapped=True, portable=True) as mapped:
        assert mapped.is_mapped
        assert mapped.is_portable
        info = api.pointer_info(mapped.ptr)
        assert info.memory_type == "host"
        assert info.device_ptr == mapped.device_ptr
        cai = mapped.__cuda_array_interface__
        assert cai["data"] == (mapped.device_ptr, False)
        assert cai["version"] == 3
    with HostBuffer(MIB, write_combined=True) as wc:
        assert wc.is_write_combined
        wc.view(np.uint32)[:] = 7  # write only: reading WC memory from the CPU is slow


@pytest.mark.parametrize("nbytes", [1, 3, 4096, 65_537, MIB, 64 * MIB])
def test_copies_are_byte_exact(nbytes: int, stream: cuda.Stream) -> None:
    data = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
    with HostBuffer(nbytes) as src, HostBuffer(nbytes) as dst, DeviceBuffer(nbytes) as dev:
        src.view()[:] = data
        dev.copy_from(src, stream=stream)
        assert dev.stream is stream
        dev.copy_to(dst, stream=stream)
        stream.synchronize()
        np.testing.assert_array_equal(dst.view(), data)
        # synchronous copies, and pageable arrays under each policy
        out = np.zeros(nbytes, np.uint8)
        dev.copy_to(out)
        np.testing.assert_array_equal(out, data)
        with pytest.raises(InvalidArgumentError, match="pageable"):
            dev.copy_from(data, stream=stream)
        dev.fill(0)
        dev.copy_from(data, stream=stream, pageable="sync")
        out[:] = 0
        with pytest.warns(PageableCopyWarning):
            dev.copy_to(out, stream=stream, pageable="warn")
        np.testing.assert_array_equal(out, data)


def test_pool_to_pool_round_trip_and_registered_arrays(stream: cuda.Stream) -> None:
    n = 3 * MIB + 5
    data = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    with BufferPool.for_host(max_bytes=16 * MIB) as hpool, \
            BufferPool.for_device(max_bytes=16 * MIB) as dpool:
        assert hpool.kind is MemoryKind.PINNED
        assert dpool.kind is MemoryKind.DEVICE
        hpool.prewarm({n: 2})
        dpool.prewarm({n: 1})
        with hpool.acquire(n) as a, hpool.acquire(n) as b, dpool.acquire(n) as d:
            a.view()[:] = data
            d.copy_from(a, stream=stream)
            d.copy_to(b, stream=stream)
            stream.synchronize()
            np.testing.assert_array_equal(b.view(), data)
            with pytest.raises(NotSupportedError, match="no host view"):
                d.view()
        registered_src = data.copy()
        with HostBuffer.register(registered_src) as reg:
            assert reg.kind is MemoryKind.REGISTERED
            with DeviceBuffer(n) as dev:
                copy(dev, registered_src, stream=stream)  # registered: asynchronous is allowed
                back = np.zeros(n, np.uint8)
                dev.copy_to(back, stream=stream, pageable="sync")
                np.testing.assert_array_equal(back, data)


def test_mapped_memory_written_by_the_device_is_seen_by_the_host(stream: cuda.Stream) -> None:
    api = _memapi()
    with HostBuffer(MIB, mapped=True) as buf:
        buf.view()[:] = 0
        api.memset_async(buf.device_ptr, 0xAB, MIB, stream.raw)
        stream.synchronize()
        assert (buf.view() == 0xAB).all()


def test_stream_ordered_device_allocation(stream: cuda.Stream) -> None:
    buf = DeviceBuffer(MIB, stream=stream)
    buf.fill(3, stream=stream)
    host = np.zeros(MIB, np.uint8)
    buf.copy_to(host, stream=stream, pageable="sync")
    assert (host == 3).all()
    cai = buf.__cuda_array_interface__
    assert cai["stream"] == stream.handle
    buf.close()
    with cuda.Stream() as other:
        late = DeviceBuffer(4096, stream=other)
    late.close()  # its stream is gone: freed with cudaFree instead of on the stream


def test_stream_ordered_release_with_real_events(stream: cuda.Stream) -> None:
    with HostBuffer(4096, mapped=True) as flag, \
            BufferPool.for_device(max_bytes=MIB) as pool:
        _gate(stream, flag)  # the stream stalls here until the host opens the gate
        lease = pool.acquire(MIB)
        ptr = lease.ptr
        try:
            _memapi().memset_async(ptr, 1, MIB, stream.raw)
            lease.release(stream=stream)
            assert pool.stats().pending_bytes == MIB
            with pytest.raises(PoolExhausted, match="wait for stream work"):
                pool.acquire(MIB)
        finally:
            flag.view(np.uint32)[0] = 1  # open the gate
        again = pool.acquire(MIB, timeout=30)
        assert again.ptr == ptr
        host = np.zeros(MIB, np.uint8)
        again.copy_to(host)
        assert (host == 1).all()  # the work before the release really finished first
        again.release()


# -- torch interop -----------------------------------------------------------------------------

def test_dlpack_and_cai_round_trips_with_torch(stream: cuda.Stream) -> None:
    torch = pytest.importorskip("torch")
    n = 1024
    data = np.arange(n, dtype=np.float32)
    with DeviceBuffer(n * 4) as buf:
        buf.copy_from(data, stream=stream, pageable="sync")
        t = torch.from_dlpack(buf)
        assert t.device.type == "cuda"
        assert t.dtype == torch.uint8
        assert t.data_ptr() == buf.ptr
        view = buf.view(np.float32, (32, 32))
        typed = torch.as_tensor(view, device="cuda")  # __cuda_array_interface__
        assert typed.data_ptr() == buf.ptr
        assert typed.shape == (32, 32)
        typed2 = torch.from_dlpack(view)
        assert typed2.data_ptr() == buf.ptr
        torch.testing.assert_close(typed2.flatten().cpu(), torch.from_numpy(data))
        typed.mul_(2)  # torch writes, we read it back
        torch.cuda.synchronize()
        out = np.zeros(n, np.float32)
        buf.copy_to(out)
        np.testing.assert_array_equal(out, data * 2)
        assert buf.export_count >= 2  # the view and the DLPack import hold the memory
        del t, typed2
    # closed, but `typed` (through the view) still owns valid memory
    assert float(typed[0, 1].item()) == 2.0
    del typed, view


def test_torch_reads_pool_leases_and_mapped_memory(stream: cuda.Stream) -> None:
    torch = pytest.importorskip("torch")
    with BufferPool.for_device(max_bytes=4 * MIB) as pool:
        lease = pool.acquire(4096)
        lease.copy_from(np.full(4096, 5, np.uint8), stream=stream, pageable="sync")
        t = torch.from_dlpack(lease)
        assert t.data_ptr() == lease.ptr
        assert int(t.sum().item()) == 5 * 4096
        lease.release()
        assert pool.stats().pending_bytes == 4096  # torch still holds it
        del t
        assert pool.stats().pending_bytes == 0
    with HostBuffer(4096, mapped=True) as buf:
        buf.view()[:] = 9
        t = torch.as_tensor(buf, device="cuda")
        assert int(t.sum().item()) == 9 * 4096
        host_t = torch.from_dlpack(buf)
        assert host_t.device.type == "cpu"
        assert host_t.data_ptr() == buf.ptr
        dv = torch.from_dlpack(buf.device_view(np.int32, 1024))
        assert int(dv[0].item()) == 0x09090909
        del t, host_t, dv


def test_host_pool_with_cuda_is_pinned() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with BufferPool.for_host(max_bytes=8 * MIB) as pool:
            pool.prewarm({MIB: 2})
            lease = pool.acquire(MIB)
            assert lease.kind is MemoryKind.PINNED
            assert _memapi().pointer_info(lease.ptr).memory_type == "host"
            lease.release()
