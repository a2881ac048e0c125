"""CUDA kernels that edgert ships as product code: the bundled control policy compiled with NVRTC.

* :class:`KernelExecutable` - the bundled MLP of :mod:`edgert.models` as CUDA kernels behind the
  :class:`~edgert.engine.Executable` seam (named tensors, a dynamic batch profile, enqueue on a
  stream, CUDA graph capture). ``edgert bench`` runs it on a GPU when there is no TensorRT plan of
  the bundled model; GPU tests and benchmarks use it for the same reason.

Importing this package loads numpy but not CUDA; CUDA loads when a :class:`KernelExecutable` is
made.
"""

from __future__ import annotations

from edgert.kernels._policy_mlp import KernelExecutable

__all__ = ["KernelExecutable"]
