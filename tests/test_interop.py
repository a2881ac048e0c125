"""DLPack and ``__cuda_array_interface__`` on the host: versions, read-only flags, masks, streams.

Producers here are small stand-ins (and numpy, which makes versioned and read-only capsules);
nothing dereferences their device pointers. The GPU side is in tests/test_interop_gpu.py.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest

from edgert.errors import InputError
from edgert.memory import HostBuffer
from edgert.memory._dlpack import (
    KDL_CPU,
    KDL_CUDA,
    export_count,
    read_capsule,
    request_capsule,
    to_dlpack,
)
from edgert.memory._interop import DeviceView
from edgert.session._validate import external_array

_PTR = 0x7F0000001000  # a stand-in device address; never dereferenced

# numpy exports and requests DLPack 1.x (max_version, the read-only flag) from 2.1 on; edgert
# itself does not need that (numpy >= 1.24 stays the floor), only these cross-checks do.
needs_numpy_21 = pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "2.1.0",
                                    reason="numpy < 2.1 speaks only unversioned DLPack")


def _capsule_name(capsule: object) -> bytes:
    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
        ("PyCapsule_GetName", ctypes.pythonapi))
    name: bytes = get_name(capsule)
    return name


class _Cai:
    """A device array that speaks only ``__cuda_array_interface__``."""

    def __init__(self, **changes: Any) -> None:
        self.__cuda_array_interface__: dict[str, Any] = {
            "shape": (2, 48), "typestr": "<f4", "data": (_PTR, False), "strides": None,
            "version": 3, "stream": None, "mask": None}
        self.__cuda_array_interface__.update(changes)


class _CudaDLPack:
    """A CUDA DLPack producer: records what the consumer asked for."""

    def __init__(self, *, readonly: bool = False, device_id: int = 0, legacy: bool = False,
                 shape: tuple[int, ...] = (2, 48), dtype: Any = np.float32) -> None:
        self.readonly = readonly
        self.device_id = device_id
        self.legacy = legacy
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.calls: list[dict[str, Any]] = []

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Any = None) -> Any:
        self.calls.append({"stream": stream, "max_version": max_version})
        return to_dlpack(_PTR, 0, self.shape, self.dtype, device_type=KDL_CUDA,
                         device_id=self.device_id, owner=self,
                         max_version=None if self.legacy else max_version,
                         readonly=self.readonly)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (KDL_CUDA, self.device_id)


class _LegacyOnly:
    """A producer from before DLPack 1.0: ``__dlpack__`` knows only ``stream``."""

    def __init__(self) -> None:
        self.inner = _CudaDLPack()

    def __dlpack__(self, stream: Any = None) -> Any:
        return self.inner.__dlpack__(stream=stream)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (KDL_CUDA, 0)


# -- export: versions and the read-only flag ---------------------------------------------------

@pytest.mark.parametrize(("max_version", "name"), [
    (None, b"dltensor"), ((0, 8), b"dltensor"), ((1, 0), b"dltensor_versioned"),
    ((1, 3), b"dltensor_versioned"), ((2, 0), b"dltensor_versioned")])
def test_the_capsule_follows_the_consumers_max_version(max_version: Any, name: bytes) -> None:
    src = np.arange(6, dtype=np.float32)
    capsule = to_dlpack(src.ctypes.data, 0, src.shape, src.dtype, device_type=KDL_CPU,
                        device_id=0, owner=src, max_version=max_version)
    assert _capsule_name(capsule) == name
    tensor = read_capsule(capsule)
    # The version written is the one this module implements, never the consumer's maximum.
    assert tensor.version == (None if name == b"dltensor" else (1, 0))
    assert tensor.shape == (6,)
    assert tensor.dtype == np.float32
    del tensor, capsule


@pytest.mark.parametrize("bad", [(1,), "1.0", (1, "x"), 3])
def test_a_malformed_max_version_is_refused(bad: object) -> None:
    with HostBuffer(64, device="host") as buf, pytest.raises(BufferError, match="max_version"):
        buf.__dlpack__(max_version=bad)  # type: ignore[arg-type]


@needs_numpy_21
def test_a_read_only_export_sets_the_flag_and_numpy_honours_it() -> None:
    src = np.arange(6, dtype=np.int32)

    class ReadOnly:
        def __dlpack__(self, *, stream: Any = None, max_version: Any = None,
                       dl_device: Any = None, copy: Any = None) -> Any:
            return to_dlpack(src.ctypes.data, 0, src.shape, src.dtype, device_type=KDL_CPU,
                             device_id=0, owner=src, max_version=max_version, readonly=True)

        def __dlpack_device__(self) -> tuple[int, int]:
            return (KDL_CPU, 0)

    before = export_count()
    out = np.from_dlpack(ReadOnly())  # numpy >= 2.1 asks for max_version=(1, x)
    assert not out.flags.writeable
    np.testing.assert_array_equal(out, src)
    assert read_capsule(ReadOnly().__dlpack__(max_version=(1, 0))).readonly
    # A consumer that cannot see the flag gets nothing rather than writable memory.
    with pytest.raises(BufferError, match="read-only"):
        ReadOnly().__dlpack__()
    del out
    assert export_count() == before


def test_a_read_only_device_view_exports_the_flag_through_both_protocols() -> None:
    keep = object()
    view = DeviceView(keep, _PTR, offset=16, dtype=np.dtype(np.float32), shape=(4,), device=0,
                      readonly=True)
    assert view.readonly
    cai = view.__cuda_array_interface__
    assert cai["data"] == (_PTR + 16, True)
    assert cai["mask"] is None
    assert cai["version"] == 3
    assert "stream" in cai
    capsule = view.__dlpack__(max_version=(1, 0))
    tensor = read_capsule(capsule)
    assert tensor.readonly
    assert tensor.ptr == _PTR + 16
    assert (tensor.device_type, tensor.device_id) == (KDL_CUDA, 0)
    with pytest.raises(BufferError, match="read-only"):
        view.__dlpack__()
    writable = DeviceView(keep, _PTR, offset=0, dtype=np.dtype(np.uint8), shape=(8,), device=0)
    assert writable.__cuda_array_interface__["data"] == (_PTR, False)
    assert not read_capsule(writable.__dlpack__(max_version=(1, 0))).readonly
    assert "readonly" in repr(view)
    del capsule


def test_host_buffer_exports_a_versioned_capsule_when_asked() -> None:
    with HostBuffer(64, device="host") as buf:
        capsule = buf.__dlpack__(max_version=(1, 0))
        assert _capsule_name(capsule) == b"dltensor_versioned"
        tensor = read_capsule(capsule)
        assert (tensor.ptr, tensor.shape, tensor.readonly) == (buf.ptr, (64,), False)
        del tensor, capsule
        arr = np.from_dlpack(buf)
        arr[3] = 9
        assert buf.view()[3] == 9
        del arr


# -- import: capsules --------------------------------------------------------------------------

@needs_numpy_21
def test_read_capsule_reads_numpy_capsules_of_both_versions() -> None:
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    for capsule, major in ((arr.__dlpack__(), None), (arr.__dlpack__(max_version=(1, 0)), 1)):
        tensor = read_capsule(capsule)
        assert (tensor.version and tensor.version[0]) == major  # numpy picks the minor
        assert tensor.ptr == arr.ctypes.data
        assert tensor.shape == (3, 2)
        assert tensor.strides == (4, 2)  # elements, not bytes
        assert tensor.dtype == np.float64
        assert not tensor.readonly
    frozen = np.array([True, False, True])
    frozen.flags.writeable = False
    tensor = read_capsule(frozen.__dlpack__(max_version=(1, 0)))
    assert tensor.readonly
    assert tensor.dtype == np.bool_


def test_read_capsule_refuses_what_it_cannot_read() -> None:
    with pytest.raises(BufferError, match="not a PyCapsule"):
        read_capsule(object())
    other = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                              ctypes.c_void_p)(("PyCapsule_New", ctypes.pythonapi))
    keep = ctypes.c_int(0)
    used = other(ctypes.addressof(keep), b"used_dltensor", None)
    with pytest.raises(BufferError, match="used_dltensor"):
        read_capsule(used)


def test_a_later_major_version_is_refused_not_misread() -> None:
    producer = _CudaDLPack()
    capsule = producer.__dlpack__(max_version=(1, 0))
    get = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    ptr = get(capsule, b"dltensor_versioned")
    ctypes.c_uint32.from_address(ptr).value = 2  # DLManagedTensorVersioned.version.major
    with pytest.raises(BufferError, match=r"version 2\.0"):
        read_capsule(capsule)
    del capsule


def test_request_capsule_offers_1x_and_falls_back_for_old_producers() -> None:
    modern = _CudaDLPack()
    assert read_capsule(request_capsule(modern, 5)).version == (1, 0)
    assert modern.calls == [{"stream": 5, "max_version": (1, 0)}]
    old = _LegacyOnly()
    assert read_capsule(request_capsule(old, 5)).version is None
    assert old.inner.calls == [{"stream": 5, "max_version": None}]


# -- import into a session: external_array -------------------------------------------------------

def test_cai_input_is_described_and_its_stream_kept() -> None:
    ext = external_array("obs", _Cai(stream=7), 0)
    assert ext is not None
    assert (ext.device_ptr, ext.shape, ext.dtype, ext.stream) == (_PTR, (2, 48),
                                                                   np.float32, 7)
    ro = external_array("obs", _Cai(data=(_PTR, True)), 0)  # read-only is fine for an input
    assert ro is not None
    old = _Cai(version=2)
    del old.__cuda_array_interface__["mask"], old.__cuda_array_interface__["stream"]
    assert external_array("obs", old, 0) is not None


def test_cai_with_a_mask_is_refused_naming_the_tensor() -> None:
    mask = _Cai(mask=_Cai(typestr="|b1"))
    with pytest.raises(InputError, match="'obs' is a masked array"):
        external_array("obs", mask, 0)


def test_cai_read_only_memory_cannot_receive_an_output() -> None:
    with pytest.raises(InputError, match="'actions' is read-only"):
        external_array("actions", _Cai(data=(_PTR, True)), 0, writable=True)
    assert external_array("actions", _Cai(), 0, writable=True) is not None


@pytest.mark.parametrize(("changes", "match"), [
    ({"version": 4}, "version 4"), ({"version": None}, "version None"),
    ({"stream": 0}, "stream 0"), ({"data": None}, "malformed"),
    ({"typestr": "<x9"}, "malformed")])
def test_cai_that_cannot_be_honoured_is_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        external_array("obs", _Cai(**changes), 0)
    assert "'obs'" in str(info.value)


def test_dlpack_input_passes_the_sessions_stream_and_asks_for_1x() -> None:
    producer = _CudaDLPack(readonly=True)  # read-only is fine for an input
    ext = external_array("obs", producer, 0x55, device=0)
    assert ext is not None
    assert (ext.device_ptr, ext.shape, ext.dtype) == (_PTR, (2, 48), np.float32)
    assert producer.calls == [{"stream": 0x55, "max_version": (1, 0)}]
    # No session stream handle (0) means the legacy default stream, never "no sync" (-1).
    external_array("obs", producer, 0)
    assert producer.calls[-1]["stream"] == 1
    assert external_array("obs", _LegacyOnly(), 3) is not None


def test_dlpack_read_only_tensor_cannot_receive_an_output() -> None:
    with pytest.raises(InputError, match="'actions' is a read-only DLPack tensor"):
        external_array("actions", _CudaDLPack(readonly=True), 0, writable=True)
    assert external_array("actions", _CudaDLPack(), 0, writable=True) is not None


def test_dlpack_on_another_gpu_is_refused() -> None:
    with pytest.raises(InputError, match=r"'obs'.*device 1.*device 0"):
        external_array("obs", _CudaDLPack(device_id=1), 0, device=0)
    assert external_array("obs", _CudaDLPack(device_id=1), 0, device=1) is not None


def test_dlpack_refusals_name_the_tensor() -> None:
    class Refuses(_CudaDLPack):
        def __dlpack__(self, **kwargs: Any) -> Any:
            raise BufferError("cannot export a sparse tensor")

    with pytest.raises(InputError, match=r"'obs'.*sparse"):
        external_array("obs", Refuses(), 0)

    class NoStream(_CudaDLPack):
        def __dlpack__(self) -> Any:  # type: ignore[override]  # before the stream argument
            return super().__dlpack__()

    with pytest.raises(InputError, match=r"'obs'.*DLPack export failed"):
        external_array("obs", NoStream(), 0)
    with pytest.raises(InputError, match=r"'obs'.*no numpy equivalent"):
        external_array("obs", _BFloat16(dtype=np.float16), 0)


class _BFloat16(_CudaDLPack):
    """Relabels a 16-bit tensor as bfloat16, which DLPack has and numpy does not."""

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Any = None) -> Any:
        capsule = super().__dlpack__(stream=stream, max_version=max_version)
        get = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", ctypes.pythonapi))
        ptr = get(capsule, b"dltensor_versioned")
        # DLManagedTensorVersioned: version(8) manager_ctx(8) deleter(8) flags(8), then the
        # DLTensor: data(8) device(8) ndim(4) dtype{code u8, bits u8, lanes u16}.
        ctypes.c_uint8.from_address(ptr + 32 + 8 + 8 + 4).value = 4  # kDLBfloat
        return capsule


def test_host_dlpack_is_not_a_device_array() -> None:
    assert external_array("obs", np.zeros((2, 48), np.float32), 0) is None
    with HostBuffer(64, device="host") as buf:
        assert external_array("obs", buf, 0) is None  # unmapped: no CAI, kDLCPU DLPack
