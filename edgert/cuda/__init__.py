"""The CUDA layer: the only part of edgert that imports cuda-python.

Discovery (:func:`is_available`, :func:`device_count`, :func:`device_properties`) never raises on
machines without a driver or device. :class:`Stream`, :class:`Event` and :class:`CudaGraph` each
own one handle (``close()``, context manager, finalizer safety net). :func:`partition_sms` splits
a device's SMs into :class:`GpuPartition` s (green contexts) whose streams run on those SMs
only. :func:`check` turns a CUDA status into :class:`edgert.CudaError` with CUDA's own words
and what to do next.
"""

from edgert._protocols import SupportsCudaStream
from edgert.cuda._api import bindings_version, check
from edgert.cuda._device import (
    CudaStatus,
    DeviceProperties,
    current_device,
    device_count,
    device_properties,
    is_available,
    probe,
    require,
    set_device,
    unavailable_reason,
)
from edgert.cuda._graph import CudaGraph, GraphCapture, capture_graph
from edgert.cuda._green import (
    GpuPartition,
    GpuPartitions,
    GreenContextSupport,
    SmLayout,
    green_context_support,
    partition_sms,
    plan_partitions,
    sm_layout,
)
from edgert.cuda._green_driver import GreenDriver, SmResource
from edgert.cuda._kernel import Kernel, KernelArgs, Module, compile_module
from edgert.cuda._stream import Event, Stream, StreamLike, as_stream_handle

__all__ = [
    "CudaGraph",
    "CudaStatus",
    "DeviceProperties",
    "Event",
    "GpuPartition",
    "GpuPartitions",
    "GraphCapture",
    "GreenContextSupport",
    "GreenDriver",
    "Kernel",
    "KernelArgs",
    "Module",
    "SmLayout",
    "SmResource",
    "Stream",
    "StreamLike",
    "SupportsCudaStream",
    "as_stream_handle",
    "bindings_version",
    "capture_graph",
    "check",
    "compile_module",
    "current_device",
    "device_count",
    "device_properties",
    "green_context_support",
    "is_available",
    "partition_sms",
    "plan_partitions",
    "probe",
    "require",
    "set_device",
    "sm_layout",
    "unavailable_reason",
]
