"""SM partitions of one GPU (green contexts): keep SMs for the model that must not wait.

A persistent kernel (a large cuBLAS GEMM, an NCCL collective) holds every SM until it finishes,
so a control model's kernels wait a whole GEMM whatever their stream priority. A green context
runs its streams' kernels on a fixed set of SMs only: confine the heavy work to one partition and
run the control model on another, and the control model always finds SMs free.

    >>> from edgert.cuda import partition_sms
    >>> with partition_sms([16]) as parts:           # doctest: +SKIP
    ...     control, rest = parts[0], parts.rest     # 16 SMs, and the other 116 of an H200
    ...     s = control.stream(priority="highest")

Sizes must respect what the device reports (:func:`sm_layout`): at least
``min_partition_sms`` and a multiple of ``alignment_sms`` (8 and 8 on Hopper). Where the driver,
device or cuda-bindings lack green contexts, everything here raises :class:`NotSupportedError`
and :func:`green_context_support` says why without raising.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from edgert._owner import Owner
from edgert.cuda._api import runtime
from edgert.cuda._green_driver import CudaGreenDriver, GreenDriver, SmResource
from edgert.cuda._stream import PriorityArg, Stream, resolve_priority
from edgert.errors import (
    EdgeRTError,
    InvalidArgumentError,
    NotSupportedError,
    ResourceBusyError,
)

__all__ = [
    "GpuPartition",
    "GpuPartitions",
    "GreenContextSupport",
    "SmLayout",
    "green_context_support",
    "partition_sms",
    "plan_partitions",
    "sm_layout",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class SmLayout:
    """A device's SMs as green contexts see them.

    Attributes:
        device: The CUDA device ordinal.
        sm_count: SMs on the device.
        min_partition_sms: The smallest partition the driver makes.
        alignment_sms: Partition sizes are multiples of this (SMs co-scheduled in one cluster).
    """

    device: int
    sm_count: int
    min_partition_sms: int
    alignment_sms: int

    def legal_size(self, sms: int) -> int:
        """The smallest partition size the device accepts that has at least ``sms`` SMs.

        Raises:
            InvalidArgumentError: ``sms`` is not a positive int, or no partition that large fits
                on the device.
        """
        check_sm_count(sms, "a partition size")
        size = max(sms, self.min_partition_sms)
        size = -(-size // self.alignment_sms) * self.alignment_sms
        if size > self.sm_count:
            largest = self.sm_count // self.alignment_sms * self.alignment_sms
            hint = (f"ask for at most {largest} SMs" if largest >= self.min_partition_sms
                    else f"device {self.device} is too small to partition")
            raise InvalidArgumentError(
                f"no partition of {sms} SMs fits on device {self.device} ({self.sm_count} SMs)",
                hint=hint)
        return size


def check_sm_count(value: object, what: str) -> int:
    """``value`` if it is a positive int (not a bool), else InvalidArgumentError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgumentError(f"{what} must be a positive int (SMs), not {value!r}")
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class GreenContextSupport:
    """Whether SM partitions work on a device, and if not why (never raises to build).

    Attributes:
        device: The CUDA device ordinal.
        supported: Green contexts can be made here.
        reason: Why not, with what to do, or None when supported.
        layout: The SM layout when supported, else None.
    """

    device: int
    supported: bool
    reason: str | None
    layout: SmLayout | None


def _driver(driver: GreenDriver | None) -> GreenDriver:
    return driver if driver is not None else CudaGreenDriver()


def sm_layout(device: int = 0, *, driver: GreenDriver | None = None) -> SmLayout:
    """Ask the driver how device ``device``'s SMs can be partitioned.

    Args:
        device: The CUDA device ordinal.
        driver: The driver seam; default the real one. Tests pass
            :class:`edgert.testing.green.FakeGreenDriver`.

    Raises:
        NotSupportedError: No CUDA device, or the driver, device or cuda-bindings lack green
            contexts (the hint says what to upgrade).
        CudaError: The driver refused the query.
    """
    res = _driver(driver).sm_resource(device)
    return SmLayout(device=device, sm_count=res.sm_count,
                    min_partition_sms=res.min_partition_sms, alignment_sms=res.alignment_sms)


def green_context_support(device: int = 0, *,
                          driver: GreenDriver | None = None) -> GreenContextSupport:
    """Report whether SM partitions work on ``device``. Never raises.

    Args:
        device: The CUDA device ordinal.
        driver: The driver seam (tests pass a fake).
    """
    try:
        layout = sm_layout(device, driver=driver)
    except EdgeRTError as err:
        reason = err.message + (f" ({err.hint})" if err.hint else "")
        return GreenContextSupport(device=device, supported=False, reason=reason, layout=None)
    except Exception as err:  # a broken install must not break a report
        return GreenContextSupport(device=device, supported=False,
                                   reason=f"the green-context query failed: {err!r}", layout=None)
    return GreenContextSupport(device=device, supported=True, reason=None, layout=layout)


def plan_partitions(sizes: Sequence[int], layout: SmLayout, *, rest: bool = True) -> int:
    """Check partition sizes against a device's layout; return the SMs left for the rest.

    Args:
        sizes: SMs per partition.
        layout: What the device reports (:func:`sm_layout`).
        rest: Whether the SMs left over become a partition too.

    Returns:
        The SM count of the rest partition (0 when ``rest`` is False).

    Raises:
        InvalidArgumentError: No sizes; a size that is not a positive int, below the minimum, not
            a multiple of the alignment; more SMs than the device has; or a rest partition that
            would be empty or below the minimum.
    """
    if len(sizes) == 0:
        raise InvalidArgumentError("no partition sizes given",
                                   hint="pass SM counts, e.g. partition_sms([16])")
    for i, size in enumerate(sizes):
        check_sm_count(size, "a partition size")
        if size < layout.min_partition_sms:
            raise InvalidArgumentError(
                f"a partition of {size} SMs is below device {layout.device}'s minimum of "
                f"{layout.min_partition_sms}",
                hint=_size_hint(sizes, i, [layout.min_partition_sms], layout, rest))
        if size % layout.alignment_sms:
            down = size // layout.alignment_sms * layout.alignment_sms
            raise InvalidArgumentError(
                f"a partition of {size} SMs breaks device {layout.device}'s alignment: sizes "
                f"must be multiples of {layout.alignment_sms}",
                hint=_size_hint(sizes, i, [down, down + layout.alignment_sms], layout, rest))
    total = sum(sizes)
    if total > layout.sm_count:
        raise InvalidArgumentError(
            f"partitions of {list(sizes)} SMs need {total} SMs; device {layout.device} has "
            f"{layout.sm_count}", hint="ask for fewer or smaller partitions")
    left = layout.sm_count - total
    if not rest:
        return 0
    if left < layout.min_partition_sms:
        raise InvalidArgumentError(
            f"after partitions of {list(sizes)} SMs, {left} of device {layout.device}'s "
            f"{layout.sm_count} SMs are left: below the minimum partition of "
            f"{layout.min_partition_sms}", hint="pass rest=False, or ask for fewer SMs")
    return left


def _fits(sizes: Sequence[int], layout: SmLayout, rest: bool) -> bool:
    """Whether every size is legal and they fit, with a rest partition when ``rest``."""
    if any(s < layout.min_partition_sms or s % layout.alignment_sms for s in sizes):
        return False
    left = layout.sm_count - sum(sizes)
    return left >= (layout.min_partition_sms if rest else 0)


def _size_hint(sizes: Sequence[int], index: int, candidates: Sequence[int], layout: SmLayout,
               rest: bool) -> str:
    """What to use instead of ``sizes[index]``: only sizes accepted with the same ``rest``
    (the other sizes as given, where they are legal), or one that needs ``rest=False``."""
    # The other sizes as given; an illegal one gets its own error once this one is fixed.
    others = [s for j, s in enumerate(sizes) if j != index and isinstance(s, int)
              and not isinstance(s, bool) and _fits([s], layout, False)]

    def works(size: int, with_rest: bool) -> bool:
        return size > 0 and _fits([*others, size], layout, with_rest)

    good = [c for c in candidates if works(c, rest)]
    if good:
        return "use " + " or ".join(str(c) for c in good)
    step = layout.alignment_sms
    below = max(candidates) // step * step
    best = next((c for c in range(below, 0, -step) if works(c, rest)), None)
    no_rest = [c for c in candidates if rest and works(c, False)]
    if best is not None and no_rest:
        return f"use {best}, or {no_rest[0]} with rest=False"
    if best is not None:
        return f"use {best}"
    if no_rest:
        return f"use {no_rest[0]} with rest=False"
    return "ask for fewer or smaller partitions"


class GpuPartition(Owner):
    """A set of SMs of one device (a green context) and the streams that run on it.

    Made by :func:`partition_sms`. Kernels enqueued on its streams run on its SMs only. Close
    its streams (and the sessions using them) before the partition; ``close()`` refuses while
    any is open.
    """

    def __init__(self, driver: GreenDriver, context: Any, *, device: int, sm_count: int,
                 name: str) -> None:
        self._driver = driver
        self._context = context
        self._device = device
        self._sm_count = sm_count
        self._name = name
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()
        self._own(functools.partial(driver.destroy_context, context),
                  f"GPU partition ({name}, green context)")

    @property
    def device(self) -> int:
        """The CUDA device ordinal."""
        return self._device

    @property
    def sm_count(self) -> int:
        """SMs of this partition, as the driver reported for its green context."""
        return self._sm_count

    @property
    def name(self) -> str:
        """``partition N`` or ``rest``, for reports."""
        return self._name

    @property
    def context(self) -> Any:
        """The raw ``CUgreenCtx`` (valid while open), for calls into cuda.bindings."""
        self._check_open()
        return self._context

    def stream(self, *, priority: PriorityArg = None) -> Stream:
        """Make a non-blocking stream whose kernels run on this partition's SMs.

        Args:
            priority: ``"highest"``, ``"lowest"``, an int in the device's range, or None.

        Raises:
            ResourceClosedError: The partition is closed.
            InvalidArgumentError: The priority is outside the device's range.
            CudaError: The driver refused.
        """
        self._check_open()
        prio = resolve_priority(priority, self._driver.priority_range(self._device),
                                device=self._device)
        raw = self._driver.create_stream(self._context, prio)
        handle = int(raw)
        try:
            wrapped = runtime().cudaStream_t(init_value=handle)
        except BaseException:
            self._driver.destroy_stream(raw)
            raise
        stream = Stream.__new__(Stream)
        stream._raw = wrapped
        stream._handle = handle
        stream._device = self._device
        stream._priority = prio
        stream._owned = True
        stream._keepalive = self  # a stream keeps its green context alive
        stream._own(functools.partial(self._driver.destroy_stream, raw),
                    f"CUDA stream 0x{handle:x} of GPU partition {self._name}")
        self._streams.add(stream)
        return stream

    def close(self) -> None:
        """Destroy the green context. Calling it again does nothing.

        Raises:
            ResourceBusyError: A stream of this partition is still open.
        """
        if self.closed:
            return
        open_streams = [s for s in self._streams if not s.closed]
        if open_streams:
            raise ResourceBusyError(
                f"GPU partition {self._name} still has {len(open_streams)} open stream(s)",
                hint="close the sessions and streams that use it first")
        super().close()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _exit(self, exc_type)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (f"<edgert.cuda.GpuPartition {self._name} device={self._device} "
                f"sm_count={self._sm_count} {state}>")


class GpuPartitions(Owner):
    """The partitions made by one :func:`partition_sms` call; ``close()`` closes them all.

    Indexable and iterable over the partitions asked for (not the rest); :attr:`rest` holds the
    partition of the SMs left over, when one was asked for.
    """

    def __init__(self, parts: list[GpuPartition], rest: GpuPartition | None,
                 layout: SmLayout) -> None:
        self._parts = parts
        self._rest = rest
        self._layout = layout

    @property
    def rest(self) -> GpuPartition | None:
        """The partition of the SMs no other partition has (None if ``rest=False``)."""
        return self._rest

    @property
    def layout(self) -> SmLayout:
        """The device's SM layout the split was planned against."""
        return self._layout

    def __getitem__(self, index: int) -> GpuPartition:
        return self._parts[index]

    def __len__(self) -> int:
        return len(self._parts)

    def __iter__(self) -> Iterator[GpuPartition]:
        return iter(self._parts)

    def close(self) -> None:
        """Close every partition. Calling it again does nothing.

        Raises:
            ResourceBusyError: A stream of some partition is still open (nothing is closed).
        """
        every = [*self._parts, *([self._rest] if self._rest is not None else [])]
        busy = [p.name for p in every if not p.closed and any(
            not s.closed for s in p._streams)]
        if busy:
            raise ResourceBusyError(f"GPU partitions {busy} still have open streams",
                                    hint="close the sessions and streams that use them first")
        for part in every:
            part.close()
        self._owner_closed = True

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _exit(self, exc_type)


def _exit(owner: GpuPartition | GpuPartitions, exc_type: type[BaseException] | None) -> None:
    """Close on leaving a ``with`` block; while an error is propagating, a partition that still
    has open streams is left to them (its finalizer releases it once they are gone) rather than
    replacing that error with a ResourceBusyError."""
    try:
        owner.close()
    except ResourceBusyError:
        if exc_type is None:
            raise


def partition_sms(sizes: Sequence[int], *, device: int = 0, rest: bool = True,
                  driver: GreenDriver | None = None) -> GpuPartitions:
    """Split device ``device``'s SMs into partitions of ``sizes`` SMs (plus the rest).

    Args:
        sizes: SMs per partition, each at least the device's minimum and a multiple of its
            alignment (:func:`sm_layout`; :meth:`SmLayout.legal_size` rounds a wish up).
        device: The CUDA device ordinal.
        rest: Also make a partition of the SMs left over (the place for the heavy work).
        driver: The driver seam; tests pass :class:`edgert.testing.green.FakeGreenDriver`.

    Returns:
        The partitions, owned together.

    Raises:
        NotSupportedError: The driver, device or cuda-bindings lack green contexts, or sizes
            differ and the driver cannot split unequal groups.
        InvalidArgumentError: The sizes break the device's rules (see :func:`plan_partitions`),
            or the driver could not place them.
        CudaError: The driver refused.
    """
    drv = _driver(driver)
    whole = drv.sm_resource(device)
    layout = SmLayout(device=device, sm_count=whole.sm_count,
                      min_partition_sms=whole.min_partition_sms,
                      alignment_sms=whole.alignment_sms)
    left = plan_partitions(sizes, layout, rest=rest)
    if len(set(sizes)) == 1:
        groups, remainder = drv.split_by_count(whole, len(sizes), sizes[0])
    else:
        groups, remainder = drv.split_structured(whole, list(sizes))
    got = [g.sm_count for g in groups]
    if len(got) < len(sizes) and all(g == s for g, s in zip(got, sizes, strict=False)):
        # The driver may make fewer groups than asked ("due to cluster requirements"): never
        # hand back a smaller partition set than the caller planned for.
        raise InvalidArgumentError(
            f"device {device} could not be split into {list(sizes)} SMs: the driver made only "
            f"{len(got)} of the {len(sizes)} partitions (its SM clusters fit no more; the "
            f"driver made {got})",
            hint=f"ask for at most {len(got)} partitions of {sizes[0]} SMs" if got
            else "ask for fewer partitions")
    if got != list(sizes):
        raise InvalidArgumentError(
            f"device {device} could not be split into {list(sizes)} SMs (the driver made "
            f"{got})", hint="SMs are grouped in clusters of uneven size: try fewer or smaller "
            "partitions")
    if rest and (remainder is None or remainder.sm_count != left):
        raise InvalidArgumentError(
            f"device {device} left {0 if remainder is None else remainder.sm_count} SMs after "
            f"partitions of {list(sizes)}, not the {left} expected",
            hint="pass rest=False, or ask for other sizes")
    made: list[GpuPartition] = []
    try:
        for i, group in enumerate(groups):
            made.append(_make(drv, group, device, f"partition {i}"))
        rest_part = _make(drv, remainder, device, "rest") if rest and remainder else None
    except BaseException:
        for part in made:
            part.close()
        raise
    return GpuPartitions(made, rest_part, layout)


def _make(drv: GreenDriver, group: SmResource, device: int, name: str) -> GpuPartition:
    context = drv.create_context([group], device)
    try:
        count = drv.context_sm_count(context)
        if count != group.sm_count:
            raise NotSupportedError(
                f"the green context for {name} has {count} SMs, not the {group.sm_count} asked",
                hint="report this driver version; use stream priorities meanwhile")
    except BaseException:
        drv.destroy_context(context)
        raise
    return GpuPartition(drv, context, device=device, sm_count=count, name=name)
