"""What this machine is and allows: kernel and CPUs, Jetson identity, TensorRT flavours.

Every reader takes ``root`` (default ``/``) so tests and ``edgert doctor --root`` can point it
at a fake tree, and none of them raises: an unreadable file is a ``None`` field.
"""

from edgert.platform._files import read_text
from edgert.platform._jetson import JetsonInfo, parse_l4t_release, read_jetson
from edgert.platform._system import SystemInfo, parse_cpu_list, read_system
from edgert.platform._tensorrt import TENSORRT_FLAVOURS, TensorRTFlavour, find_tensorrt

__all__ = [
    "TENSORRT_FLAVOURS",
    "JetsonInfo",
    "SystemInfo",
    "TensorRTFlavour",
    "find_tensorrt",
    "parse_cpu_list",
    "parse_l4t_release",
    "read_jetson",
    "read_system",
    "read_text",
]
