"""Fake Jetson machines for tests: sysfs/procfs trees and a command runner.

Build a tree under a temporary directory and point edgert's power classes at it::

    from edgert.power import NvpModel, PowerRails, ThermalZones
    from edgert.testing.jetson import build_jetson_tree

    with build_jetson_tree(tmp_path, flavour="jp6-orin-nx") as tree:
        zones = ThermalZones(root=tree.root)
        assert zones.read()["tj"] == 46.5
        tree.set_temp("tj", 91.0)                # heat it up
        modes = NvpModel(root=tree.root, runner=tree.runner())

Flavours: ``jp6-orin-nx``, ``jp5-orin-nx``, ``jp6-agx-orin``, ``jp5-agx-orin``;
:func:`build_bare_tree` makes a container-like tree with none of it. The layouts and formats follow
the 'Fixture facts' of the project's jetson-power reference; frequencies and temperatures are
illustrative.

A powered-down cv zone fails with EAGAIN on real hardware: the attribute is a regular file whose
read() returns EAGAIN. The tree imitates that with a regular file that edgert's sysfs reads see
fail with EAGAIN while the tree is open; elsewhere (a plain ``open().read()``, a child process)
it reads as an empty file, which is no reading either. Close the tree (or use ``with``) when
done.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edgert._compat import StrEnum
from edgert._owner import Owner
from edgert.errors import InvalidArgumentError
from edgert.power import _sysfs
from edgert.power._thermal import zone_alias
from edgert.testing._jetson_layout import Writer, write_bare, write_board
from edgert.testing._jetson_runner import FakeCall, FakeCommandRunner
from edgert.testing._jetson_texts import NvpConf

__all__ = [
    "FakeCall",
    "FakeCommandRunner",
    "Fault",
    "Flavour",
    "JetsonTree",
    "NvpConf",
    "build_bare_tree",
    "build_jetson_tree",
    "raising_reads",
]


class Flavour(StrEnum):
    """Which machine :func:`build_jetson_tree` imitates."""

    JP6_ORIN_NX = "jp6-orin-nx"
    JP5_ORIN_NX = "jp5-orin-nx"
    JP6_AGX_ORIN = "jp6-agx-orin"
    JP5_AGX_ORIN = "jp5-agx-orin"


class Fault(StrEnum):
    """How a fake sensor attribute fails."""

    EAGAIN = "eagain"
    """A regular file whose reads through edgert fail with EAGAIN (powered-down cv zones)."""
    EISDIR = "eisdir"
    """The attribute is a directory."""
    MISSING = "missing"
    """The attribute file is absent (ENOENT)."""
    EMPTY = "empty"
    """The file is empty."""
    GARBAGE = "garbage"
    """The file holds text that is not a number."""
    SENTINEL = "sentinel"
    """The file holds -256000, the "offline" sentinel of tegrastats and jtop."""
    UNREADABLE = "unreadable"
    """Mode 000, so EACCES for a non-root reader (root still reads it)."""


class JetsonTree(Owner):
    """A fake machine's filesystem under :attr:`root`, with helpers to change it.

    Holds the EAGAIN faults; :meth:`close` releases them (after which those attributes read as
    empty files).

    Attributes:
        root: Pass as ``root=`` to edgert's classes.
        flavour: The flavour built (``"bare"`` for :func:`build_bare_tree`).
        jetpack: 5, 6, or ``None`` for a bare tree.
        zones: Zone type → its directory.
        rails: Rail label → its hwmon (or iio) directory and channel number.
    """

    def __init__(self, root: Path, flavour: str, jetpack: int | None) -> None:
        self.root = root
        self.flavour = flavour
        self.jetpack = jetpack
        self.zones: dict[str, Path] = {}
        self.rails: dict[str, tuple[Path, int]] = {}
        self._eagain: list[tuple[int, int]] = []
        self._own(_releaser(self._eagain), "JetsonTree EAGAIN faults")

    def path(self, rel: str) -> Path:
        """``rel`` (an absolute path on a real machine) inside this tree."""
        return _sysfs.under(self.root, rel)

    def zone_dir(self, name: str) -> Path:
        """The directory of a zone, by type or alias (``"tj"``).

        Raises:
            InvalidArgumentError: No such zone.
        """
        if name in self.zones:
            return self.zones[name]
        for ztype, path in self.zones.items():
            if zone_alias(ztype) == zone_alias(name):
                return path
        raise InvalidArgumentError(f"the fake tree has no zone {name!r}: {list(self.zones)}")

    def set_temp(self, zone: str, temp_c: float | Fault) -> None:
        """Write a zone's temperature (atomically), or make it fail with ``fault``.

        Raises:
            InvalidArgumentError: No such zone.
        """
        path = self.zone_dir(zone) / "temp"
        if isinstance(temp_c, Fault):
            self._fault(path, temp_c)
        else:
            _replace(path, f"{round(temp_c * 1000)}\n")

    def set_rail(self, name: str, *, voltage_mv: int | None = None,
                 current_ma: int | None = None, crit_alarm: bool | None = None) -> None:
        """Change a rail's voltage, current or critical-current alarm.

        Raises:
            InvalidArgumentError: No such rail.
        """
        if name not in self.rails:
            raise InvalidArgumentError(f"the fake tree has no rail {name!r}: {list(self.rails)}")
        node, n = self.rails[name]
        iio = node.name.startswith("iio:")
        if voltage_mv is not None:
            _replace(node / (f"in_voltage{n}_input" if iio else f"in{n}_input"), f"{voltage_mv}\n")
        if current_ma is not None:
            _replace(node / (f"in_current{n}_input" if iio else f"curr{n}_input"),
                     f"{current_ma}\n")
        if crit_alarm is not None and not iio:
            _replace(node / f"curr{n}_crit_alarm", f"{int(crit_alarm)}\n")

    def fail(self, rel_or_path: str | Path, fault: Fault) -> None:
        """Make any attribute fail: ``tree.fail("sys/class/thermal/thermal_zone8/temp", ...)``."""
        path = Path(rel_or_path)
        self._fault(path if path.is_absolute() else self.root / path, fault)

    def _fault(self, path: Path, fault: Fault) -> None:
        self._check_open()
        _remove(path)
        if fault is Fault.EAGAIN:
            # Real sysfs: a regular file whose read() fails. edgert refuses FIFOs, so the fault
            # is injected where edgert reads (edgert.power._sysfs._read), keyed by inode.
            # Empty, so that a reader the hook does not reach (another process, a plain open())
            # gets no reading either, never a made-up 0 °C.
            path.write_text("")
            st = path.stat()
            ident = (st.st_dev, st.st_ino)
            self._eagain.append(ident)
            _add_eagain(ident)
        elif fault is Fault.EISDIR:
            path.mkdir()
        elif fault is Fault.EMPTY:
            path.write_text("")
        elif fault is Fault.GARBAGE:
            path.write_text("n/a\n")
        elif fault is Fault.SENTINEL:
            path.write_text("-256000\n")
        elif fault is Fault.UNREADABLE:
            path.write_text("45000\n")
            path.chmod(0)

    def runner(self, **options: Any) -> FakeCommandRunner:
        """A :class:`FakeCommandRunner` that answers for this tree (options as its own)."""
        return FakeCommandRunner(self.root, **options)

    def __repr__(self) -> str:
        """The flavour and the root directory."""
        return f"JetsonTree({self.flavour!r}, root={self.root!s})"


def build_jetson_tree(
    root: Path,
    flavour: Flavour | str = Flavour.JP6_ORIN_NX,
    *,
    cv_fault: Fault | None = Fault.EAGAIN,
    board_zones: bool | None = None,
    nvpmodel_conf: NvpConf | str = NvpConf.STANDARD,
    rail_layout: str = "hwmon",
    temps: Mapping[str, float] | None = None,
) -> JetsonTree:
    """Write a fake Jetson under ``root`` and return it.

    Args:
        root: An empty (or missing) directory, e.g. pytest's ``tmp_path``.
        flavour: JetPack 5 or 6, Orin NX or AGX Orin.
        cv_fault: How the cv0–cv2 zones fail (``None``: they read normally).
        board_zones: JetPack 6: also add ``tboard-thermal`` and ``tdiode-thermal`` (default
            no); JetPack 5 always has ``Tboard_tegra`` and ``Tdiode_tegra``.
        nvpmodel_conf: Which nvpmodel.conf to install (:class:`NvpConf`).
        rail_layout: ``"hwmon"`` (JetPack 5+) or ``"iio"`` (the JetPack 4 layout).
        temps: °C by alias, overriding the defaults (``{"tj": 80.0}``).

    Raises:
        InvalidArgumentError: Unknown flavour or option.
    """
    try:
        flav = Flavour(flavour)
        conf = NvpConf(nvpmodel_conf)
    except ValueError as err:
        raise InvalidArgumentError(str(err), hint=f"flavours: {[f.value for f in Flavour]}; "
                                   f"confs: {[c.value for c in NvpConf]}") from err
    if rail_layout not in ("hwmon", "iio"):
        raise InvalidArgumentError(f"rail_layout must be 'hwmon' or 'iio', got {rail_layout!r}")
    jetpack = 5 if flav.value.startswith("jp5") else 6
    tree = JetsonTree(Path(root), flav.value, jetpack)
    zones, rails = write_board(
        Writer(tree.root), board="agx-orin" if "agx" in flav.value else "orin-nx",
        jetpack=jetpack, board_zones=bool(board_zones), conf=conf, rail_layout=rail_layout,
        temps=temps or {})
    tree.zones.update(zones)
    tree.rails.update(rails)
    if cv_fault is not None:
        for ztype in zones:
            if zone_alias(ztype).startswith("cv"):
                tree.set_temp(ztype, cv_fault)
    return tree


def build_bare_tree(root: Path) -> JetsonTree:
    """A container-like tree: no device tree, no L4T release, no thermal zones, no rails."""
    tree = JetsonTree(Path(root), "bare", None)
    write_bare(Writer(tree.root))
    return tree


@contextlib.contextmanager
def raising_reads(paths: Iterable[Path], exc: Callable[[], BaseException] | None = None
                  ) -> Iterator[None]:
    """While active, edgert's sysfs reads of ``paths`` raise ``exc()``.

    The default imitates CPython's text-mode read of an attribute that returned EAGAIN:
    ``TypeError: can't concat NoneType to bytes``. Use it to check that your code (or edgert)
    survives a reader that raises instead of returning an error code.
    """
    targets = {os.path.realpath(p) for p in paths}
    make = exc or (lambda: TypeError("can't concat NoneType to bytes"))
    original = _sysfs._read

    def read(fd: int, size: int) -> bytes:
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if where in targets:
            raise make()
        return original(fd, size)

    _sysfs._read = read
    try:
        yield
    finally:
        _sysfs._read = original


# (st_dev, st_ino) -> number of open trees that made that file fail with EAGAIN.
_EAGAIN: dict[tuple[int, int], int] = {}


def _eagain_read(fd: int, size: int) -> bytes:
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) in _EAGAIN:
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
    return os.read(fd, size)


def _add_eagain(ident: tuple[int, int]) -> None:
    _EAGAIN[ident] = _EAGAIN.get(ident, 0) + 1
    if _sysfs._read is os.read:
        _sysfs._read = _eagain_read


def _releaser(idents: list[tuple[int, int]]) -> Callable[[], None]:
    def release_all() -> None:
        while idents:
            ident = idents.pop()
            count = _EAGAIN.get(ident, 0) - 1
            if count > 0:
                _EAGAIN[ident] = count
            else:
                _EAGAIN.pop(ident, None)
        if not _EAGAIN and _sysfs._read is _eagain_read:
            _sysfs._read = os.read
    return release_all


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:  # pragma: no cover - unusual filesystems
            if err.errno != errno.ENOENT:
                raise


def _replace(path: Path, text: str) -> None:
    # Readers in another thread must see the old or the new value, never a half-written one.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    if path.is_dir() and not path.is_symlink():
        path.rmdir()  # an EISDIR fault
    os.replace(tmp, path)
