"""Copies between host buffers, device buffers, pool leases and numpy arrays.

A copy with ``stream=`` is enqueued with ``cudaMemcpyAsync`` and returns at once, provided the
host side is page-locked by CUDA. From or to pageable memory (a plain numpy array, or OS-locked
memory, which CUDA does not know is locked) the driver stages the copy through its own buffer
and the call blocks, so an "asynchronous" copy would quietly stall the loop: ``pageable=``
decides what happens then. A copy with ``stream=None`` is synchronous (it returns when the bytes
have arrived) and is not ordered with any stream: synchronize your streams first.
"""

from __future__ import annotations

import ctypes
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from edgert._compat import StrEnum
from edgert.cuda import _memapi as api  # loads no CUDA until a call is made
from edgert.errors import InvalidArgumentError
from edgert.memory._allocation import Allocation, MemoryKind

if TYPE_CHECKING:
    from edgert.cuda import StreamLike

__all__ = ["PageableCopyWarning", "PageablePolicy", "copy", "copy_impl"]

_CUDA_LOCKED = (MemoryKind.PINNED, MemoryKind.REGISTERED)


class PageablePolicy(StrEnum):
    """What a copy with ``stream=`` does when the host side is pageable.

    Attributes:
        ERROR: Refuse with :class:`~edgert.InvalidArgumentError` (the default: a real-time loop
            must not stall on a hidden staging copy).
        WARN: Emit :class:`PageableCopyWarning`, then copy synchronously.
        SYNC: Copy synchronously, silently: enqueue on the stream and wait for it.
    """

    ERROR = "error"
    WARN = "warn"
    SYNC = "sync"


_POLICIES = frozenset(str(p) for p in PageablePolicy)
_ERROR = PageablePolicy.ERROR


class PageableCopyWarning(UserWarning):
    """A copy asked for a stream but the host memory is pageable, so it ran synchronously."""


def _array_operand(obj: Any, writable: bool) -> tuple[int, int, MemoryKind]:
    if isinstance(obj, np.ndarray):
        arr = obj
    else:
        try:
            arr = np.frombuffer(memoryview(obj), dtype=np.uint8)
        except (TypeError, BufferError, ValueError) as err:
            raise InvalidArgumentError(
                f"cannot copy {'to' if writable else 'from'} {type(obj).__name__}: {err}",
                hint="pass a HostBuffer, DeviceBuffer, pool lease, or contiguous numpy array",
            ) from err
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        raise InvalidArgumentError("cannot copy a non-contiguous array in one transfer",
                                   hint="copy np.ascontiguousarray(a) instead")
    if writable and not arr.flags.writeable:
        raise InvalidArgumentError("the copy's destination is read-only")
    ptr = int(arr.__array_interface__["data"][0])
    base: object = arr.base
    for _ in range(8):  # numpy collapses view chains; pool blocks add two links
        if base is None or isinstance(base, Allocation):
            break
        base = getattr(base, "base", None)
    if isinstance(base, Allocation):
        return ptr, arr.nbytes, base.kind
    from edgert.cuda import is_available

    if is_available() and arr.nbytes:
        from edgert.cuda._memapi import pointer_info

        mtype = pointer_info(ptr).memory_type
        if mtype == "host":
            return ptr, arr.nbytes, MemoryKind.REGISTERED
    return ptr, arr.nbytes, MemoryKind.PAGEABLE


def _operand(obj: Any, writable: bool) -> tuple[int, int, MemoryKind]:
    op = getattr(obj, "_memory_operand", None)
    if op is not None:
        result: tuple[int, int, MemoryKind] = op()
        return result
    return _array_operand(obj, writable)


def _raw_stream(stream: StreamLike) -> Any:
    raw = getattr(stream, "raw", None)
    if raw is not None:
        return raw
    from edgert.cuda import as_stream_handle

    return as_stream_handle(stream)


def _note_stream(obj: Any, stream: Any) -> None:
    note = getattr(obj, "_note_stream", None)
    if note is not None:
        note(stream)


def copy(dst: Any, src: Any, *, nbytes: int | None = None, stream: StreamLike | None = None,
         pageable: PageablePolicy | str = PageablePolicy.ERROR, _stacklevel: int = 2) -> None:
    """Copy ``nbytes`` bytes (default: all of ``src``) from ``src`` to ``dst``.

    Either side may be a :class:`HostBuffer`, :class:`DeviceBuffer`, pool :class:`Lease` or a
    contiguous numpy array (or other buffer-protocol object); the direction follows from where
    each side lives.

    Args:
        dst: Destination.
        src: Source.
        nbytes: Bytes to copy; at most the size of either side.
        stream: An :class:`edgert.cuda.Stream` (or raw handle / ``__cuda_stream__`` object) to
            enqueue on, or None for a synchronous copy.
        pageable: What to do when ``stream`` is given but the host side is pageable.

    Raises:
        InvalidArgumentError: Sizes do not fit, an array is not contiguous or read-only, or the
            host side is pageable under ``pageable="error"``.
        NotSupportedError: Device memory is involved but CUDA is unavailable.
        ResourceClosedError: A buffer is closed or a lease released.
        CudaError: The copy failed.
    """
    copy_impl(dst, src, nbytes, stream, pageable, _stacklevel + 1)


def copy_impl(dst: Any, src: Any, nbytes: int | None, stream: StreamLike | None,  # noqa: PLR0917
              pageable: PageablePolicy | str, stacklevel: int) -> None:
    """:func:`copy` with positional arguments (cheaper: what the buffer methods call).

    ``stacklevel`` is for :func:`warnings.warn` as called from here (3: the caller's caller).
    """
    if pageable is not _ERROR and pageable not in _POLICIES:
        raise InvalidArgumentError(f"pageable must be 'error', 'warn' or 'sync', not {pageable!r}")
    dptr, dcap, dkind = _operand(dst, True)
    sptr, scap, skind = _operand(src, False)
    n = scap if nbytes is None else nbytes
    if n > scap or n > dcap or n < 0:
        raise InvalidArgumentError(
            f"cannot copy {n:,} bytes from {scap:,} bytes of source into {dcap:,} bytes of "
            f"destination", hint="pass nbytes= no larger than either side")
    if n == 0:
        return
    if dkind is not MemoryKind.DEVICE and skind is not MemoryKind.DEVICE:
        if stream is None:
            ctypes.memmove(dptr, sptr, n)
        elif dkind in _CUDA_LOCKED and skind in _CUDA_LOCKED:
            api.memcpy_async(dptr, sptr, n, _raw_stream(stream))
        else:
            # Order after the work already on the stream (e.g. the D2H that fills ``src``).
            api.stream_synchronize(_raw_stream(stream))
            ctypes.memmove(dptr, sptr, n)
        return
    if stream is None:
        api.memcpy(dptr, sptr, n)
        return
    raw = getattr(stream, "raw", None)
    if raw is None:
        raw = _raw_stream(stream)
    host = skind if dkind is MemoryKind.DEVICE else dkind
    if host is MemoryKind.DEVICE or host in _CUDA_LOCKED:
        api.memcpy_async(dptr, sptr, n, raw)
    else:
        if pageable == PageablePolicy.ERROR:
            side = "source" if host is skind else "destination"
            raise InvalidArgumentError(
                f"asynchronous copy with {host} host memory as the {side}: CUDA would stage it "
                f"synchronously and stall the calling thread",
                hint="use a HostBuffer or a BufferPool.for_host lease, register the array with "
                     "HostBuffer.register, or pass pageable='sync' (or 'warn') to accept a "
                     "synchronous copy")
        if pageable == PageablePolicy.WARN:
            warnings.warn(f"copy of {n:,} bytes with {host} host memory ran synchronously",
                          PageableCopyWarning, stacklevel=stacklevel)
        api.memcpy_async(dptr, sptr, n, raw)
        api.stream_synchronize(raw)
    if dkind is MemoryKind.DEVICE:
        _note_stream(dst, stream)
    if skind is MemoryKind.DEVICE:
        _note_stream(src, stream)

