"""The driver calls behind SM partitions (green contexts), behind one small seam.

:class:`GreenDriver` is the seam: the few operations :mod:`edgert.cuda._green` needs, with plain
Python values in and out. :class:`CudaGreenDriver` implements it with ``cuda.bindings.driver``
(CUDA 12.4+ driver); :class:`edgert.testing.FakeGreenDriver` implements it for tests without a
GPU and is checked against this one on the GPU tier.

The call chain is the one NVIDIA documents for green contexts
(https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__GREEN__CONTEXTS.html):
``cuDeviceGetDevResource`` -> ``cuDevSmResourceSplitByCount`` (or ``cuDevSmResourceSplit``) ->
``cuDevResourceGenerateDesc`` -> ``cuGreenCtxCreate`` -> ``cuGreenCtxStreamCreate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edgert.cuda._api import check, driver, runtime
from edgert.cuda._device import device_properties, probe, require
from edgert.errors import NotSupportedError

__all__ = ["CudaGreenDriver", "GreenDriver", "SmResource"]

# The first driver with green contexts (CUDA 12.4 release notes).
MIN_DRIVER = (12, 4)
_CALLS = ("cuDeviceGetDevResource", "cuDevSmResourceSplitByCount", "cuDevResourceGenerateDesc",
          "cuGreenCtxCreate", "cuGreenCtxDestroy", "cuGreenCtxStreamCreate",
          "cuGreenCtxGetDevResource")
_UPGRADE = ("upgrade to an NVIDIA driver with CUDA 12.4 or newer and cuda-bindings 12.4+ "
            "(JetPack 6.1+ on Jetson); without green contexts use stream priorities only "
            "(see docs/multimodel.md)")

# (minimum group, group-size step) of cuDevSmResourceSplitByCount per compute-capability major,
# for cuda-bindings before 12.8 whose CUdevSmResource lacks minSmPartitionSize and
# smCoscheduledAlignment (JetPack 6 ships CUDA 12.6). The CUDA 12.4 driver API, Green Contexts
# (https://docs.nvidia.com/cuda/archive/12.4.0/cuda-driver-api/group__CUDA__GREEN__CONTEXTS.html):
# "On Compute Architecture 6.X: The minimum count is 1 SM. / 7.X: The minimum count is 2 SMs and
# must be a multiple of 2. / 8.X: The minimum count is 4 SMs and must be a multiple of 2. /
# 9.0+: The minimum count is 8 SMs and must be a multiple of 8." (The CUDA 13 pages give, for
# cuDevSmResourceSplit, an alignment of 2 on "7.X, 8.X, and all Tegra SoC" and 8 on 9.0+.)
# The driver's own answer still wins: the minimum is always probed, and where the probe
# disagrees with this table the step is probed too.
_SPLIT_GRANULARITY = {6: (1, 1), 7: (2, 2), 8: (4, 2)}
_SPLIT_GRANULARITY_9_PLUS = (8, 8)


def _documented_granularity(major: int | None) -> tuple[int, int] | None:
    """``(minimum, step)`` the driver documentation gives for compute capability ``major``.x."""
    if major is None:
        return None
    if major >= 9:
        return _SPLIT_GRANULARITY_9_PLUS
    return _SPLIT_GRANULARITY.get(major)


@dataclass(frozen=True, slots=True)
class SmResource:
    """An SM resource as the driver describes it (a device's, a split group's or a remainder).

    Attributes:
        raw: The driver's own object (``CUdevResource``), passed back to the driver unchanged.
        sm_count: SMs in the resource.
        min_partition_sms: The smallest group the driver will split off it.
        alignment_sms: Group sizes must be multiples of this.
    """

    raw: Any
    sm_count: int
    min_partition_sms: int
    alignment_sms: int


class GreenDriver(Protocol):
    """What SM partitions need from a driver; errors are edgert errors, values are plain."""

    def sm_resource(self, device: int) -> SmResource:
        """The device's whole SM resource. Raises NotSupportedError without green contexts."""

    def split_by_count(self, resource: SmResource, groups: int,
                       min_count: int) -> tuple[list[SmResource], SmResource | None]:
        """Up to ``groups`` equal groups of at least ``min_count`` SMs, and the remainder."""

    def split_structured(self, resource: SmResource,
                         counts: Sequence[int]) -> tuple[list[SmResource], SmResource | None]:
        """One group per entry of ``counts`` (sizes may differ), and the remainder."""

    def create_context(self, resources: Sequence[SmResource], device: int) -> Any:
        """A green context over ``resources``; returns its handle."""

    def destroy_context(self, context: Any) -> None:
        """Destroy a green context (its streams must be destroyed first)."""

    def context_sm_count(self, context: Any) -> int:
        """SMs the driver actually gave the green context."""

    def create_stream(self, context: Any, priority: int) -> Any:
        """A non-blocking stream of the green context; returns the raw stream."""

    def destroy_stream(self, stream: Any) -> None:
        """Destroy a stream made by :meth:`create_stream`."""

    def priority_range(self, device: int) -> tuple[int, int]:
        """``(lowest, highest)`` stream priorities of the device."""


class CudaGreenDriver:
    """:class:`GreenDriver` on ``cuda.bindings.driver``; every status goes through ``check``."""

    def __init__(self) -> None:
        self._drv: Any = None

    def _driver(self, device: int) -> Any:
        if self._drv is not None:
            return self._drv
        require(device)
        version = probe().driver_version
        if version is not None and version < MIN_DRIVER:
            raise NotSupportedError(
                f"the NVIDIA driver supports CUDA {version[0]}.{version[1]}; green contexts "
                f"(SM partitions) need {MIN_DRIVER[0]}.{MIN_DRIVER[1]}+", hint=_UPGRADE)
        drv = driver()
        missing = [name for name in _CALLS if not hasattr(drv, name)]
        if missing:
            raise NotSupportedError(
                "the installed cuda-bindings lack green contexts (" + ", ".join(missing) + ")",
                hint=_UPGRADE)
        check(drv.cuInit(0), call="cuInit")
        self._drv = drv
        return drv

    def sm_resource(self, device: int) -> SmResource:
        drv = self._driver(device)
        rt = runtime()
        prev = int(check(rt.cudaGetDevice(), call="cudaGetDevice"))
        try:
            # cuGreenCtxCreate retains the primary context; NVIDIA advises having it active
            # first so it is not initialised and torn down with each green context.
            check(rt.cudaSetDevice(device), call="cudaSetDevice")
            check(rt.cudaFree(0), call="cudaFree(0)")
        finally:
            rt.cudaSetDevice(prev)
        dev = check(drv.cuDeviceGet(device), call="cuDeviceGet")
        try:
            res = check(drv.cuDeviceGetDevResource(
                dev, drv.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM),
                call="cuDeviceGetDevResource", hint=_UPGRADE)
        except RuntimeError as err:  # cuda.bindings: the driver library lacks the symbol
            raise NotSupportedError(f"the NVIDIA driver lacks green contexts ({err})",
                                    hint=_UPGRADE) from err
        return self._describe(drv, res, None, dev)

    def _describe(self, drv: Any, res: Any, parent: SmResource | None,
                  dev: Any = None) -> SmResource:
        sm = res.sm
        count = int(sm.smCount)
        least = int(getattr(sm, "minSmPartitionSize", 0) or 0)
        align = int(getattr(sm, "smCoscheduledAlignment", 0) or 0)
        if parent is not None:
            least = least or parent.min_partition_sms
            align = align or parent.alignment_sms
        elif not least or not align:
            probed_least, probed_align = self._granularity(drv, res, count, dev)
            least = least or probed_least
            align = align or probed_align
        return SmResource(res, count, least, align)

    def _granularity(self, drv: Any, res: Any, count: int, dev: Any) -> tuple[int, int]:
        """``(minimum, step)`` of groups for bindings that do not report them (before 12.8).

        The minimum is the smallest group the driver splits off. The step comes from the
        documented table for the device's compute capability when the probed minimum agrees
        with it; otherwise (or with no compute capability) from a second probe: the group the
        driver makes for one SM more than the minimum.
        """
        whole = SmResource(res, count, 1, 1)
        groups, _ = self.split_by_count(whole, 1, 1)
        least = groups[0].sm_count if groups else count
        row = _documented_granularity(self._cc_major(drv, dev))
        if row is not None and least >= row[0] and least % row[1] == 0:
            return least, row[1]
        if least + 1 > count:
            return least, least  # no second group size exists on this device
        bigger, _ = self.split_by_count(whole, 1, least + 1)
        step = bigger[0].sm_count - least if bigger else least
        return least, step if step > 0 else least

    @staticmethod
    def _cc_major(drv: Any, dev: Any) -> int | None:
        """The device's compute-capability major version, or None where it cannot be read."""
        if dev is None:
            return None
        try:
            attr = drv.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
            return int(check(drv.cuDeviceGetAttribute(attr, dev), call="cuDeviceGetAttribute"))
        except Exception:  # old or partial bindings: fall back to probing the driver
            return None

    def split_by_count(self, resource: SmResource, groups: int,
                       min_count: int) -> tuple[list[SmResource], SmResource | None]:
        drv = self._drv
        result, made, remainder = check(
            drv.cuDevSmResourceSplitByCount(groups, resource.raw, 0, min_count),
            call="cuDevSmResourceSplitByCount")
        out = [self._describe(drv, r, resource) for r in list(result)[:int(made)]]
        rest = self._describe(drv, remainder, resource)
        return out, (rest if rest.sm_count else None)

    def split_structured(self, resource: SmResource,
                         counts: Sequence[int]) -> tuple[list[SmResource], SmResource | None]:
        drv = self._drv
        if not hasattr(drv, "cuDevSmResourceSplit"):
            raise NotSupportedError(
                "partitions of different sizes need cuDevSmResourceSplit (cuda-bindings 13.1+)",
                hint="ask for partitions of one size, or upgrade cuda-bindings and the driver")
        params = []
        for count in counts:
            p = drv.CU_DEV_SM_RESOURCE_GROUP_PARAMS()
            p.smCount = int(count)
            params.append(p)
        try:
            result, remainder = check(
                drv.cuDevSmResourceSplit(len(params), resource.raw, 0, params),
                call="cuDevSmResourceSplit")
        except RuntimeError as err:  # the driver library lacks the symbol (before CUDA 13.1)
            raise NotSupportedError(
                f"the NVIDIA driver cannot split SMs into groups of different sizes ({err})",
                hint="ask for partitions of one size, or upgrade the driver to CUDA 13.1+",
            ) from err
        out = [self._describe(drv, r, resource) for r in list(result)]
        rest = self._describe(drv, remainder, resource)
        return out, (rest if rest.sm_count else None)

    def create_context(self, resources: Sequence[SmResource], device: int) -> Any:
        drv = self._driver(device)
        desc = check(drv.cuDevResourceGenerateDesc([r.raw for r in resources], len(resources)),
                     call="cuDevResourceGenerateDesc")
        dev = check(drv.cuDeviceGet(device), call="cuDeviceGet")
        # CUDA 12.4-12.x require CU_GREEN_CTX_DEFAULT_STREAM; later drivers accept it.
        flags = int(drv.CUgreenCtxCreate_flags.CU_GREEN_CTX_DEFAULT_STREAM)
        return check(drv.cuGreenCtxCreate(desc, dev, flags), call="cuGreenCtxCreate")

    def destroy_context(self, context: Any) -> None:
        check(self._drv.cuGreenCtxDestroy(context), call="cuGreenCtxDestroy")

    def context_sm_count(self, context: Any) -> int:
        drv = self._drv
        res = check(drv.cuGreenCtxGetDevResource(
            context, drv.CUdevResourceType.CU_DEV_RESOURCE_TYPE_SM),
            call="cuGreenCtxGetDevResource")
        return int(res.sm.smCount)

    def create_stream(self, context: Any, priority: int) -> Any:
        drv = self._drv
        flags = int(drv.CUstream_flags.CU_STREAM_NON_BLOCKING)  # the only flag it accepts
        return check(drv.cuGreenCtxStreamCreate(context, flags, priority),
                     call="cuGreenCtxStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        check(self._drv.cuStreamDestroy(stream), call="cuStreamDestroy")

    def priority_range(self, device: int) -> tuple[int, int]:
        return device_properties(device).stream_priority_range
