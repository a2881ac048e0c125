"""Thermal, power and NVML readings taken alongside a benchmark, in a low-rate background thread.

Sensors are read through :mod:`edgert.power`; a sensor that fails (an exception or ``None``) is
counted and the sampler goes on. The thread spends its time asleep, and each wake-up does a few
reads (system calls and NVML calls, which release the GIL) so it does not disturb the loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from edgert._owner import Owner

if TYPE_CHECKING:
    from edgert.power import NvmlReading, RailReading

__all__ = ["Sampler", "SensorSample"]

_EMPTY: Mapping[str, float | None] = MappingProxyType({})


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorSample:
    """The machine's sensors at one instant of a run.

    Attributes:
        t_s: Seconds since the sampler started.
        temps_c: Every thermal zone and hwmon channel, °C (``None``: the sensor failed). PMIC
            zones, which read a constant 100 °C, are left out (as jtop does).
        max_temp_c: The hottest reading (zones and the NVML GPU temperature), if any.
        hottest: Which sensor that was.
        power_mw: The board's power from its power rails (Jetson). ``None`` when unknown,
            including when any rail of a sum failed to read: a partial sum is never given as
            the board's power (see ``power_missing``).
        power_missing: Rails that could not be read at this instant; when not empty,
            ``power_mw`` is ``None``.
        gpu: The NVML reading (temperature, power, clocks, throttle reasons), if NVML works.
        throttled: Whether anything is throttling: a zone at or above its passive trip, an
            INA3221 over-current alarm (on Orin NX wired to SoC throttling), or an NVML thermal
            or power slowdown. ``None`` when no sensor can tell.
        throttle_reasons: What is throttling, e.g. ``("tj-thermal >= passive trip 99.0 °C",)``.
    """

    t_s: float
    temps_c: Mapping[str, float | None] = field(default_factory=lambda: _EMPTY)
    max_temp_c: float | None = None
    hottest: str | None = None
    power_mw: float | None = None
    power_missing: tuple[str, ...] = ()
    gpu: NvmlReading | None = None
    throttled: bool | None = None
    throttle_reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        gpu = None
        if self.gpu is not None:
            g = self.gpu
            gpu = {"temperature_c": g.temperature_c, "power_mw": g.power_mw,
                   "power_limit_mw": g.power_limit_mw, "sm_clock_mhz": g.sm_clock_mhz,
                   "mem_clock_mhz": g.mem_clock_mhz, "gpu_util_pct": g.gpu_util_pct,
                   "clock_event_reasons": list(g.clock_event_reasons)
                   if g.clock_event_reasons is not None else None}
        return {"t_s": round(self.t_s, 6), "temps_c": dict(self.temps_c),
                "max_temp_c": self.max_temp_c, "hottest": self.hottest,
                "power_mw": self.power_mw, "power_missing": list(self.power_missing),
                "gpu": gpu, "throttled": self.throttled,
                "throttle_reasons": list(self.throttle_reasons)}


class Sampler(Owner):
    """Reads sensors now (:meth:`sample`) and every ``interval_s`` in a thread (:meth:`start`).

    Args:
        root: Where thermal zones and power rails are read.
        interval_s: Period of the background thread.
        nvml_index: NVML device to read (None: no NVML).
        on_sample: Called from the thread after each background sample (exceptions counted).
        max_samples: Samples kept; beyond it every other one is dropped and the stride doubles,
            so a long run keeps an evenly spaced timeline in bounded memory.
    """

    def __init__(self, root: Path, *, interval_s: float, nvml_index: int | None = None,
                 on_sample: Callable[[SensorSample], object] | None = None,
                 max_samples: int = 2048) -> None:
        self.interval_s = interval_s
        self.errors = 0
        self.last_error: str | None = None
        self.sources: list[str] = []
        self.nvml_unavailable: str | None = None
        self._on_sample = on_sample
        self._max = max_samples
        self._stride = 1
        self._tick = 0
        self._samples: list[SensorSample] = []
        self._generation = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic_ns()
        self._zones: Any = None
        self._rails: Any = None
        self._nvml: Any = None
        self._trips: dict[str, float] = {}
        self._is_temperature: Callable[[str], bool] = bool
        self._open(root, nvml_index)
        nvml = self._nvml
        stop = self._stop
        self._own(lambda: _shutdown(stop, nvml), "edgert.bench Sampler")

    def _open(self, root: Path, nvml_index: int | None) -> None:
        from edgert.power import PowerRails, ThermalZones, reports_temperature

        self._is_temperature = reports_temperature  # read per sample: imported once, here
        try:
            zones = ThermalZones(root)
            for z in zones.zones():
                if z.passive_trip_c is not None and z.is_temperature:
                    self._trips[z.key] = z.passive_trip_c
            if zones.read():
                self._zones = zones
                self.sources.append(f"thermal zones ({len(zones.names)})")
        except Exception as err:
            self._failed(err)
        try:
            rails = PowerRails(root)
            if rails.names:
                self._rails = rails
                self.sources.append(f"power rails ({len(rails.names)})")
        except Exception as err:
            self._failed(err)
        if nvml_index is not None:
            from edgert.power import NvmlSensors

            try:
                self._nvml = NvmlSensors(nvml_index)
                self.sources.append(f"NVML GPU {nvml_index}")
            except Exception as err:  # no nvidia-ml-py or no driver: not an error of the run
                self.nvml_unavailable = str(getattr(err, "message", err))

    def _failed(self, err: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(err).__name__}: {err}"

    def sample(self) -> SensorSample:
        """Read every sensor now. Never raises: a failing sensor is counted and left out."""
        t_s = (time.monotonic_ns() - self._t0) / 1e9
        temps: dict[str, float | None] = {}
        reasons: list[str] = []
        known = False
        if self._zones is not None:
            is_temperature = self._is_temperature
            try:
                temps = {k: v for k, v in self._zones.read().items() if is_temperature(k)}
            except Exception as err:
                self._failed(err)
            for key, trip in self._trips.items():
                temp = temps.get(key)
                if temp is None:
                    continue
                known = True
                if temp >= trip:
                    reasons.append(f"{key} {temp:.1f} °C >= passive trip {trip:.1f} °C")
        power = None
        power_missing: tuple[str, ...] = ()
        if self._rails is not None:
            try:
                readings = self._rails.read()
                total = self._rails.total(readings)
                # A sum with a rail missing counts it as 0 W: unknown, not a lower figure.
                power = total.power_mw if not total.missing else None
                power_missing = tuple(total.missing)
                known = _over_current(readings.values(), reasons) or known
            except Exception as err:
                self._failed(err)
        gpu = None
        if self._nvml is not None:
            try:
                gpu = self._nvml.read()
            except Exception as err:
                self._failed(err)
        hottest, hot_c = None, None
        for key, temp in temps.items():
            if temp is not None and (hot_c is None or temp > hot_c):
                hottest, hot_c = key, temp
        if gpu is not None:
            if gpu.temperature_c is not None and (hot_c is None or gpu.temperature_c > hot_c):
                hottest, hot_c = "gpu (nvml)", gpu.temperature_c
            if gpu.clock_event_reasons is not None:
                known = True
                if gpu.thermal_slowdown or gpu.power_slowdown:
                    slow = [r for r in gpu.clock_event_reasons if r.endswith("slowdown")
                            or r in ("sw_power_cap", "hw_power_brake_slowdown")]
                    reasons.append("GPU clocks reduced: " + ", ".join(slow))
        return SensorSample(t_s=t_s, temps_c=MappingProxyType(temps), max_temp_c=hot_c,
                            hottest=hottest, power_mw=power, power_missing=power_missing,
                            gpu=gpu,
                            throttled=bool(reasons) if known else None,
                            throttle_reasons=tuple(reasons))

    def record(self) -> SensorSample:
        """:meth:`sample`, kept in the timeline (unless the timeline restarted meanwhile)."""
        generation = self._generation
        s = self.sample()
        with self._lock:
            if generation != self._generation:
                # Taken before restart_timeline(): it belongs to the phase that ended.
                return s
            self._tick += 1
            if self._tick % self._stride == 0 or not self._samples:
                self._samples.append(s)
                if len(self._samples) > self._max:
                    self._samples = self._samples[::2]
                    self._stride *= 2
        return s

    def finish(self) -> SensorSample:
        """Stop the background thread, then take the last sample and always keep it.

        The timeline then ends exactly with the returned sample: no background sample can land
        after it, and thinning by stride never drops it.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        s = self.sample()
        with self._lock:
            self._samples.append(s)
        return s

    def restart_timeline(self) -> None:
        """Forget the samples so far and count time from now (the start of a phase)."""
        with self._lock:
            self._generation += 1
            self._samples = []
            self._stride = 1
            self._tick = 0
            self._t0 = time.monotonic_ns()

    @property
    def samples(self) -> tuple[SensorSample, ...]:
        """The timeline so far."""
        with self._lock:
            return tuple(self._samples)

    def start(self) -> Sampler:
        """Sample every ``interval_s`` in a daemon thread until :meth:`close`."""
        self._check_open()
        thread = threading.Thread(target=self._loop, name="edgert-bench-sampler", daemon=True)
        self._thread = thread
        thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                s = self.record()
                if self._on_sample is not None:
                    self._on_sample(s)
            except Exception as err:  # a sensor or a progress printer must not end sampling
                self._failed(err)

    def close(self) -> None:
        """Stop and join the thread, and close NVML. Idempotent."""
        if self.closed:
            return
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        super().close()


def _over_current(readings: Iterable[RailReading], reasons: list[str]) -> bool:
    """Add INA3221 over-current alarms to ``reasons``; whether any rail could tell.

    On Orin NX the input rail's critical alert (``curr1_crit``, 7784 mA) is wired to SoC
    throttling. A set ``currN_crit_alarm`` or ``currN_max_alarm`` is an over-current event;
    where the alarms are not exposed (JetPack 4's iio node), a current at or above the critical
    limit is taken as one.
    """
    known = False
    for r in readings:
        limit = f", limit {r.crit_current_ma} mA" if r.crit_current_ma is not None else ""
        now = f"{r.current_ma} mA" if r.current_ma is not None else "current unreadable"
        if r.crit_alarm is not None or r.warn_alarm is not None:
            known = True
        if r.crit_alarm:
            reasons.append(f"{r.name} over-current: critical alarm set ({now}{limit})")
        elif r.warn_alarm:
            warn = f", warning limit {r.warn_current_ma} mA" \
                if r.warn_current_ma is not None else ""
            reasons.append(f"{r.name} over-current: warning alarm set ({now}{warn})")
        elif r.crit_alarm is None and r.crit_current_ma is not None and \
                r.current_ma is not None:
            known = True
            if r.current_ma >= r.crit_current_ma:
                reasons.append(f"{r.name} over-current: {now} >= critical limit "
                               f"{r.crit_current_ma} mA")
    return known


def _shutdown(stop: threading.Event, nvml: Any) -> None:
    stop.set()
    if nvml is not None:
        nvml.close()
