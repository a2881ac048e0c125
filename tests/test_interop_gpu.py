"""DLPack and ``__cuda_array_interface__`` on a real GPU (``pytest -m gpu``).

cuda.core's ``StridedMemoryView`` (NVIDIA's maintained consumer of both protocols) is the
reference: edgert's exports must read the same through it, and edgert's import must agree with
it on foreign arrays. torch and cupy tests skip where those are not installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _gpu_gate import gate as _gate

from edgert import cuda
from edgert.errors import InputError
from edgert.memory import DeviceBuffer, HostBuffer
from edgert.session._validate import external_array

pytestmark = pytest.mark.gpu


@pytest.fixture
def stream() -> Iterator[cuda.Stream]:
    with cuda.Stream() as s:
        yield s


def _smv() -> Any:
    """cuda.core's StridedMemoryView, wherever this release keeps it."""
    try:
        from cuda.core.utils import StridedMemoryView
    except ImportError:
        try:
            from cuda.core.experimental.utils import StridedMemoryView
        except ImportError:
            pytest.skip("cuda.core is not installed")
    return StridedMemoryView


def _read(smv_cls: Any, obj: Any, stream_ptr: int) -> Any:
    """A StridedMemoryView of ``obj``, DLPack first as the constructor chooses; through the
    named constructors where this release has them (constructing directly is deprecated)."""
    if not hasattr(smv_cls, "from_dlpack"):
        return smv_cls(obj, stream_ptr=stream_ptr)
    if hasattr(obj, "__dlpack__"):
        return smv_cls.from_dlpack(obj, stream_ptr=stream_ptr)
    return smv_cls.from_cuda_array_interface(obj, stream_ptr=stream_ptr)


class _DLPackOnly:
    """Hides ``__cuda_array_interface__`` so that the DLPack path is the one taken."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.inner.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        return self.inner.__dlpack_device__()


def test_cuda_core_reads_edgert_exports_with_their_flags() -> None:
    smv_cls = _smv()
    with DeviceBuffer(4096) as buf:
        for readonly in (False, True):
            view = buf.view(np.float32, (16, 4), offset=256, readonly=readonly)
            by_dlpack = _read(smv_cls, view, -1)  # DLPack first, as a 1.x consumer
            cai_only = _read(smv_cls, _CaiOnly(view), -1)
            for smv in (by_dlpack, cai_only):
                assert smv.ptr == buf.ptr + 256
                assert tuple(smv.shape) == (16, 4)
                assert np.dtype(smv.dtype) == np.float32
                assert bool(smv.readonly) == readonly
                assert smv.device_id == 0
            del by_dlpack, cai_only, view
        raw = _read(smv_cls, buf, -1)
        assert (raw.ptr, tuple(raw.shape), raw.readonly) == (buf.ptr, (4096,), False)
        del raw


class _CaiOnly:
    def __init__(self, inner: Any) -> None:
        self.__cuda_array_interface__ = inner.__cuda_array_interface__
        self.inner = inner


def test_dlpack_export_orders_the_consumer_stream_after_the_producer(
        stream: cuda.Stream) -> None:
    from edgert.cuda._memapi import memcpy_async

    n = 1 << 20
    with HostBuffer(4096, mapped=True) as flag, DeviceBuffer(n) as buf, \
            HostBuffer(n) as staging, cuda.Stream() as consumer:
        buf.fill(0)
        staging.view()[:] = 0
        _gate(stream, flag)  # the producer's stream stalls until the host opens the gate
        try:
            buf.fill(7, stream=stream)  # pending on the producer's stream
            capsule = buf.__dlpack__(stream=consumer.handle, max_version=(1, 0))
            # A raw copy: only the wait that __dlpack__ enqueued orders it after the fill.
            memcpy_async(staging.ptr, buf.ptr, n, consumer.raw)
            assert not consumer.is_done()  # waiting on the gated fill, with no host block
        finally:
            flag.view(np.uint32)[0] = 1
        consumer.synchronize()
        assert (staging.view() == 7).all()
        del capsule


def test_torch_arrays_import_as_cuda_core_sees_them(stream: cuda.Stream) -> None:
    torch = pytest.importorskip("torch")
    smv_cls = _smv()
    t = torch.arange(96, dtype=torch.float32, device="cuda:0").reshape(2, 48)
    for obj in (t, _DLPackOnly(t)):
        ext = external_array("obs", obj, stream.handle, device=0)
        assert ext is not None
        smv = _read(smv_cls, obj, stream.handle)
        assert ext.device_ptr == smv.ptr == t.data_ptr()
        assert ext.shape == tuple(smv.shape) == (2, 48)
        assert ext.dtype == np.dtype(smv.dtype) == np.float32
    with pytest.raises(InputError, match=r"'obs'.*device 0.*device 1"):
        external_array("obs", t, stream.handle, device=1)
    with pytest.raises(InputError, match=r"'obs'.*device 0.*device 1"):
        external_array("obs", _DLPackOnly(t), stream.handle, device=1)
    with pytest.raises(InputError, match="'obs' is not C-contiguous"):
        external_array("obs", t.t(), stream.handle, device=0)


def test_cupy_arrays_import_and_masks_are_refused(stream: cuda.Stream) -> None:
    cupy = pytest.importorskip("cupy")
    a = cupy.arange(96, dtype=cupy.float32).reshape(2, 48)
    ext = external_array("obs", a, stream.handle, device=0)
    assert ext is not None
    assert ext.device_ptr == a.data.ptr
    masked = _CaiOnly(a)
    masked.__cuda_array_interface__ = dict(a.__cuda_array_interface__, mask=a)
    with pytest.raises(InputError, match="'obs' is a masked array"):
        external_array("obs", masked, stream.handle, device=0)


def test_host_pointers_claiming_cai_are_refused() -> None:
    from edgert.cuda._memapi import pointer_info

    host = np.zeros(96, np.float32)
    if pointer_info(host.ctypes.data).memory_type != "unregistered":
        pytest.skip("this system reports pageable memory to CUDA (HMM/ATS)")
    with pytest.raises(InputError, match="CUDA does not know its pointer"):
        external_array("obs", _Cai(host.ctypes.data), 0, device=0)


class _Cai:
    def __init__(self, ptr: int) -> None:
        self.__cuda_array_interface__ = {"shape": (96,), "typestr": "<f4", "data": (ptr, False),
                                         "version": 3, "strides": None, "stream": None}
