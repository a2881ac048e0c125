"""CUDA discovery that never crashes: availability, versions, devices and their properties.

Nothing here raises on a machine without cuda-python, a driver or a device; the answer is
``is_available() == False`` and a sentence in :func:`unavailable_reason`. The probe runs once per
process (the set of visible devices cannot change after CUDA initialises).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from edgert.cuda._api import bindings_version, check, runtime
from edgert.errors import EdgeRTError, InvalidArgumentError, NotSupportedError

__all__ = [
    "CudaStatus",
    "DeviceProperties",
    "current_device",
    "device_count",
    "device_properties",
    "is_available",
    "probe",
    "require",
    "set_device",
    "unavailable_reason",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class CudaStatus:
    """What the CUDA probe found.

    Attributes:
        available: At least one device can be used.
        device_count: Visible devices (0 when unavailable).
        driver_version: The driver's CUDA version as ``(major, minor)``, or None without a driver.
        runtime_version: The CUDA runtime's version as ``(major, minor)``, or None.
        bindings_version: The cuda-python (cuda-bindings) version, or None if not installed.
        reason: Why CUDA is unavailable, or None when it is available.
    """

    available: bool
    device_count: int
    driver_version: tuple[int, int] | None
    runtime_version: tuple[int, int] | None
    bindings_version: str | None
    reason: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceProperties:
    """One CUDA device, as a robot engineer needs to know it.

    Attributes:
        index: The device ordinal.
        name: Marketing name, e.g. ``NVIDIA H200`` or ``Orin``.
        compute_capability: ``(major, minor)``.
        total_memory_bytes: Global memory.
        multiprocessor_count: Number of SMs.
        integrated: The GPU shares physical memory with the CPU (Jetson); zero-copy I/O is the
            fast path there.
        can_map_host_memory: Mapped (zero-copy) pinned host memory is supported.
        memory_pools_supported: Stream-ordered allocation (``cudaMallocAsync``) is supported.
        unified_addressing: Host and device share one virtual address space.
        stream_priority_range: ``(lowest, highest)`` priorities; numerically, highest <= lowest
            (e.g. ``(0, -5)``).
        pci_bus_id: PCI address such as ``0000:01:00.0``, or None where there is none (Jetson).
    """

    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory_bytes: int
    multiprocessor_count: int
    integrated: bool
    can_map_host_memory: bool
    memory_pools_supported: bool
    unified_addressing: bool
    stream_priority_range: tuple[int, int]
    pci_bus_id: str | None


_probe_lock = threading.Lock()
_status: CudaStatus | None = None
_props: dict[int, DeviceProperties] = {}


def _version_pair(v: int) -> tuple[int, int]:
    return (v // 1000, (v % 1000) // 10)


def _do_probe() -> CudaStatus:
    bver = bindings_version()
    try:
        rt = runtime()
    except NotSupportedError as err:
        return CudaStatus(available=False, device_count=0, driver_version=None,
                          runtime_version=None, bindings_version=bver, reason=err.message)
    rt_ver: tuple[int, int] | None = None
    drv_ver: tuple[int, int] | None = None
    try:
        status, v = rt.cudaRuntimeGetVersion()
        if int(status) == 0:
            rt_ver = _version_pair(int(v))
        status, v = rt.cudaDriverGetVersion()
        if int(status) == 0 and int(v) > 0:
            drv_ver = _version_pair(int(v))
        status, count = rt.cudaGetDeviceCount()
    except Exception as exc:  # a broken install must not break discovery
        return CudaStatus(available=False, device_count=0, driver_version=drv_ver,
                          runtime_version=rt_ver, bindings_version=bver,
                          reason=f"CUDA runtime failed to answer: {exc!r}")
    if int(status) != 0:
        name = getattr(status, "name", str(int(status)))
        if name == "cudaErrorInsufficientDriver" and drv_ver is None:
            reason = "no NVIDIA driver is installed (cudaErrorInsufficientDriver)"
        elif name == "cudaErrorInsufficientDriver" and drv_ver is not None:
            reason = (f"the NVIDIA driver supports CUDA {drv_ver[0]}.{drv_ver[1]}, older than "
                      f"this runtime needs (cudaErrorInsufficientDriver)")
        elif name == "cudaErrorNoDevice":
            reason = "the driver sees no CUDA device (cudaErrorNoDevice)"
        else:
            reason = f"CUDA cannot be initialised ({name})"
        return CudaStatus(available=False, device_count=0, driver_version=drv_ver,
                          runtime_version=rt_ver, bindings_version=bver, reason=reason)
    count = int(count)
    return CudaStatus(available=count > 0, device_count=count, driver_version=drv_ver,
                      runtime_version=rt_ver, bindings_version=bver,
                      reason=None if count > 0 else "no CUDA device is visible")


def probe() -> CudaStatus:
    """Probe CUDA once per process and return what was found. Never raises."""
    global _status
    if _status is None:
        with _probe_lock:
            if _status is None:
                _status = _do_probe()
    return _status


def is_available() -> bool:
    """Whether at least one CUDA device can be used. Never raises."""
    return probe().available


def unavailable_reason() -> str | None:
    """Why CUDA cannot be used here, or None when it can. Never raises."""
    return probe().reason


def device_count() -> int:
    """Number of visible CUDA devices (0 without a driver or device). Never raises."""
    return probe().device_count


def require(device: int = 0) -> None:
    """Raise unless CUDA device ``device`` exists.

    Raises:
        NotSupportedError: No usable CUDA; the message says why.
        InvalidArgumentError: ``device`` is out of range.
    """
    status = probe()
    if not status.available:
        raise NotSupportedError(
            f"CUDA is not available: {status.reason}",
            hint="run `edgert doctor` to see what is missing, or use device='host'",
        )
    if not 0 <= device < status.device_count:
        raise InvalidArgumentError(
            f"CUDA device {device} does not exist ({status.device_count} visible)",
            hint=f"use a device index from 0 to {status.device_count - 1}",
        )


def current_device() -> int:
    """The calling thread's current CUDA device.

    Raises:
        NotSupportedError: No usable CUDA.
        CudaError: The runtime refused.
    """
    require(0)
    return int(check(runtime().cudaGetDevice(), call="cudaGetDevice"))


def set_device(device: int) -> None:
    """Make ``device`` current for the calling thread.

    Raises:
        NotSupportedError: No usable CUDA.
        InvalidArgumentError: ``device`` is out of range.
        CudaError: The runtime refused.
    """
    require(device)
    check(runtime().cudaSetDevice(device), call="cudaSetDevice")


def _attr(rt: Any, name: str, device: int) -> int:
    attr = getattr(rt.cudaDeviceAttr, name, None)
    if attr is None:
        return 0
    err, value = rt.cudaDeviceGetAttribute(attr, device)
    return int(value) if int(err) == 0 else 0


def device_properties(device: int = 0) -> DeviceProperties:
    """Describe CUDA device ``device`` (cached after the first call).

    Raises:
        NotSupportedError: No usable CUDA.
        InvalidArgumentError: ``device`` is out of range.
        CudaError: The runtime refused.
    """
    cached = _props.get(device)
    if cached is not None:
        return cached
    require(device)
    rt = runtime()
    prop = check(rt.cudaGetDeviceProperties(device), call="cudaGetDeviceProperties")
    raw_name = prop.name
    name = raw_name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(
        raw_name, bytes) else str(raw_name)
    prev = int(check(rt.cudaGetDevice(), call="cudaGetDevice"))
    try:
        check(rt.cudaSetDevice(device), call="cudaSetDevice")
        least, greatest = check(rt.cudaDeviceGetStreamPriorityRange(),
                                call="cudaDeviceGetStreamPriorityRange")
    finally:
        rt.cudaSetDevice(prev)
    pci: str | None = None
    try:
        err, bus = rt.cudaDeviceGetPCIBusId(32, device)
        if int(err) == 0:
            text = bus.split(b"\0", 1)[0].decode() if isinstance(bus, bytes) else str(bus)
            pci = text.strip("\x00") or None
    except EdgeRTError:
        pci = None
    integrated = bool(_attr(rt, "cudaDevAttrIntegrated", device))
    props = DeviceProperties(
        index=device,
        name=name,
        compute_capability=(int(prop.major), int(prop.minor)),
        total_memory_bytes=int(prop.totalGlobalMem),
        multiprocessor_count=int(prop.multiProcessorCount),
        integrated=integrated,
        can_map_host_memory=bool(_attr(rt, "cudaDevAttrCanMapHostMemory", device)),
        memory_pools_supported=bool(_attr(rt, "cudaDevAttrMemoryPoolsSupported", device)),
        unified_addressing=bool(_attr(rt, "cudaDevAttrUnifiedAddressing", device)),
        stream_priority_range=(int(least), int(greatest)),
        pci_bus_id=None if integrated else pci,
    )
    _props[device] = props
    return props
