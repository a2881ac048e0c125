"""Is this a Jetson, which one, and which L4T/JetPack release it runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgert._fileio import parse_int
from edgert.platform._files import read_text

__all__ = ["JetsonInfo", "parse_l4t_release", "read_jetson"]

# L4T release -> JetPack release, for the releases a robot team meets (NVIDIA's release notes).
# nvpmodel mode ids are small; anything else in the status file is not a mode.
_MAX_MODE_ID = 1 << 16
_JETPACK = {
    "38.4": "7.1",
    "38.4.0": "7.1",
    "38.2": "7.0",
    "38.2.0": "7.0",
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4": "6.1",
    "36.4.0": "6.1",
    "36.3": "6.0",
    "36.3.0": "6.0",
    "35.6.0": "5.1.4",
    "35.5.0": "5.1.3",
    "35.4.1": "5.1.2",
    "35.3.1": "5.1.1",
    "35.2.1": "5.1",
    "35.1.0": "5.0.2",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class JetsonInfo:
    """What identifies a Jetson board.

    Attributes:
        is_jetson: A Tegra device tree or an L4T release file was found.
        model: The device-tree model, e.g. ``NVIDIA Jetson AGX Orin Developer Kit``.
        compatible: Device-tree compatible strings (SoC and board ids).
        l4t_release: e.g. ``36.4.3``, from /etc/nv_tegra_release.
        jetpack: The JetPack release that L4T version belongs to, where known.
        nvpmodel_mode_id: The persisted power mode id from /var/lib/nvpmodel/status.
    """

    is_jetson: bool
    model: str | None
    compatible: tuple[str, ...]
    l4t_release: str | None
    jetpack: str | None
    nvpmodel_mode_id: int | None


def parse_l4t_release(text: str | None) -> str | None:
    """``# R36 (release), REVISION: 4.3, ...`` -> ``36.4.3``; None if not that format."""
    if not text:
        return None
    m = re.search(r"R([0-9]{1,4})\s*\(release\),\s*REVISION:\s*([0-9.]{1,20})", text)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2).rstrip('.')}"


def read_jetson(root: Path = Path("/")) -> JetsonInfo:
    """Read the Jetson identity under ``root``. Never raises."""
    model = read_text(root, "/proc/device-tree/model")
    compat_raw = read_text(root, "/proc/device-tree/compatible")
    compatible = tuple(c for c in (compat_raw or "").split() if c)
    l4t = parse_l4t_release(read_text(root, "/etc/nv_tegra_release"))
    mode_id = None
    status = read_text(root, "/var/lib/nvpmodel/status")
    if status:
        m = re.search(r"pmode:([0-9]+)", status)
        mode_id = parse_int(m.group(1), lo=0, hi=_MAX_MODE_ID) if m else None
    tegra = any("tegra" in c or "nvidia," in c for c in compatible) or bool(
        model and "jetson" in model.lower())
    jetpack = None
    if l4t:
        jetpack = _JETPACK.get(l4t) or _JETPACK.get(".".join(l4t.split(".")[:2]))
        if jetpack is None and l4t.startswith("39."):
            jetpack = "7.2"  # R39 is the JetPack 7.2 line (AGX Orin and Thor)
    return JetsonInfo(
        is_jetson=tegra or l4t is not None,
        model=model,
        compatible=compatible,
        l4t_release=l4t,
        jetpack=jetpack,
        nvpmodel_mode_id=mode_id,
    )
