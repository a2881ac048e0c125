"""Thin, typed memory calls into the CUDA runtime: ints in, ints out.

:mod:`edgert.memory` builds its buffers and pools on these. They are the hot path (a pool-backed
copy is one :func:`memcpy_async`), so each is one cuda-python call plus a status test: no
wrapper objects, no dict lookups. cuda-python accepts plain ints for ``void*`` parameters and for
streams (a raw ``cudaStream_t`` object is accepted too and is slightly cheaper).

Flag values are the CUDA ABI's own (``cuda_runtime_api.h``); they have not changed since CUDA 4
and are spelled out here so that callers need not load the bindings to build a flag word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgert.cuda._api import raise_cuda, runtime
from edgert.cuda._stream import _OnDevice

__all__ = [
    "HOST_ALLOC_MAPPED",
    "HOST_ALLOC_PORTABLE",
    "HOST_ALLOC_WRITE_COMBINED",
    "HOST_REGISTER_MAPPED",
    "HOST_REGISTER_PORTABLE",
    "PointerInfo",
    "device_free",
    "device_malloc",
    "free_async",
    "free_host",
    "host_alloc",
    "host_device_pointer",
    "host_register",
    "host_unregister",
    "malloc_async",
    "mem_get_info",
    "memcpy",
    "memcpy_async",
    "memset_async",
    "pointer_info",
    "stream_synchronize",
    "stream_wait_event",
]

HOST_ALLOC_PORTABLE = 0x01
HOST_ALLOC_MAPPED = 0x02
HOST_ALLOC_WRITE_COMBINED = 0x04
HOST_REGISTER_PORTABLE = 0x01
HOST_REGISTER_MAPPED = 0x02

# Bound on first use so that importing this module never loads cuda-python.
_RT: Any = None
_KIND_DEFAULT: Any = None


def _bind() -> Any:
    global _RT, _KIND_DEFAULT
    rt = runtime()
    _KIND_DEFAULT = rt.cudaMemcpyKind.cudaMemcpyDefault
    _RT = rt
    return rt


def host_alloc(nbytes: int, flags: int, device: int) -> int:
    """``cudaHostAlloc``: page-locked host memory; returns its host address.

    Raises:
        CudaError: The allocation failed (``cudaErrorMemoryAllocation`` when it does not fit).
    """
    rt = _RT if _RT is not None else _bind()
    with _OnDevice(device):
        err, ptr = rt.cudaHostAlloc(nbytes, flags)
    if err:
        raise_cuda(err, call="cudaHostAlloc")
    return int(ptr)


def free_host(ptr: int) -> None:
    """``cudaFreeHost``.

    Raises:
        CudaError: The pointer was not from ``cudaHostAlloc``.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaFreeHost(ptr)[0]
    if err:
        raise_cuda(err, call="cudaFreeHost")


def host_device_pointer(ptr: int, device: int) -> int:
    """``cudaHostGetDevicePointer``: the device address of mapped host memory.

    Raises:
        CudaError: The memory is not mapped for ``device``.
    """
    rt = _RT if _RT is not None else _bind()
    with _OnDevice(device):
        err, dptr = rt.cudaHostGetDevicePointer(ptr, 0)
    if err:
        raise_cuda(err, call="cudaHostGetDevicePointer")
    return int(dptr)


def host_register(ptr: int, nbytes: int, flags: int, device: int) -> None:
    """``cudaHostRegister``: page-lock existing host memory.

    Raises:
        CudaError: The range is already registered, or the OS refused to lock it.
    """
    rt = _RT if _RT is not None else _bind()
    with _OnDevice(device):
        err = rt.cudaHostRegister(ptr, nbytes, flags)[0]
    if err:
        raise_cuda(err, call="cudaHostRegister")


def host_unregister(ptr: int) -> None:
    """``cudaHostUnregister``.

    Raises:
        CudaError: The range was not registered.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaHostUnregister(ptr)[0]
    if err:
        raise_cuda(err, call="cudaHostUnregister")


def device_malloc(nbytes: int, device: int) -> int:
    """``cudaMalloc`` on ``device``; returns the device address.

    Raises:
        CudaError: The allocation failed.
    """
    rt = _RT if _RT is not None else _bind()
    with _OnDevice(device):
        err, ptr = rt.cudaMalloc(nbytes)
    if err:
        raise_cuda(err, call="cudaMalloc")
    return int(ptr)


def device_free(ptr: int) -> None:
    """``cudaFree`` (synchronizes the device).

    Raises:
        CudaError: The pointer is not a device allocation.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaFree(ptr)[0]
    if err:
        raise_cuda(err, call="cudaFree")


def malloc_async(nbytes: int, stream: Any, device: int) -> int:
    """``cudaMallocAsync``: stream-ordered allocation from the device's default pool.

    Raises:
        CudaError: The allocation failed or the device has no memory pools.
    """
    rt = _RT if _RT is not None else _bind()
    with _OnDevice(device):
        err, ptr = rt.cudaMallocAsync(nbytes, stream)
    if err:
        raise_cuda(err, call="cudaMallocAsync")
    return int(ptr)


def free_async(ptr: int, stream: Any) -> None:
    """``cudaFreeAsync``: return stream-ordered memory once ``stream`` reaches this point.

    Raises:
        CudaError: The runtime refused.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaFreeAsync(ptr, stream)[0]
    if err:
        raise_cuda(err, call="cudaFreeAsync")


def memcpy_async(dst: int, src: int, nbytes: int, stream: Any) -> None:
    """``cudaMemcpyAsync`` with ``cudaMemcpyDefault`` (direction from unified addressing).

    Raises:
        CudaError: The runtime refused (bad pointer, size or stream).
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaMemcpyAsync(dst, src, nbytes, _KIND_DEFAULT, stream)[0]
    if err:
        raise_cuda(err, call="cudaMemcpyAsync")


def memcpy(dst: int, src: int, nbytes: int) -> None:
    """``cudaMemcpy`` (synchronous, legacy default stream).

    Raises:
        CudaError: The runtime refused, or earlier work failed.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaMemcpy(dst, src, nbytes, _KIND_DEFAULT)[0]
    if err:
        raise_cuda(err, call="cudaMemcpy")


def memset_async(ptr: int, value: int, nbytes: int, stream: Any) -> None:
    """``cudaMemsetAsync``: set ``nbytes`` bytes at a device(-visible) address to ``value``.

    Raises:
        CudaError: The runtime refused.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaMemsetAsync(ptr, value, nbytes, stream)[0]
    if err:
        raise_cuda(err, call="cudaMemsetAsync")


def stream_synchronize(stream: Any) -> None:
    """``cudaStreamSynchronize`` on a raw handle (int or ``cudaStream_t``).

    Raises:
        CudaError: Work on the stream failed.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaStreamSynchronize(stream)[0]
    if err:
        raise_cuda(err, call="cudaStreamSynchronize")


def stream_wait_event(stream: Any, event: Any) -> None:
    """``cudaStreamWaitEvent``: later work on ``stream`` waits for ``event`` (raw handles).

    Raises:
        CudaError: The runtime refused.
    """
    rt = _RT if _RT is not None else _bind()
    err = rt.cudaStreamWaitEvent(stream, event, 0)[0]
    if err:
        raise_cuda(err, call="cudaStreamWaitEvent")


@dataclass(frozen=True, kw_only=True, slots=True)
class PointerInfo:
    """What CUDA knows about an address.

    Attributes:
        memory_type: ``"unregistered"`` (ordinary pageable host memory), ``"host"`` (page-locked
            by CUDA), ``"device"`` or ``"managed"``.
        device: The device the memory belongs to (-1 when unregistered).
        device_ptr: The address as the device sees it, or None.
        host_ptr: The address as the host sees it, or None.
    """

    memory_type: str
    device: int
    device_ptr: int | None
    host_ptr: int | None


_MEMORY_TYPES = {0: "unregistered", 1: "host", 2: "device", 3: "managed"}


def pointer_info(ptr: int) -> PointerInfo:
    """``cudaPointerGetAttributes``.

    Raises:
        CudaError: The runtime refused.
    """
    rt = _RT if _RT is not None else _bind()
    err, attrs = rt.cudaPointerGetAttributes(ptr)
    if err:
        raise_cuda(err, call="cudaPointerGetAttributes")
    dptr = int(attrs.devicePointer)
    hptr = int(attrs.hostPointer)
    return PointerInfo(memory_type=_MEMORY_TYPES.get(int(attrs.type), "unregistered"),
                       device=int(attrs.device), device_ptr=dptr or None, host_ptr=hptr or None)


def mem_get_info(device: int) -> tuple[int, int]:
    """``cudaMemGetInfo`` on ``device``: ``(free_bytes, total_bytes)``.

    Raises:
        CudaError: The runtime refused.
    """
    rt = _RT if _RT is not None else _bind()
    with _OnDevice(device):
        err, free, total = rt.cudaMemGetInfo()
    if err:
        raise_cuda(err, call="cudaMemGetInfo")
    return int(free), int(total)
