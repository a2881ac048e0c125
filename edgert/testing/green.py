"""A fake green-context driver: SM partition logic without a GPU.

:class:`FakeGreenDriver` implements the seam :class:`edgert.cuda._green_driver.GreenDriver` the
way the CUDA driver behaves (groups rounded up to the alignment, fewer groups when SMs run out or
the SM clusters fit no more, ``CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION`` for impossible
structured splits) and counts what is alive, so tests can check that partitions and their streams
are released. Its defaults are the H200 measured for docs/multimodel.md (132 SMs, groups of at
least 8 in steps of 8, at most 15 groups per split, no partitions of different sizes on its CUDA
13.0 driver). edgert's GPU tests check it against the real driver on the same device.

    >>> from edgert.cuda import partition_sms
    >>> from edgert.testing import FakeGreenDriver
    >>> fake = FakeGreenDriver(sm_count=132, min_partition_sms=8, alignment_sms=8)
    >>> with partition_sms([16], driver=fake) as parts:
    ...     (parts[0].sm_count, parts.rest.sm_count)
    (16, 116)
    >>> fake.live_contexts
    0
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from edgert.cuda._green_driver import SmResource
from edgert.errors import CudaError, NotSupportedError

__all__ = ["FakeGreenDriver"]


class FakeGreenDriver:
    """Imitates the driver's green-context calls on an imaginary device.

    Args:
        sm_count: SMs of the device (132 on an H200, 16 on AGX Orin 64 GB).
        min_partition_sms: The smallest group (8 on compute capability 9.0, 4 on 8.x).
        alignment_sms: The group-size step (8 on 9.0, 2 on 8.x).
        supported: False imitates a driver without green contexts.
        unequal_splits: True imitates a driver with ``cuDevSmResourceSplit`` (CUDA 13.1+), which
            makes groups of different sizes; False (the default, like the measured H200 on
            CUDA 13.0) refuses them with NotSupportedError.
        max_groups: The most groups one ``split_by_count`` makes, whatever fits: the driver
            "may lead to fewer groups created than purely dividing the total SM count by the
            minCount due to cluster requirements". 15 by default (16 groups of 8 on the H200
            gave 15); None for no limit beyond the SM count.
        priority_range: ``(lowest, highest)`` stream priorities.
    """

    def __init__(self, *, sm_count: int = 132, min_partition_sms: int = 8,
                 alignment_sms: int = 8, supported: bool = True, unequal_splits: bool = False,
                 max_groups: int | None = 15,
                 priority_range: tuple[int, int] = (0, -5)) -> None:
        self.sm_count = sm_count
        self.min_partition_sms = min_partition_sms
        self.alignment_sms = alignment_sms
        self.supported = supported
        self.unequal_splits = unequal_splits
        self.max_groups = max_groups
        self._priority_range = priority_range
        self._ids = itertools.count(0x1000)
        self.contexts: dict[int, int] = {}
        """Live green contexts, handle -> SM count."""
        self.streams: dict[int, tuple[int, int]] = {}
        """Live streams, handle -> (context handle, priority)."""

    @property
    def live_contexts(self) -> int:
        """Green contexts created and not destroyed."""
        return len(self.contexts)

    @property
    def live_streams(self) -> int:
        """Streams created and not destroyed."""
        return len(self.streams)

    def _resource(self, count: int) -> SmResource:
        return SmResource(("fake-sm", count), count, self.min_partition_sms, self.alignment_sms)

    @staticmethod
    def _fail(name: str, code: int, call: str) -> CudaError:
        return CudaError(code, name, "fake driver refused", call=call)

    def sm_resource(self, device: int) -> SmResource:
        """The whole device; NotSupportedError when ``supported`` is False."""
        if not self.supported:
            raise NotSupportedError("the (fake) NVIDIA driver lacks green contexts",
                                    hint="upgrade to a CUDA 12.4+ driver")
        return self._resource(self.sm_count)

    def split_by_count(self, resource: SmResource, groups: int,
                       min_count: int) -> tuple[list[SmResource], SmResource | None]:
        """Equal groups rounded up to the minimum and alignment; fewer when SMs run out or
        more than ``max_groups`` are asked."""
        if not 0 <= min_count <= resource.sm_count or groups < 1:
            raise self._fail("CUDA_ERROR_INVALID_VALUE", 1, "cuDevSmResourceSplitByCount")
        size = max(min_count, self.min_partition_sms)
        size = -(-size // self.alignment_sms) * self.alignment_sms
        made = min(groups, resource.sm_count // size)
        if self.max_groups is not None:
            made = min(made, self.max_groups)
        left = resource.sm_count - made * size
        return ([self._resource(size) for _ in range(made)],
                self._resource(left) if left else None)

    def split_structured(self, resource: SmResource,
                         counts: Sequence[int]) -> tuple[list[SmResource], SmResource | None]:
        """Groups of the sizes asked; CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION if they break
        the alignment or do not fit; NotSupportedError when ``unequal_splits`` is False."""
        if not self.unequal_splits:
            raise NotSupportedError("partitions of different sizes need cuDevSmResourceSplit",
                                    hint="ask for partitions of one size")
        if any(c < 2 or c % 2 or c % self.alignment_sms for c in counts) or \
                sum(counts) > resource.sm_count:
            raise self._fail("CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION", 915,
                             "cuDevSmResourceSplit")
        left = resource.sm_count - sum(counts)
        return [self._resource(c) for c in counts], self._resource(left) if left else None

    def create_context(self, resources: Sequence[SmResource], device: int) -> Any:
        """A new fake green-context handle, counted in :attr:`contexts`."""
        handle = next(self._ids)
        self.contexts[handle] = sum(r.sm_count for r in resources)
        return handle

    def destroy_context(self, context: Any) -> None:
        """Forget the context; an error for an unknown one, or while it still has streams."""
        if context not in self.contexts:
            raise self._fail("CUDA_ERROR_INVALID_CONTEXT", 201, "cuGreenCtxDestroy")
        if any(ctx == context for ctx, _ in self.streams.values()):
            # The real driver would leave the streams dangling; a test should see it.
            raise self._fail("CUDA_ERROR_CONTEXT_IS_DESTROYED", 709, "cuGreenCtxDestroy")
        del self.contexts[context]

    def context_sm_count(self, context: Any) -> int:
        """SMs of the context's resources."""
        return self.contexts[context]

    def create_stream(self, context: Any, priority: int) -> Any:
        """A new fake stream handle, counted in :attr:`streams`."""
        if context not in self.contexts:
            raise self._fail("CUDA_ERROR_INVALID_CONTEXT", 201, "cuGreenCtxStreamCreate")
        handle = next(self._ids)
        self.streams[handle] = (context, priority)
        return handle

    def destroy_stream(self, stream: Any) -> None:
        """Forget the stream; an error for an unknown one."""
        if stream not in self.streams:
            raise self._fail("CUDA_ERROR_INVALID_HANDLE", 400, "cuStreamDestroy")
        del self.streams[stream]

    def priority_range(self, device: int) -> tuple[int, int]:
        """The ``priority_range`` given at construction."""
        return self._priority_range
