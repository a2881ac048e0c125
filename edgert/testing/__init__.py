"""Fakes for users' own tests: edgert's CI uses exactly these, and so can a robot's.

- :mod:`edgert.testing.fake_tensorrt` — a module object with the subset of TensorRT's runtime API
  edgert uses; its plans are a small documented format computed with numpy on host memory. Pass
  it as ``Engine.load(..., trt_module=fake_tensorrt)``. Checked against the real
  ``tensorrt_lean`` bindings by edgert's conformance test.
- :mod:`edgert.testing.jetson` — fake Jetson sysfs/procfs/etc trees (JetPack 5 and 6, Orin NX
  and AGX Orin, failing sensors) and :class:`~edgert.testing.jetson.FakeCommandRunner` for
  nvpmodel and jetson_clocks.
- :class:`~edgert.testing.green.FakeGreenDriver` — SM partitions (green contexts) without a GPU:
  pass it as ``partition_sms(..., driver=fake)``; checked against the real driver on the GPU
  tier.
- :class:`~edgert.testing.memory.FakeAllocator`, :class:`~edgert.testing.memory.FakeEvent`,
  :class:`~edgert.testing.memory.FakeEventFactory` — pool tests without a GPU;
  :class:`~edgert.testing.realtime.FakeClock` — periodic-loop tests without real time.

``KernelExecutable`` (the bundled policy as real CUDA kernels) moved to :mod:`edgert.kernels`:
it is product code, not a fake. ``edgert.testing.KernelExecutable`` still resolves to it.
"""

from typing import TYPE_CHECKING, Any

from edgert.testing import fake_tensorrt, jetson
from edgert.testing.green import FakeGreenDriver
from edgert.testing.jetson import (
    FakeCommandRunner,
    JetsonTree,
    build_bare_tree,
    build_jetson_tree,
)
from edgert.testing.memory import FakeAllocator, FakeEvent, FakeEventFactory
from edgert.testing.realtime import FakeClock

if TYPE_CHECKING:
    from edgert.kernels import KernelExecutable as KernelExecutable

__all__ = [
    "FakeAllocator",
    "FakeClock",
    "FakeCommandRunner",
    "FakeEvent",
    "FakeEventFactory",
    "FakeGreenDriver",
    "JetsonTree",
    "build_bare_tree",
    "build_jetson_tree",
    "fake_tensorrt",
    "jetson",
]


if not TYPE_CHECKING:  # type checkers see the import above; a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        # Compatibility: KernelExecutable lived here before it moved to edgert.kernels.
        if name == "KernelExecutable":
            from edgert.kernels import KernelExecutable

            return KernelExecutable
        raise AttributeError(f"module 'edgert.testing' has no attribute {name!r}")
