"""Fakes for users' own tests: edgert's CI uses exactly these, and so can a robot's.

- :mod:`edgert.testing.fake_tensorrt` — a module object with the subset of TensorRT's runtime API
  edgert uses; its plans are a small documented format computed with numpy on host memory. Pass
  it as ``Engine.load(..., trt_module=fake_tensorrt)``. Checked against the real
  ``tensorrt_lean`` bindings by edgert's conformance test.
- :mod:`edgert.testing.jetson` — fake Jetson sysfs/procfs/etc trees (JetPack 5 and 6, Orin NX
  and AGX Orin, failing sensors) and :class:`FakeCommandRunner` for nvpmodel and jetson_clocks.
- :class:`FakeGreenDriver` — SM partitions (green contexts) without a GPU: pass it as
  ``partition_sms(..., driver=fake)``; checked against the real driver on the GPU tier.
- :class:`KernelExecutable` — the bundled policy MLP as real CUDA kernels (NVRTC), an Executable
  for GPU tests and benchmarks where no TensorRT engine exists.
- :class:`FakeAllocator`, :class:`FakeEvent`, :class:`FakeEventFactory` — pool tests without a
  GPU; :class:`FakeClock` — periodic-loop tests without real time.
"""

from edgert.testing import fake_tensorrt, jetson
from edgert.testing.green import FakeGreenDriver
from edgert.testing.jetson import (
    FakeCommandRunner,
    JetsonTree,
    build_bare_tree,
    build_jetson_tree,
)
from edgert.testing.kernel_executable import KernelExecutable
from edgert.testing.memory import FakeAllocator, FakeEvent, FakeEventFactory
from edgert.testing.realtime import FakeClock

__all__ = [
    "FakeAllocator",
    "FakeClock",
    "FakeCommandRunner",
    "FakeEvent",
    "FakeEventFactory",
    "FakeGreenDriver",
    "JetsonTree",
    "KernelExecutable",
    "build_bare_tree",
    "build_jetson_tree",
    "fake_tensorrt",
    "jetson",
]
