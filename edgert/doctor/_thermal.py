"""The doctor's thermal section: zones found, by type name, with temperatures and trips."""

from __future__ import annotations

from pathlib import Path

from edgert.doctor._report import Section, Verdict

__all__ = ["thermal_section"]


def thermal_section(root: Path) -> Section:
    """Thermal zones under ``root`` with temperatures, failures and the margin to passive trip."""
    from edgert.power import ThermalZones

    s = Section(name="thermal", title="Thermal")
    zones = ThermalZones(root).zones()
    s.add("zones_found", len(zones))
    if not zones:
        s.add("note", "no thermal zones are exposed here (normal in containers and VMs)")
        return s
    failing = []
    for z in zones:
        if z.temp_c is None:
            failing.append(z.key)
            s.add(z.key, None, Verdict.INFO, f"sensor unreadable ({z.error})")
            continue
        passive = z.passive_trip_c
        verdict = Verdict.OK
        detail = None
        if passive is not None:
            margin = passive - z.temp_c
            detail = f"{margin:.1f} °C below its passive trip ({passive:.1f} °C)"
            if margin < 10.0:
                verdict = Verdict.WARN
                s.hints.append(f"{z.key} is within {margin:.1f} °C of throttling: improve "
                               "cooling or choose a lower nvpmodel mode")
        s.add(z.key, f"{z.temp_c:.1f} °C", verdict, detail)
    if failing:
        s.add("unreadable", failing, Verdict.INFO,
              "off or powered-down sensors read as None (e.g. cv zones on Orin while the DLA "
              "and PVA are idle)")
    return s
