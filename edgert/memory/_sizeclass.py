"""Size classes: how a pool rounds requests so that freed blocks can serve later ones.

Requests are rounded up to a multiple of ``granularity_bytes`` (512 by default, CuPy's pinned-pool
unit and a multiple of every DMA alignment CUDA asks for) while they are at most
``linear_limit_bytes``; above that, to the next power of two. Small tensors therefore waste under
one granule, large ones less than half their class, and the number of classes grows only with the
logarithm of the largest request.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgert.errors import InvalidArgumentError

__all__ = ["SizeClasses"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SizeClasses:
    """The rounding rule of a :class:`~edgert.memory.BufferPool`.

    Attributes:
        granularity_bytes: Every class is a multiple of this (a power of two, at least 64).
        linear_limit_bytes: Up to this size classes step by ``granularity_bytes``; above it they
            are powers of two. A power of two, at least ``granularity_bytes``.

    Raises:
        InvalidArgumentError: A value is not a power of two or out of range.
    """

    granularity_bytes: int = 512
    linear_limit_bytes: int = 4096

    def __post_init__(self) -> None:
        g, lim = self.granularity_bytes, self.linear_limit_bytes
        for name, v in (("granularity_bytes", g), ("linear_limit_bytes", lim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v & (v - 1):
                raise InvalidArgumentError(f"SizeClasses.{name} must be a positive power of two, "
                                           f"not {v!r}", hint="e.g. 512 and 4096")
        if g < 64:
            raise InvalidArgumentError(
                f"SizeClasses.granularity_bytes must be at least 64, not {g}",
                hint="64 keeps every block aligned for any dtype and DMA")
        if lim < g:
            raise InvalidArgumentError(
                f"SizeClasses.linear_limit_bytes ({lim}) is below granularity_bytes ({g})",
                hint="use linear_limit_bytes >= granularity_bytes")

    def capacity_for(self, nbytes: int) -> int:
        """The capacity of the class that serves a request of ``nbytes`` bytes.

        Raises:
            InvalidArgumentError: ``nbytes`` is negative or not an int.
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidArgumentError(f"a request must be a non-negative int of bytes, not "
                                       f"{nbytes!r}")
        g = self.granularity_bytes
        if nbytes <= self.linear_limit_bytes:
            return max(g, -(-nbytes // g) * g)
        return 1 << (nbytes - 1).bit_length()

    def classes_up_to(self, nbytes: int) -> list[int]:
        """Every class capacity up to the one serving ``nbytes``, smallest first.

        Raises:
            InvalidArgumentError: ``nbytes`` is negative or not an int.
        """
        top = self.capacity_for(nbytes)
        g, lim = self.granularity_bytes, self.linear_limit_bytes
        out = list(range(g, min(top, lim) + 1, g))
        c = lim * 2
        while c <= top:
            out.append(c)
            c *= 2
        return out
