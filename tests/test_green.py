"""SM partitions (green contexts) without a GPU: sizes, alignment, errors and ownership.

The driver is :class:`edgert.testing.FakeGreenDriver`; tests/test_green_gpu.py checks it against
the real driver.
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

from edgert.cuda import (
    GpuPartitions,
    SmLayout,
    green_context_support,
    partition_sms,
    plan_partitions,
    sm_layout,
)
from edgert.cuda._green_driver import SmResource
from edgert.errors import (
    CudaError,
    InvalidArgumentError,
    NotSupportedError,
    ResourceBusyError,
    ResourceClosedError,
)
from edgert.testing import FakeGreenDriver

H200 = SmLayout(device=0, sm_count=132, min_partition_sms=8, alignment_sms=8)


def test_layout_comes_from_the_driver() -> None:
    fake = FakeGreenDriver(sm_count=16, min_partition_sms=4, alignment_sms=2)
    assert sm_layout(0, driver=fake) == SmLayout(device=0, sm_count=16, min_partition_sms=4,
                                                 alignment_sms=2)
    support = green_context_support(0, driver=fake)
    assert support.supported
    assert support.reason is None
    assert support.layout is not None
    assert support.layout.sm_count == 16


def test_support_report_says_why_not() -> None:
    support = green_context_support(0, driver=FakeGreenDriver(supported=False))
    assert not support.supported
    assert support.layout is None
    assert support.reason is not None
    assert "green contexts" in support.reason
    with pytest.raises(NotSupportedError):
        partition_sms([16], driver=FakeGreenDriver(supported=False))


def test_real_driver_without_gpu_is_not_supported_and_says_so() -> None:
    import edgert.cuda

    if edgert.cuda.is_available():
        pytest.skip("this machine has a GPU; tests/test_green_gpu.py covers it")
    support = green_context_support(0)
    assert not support.supported
    assert support.reason
    assert "CUDA is not available" in support.reason
    with pytest.raises(NotSupportedError, match="CUDA is not available"):
        partition_sms([16])


@pytest.mark.parametrize(("wish", "size"), [(1, 8), (8, 8), (9, 16), (16, 16), (130, 136)])
def test_legal_size_rounds_up(wish: int, size: int) -> None:
    layout = SmLayout(device=0, sm_count=136, min_partition_sms=8, alignment_sms=8)
    assert layout.legal_size(wish) == size


def test_legal_size_refuses_more_than_the_device() -> None:
    with pytest.raises(InvalidArgumentError, match="no partition of 130 SMs") as info:
        H200.legal_size(130)  # 136 > 132
    assert info.value.hint == "ask for at most 128 SMs"  # not 132, which is misaligned
    assert H200.legal_size(128) == 128


@pytest.mark.parametrize("wish", [0, -8, True, False, 8.0, "8", None])
def test_legal_size_refuses_what_is_not_a_positive_int(wish: Any) -> None:
    # 0 and negative sizes used to be grown to the minimum partition (8 SMs) silently.
    with pytest.raises(InvalidArgumentError, match="must be a positive int"):
        H200.legal_size(wish)


def _hinted(hint: str) -> list[tuple[int, bool]]:
    """(size, rest) pairs a hint suggests: "use A or B", "use A, or B with rest=False"."""
    import re

    out = []
    for part in re.split(r",? or |, ", hint.removeprefix("use ")):
        size = int(part.split()[0])
        out.append((size, "rest=False" not in part))
    return out


@pytest.mark.parametrize("rest", [True, False])
def test_every_size_a_hint_suggests_is_accepted(rest: bool) -> None:
    for layout in (H200, SmLayout(device=0, sm_count=16, min_partition_sms=4, alignment_sms=2),
                   SmLayout(device=0, sm_count=132, min_partition_sms=16, alignment_sms=8)):
        for size in range(1, layout.sm_count + 10):
            for sizes in ([size], [size, 16]):
                try:
                    plan_partitions(sizes, layout, rest=rest)
                    continue
                except InvalidArgumentError as err:
                    hint = err.hint or ""
                if not hint.startswith("use "):
                    continue
                for suggested, same_rest in _hinted(hint):
                    fixed = [suggested, *sizes[1:]]
                    plan_partitions(fixed, layout, rest=rest if same_rest else False)


def test_hint_for_the_whole_h200_names_only_sizes_that_work() -> None:
    # Was "use 128 or 136": 136 is more than the device, 128 leaves a 4-SM rest.
    with pytest.raises(InvalidArgumentError) as info:
        plan_partitions([132], H200)
    assert info.value.hint == "use 120, or 128 with rest=False"
    with pytest.raises(InvalidArgumentError) as info:
        plan_partitions([132], H200, rest=False)
    assert info.value.hint == "use 128"


@pytest.mark.parametrize(("sizes", "rest", "left"), [
    ([16], True, 116), ([8], True, 124), ([8, 8], True, 116), ([16, 32], True, 84),
    ([128], False, 0), ([64, 64], False, 0), ([120], True, 12),
])
def test_plan_accepts_legal_sizes(sizes: list[int], rest: bool, left: int) -> None:
    assert plan_partitions(sizes, H200, rest=rest) == left


@pytest.mark.parametrize(("sizes", "message", "hint"), [
    ([], "no partition sizes", "partition_sms"),
    ([0], "positive int", None),
    ([-8], "positive int", None),
    ([True], "positive int", None),
    ([8.0], "positive int", None),
    ([4], "below device 0's minimum of 8", "use 8"),
    ([12], "multiples of 8", "use 8 or 16"),
    ([20, 8], "multiples of 8", "use 16 or 24"),
    ([136], "need 136 SMs; device 0 has 132", None),
    ([64, 72], "need 136 SMs", None),
    ([128], "4 of device 0's 132 SMs are left", "rest=False"),
    ([128, 8], "need 136", None),
])
def test_plan_refuses_illegal_sizes(sizes: list[Any], message: str, hint: str | None) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        plan_partitions(sizes, H200)
    if hint is not None:
        assert info.value.hint is not None
        assert hint in info.value.hint


def test_misaligned_below_minimum_offers_only_the_legal_size() -> None:
    layout = SmLayout(device=0, sm_count=132, min_partition_sms=16, alignment_sms=8)
    with pytest.raises(InvalidArgumentError) as info:
        plan_partitions([20], layout)
    assert info.value.hint == "use 16 or 24"
    with pytest.raises(InvalidArgumentError, match="minimum"):
        plan_partitions([12], layout)


def test_reserved_partition_and_rest() -> None:
    fake = FakeGreenDriver()
    with partition_sms([16], driver=fake) as parts:
        assert isinstance(parts, GpuPartitions)
        assert len(parts) == 1
        assert parts.layout == H200
        control, rest = parts[0], parts.rest
        assert rest is not None
        assert (control.sm_count, rest.sm_count) == (16, 116)
        assert (control.name, rest.name) == ("partition 0", "rest")
        assert sorted(fake.contexts.values()) == [16, 116]
        assert list(parts) == [control]
    assert fake.live_contexts == 0
    assert control.closed
    assert rest.closed


def test_equal_and_unequal_splits() -> None:
    fake = FakeGreenDriver(unequal_splits=True)  # a CUDA 13.1+ driver (cuDevSmResourceSplit)
    with partition_sms([8, 8, 8], driver=fake, rest=False) as parts:
        assert [p.sm_count for p in parts] == [8, 8, 8]
        assert parts.rest is None
        assert fake.live_contexts == 3
    with partition_sms([16, 32], driver=fake) as parts:
        assert [p.sm_count for p in parts] == [16, 32]
        assert parts.rest is not None
        assert parts.rest.sm_count == 84
    assert fake.live_contexts == 0


def test_unequal_split_without_driver_support_is_not_supported() -> None:
    fake = FakeGreenDriver(unequal_splits=False)
    with pytest.raises(NotSupportedError, match="different sizes"):
        partition_sms([16, 32], driver=fake)
    assert fake.live_contexts == 0


def test_the_default_fake_refuses_unequal_splits_like_the_measured_h200() -> None:
    fake = FakeGreenDriver()  # the H200 on CUDA 13.0 (docs/multimodel.md): NotSupportedError
    with pytest.raises(NotSupportedError, match="different sizes"):
        partition_sms([16, 32], driver=fake)
    assert fake.live_contexts == 0


def test_the_default_fake_makes_fewer_groups_than_asked_like_the_h200() -> None:
    # docs/multimodel.md: 16 groups of 8 on the H200 gave 15 (the driver's cluster
    # requirements); the fake used to make all 16.
    fake = FakeGreenDriver(sm_count=132, min_partition_sms=8, alignment_sms=8)
    groups, rest = fake.split_by_count(fake.sm_resource(0), 16, 8)
    assert [g.sm_count for g in groups] == [8] * 15
    assert rest is not None
    assert rest.sm_count == 12
    with pytest.raises(InvalidArgumentError,
                       match=r"made only 15 of the 16 partitions") as info:
        partition_sms([8] * 16, rest=False, driver=fake)
    assert info.value.hint == "ask for at most 15 partitions of 8 SMs"
    assert fake.live_contexts == 0
    with partition_sms([8] * 15, rest=False, driver=fake) as parts:  # the hint holds
        assert len(parts) == 15
    unlimited = FakeGreenDriver(max_groups=None)
    with partition_sms([8] * 16, rest=False, driver=unlimited) as parts:
        assert len(parts) == 16
    assert fake.live_contexts == unlimited.live_contexts == 0


def test_fewer_groups_than_asked_is_refused_without_leaks() -> None:
    class Clustered(FakeGreenDriver):
        """A device whose SM clusters only fit two 48-SM groups."""

        def split_by_count(self, resource: SmResource, groups: int,
                           min_count: int) -> tuple[list[SmResource], SmResource | None]:
            made, _ = super().split_by_count(resource, min(groups, 2), min_count)
            return made, self._resource(resource.sm_count - 48 * len(made))

    fake = Clustered()
    with pytest.raises(InvalidArgumentError, match=r"could not be split into \[8, 8, 8\]"):
        partition_sms([8, 8, 8], driver=fake)
    assert fake.live_contexts == 0


def test_a_driver_that_rounds_differently_is_caught() -> None:
    class Liar(FakeGreenDriver):
        """Reports an alignment of 8 but rounds groups to 16."""

        def sm_resource(self, device: int) -> SmResource:
            return SmResource("fake", 132, 8, 8)

    liar = Liar(alignment_sms=16)
    with pytest.raises(InvalidArgumentError, match="driver made"):
        partition_sms([8], driver=liar)
    assert liar.live_contexts == 0


def test_a_green_context_with_other_sm_count_is_destroyed_and_refused() -> None:
    class Short(FakeGreenDriver):
        def context_sm_count(self, context: Any) -> int:
            return super().context_sm_count(context) - 8

    fake = Short()
    with pytest.raises(NotSupportedError, match="has 8 SMs, not the 16"):
        partition_sms([16], driver=fake)
    assert fake.live_contexts == 0


def test_failure_midway_closes_what_was_made() -> None:
    class Fails(FakeGreenDriver):
        def create_context(self, resources: Any, device: int) -> Any:
            if self.live_contexts == 1:
                raise CudaError(2, "CUDA_ERROR_OUT_OF_MEMORY", "fake", call="cuGreenCtxCreate")
            return super().create_context(resources, device)

    fake = Fails()
    with pytest.raises(CudaError, match="OUT_OF_MEMORY"):
        partition_sms([16], driver=fake)
    assert fake.live_contexts == 0


def test_streams_take_priorities_and_belong_to_their_partition() -> None:
    fake = FakeGreenDriver(priority_range=(0, -5))
    with partition_sms([16], driver=fake) as parts:
        control = parts[0]
        high = control.stream(priority="highest")
        low = control.stream()
        mid = control.stream(priority=-2)
        assert (high.priority, low.priority, mid.priority) == (-5, 0, -2)
        assert fake.streams[high.handle] == (control.context, -5)
        assert high.owned
        assert high.device == 0
        with pytest.raises(InvalidArgumentError, match="outside device 0's range"):
            control.stream(priority=-6)
        with pytest.raises(InvalidArgumentError):
            control.stream(priority="urgent")  # type: ignore[arg-type]
        for s in (high, low, mid):
            s.close()
    assert fake.live_streams == 0
    assert fake.live_contexts == 0


def test_close_refuses_while_a_stream_is_open() -> None:
    fake = FakeGreenDriver()
    parts = partition_sms([16], driver=fake)
    stream = parts[0].stream()
    with pytest.raises(ResourceBusyError, match="open stream"):
        parts[0].close()
    with pytest.raises(ResourceBusyError, match="still have open streams"):
        parts.close()
    assert fake.live_contexts == 2
    assert not parts.closed
    stream.close()
    parts.close()
    parts.close()  # idempotent
    assert parts.closed
    assert fake.live_contexts == 0
    with pytest.raises(ResourceClosedError):
        parts[0].stream()
    with pytest.raises(ResourceClosedError):
        _ = parts[0].context


def test_a_stream_keeps_its_partition_alive() -> None:
    fake = FakeGreenDriver()
    parts = partition_sms([16], driver=fake, rest=False)
    stream = parts[0].stream()
    del parts
    gc.collect()
    assert fake.live_contexts == 1  # the stream still needs its green context
    stream.close()


def test_forgotten_partitions_are_released_with_a_warning() -> None:
    fake = FakeGreenDriver()
    parts = partition_sms([16], driver=fake)
    with pytest.warns(ResourceWarning, match="GPU partition"):
        del parts  # no cycle: the finalizer runs right here
    assert fake.live_contexts == 0


def test_session_on_a_host_model_refuses_a_partition() -> None:
    from edgert.engine import Engine
    from edgert.models import bundled_model_path
    from edgert.session import InferenceSession

    with partition_sms([16], driver=FakeGreenDriver()) as parts, \
            Engine.load(bundled_model_path()) as engine:
        with pytest.raises(InvalidArgumentError, match="runs on the host"):
            InferenceSession(engine, partition=parts[0])
        with pytest.raises(InvalidArgumentError, match="partition is on device 0"):
            InferenceSession(engine, partition=parts[0], device="host")


def test_leaving_a_with_block_on_an_error_keeps_that_error() -> None:
    fake = FakeGreenDriver()
    made: list[Any] = []

    def fails_inside() -> None:
        with partition_sms([16], driver=fake) as inner:
            made.extend([inner, inner[0].stream()])
            raise KeyError("the user's own error")

    with pytest.raises(KeyError, match="the user's own error"):
        fails_inside()
    parts, stream = made
    assert not parts[0].closed  # its stream still needs it
    stream.close()
    parts.close()
    assert fake.live_contexts == 0
    with pytest.raises(ResourceBusyError), partition_sms([16], driver=fake) as parts:
        leftover = parts[0].stream()  # no error in flight: leaving with an open stream refuses
    leftover.close()
    parts.close()
