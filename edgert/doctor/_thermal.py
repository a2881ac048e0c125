"""The doctor's thermal section: zones found, by type name, with temperatures and trips."""

from __future__ import annotations

from pathlib import Path

from edgert.doctor._report import Section, Verdict

__all__ = ["thermal_section"]

# Closer than this to the passive trip earns a warning.
_MARGIN_WARN_C = 10.0


def thermal_section(root: Path) -> Section:
    """Thermal zones under ``root`` with temperatures, failures and the margin to passive trip.

    A zone at or past its passive trip is throttling now (WARN: it works, slower); one at or past
    its critical trip is past the shutdown trip (FAIL). Margins are only printed while positive.
    PMIC zones, which read a constant 100 °C, are listed as not a temperature and not judged.
    """
    from edgert.power import ThermalZones

    s = Section(name="thermal", title="Thermal")
    zones = ThermalZones(root).zones()
    s.add("zones_found", len(zones))
    if not zones:
        s.add("note", "no thermal zones are exposed here (normal in containers and VMs)")
        return s
    failing = []
    for z in zones:
        if not z.is_temperature:
            s.add(z.key, None, Verdict.INFO,
                  "not a temperature: PMIC zones read a constant 100 °C (skipped, as by jtop)")
            continue
        if z.temp_c is None:
            failing.append(z.key)
            s.add(z.key, None, Verdict.INFO, f"sensor unreadable ({z.error})")
            continue
        verdict, detail = _judge(s, z.key, z.temp_c, z.passive_trip_c, z.critical_trip_c)
        s.add(z.key, f"{z.temp_c:.1f} °C", verdict, detail)
    if failing:
        s.add("unreadable", failing, Verdict.INFO,
              "off or powered-down sensors read as None (e.g. cv zones on Orin while the DLA "
              "and PVA are idle)")
    return s


def _judge(s: Section, key: str, temp: float, passive: float | None,
           critical: float | None) -> tuple[Verdict, str | None]:
    if critical is not None and temp >= critical:
        s.hints.append(f"{key} reads {temp:.1f} °C, past its critical (shutdown) trip of "
                       f"{critical:.1f} °C: the kernel powers the board off there; cool it "
                       "now, or check the sensor if the board keeps running")
        past = f"by {temp - critical:.1f} °C" if temp > critical else "(at it)"
        return Verdict.FAIL, f"past its critical (shutdown) trip ({critical:.1f} °C) {past}"
    if passive is not None and temp >= passive:
        s.hints.append(f"{key} is throttling now ({temp:.1f} °C, passive trip "
                       f"{passive:.1f} °C): improve cooling or choose a lower nvpmodel mode")
        past = f"past its passive trip ({passive:.1f} °C) by {temp - passive:.1f} °C" \
            if temp > passive else f"at its passive trip ({passive:.1f} °C)"
        return Verdict.WARN, f"throttling now: {past}"
    if passive is None:
        return Verdict.OK, None
    margin = passive - temp
    detail = f"{margin:.1f} °C below its passive trip ({passive:.1f} °C)"
    if margin < _MARGIN_WARN_C:
        s.hints.append(f"{key} is within {margin:.1f} °C of throttling: improve cooling or "
                       "choose a lower nvpmodel mode")
        return Verdict.WARN, detail
    return Verdict.OK, detail
