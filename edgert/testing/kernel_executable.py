"""Moved to :mod:`edgert.kernels` (it is product code: ``edgert bench`` runs it).

Kept so that ``from edgert.testing.kernel_executable import KernelExecutable`` goes on working;
new code imports :class:`edgert.kernels.KernelExecutable`.
"""

from __future__ import annotations

from edgert.kernels import KernelExecutable

__all__ = ["KernelExecutable"]
