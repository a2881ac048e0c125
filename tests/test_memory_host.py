"""HostBuffer on the host path: OS-locked memory for real (mmap + mlock), views, registration."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from edgert import _reaper
from edgert.errors import (
    InvalidArgumentError,
    NotSupportedError,
    ResourceClosedError,
)
from edgert.memory import HostBuffer, MemoryKind, locked_bytes, memlock_limit

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _vmlck() -> int:
    value = locked_bytes()
    if value is None:
        pytest.skip("this kernel does not report VmLck in /proc/self/status")
    return value


def test_os_locked_buffer_is_resident_and_unlocked_on_close() -> None:
    before = _vmlck()
    buf = HostBuffer(8 * MIB, device="host")
    during = _vmlck()
    assert buf.kind is MemoryKind.OS_LOCKED
    assert not buf.is_pinned
    assert buf.ptr % os.sysconf("SC_PAGESIZE") == 0
    assert during - before >= 8 * MIB
    buf.view()[:] = 7  # writable, and locked pages never fault
    buf.close()
    assert before <= _vmlck() <= during - 8 * MIB
    buf.close()  # idempotent
    with pytest.raises(ResourceClosedError):
        _ = buf.ptr


def test_view_shares_bytes_and_outlives_close_without_crashing() -> None:
    before = _vmlck()
    with HostBuffer(2 * MIB, device="host") as buf:
        floats = buf.view(np.float32, (4, 8))
        floats[:] = np.arange(32, dtype=np.float32).reshape(4, 8)
        raw = buf.view(np.uint8, 16, offset=4)
        assert raw[:4].view(np.float32)[0] == 1.0  # same bytes, no copy
        tail = floats[2:]  # a view of a view still counts
        assert buf.export_count == 3
        del raw
    # closed: the buffer refuses, but the views still read valid memory
    assert buf.closed
    with pytest.raises(ResourceClosedError):
        buf.view()
    assert float(tail[0, 0]) == 16.0
    assert _vmlck() - before >= 2 * MIB  # still locked: the views hold it
    del floats, tail
    gc.collect()
    assert _reaper.drain()  # the last view's death hands the free to the reaper thread
    assert _vmlck() - before < 2 * MIB  # the last view freed it


def test_asarray_and_dlpack_are_zero_copy_host_exports() -> None:
    buf = HostBuffer(4096, device="host")
    arr = np.asarray(buf)
    assert arr.dtype == np.uint8
    assert arr.shape == (4096,)
    assert arr.__array_interface__["data"][0] == buf.ptr
    dl = np.from_dlpack(buf)
    dl[10] = 42
    assert arr[10] == 42
    assert buf.view()[10] == 42
    assert buf.__dlpack_device__() == (1, 0)
    assert buf.export_count == 2  # np.asarray's array and the DLPack import
    buf.close()
    assert dl[10] == 42  # DLPack import keeps the memory alive past close
    del arr, dl


def test_unconsumed_dlpack_capsules_release_their_reference() -> None:
    from edgert.memory import _dlpack

    buf = HostBuffer(4096, device="host")
    start = _dlpack.export_count()
    capsule = buf.__dlpack__()
    versioned = buf.__dlpack__(max_version=(1, 0))
    assert _dlpack.export_count() == start + 2
    assert buf.export_count == 2
    del capsule, versioned
    assert _dlpack.export_count() == start
    assert buf.export_count == 0
    with pytest.raises(BufferError):
        buf.__dlpack__(copy=True)
    with pytest.raises(BufferError):
        buf.__dlpack__(dl_device=(2, 0))
    buf.close()


def test_typed_dlpack_round_trip_through_numpy() -> None:
    from edgert.memory._dlpack import KDL_CPU, to_dlpack

    src = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

    class Producer:
        def __init__(self, versioned: bool) -> None:
            self.versioned = versioned

        def __dlpack__(self, *, stream: object = None, max_version: object = None,
                       dl_device: object = None, copy: object = None) -> object:
            mv = max_version if self.versioned else None
            return to_dlpack(src.ctypes.data, 0, src.shape, src.dtype, device_type=KDL_CPU,
                             device_id=0, owner=src, max_version=mv)  # type: ignore[arg-type]

        def __dlpack_device__(self) -> tuple[int, int]:
            return (1, 0)

    for versioned in (False, True):
        out = np.from_dlpack(Producer(versioned))
        assert out.shape == (2, 3, 4)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, src)
        assert out.ctypes.data == src.ctypes.data


def test_without_cuda_mapped_and_write_combined_are_refused_with_a_hint() -> None:
    for kwargs in ({"mapped": True}, {"write_combined": True}):
        with pytest.raises(NotSupportedError) as info:
            HostBuffer(4096, device="host", **kwargs)  # type: ignore[arg-type]
        assert info.value.hint
        assert "OS-locked" in info.value.hint
    buf = HostBuffer(4096, device="host")
    with pytest.raises(NotSupportedError):
        _ = buf.device_ptr
    with pytest.raises(NotSupportedError):
        buf.device_view()
    assert not hasattr(buf, "__cuda_array_interface__")
    buf.close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_invalid_sizes_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        HostBuffer(bad, device="host")  # type: ignore[arg-type]


def test_views_that_do_not_fit_are_refused() -> None:
    with HostBuffer(1024, device="host") as buf:
        with pytest.raises(InvalidArgumentError, match="needs 1,028 bytes"):
            buf.view(np.float32, 257)
        with pytest.raises(InvalidArgumentError, match="not aligned"):
            buf.view(np.float32, 4, offset=2)
        with pytest.raises(InvalidArgumentError):
            buf.view(np.uint8, (-1,))
        assert buf.view(np.float64).shape == (128,)


def test_register_locks_existing_pages_and_keeps_the_source_alive() -> None:
    source = np.zeros(4 * MIB, dtype=np.uint8)
    ref = weakref.ref(source)
    before = _vmlck()
    buf = HostBuffer.register(source, device="host")
    assert buf.kind is MemoryKind.OS_LOCKED
    assert buf.ptr == source.ctypes.data
    assert buf.nbytes == 4 * MIB
    assert _vmlck() - before >= 4 * MIB
    del source
    gc.collect()
    assert ref() is not None  # the buffer holds it
    buf.view()[0] = 1
    assert ref() is not None
    assert ref()[0] == 1
    buf.close()
    gc.collect()
    assert ref() is None
    assert _vmlck() - before < 4 * MIB


def test_register_refuses_what_it_cannot_lock_safely() -> None:
    with pytest.raises(InvalidArgumentError, match="read-only"):
        HostBuffer.register(b"immutable bytes", device="host")
    with pytest.raises(InvalidArgumentError, match="C-contiguous"):
        HostBuffer.register(np.zeros((8, 8))[:, ::2], device="host")
    with pytest.raises(InvalidArgumentError):
        HostBuffer.register(bytearray(), device="host")
    with pytest.raises(NotSupportedError):
        HostBuffer.register(bytearray(4096), device="host", mapped=True)


def test_memlock_limit_reads_the_rlimit() -> None:
    soft, hard = memlock_limit()
    assert soft is None or soft >= 0
    assert hard is None or soft is None or hard >= soft


_NO_LOCK_PRIVILEGE = r"""
import ctypes, resource, sys
resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
from edgert.errors import PermissionDeniedError
from edgert.memory import HostBuffer
try:
    HostBuffer(1 << 20, device="host")
except PermissionDeniedError as err:
    print("ERRNO", err.errno_value)
    print(err)
    sys.exit(0)
print("NO ERROR")
sys.exit(1)
"""


def _drop_ipc_lock() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 14, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_IPC_LOCK
        os._exit(97)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping CAP_IPC_LOCK from the bounding set "
                    "needs root (unprivileged runs hit the limit without it anyway)")
def test_refused_lock_names_the_limit_and_the_capability() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", _NO_LOCK_PRIVILEGE], env=env,
                            preexec_fn=_drop_ipc_lock, capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode == 97:
        pytest.skip("prctl(PR_CAPBSET_DROP) refused in this container")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERRNO" in result.stdout
    assert "RLIMIT_MEMLOCK is 65,536 bytes" in result.stdout
    assert "CAP_IPC_LOCK" in result.stdout
    assert "ulimit -l" in result.stdout  # the remediation



def test_views_refuse_dtypes_that_hold_python_objects() -> None:
    """Found by a hostile trial: ``view(object)`` read raw bytes as PyObject pointers and the
    interpreter crashed (SIGSEGV)."""
    import numpy as np

    from edgert.errors import InvalidArgumentError
    from edgert.memory import HostBuffer

    with HostBuffer(4096) as buf:
        for dtype in (object, np.dtype([("a", "i4"), ("b", "O")]), np.dtype(("O", (2,)))):
            with pytest.raises(InvalidArgumentError, match="holds Python objects"):
                buf.view(dtype)
        for shape in ((2.7,), "12", (True,)):
            with pytest.raises(InvalidArgumentError, match="shape must be"):
                buf.view(np.float32, shape)  # type: ignore[arg-type]


def test_asarray_of_a_buffer_is_the_buffer_or_says_it_is_a_copy() -> None:
    """Found by a hostile trial: ``np.asarray(buf, dtype=np.uint8)`` returned a detached copy,
    so writes through it were lost, and ``copy=False`` was ignored."""
    import numpy as np

    from edgert.memory import HostBuffer

    with HostBuffer(4096) as buf:
        same = np.asarray(buf, dtype=np.uint8)
        same[:3] = (1, 2, 3)
        assert list(np.asarray(buf)[:3]) == [1, 2, 3]
        assert np.shares_memory(same, np.asarray(buf))
        converted = np.asarray(buf, dtype=np.int16)  # another dtype: a copy, as numpy does
        assert not np.shares_memory(converted, np.asarray(buf))
        with pytest.raises(ValueError, match="needs a copy"):
            np.array(buf, dtype=np.int8, copy=False)


def test_a_timeout_beyond_what_a_lock_can_wait_is_a_wait_for_ever() -> None:
    import math

    from edgert.memory._poolcore import check_timeout

    assert check_timeout(1e300) == math.inf
    assert check_timeout(2.5) == 2.5
