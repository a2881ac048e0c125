"""A thermal governor: graded levels with hysteresis and dwell time, and callbacks on change.

The governor does not act on the hardware. It turns a temperature into a level (say nominal,
warm, hot, critical) that changes rarely and deliberately, and tells the application, which
decides what to trade: its loop rate, a lighter engine, a cheaper nvpmodel mode.

Rising is immediate: as soon as the temperature reaches a level's threshold, that level is
entered. Falling is held back twice: the temperature must drop below the threshold minus the
level's hysteresis, and the level must have been held for its minimum dwell time. So a
temperature that oscillates around a threshold yields one change, not one per sample.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgert._owner import Owner
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.power._thermal import ThermalZones

__all__ = ["DEFAULT_LEVELS", "LevelChange", "ThermalGovernor", "ThermalLevel"]

_NS = 1_000_000_000
_LOG_EVERY_NS = 60 * _NS
# A reading outside this range is a broken sensor (or wrong units), not a temperature.
_MIN_C = -273.15
_MAX_C = 1000.0
_log = logging.getLogger("edgert.power")


@dataclass(frozen=True, kw_only=True, slots=True)
class ThermalLevel:
    """One graded level of a :class:`ThermalGovernor`.

    The first level of a governor is the base: it has no threshold. Every other level has
    exactly one of ``enter_c`` (absolute) or ``margin_c`` (relative to the passive trip point,
    where the kernel starts throttling).

    Attributes:
        name: e.g. ``"hot"``.
        enter_c: Enter at or above this temperature.
        margin_c: Enter when the temperature is within this many degrees of the passive trip.
        hysteresis_c: Leave only once the temperature is this far below the threshold.
        min_dwell_s: Stay at least this long before leaving towards a cooler level.
    """

    name: str
    enter_c: float | None = None
    margin_c: float | None = None
    hysteresis_c: float = 3.0
    min_dwell_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidArgumentError("a ThermalLevel needs a name")
        if self.enter_c is not None and self.margin_c is not None:
            raise InvalidArgumentError(
                f"level {self.name!r}: give enter_c or margin_c, not both")
        for label, value in (("enter_c", self.enter_c), ("margin_c", self.margin_c),
                             ("hysteresis_c", self.hysteresis_c),
                             ("min_dwell_s", self.min_dwell_s)):
            if value is not None and not math.isfinite(value):
                raise InvalidArgumentError(f"level {self.name!r}: {label} must be finite")
        if self.hysteresis_c < 0 or self.min_dwell_s < 0:
            raise InvalidArgumentError(
                f"level {self.name!r}: hysteresis_c and min_dwell_s must be >= 0")


DEFAULT_LEVELS: tuple[ThermalLevel, ...] = (
    ThermalLevel(name="nominal"),
    ThermalLevel(name="warm", margin_c=20.0),
    ThermalLevel(name="hot", margin_c=10.0),
    ThermalLevel(name="critical", margin_c=4.0, hysteresis_c=2.0),
)
"""Levels keyed to the passive trip; warm 20 °C below it, hot 10 °C, critical 4 °C."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LevelChange:
    """One level change, as passed to callbacks and kept in the history.

    Attributes:
        at_ns: The governor clock's time of the change.
        previous: The level left.
        level: The level entered.
        temp_c: The temperature that caused it.
        margin_c: Degrees left to the passive trip, if known.
        rising: True when the new level is hotter than the previous one.
    """

    at_ns: int
    previous: ThermalLevel
    level: ThermalLevel
    temp_c: float
    margin_c: float | None
    rising: bool


Sensor = Callable[[], "float | None"]


class ThermalGovernor(Owner):
    """Turns a temperature into graded levels and calls back when the level changes.

    Step it by hand (:meth:`step`, with an injected ``clock`` in tests) or run it in a
    background thread (:meth:`start`; :meth:`close` stops and joins it). A failing sensor (an
    exception, ``None``, or a value that is not a real temperature: a str, NaN, 10**400,
    -300 °C) keeps the current level and is counted in ``sensor_failures``, the error kept in
    ``last_error`` and logged on the ``edgert.power`` logger (once, then at most every
    60 s while it keeps failing); neither it nor a failing callback stops the thread.

    Args:
        sensor: A :class:`ThermalZones` (read ``zones``), or any callable returning °C or
            ``None``.
        levels: Base level first, then increasingly hot ones (default :data:`DEFAULT_LEVELS`).
        zones: With a ThermalZones sensor: the zone (or zones, taking the hottest) to watch.
        interval_s: Period of the background thread.
        on_change: Called with each :class:`LevelChange` (more via :meth:`add_callback`).
        passive_trip_c: The trip that ``margin_c`` levels count from; default: the lowest
            passive trip of the watched zones, read from sysfs.
        clock: Monotonic nanoseconds (inject a fake for tests).
        history_size: How many level changes :attr:`history` keeps.

    Raises:
        InvalidArgumentError: Bad levels or options, or margin levels without a known trip.
        NotSupportedError: A watched zone does not exist.
    """

    DEFAULT_LEVELS = DEFAULT_LEVELS

    def __init__(
        self,
        sensor: ThermalZones | Sensor,
        levels: Sequence[ThermalLevel] = DEFAULT_LEVELS,
        *,
        zones: str | Sequence[str] = "tj",
        interval_s: float = 1.0,
        on_change: Callable[[LevelChange], object] | None = None,
        passive_trip_c: float | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        history_size: int = 1024,
    ) -> None:
        if not interval_s > 0 or not math.isfinite(interval_s):
            raise InvalidArgumentError(f"interval_s must be positive, got {interval_s!r}")
        if history_size < 1:
            raise InvalidArgumentError(f"history_size must be >= 1, got {history_size!r}")
        watched = (zones,) if isinstance(zones, str) else tuple(zones)
        if isinstance(sensor, ThermalZones):
            if not watched:
                raise InvalidArgumentError("zones must name at least one zone")
            keys = tuple(sensor.resolve(z) for z in watched)
            self._read: Sensor = _max_of(sensor, keys)
            if passive_trip_c is None:
                trips = [t for k in keys if (t := sensor.zone(k).passive_trip_c) is not None]
                passive_trip_c = min(trips) if trips else None
            self.zones: tuple[str, ...] = keys
        elif callable(sensor):
            self._read = sensor
            self.zones = ()
        else:
            raise InvalidArgumentError(
                f"sensor must be ThermalZones or a callable, got {type(sensor).__name__}")
        self.passive_trip_c = passive_trip_c
        self.levels = tuple(levels)
        self._thresholds = _thresholds(self.levels, passive_trip_c)
        self.interval_s = interval_s
        self._clock = clock
        self._callbacks: list[Callable[[LevelChange], object]] = []
        if on_change is not None:
            self._callbacks.append(on_change)
        self._lock = threading.RLock()
        self._index = 0
        self._entered_ns: int | None = None
        self._history: collections.deque[LevelChange] = collections.deque(maxlen=history_size)
        self.temp_c: float | None = None
        """The last good reading."""
        self.last_step_ns: int | None = None
        self.steps = 0
        self.sensor_failures = 0
        self.consecutive_failures = 0
        self.callback_errors = 0
        self.last_error: BaseException | None = None
        """The last sensor or callback error (a bad reading is an ``InvalidArgumentError``)."""
        self._logged_ns: int | None = None
        self._sensor_name = ",".join(self.zones) if self.zones else repr(sensor)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def level(self) -> ThermalLevel:
        """The current level."""
        return self.levels[self._index]

    @property
    def margin_c(self) -> float | None:
        """Degrees left to the passive trip at the last good reading, if known."""
        if self.temp_c is None or self.passive_trip_c is None:
            return None
        return self.passive_trip_c - self.temp_c

    @property
    def thresholds_c(self) -> tuple[float | None, ...]:
        """Each level's entry temperature in °C (``None`` for the base level)."""
        return (None, *self._thresholds[1:])

    @property
    def history(self) -> tuple[LevelChange, ...]:
        """Level changes, oldest first (at most ``history_size``)."""
        with self._lock:
            return tuple(self._history)

    def add_callback(self, fn: Callable[[LevelChange], object]) -> None:
        """Also call ``fn`` on every level change."""
        with self._lock:
            self._callbacks.append(fn)

    def step(self) -> LevelChange | None:
        """Read the sensor once and update the level.

        Returns:
            The change, or ``None`` when the level stayed.

        Raises:
            ResourceClosedError: After :meth:`close`.
            Exception: Whatever a callback raised (after the change is recorded and every
                callback has run). The background thread counts these instead.
        """
        self._check_open()
        with self._lock:
            now = self._clock()
            self.last_step_ns = now
            self.steps += 1
            if self._entered_ns is None:
                self._entered_ns = now
            try:
                temp = _celsius(self._read())
            except Exception as err:  # a sensor must never stop the governor
                self.last_error = err
                temp = None
            if temp is None:
                self.sensor_failures += 1
                self.consecutive_failures += 1
                self._log_failure(now)
                return None
            if self.consecutive_failures:
                _log.info("thermal sensor %s reads again (%.1f °C) after %d failed readings",
                          self._sensor_name, temp, self.consecutive_failures)
                self._logged_ns = None
            self.consecutive_failures = 0
            self.temp_c = temp
            target = self._target(self.temp_c, now)
            if target == self._index:
                return None
            change = LevelChange(at_ns=now, previous=self.level, level=self.levels[target],
                                 temp_c=self.temp_c, margin_c=self.margin_c,
                                 rising=target > self._index)
            self._index = target
            self._entered_ns = now
            self._history.append(change)
            callbacks = list(self._callbacks)
        first_error: Exception | None = None
        for fn in callbacks:
            try:
                fn(change)
            except Exception as err:
                self.callback_errors += 1
                self.last_error = err
                first_error = first_error or err
        if first_error is not None:
            raise first_error
        return change

    def _log_failure(self, now: int) -> None:
        # A sensor that keeps failing is logged once, then at most every _LOG_EVERY_NS, so a
        # broken sensor is visible without flooding the log at the governor's rate.
        if self._logged_ns is not None and now - self._logged_ns < _LOG_EVERY_NS:
            return
        self._logged_ns = now
        _log.warning("thermal sensor %s gives no reading (%d in a row, %d in total); last "
                     "error: %s; the level stays %r", self._sensor_name,
                     self.consecutive_failures, self.sensor_failures, self.last_error,
                     self.level.name)

    def _target(self, temp: float, now: int) -> int:
        th = self._thresholds
        up = max((i for i in range(1, len(th)) if temp >= th[i]), default=0)
        if up > self._index:
            return up
        # Stay at the highest level whose hysteresis band still holds the temperature.
        down = max((i for i in range(1, self._index + 1)
                    if temp > th[i] - self.levels[i].hysteresis_c), default=0)
        if down < self._index:
            dwell_ns = int(self.level.min_dwell_s * _NS)
            if self._entered_ns is not None and now - self._entered_ns < dwell_ns:
                return self._index
        return down

    def start(self) -> ThermalGovernor:
        """Run :meth:`step` every ``interval_s`` in a daemon thread until :meth:`close`.

        Raises:
            ResourceClosedError: After :meth:`close`.
            InvalidArgumentError: Already started.
        """
        self._check_open()
        if self._thread is not None:
            raise InvalidArgumentError("this ThermalGovernor is already running")
        thread = threading.Thread(target=_loop, args=(weakref.ref(self), self._stop,
                                                      self.interval_s),
                                  name="edgert-thermal-governor", daemon=True)
        self._thread = thread
        self._own(_stopper(self._stop, thread), "ThermalGovernor thread")
        thread.start()
        return self

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __repr__(self) -> str:
        return (f"ThermalGovernor(level={self.level.name!r}, temp_c={self.temp_c}, "
                f"zones={list(self.zones)}, running={self.running})")


def _celsius(value: object) -> float | None:
    """A sensor's reading as °C, ``None`` for "no reading"; anything else raises.

    Raises:
        InvalidArgumentError: Not a real number (a str, a bool...), not finite, or outside
            [-273.15, 1000) °C.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(
            f"the sensor returned {value!r} ({type(value).__name__}), not a temperature in °C",
            hint="a sensor returns a float in °C, or None when it has no reading")
    try:
        temp = float(value)
    except OverflowError:
        temp = math.inf
    if not (math.isfinite(temp) and _MIN_C <= temp < _MAX_C):
        raise InvalidArgumentError(
            f"the sensor returned {value!r} °C, outside [{_MIN_C}, {_MAX_C})",
            hint="check the sensor's units (°C, not m°C)")
    return temp


def _max_of(zones: ThermalZones, keys: tuple[str, ...]) -> Sensor:
    if len(keys) == 1:
        key = keys[0]
        return lambda: zones.temp_c(key)

    def read() -> float | None:
        temps = [t for k in keys if (t := zones.temp_c(k)) is not None]
        return max(temps) if temps else None

    return read


def _thresholds(levels: tuple[ThermalLevel, ...], trip: float | None) -> tuple[float, ...]:
    if not levels:
        raise InvalidArgumentError("a ThermalGovernor needs at least one level")
    if levels[0].enter_c is not None or levels[0].margin_c is not None:
        raise InvalidArgumentError(
            f"the first level ({levels[0].name!r}) is the base level and takes no threshold",
            hint="put a ThermalLevel(name='nominal') first")
    names = [lv.name for lv in levels]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"level names must be unique: {names}")
    out = [-math.inf]
    for lv in levels[1:]:
        if lv.enter_c is not None:
            out.append(lv.enter_c)
        elif lv.margin_c is not None:
            if trip is None:
                raise NotSupportedError(
                    f"level {lv.name!r} is relative to the passive trip point, which is unknown",
                    hint="pass passive_trip_c=, or use enter_c= thresholds")
            out.append(trip - lv.margin_c)
        else:
            raise InvalidArgumentError(f"level {lv.name!r} needs enter_c or margin_c")
        if out[-1] <= out[-2]:
            raise InvalidArgumentError(
                f"level thresholds must rise: {lv.name!r} enters at {out[-1]:g} °C, "
                f"not above the previous level's {out[-2]:g} °C")
    return tuple(out)


def _stopper(stop: threading.Event, thread: threading.Thread) -> Callable[[], None]:
    def release() -> None:
        stop.set()
        if thread is not threading.current_thread() and thread.is_alive():
            thread.join()
    return release


def _loop(ref: weakref.ref[ThermalGovernor], stop: threading.Event, interval_s: float) -> None:
    while not stop.is_set():
        gov = ref()
        if gov is None or gov.closed:
            return
        try:
            gov.step()
        except Exception:  # counted in callback_errors; the thread must live on
            pass
        del gov
        stop.wait(interval_s)
