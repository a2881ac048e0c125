"""Holding a CPU wake-up latency target through /dev/cpu_dma_latency (PM QoS).

The kernel applies the smallest target among all open file descriptors, and drops a target when
its descriptor closes, so holding it is owning an fd.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

from edgert._owner import Owner
from edgert.errors import NotSupportedError, PermissionDeniedError, RealtimeError
from edgert.realtime._remedy import diagnose_dma_latency

__all__ = ["DmaLatencyHold"]


#: Every descriptor held open, with the thread that took it.
_HELD: dict[int, int] = {}


def _close(fd: int) -> None:
    if _HELD.pop(fd, None) is not None:  # atomic: a descriptor is closed once
        os.close(fd)


def _after_fork_in_child() -> None:
    """O_CLOEXEC does not help a fork without exec: a child keeps every descriptor, so the
    latency target would outlive the thread that asked for it (found by a trial). The child
    closes those of every thread but the one that forked. No lock is taken around the fork (a
    fork waiting for one could deadlock with finalizers): a descriptor is on record from the
    moment ``open`` returns."""
    me = threading.get_ident()
    for fd, thread in list(_HELD.items()):
        if thread != me:
            del _HELD[fd]
            try:
                os.close(fd)
            except OSError:
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)


class DmaLatencyHold(Owner):
    """Keeps ``/dev/cpu_dma_latency`` open at ``latency_us`` until closed.

    0 keeps every CPU out of deep C-states (cyclictest's default); it costs power.

    Raises:
        PermissionDeniedError: The device is not writable (root only by default).
        NotSupportedError: The device does not exist.
        RealtimeError: Another OS error.
    """

    def __init__(self, latency_us: int, *, device: Path = Path("/dev/cpu_dma_latency")) -> None:
        self.latency_us = latency_us
        try:
            fd = os.open(device, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise self._error(err, device) from err
        _HELD[fd] = threading.get_ident()  # on record at once: a fork's child closes it
        try:
            os.write(fd, struct.pack("=i", latency_us))
        except OSError as err:
            _close(fd)
            raise self._error(err, device) from err
        self._own(lambda: _close(fd), f"{device} hold")

    @staticmethod
    def _error(err: OSError, device: Path) -> Exception:
        code = err.errno or 0
        diag = diagnose_dma_latency(code)
        # The diagnosis already names the errno; saying it twice reads as two failures.
        message = f"cannot hold {device}: {diag.reason}"
        if diag.permission:
            return PermissionDeniedError(message, hint=diag.hint, errno_value=code,
                                         path=str(device))
        if not os.path.exists(device):
            return NotSupportedError(message, hint=diag.hint)
        return RealtimeError(message, hint=diag.hint)
