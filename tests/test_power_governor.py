"""ThermalGovernor scenarios with a fake clock: rising, falling, oscillating, failing sensors."""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest

from edgert.errors import InvalidArgumentError, NotSupportedError, ResourceClosedError
from edgert.power import LevelChange, ThermalGovernor, ThermalLevel, ThermalZones
from edgert.testing.jetson import Fault, build_jetson_tree

S = 1_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


class Script:
    """A sensor that returns the next scripted value (or raises it)."""

    def __init__(self, values: Iterable[float | Exception | None] = ()) -> None:
        self.values = list(values)
        self.value: float | Exception | None = None

    def __call__(self) -> float | None:
        if self.values:
            self.value = self.values.pop(0)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def governor(sensor: Script, clock: FakeClock, **kw) -> ThermalGovernor:
    # Default levels keyed to a 99 °C passive trip: warm 79, hot 89, critical 95.
    return ThermalGovernor(sensor, passive_trip_c=99.0, clock=clock, **kw)


def run(gov: ThermalGovernor, sensor: Script, clock: FakeClock, temps: Iterable[float],
        dt: float = 1.0) -> list[str]:
    names = []
    for t in temps:
        sensor.value = t
        gov.step()
        names.append(gov.level.name)
        clock.advance(dt)
    return names


def test_thresholds_from_the_passive_trip() -> None:
    gov = governor(Script(), FakeClock())
    assert gov.thresholds_c == (None, 79.0, 89.0, 95.0)
    assert [lv.name for lv in gov.levels] == ["nominal", "warm", "hot", "critical"]


def test_rising_is_immediate_and_can_skip_levels() -> None:
    clock, sensor = FakeClock(), Script()
    changes: list[LevelChange] = []
    gov = governor(sensor, clock, on_change=changes.append)
    assert run(gov, sensor, clock, [50, 79, 88.9, 89, 95]) == [
        "nominal", "warm", "warm", "hot", "critical"]
    assert [(c.previous.name, c.level.name, c.rising) for c in changes] == [
        ("nominal", "warm", True), ("warm", "hot", True), ("hot", "critical", True)]
    assert changes[-1].temp_c == 95
    assert changes[-1].margin_c == 4.0
    assert gov.history == tuple(changes)
    clock2, sensor2 = FakeClock(), Script()
    jump = governor(sensor2, clock2)
    sensor2.value = 97.0
    change = jump.step()
    assert change is not None
    assert change.level.name == "critical"
    assert len(jump.history) == 1


def test_falling_waits_for_hysteresis_and_dwell() -> None:
    clock, sensor = FakeClock(), Script()
    gov = governor(sensor, clock, levels=[
        ThermalLevel(name="nominal"),
        ThermalLevel(name="hot", enter_c=80.0, hysteresis_c=5.0, min_dwell_s=10.0)])
    sensor.value = 85.0
    gov.step()
    assert gov.level.name == "hot"
    # Below the threshold but inside the hysteresis band: stays, however long.
    assert set(run(gov, sensor, clock, [76.0] * 30)) == {"hot"}
    clock2, sensor2 = FakeClock(), Script()
    gov2 = governor(sensor2, clock2, levels=gov.levels)
    sensor2.value = 85.0
    gov2.step()
    # Out of the band but before the dwell time: stays; then falls at 10 s exactly.
    names = run(gov2, sensor2, clock2, [60.0] * 12)
    assert names[:10] == ["hot"] * 10
    assert names[10:] == ["nominal", "nominal"]
    (up, down) = gov2.history
    assert down.at_ns - up.at_ns == 10 * S
    assert not down.rising


def test_falling_from_the_top_goes_straight_to_where_the_temperature_is() -> None:
    clock, sensor = FakeClock(), Script()
    changes: list[LevelChange] = []
    gov = governor(sensor, clock, on_change=changes.append)
    run(gov, sensor, clock, [96.0])
    clock.advance(60)
    run(gov, sensor, clock, [87.0])  # below hot's band (89 - 3 = 86)? no: 87 > 86, stays hot
    assert gov.level.name == "hot"
    clock.advance(60)
    run(gov, sensor, clock, [50.0])
    assert [c.level.name for c in changes] == ["critical", "hot", "nominal"]


def test_oscillating_around_a_threshold_does_not_flap() -> None:
    clock, sensor = FakeClock(), Script()
    gov = governor(sensor, clock)
    # ±1.5 °C around the hot threshold (89), well inside its 3 °C hysteresis, for 10 minutes.
    temps = [89.0 + (1.5 if i % 2 else -1.5) for i in range(1200)]
    names = run(gov, sensor, clock, [85.0, *temps], dt=0.5)
    assert len(gov.history) == 2  # warm, then hot: once each, no flapping
    assert names[-1] == "hot"


def test_wide_oscillation_is_rate_limited_by_dwell() -> None:
    clock, sensor = FakeClock(), Script()
    level = ThermalLevel(name="hot", enter_c=89.0, hysteresis_c=3.0, min_dwell_s=5.0)
    gov = governor(sensor, clock, levels=[ThermalLevel(name="nominal"), level])
    # ±5 °C swings every 0.5 s exceed the hysteresis; the dwell time bounds the changes.
    temps = [89.0 + (5.0 if i % 2 else -5.0) for i in range(120)]  # 60 s
    run(gov, sensor, clock, temps, dt=0.5)
    falls = [c for c in gov.history if not c.rising]
    assert 1 <= len(falls) <= 60 / 5
    times = [c.at_ns for c in gov.history if c.rising]
    assert all(b - a >= 5 * S for a, b in itertools.pairwise(times))


def test_sensor_failures_keep_the_level_and_are_counted() -> None:
    clock, sensor = FakeClock(), Script([90.0, None, OSError("EAGAIN"), float("nan"), 50.0])
    gov = governor(sensor, clock)
    gov.step()
    assert gov.level.name == "hot"
    for _ in range(3):
        assert gov.step() is None
        assert gov.level.name == "hot"
    assert gov.sensor_failures == 3
    assert gov.consecutive_failures == 3
    # NaN is a bad reading too: it is the last error now (the OSError came before it).
    assert isinstance(gov.last_error, InvalidArgumentError)
    assert "nan" in str(gov.last_error)
    assert gov.temp_c == 90.0  # the last good reading
    clock.advance(60)
    gov.step()
    assert gov.level.name == "nominal"
    assert gov.consecutive_failures == 0


def test_callback_errors_surface_from_step_after_every_callback_ran() -> None:
    clock, sensor = FakeClock(), Script()
    seen: list[str] = []

    def bad(change: LevelChange) -> None:
        raise RuntimeError("app bug")

    gov = governor(sensor, clock, on_change=bad)
    gov.add_callback(lambda c: seen.append(c.level.name))
    sensor.value = 90.0
    with pytest.raises(RuntimeError, match="app bug"):
        gov.step()
    assert seen == ["hot"]
    assert gov.level.name == "hot"
    assert gov.callback_errors == 1


def test_history_is_bounded() -> None:
    clock, sensor = FakeClock(), Script()
    gov = governor(sensor, clock, history_size=3, levels=[
        ThermalLevel(name="n"), ThermalLevel(name="h", enter_c=50.0, min_dwell_s=0.0)])
    run(gov, sensor, clock, [60.0, 40.0] * 5)
    assert len(gov.history) == 3
    assert gov.steps == 10


def test_thermal_zones_sensor_reads_tj_and_the_trip_from_sysfs(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path, "jp5-orin-nx") as tree:
        zones = ThermalZones(tree.root)
        clock = FakeClock()
        gov = ThermalGovernor(zones, clock=clock)
        assert gov.zones == ("tj-therm",)
        assert gov.passive_trip_c == 99.0
        gov.step()
        assert gov.level.name == "nominal"
        assert gov.margin_c == pytest.approx(52.5)
        tree.set_temp("tj", 92.0)
        assert gov.step() is not None
        assert gov.level.name == "hot"
        tree.set_temp("tj", Fault.EAGAIN)
        assert gov.step() is None
        assert gov.sensor_failures == 1


def test_max_of_several_zones_skips_failed_ones(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        zones = ThermalZones(tree.root)
        gov = ThermalGovernor(zones, zones=["cpu", "gpu", "cv0"], clock=FakeClock())
        tree.set_temp("gpu", 91.0)
        gov.step()
        assert gov.temp_c == 91.0
        assert gov.level.name == "hot"


def test_trip_override_and_missing_trip(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path) as tree:
        zones = ThermalZones(tree.root)
        assert ThermalGovernor(zones, passive_trip_c=90.0).thresholds_c[1] == 70.0
        for n in (0, 1):
            (tree.zone_dir("tj") / f"trip_point_{n}_temp").unlink()
        with pytest.raises(NotSupportedError, match="passive_trip_c"):
            ThermalGovernor(zones)
        absolute = [ThermalLevel(name="ok"), ThermalLevel(name="hot", enter_c=85.0)]
        assert ThermalGovernor(zones, absolute).thresholds_c == (None, 85.0)
        with pytest.raises(NotSupportedError, match="cv9"):
            ThermalGovernor(zones, absolute, zones="cv9")


@pytest.mark.parametrize(("levels", "match"), [
    ([], "at least one level"),
    ([ThermalLevel(name="a", enter_c=10.0)], "base level"),
    ([ThermalLevel(name="a"), ThermalLevel(name="a", enter_c=1.0)], "unique"),
    ([ThermalLevel(name="a"), ThermalLevel(name="b")], "needs enter_c or margin_c"),
    ([ThermalLevel(name="a"), ThermalLevel(name="b", enter_c=80.0),
      ThermalLevel(name="c", enter_c=70.0)], "must rise"),
])
def test_bad_levels(levels: list[ThermalLevel], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        ThermalGovernor(Script(), levels, passive_trip_c=99.0)


def test_bad_level_fields_and_options() -> None:
    with pytest.raises(InvalidArgumentError, match="not both"):
        ThermalLevel(name="x", enter_c=1.0, margin_c=1.0)
    with pytest.raises(InvalidArgumentError, match=">= 0"):
        ThermalLevel(name="x", hysteresis_c=-1.0)
    with pytest.raises(InvalidArgumentError, match="finite"):
        ThermalLevel(name="x", enter_c=float("inf"))
    with pytest.raises(InvalidArgumentError):
        ThermalLevel(name="")
    with pytest.raises(InvalidArgumentError, match="interval_s"):
        ThermalGovernor(Script(), passive_trip_c=99.0, interval_s=0)
    with pytest.raises(InvalidArgumentError, match="sensor"):
        ThermalGovernor(42, passive_trip_c=99.0)  # type: ignore[arg-type]


def test_background_thread_survives_failures_and_close_joins_it() -> None:
    temps = iter([OSError("gone"), None, 60.0, 97.0])
    changed = threading.Event()

    def sensor() -> float | None:
        value = next(temps, 97.0)
        if isinstance(value, Exception):
            raise value
        return value

    def on_change(change: LevelChange) -> None:
        if change.level.name == "critical":
            changed.set()
        raise RuntimeError("callbacks may fail too")

    gov = ThermalGovernor(sensor, passive_trip_c=99.0, interval_s=0.001, on_change=on_change)
    with gov.start():
        assert changed.wait(10.0)
        assert gov.running
        assert gov.sensor_failures >= 2
        assert gov.callback_errors >= 1
        with pytest.raises(InvalidArgumentError, match="already running"):
            gov.start()
    assert not gov.running
    with pytest.raises(ResourceClosedError):
        gov.step()


def test_dropped_governor_stops_its_thread() -> None:
    gov = ThermalGovernor(lambda: 50.0, passive_trip_c=99.0, interval_s=0.001).start()
    thread = gov._thread
    assert thread is not None
    with pytest.warns(ResourceWarning, match="unclosed ThermalGovernor thread"):  # noqa: PT031
        del gov
        gc.collect()
        thread.join(10.0)
    assert not thread.is_alive()
