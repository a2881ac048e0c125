"""The cuda.bindings side of SM partitions, without a GPU: what is detected and refused.

:class:`edgert.cuda._green_driver.CudaGreenDriver` is run against a stand-in for
``cuda.bindings.driver`` shaped like the real one (same call names, same return tuples), so the
feature detection and the granularity fallback are checked here; the real module is exercised on
the GPU tier (tests/test_green_gpu.py).
"""

from __future__ import annotations

from enum import IntEnum
from types import SimpleNamespace
from typing import Any

import pytest

import edgert.cuda._green_driver as gd
from edgert.cuda import CudaStatus, partition_sms, sm_layout
from edgert.errors import CudaError, NotSupportedError


class _Res(IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1


def _resource(count: int, *, fields: bool) -> Any:
    sm = SimpleNamespace(smCount=count)
    if fields:
        sm.minSmPartitionSize = 8
        sm.smCoscheduledAlignment = 8
    return SimpleNamespace(sm=sm)


class FakeBindings:
    """The calls CudaGreenDriver makes, returning what cuda.bindings returns."""

    CUdevResourceType = SimpleNamespace(CU_DEV_RESOURCE_TYPE_SM=1)
    CUgreenCtxCreate_flags = SimpleNamespace(CU_GREEN_CTX_DEFAULT_STREAM=1)
    CUstream_flags = SimpleNamespace(CU_STREAM_NON_BLOCKING=1)

    def __init__(self, *, fields: bool = True, symbol_missing: bool = False) -> None:
        self.fields = fields
        self.symbol_missing = symbol_missing
        self.destroyed: list[int] = []

    def cuInit(self, flags: int) -> tuple[Any]:
        return (_Res.CUDA_SUCCESS,)

    def cuDeviceGet(self, ordinal: int) -> tuple[Any, int]:
        return (_Res.CUDA_SUCCESS, ordinal)

    def cuDeviceGetDevResource(self, dev: int, kind: int) -> tuple[Any, Any]:
        if self.symbol_missing:  # what cuda.bindings raises when the driver lacks the symbol
            raise RuntimeError('Function "cuDeviceGetDevResource" not found')
        return (_Res.CUDA_SUCCESS, _resource(132, fields=self.fields))

    def cuDevSmResourceSplitByCount(self, groups: int, res: Any, flags: int,
                                    min_count: int) -> tuple[Any, list[Any], int, Any]:
        if min_count > res.sm.smCount:
            return (_Res.CUDA_ERROR_INVALID_VALUE, [], 0, _resource(0, fields=False))
        size = max(8, -(-min_count // 8) * 8)
        made = min(groups, res.sm.smCount // size)
        out = [_resource(size, fields=self.fields) for _ in range(groups)]
        return (_Res.CUDA_SUCCESS, out, made,
                _resource(res.sm.smCount - made * size, fields=self.fields))

    def cuDevResourceGenerateDesc(self, resources: list[Any], n: int) -> tuple[Any, Any]:
        return (_Res.CUDA_SUCCESS, ("desc", sum(r.sm.smCount for r in resources)))

    def cuGreenCtxCreate(self, desc: Any, dev: int, flags: int) -> tuple[Any, Any]:
        return (_Res.CUDA_SUCCESS, SimpleNamespace(sms=desc[1]))

    def cuGreenCtxGetDevResource(self, ctx: Any, kind: int) -> tuple[Any, Any]:
        return (_Res.CUDA_SUCCESS, _resource(ctx.sms, fields=self.fields))

    def cuGreenCtxDestroy(self, ctx: Any) -> tuple[Any]:
        self.destroyed.append(ctx.sms)
        return (_Res.CUDA_SUCCESS,)

    def cuGreenCtxStreamCreate(self, ctx: Any, flags: int, priority: int) -> tuple[Any, int]:
        return (_Res.CUDA_SUCCESS, 0x5000 + ctx.sms)

    def cuStreamDestroy(self, stream: Any) -> tuple[Any]:
        return (_Res.CUDA_SUCCESS,)


class _Runtime:
    def cudaGetDevice(self) -> tuple[int, int]:
        return (0, 0)

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,)

    def cudaFree(self, ptr: int) -> tuple[int]:
        return (0,)


def _status(driver_version: tuple[int, int] | None) -> CudaStatus:
    return CudaStatus(available=True, device_count=1, driver_version=driver_version,
                      runtime_version=(13, 0), bindings_version="13.3.1", reason=None)


@pytest.fixture
def bindings(monkeypatch: pytest.MonkeyPatch) -> FakeBindings:
    fake = FakeBindings()
    monkeypatch.setattr(gd, "require", lambda device=0: None)
    monkeypatch.setattr(gd, "probe", lambda: _status((13, 0)))
    monkeypatch.setattr(gd, "driver", lambda: fake)
    monkeypatch.setattr(gd, "runtime", _Runtime)
    return fake


def test_the_real_adapter_reads_the_layout(bindings: FakeBindings) -> None:
    layout = sm_layout(0, driver=gd.CudaGreenDriver())
    assert (layout.sm_count, layout.min_partition_sms, layout.alignment_sms) == (132, 8, 8)


def test_granularity_is_discovered_where_the_bindings_do_not_report_it(
        bindings: FakeBindings) -> None:
    bindings.fields = False  # cuda-bindings before 12.8: CUdevSmResource has smCount only
    layout = sm_layout(0, driver=gd.CudaGreenDriver())
    assert (layout.min_partition_sms, layout.alignment_sms) == (8, 8)


def test_partitions_through_the_real_adapter(bindings: FakeBindings) -> None:
    with partition_sms([16], driver=gd.CudaGreenDriver()) as parts:
        assert (parts[0].sm_count, parts.rest.sm_count) == (16, 116)  # type: ignore[union-attr]
    assert sorted(bindings.destroyed) == [16, 116]


def test_an_old_driver_is_not_supported(bindings: FakeBindings,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gd, "probe", lambda: _status((12, 2)))
    with pytest.raises(NotSupportedError, match=r"CUDA 12\.2; green contexts .* need 12\.4") as e:
        sm_layout(0, driver=gd.CudaGreenDriver())
    assert e.value.hint is not None
    assert "priorities" in e.value.hint


def test_bindings_without_the_calls_are_not_supported(bindings: FakeBindings,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    full = FakeBindings()
    old = SimpleNamespace(**{n: getattr(full, n) for n in dir(full)
                             if n.lower().startswith("cu") and n != "cuGreenCtxCreate"})
    monkeypatch.setattr(gd, "driver", lambda: old)
    with pytest.raises(NotSupportedError, match=r"lack green contexts \(cuGreenCtxCreate\)"):
        sm_layout(0, driver=gd.CudaGreenDriver())


def test_a_driver_library_without_the_symbol_is_not_supported(bindings: FakeBindings) -> None:
    bindings.symbol_missing = True
    with pytest.raises(NotSupportedError, match="driver lacks green contexts"):
        sm_layout(0, driver=gd.CudaGreenDriver())


def test_a_refused_split_is_a_cuda_error(bindings: FakeBindings) -> None:
    drv = gd.CudaGreenDriver()
    whole = drv.sm_resource(0)
    with pytest.raises(CudaError, match="cuDevSmResourceSplitByCount"):
        drv.split_by_count(whole, 1, 200)


def test_unequal_sizes_need_the_structured_split(bindings: FakeBindings) -> None:
    with pytest.raises(NotSupportedError, match="cuDevSmResourceSplit"):
        partition_sms([16, 32], driver=gd.CudaGreenDriver())


class OrinBindings(FakeBindings):
    """A 16-SM Ampere/Tegra device on cuda-bindings before 12.8 (JetPack 6: CUDA 12.6).

    Rounds like the driver documentation's 8.X row by default (minimum 4, multiple of 2);
    ``cc`` None leaves out cuDeviceGetAttribute, as in a bare stand-in.
    """

    CUdevice_attribute = SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=75)

    def __init__(self, *, cc: int | None, least: int = 4, step: int = 2) -> None:
        super().__init__(fields=False)
        self.cc, self.least, self.step = cc, least, step
        self.splits: list[int] = []

    def __getattribute__(self, name: str) -> Any:
        if name == "cuDeviceGetAttribute" and object.__getattribute__(self, "cc") is None:
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    def cuDeviceGetAttribute(self, attr: int, dev: int) -> tuple[Any, int]:
        assert attr == 75
        return (_Res.CUDA_SUCCESS, self.cc)

    def cuDeviceGetDevResource(self, dev: int, kind: int) -> tuple[Any, Any]:
        return (_Res.CUDA_SUCCESS, _resource(16, fields=False))

    def cuDevSmResourceSplitByCount(self, groups: int, res: Any, flags: int,
                                    min_count: int) -> tuple[Any, list[Any], int, Any]:
        self.splits.append(min_count)
        if min_count > res.sm.smCount:
            return (_Res.CUDA_ERROR_INVALID_VALUE, [], 0, _resource(0, fields=False))
        size = max(self.least, -(-min_count // self.step) * self.step)
        made = min(groups, res.sm.smCount // size)
        return (_Res.CUDA_SUCCESS, [_resource(size, fields=False) for _ in range(groups)], made,
                _resource(res.sm.smCount - made * size, fields=False))


@pytest.mark.parametrize("cc", [8, None])
def test_orin_granularity_without_the_fields_is_min_4_step_2(
        bindings: FakeBindings, monkeypatch: pytest.MonkeyPatch, cc: int | None) -> None:
    # Was (4, 4): the smallest group was taken as the step too, so 6 SMs became 8.
    orin = OrinBindings(cc=cc)
    monkeypatch.setattr(gd, "driver", lambda: orin)
    layout = sm_layout(0, driver=gd.CudaGreenDriver())
    assert (layout.min_partition_sms, layout.alignment_sms) == (4, 2)
    assert layout.legal_size(5) == 6
    # With the compute capability the documented table gives the step; without, a probe does.
    assert orin.splits == ([1] if cc == 8 else [1, 5])
    with partition_sms([6], driver=gd.CudaGreenDriver()) as parts:
        assert (parts[0].sm_count, parts.rest.sm_count) == (6, 10)  # type: ignore[union-attr]


def test_the_driver_wins_where_it_disagrees_with_the_table(
        bindings: FakeBindings, monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA 13's guideline: "7.X, 8.X, and all Tegra SoC" align to 2, so a driver may split off
    # 2 SMs on an 8.x part; the probed minimum then stands and the step is probed as well.
    orin = OrinBindings(cc=8, least=2)
    monkeypatch.setattr(gd, "driver", lambda: orin)
    layout = sm_layout(0, driver=gd.CudaGreenDriver())
    assert (layout.min_partition_sms, layout.alignment_sms) == (2, 2)
    assert orin.splits == [1, 3]


def test_hopper_granularity_without_the_fields_comes_from_the_table(
        bindings: FakeBindings, monkeypatch: pytest.MonkeyPatch) -> None:
    hopper = OrinBindings(cc=9, least=8, step=8)
    monkeypatch.setattr(gd, "driver", lambda: hopper)
    layout = sm_layout(0, driver=gd.CudaGreenDriver())
    assert (layout.min_partition_sms, layout.alignment_sms) == (8, 8)
    assert hopper.splits == [1]
