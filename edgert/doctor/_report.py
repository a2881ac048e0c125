"""The doctor's report: sections of facts with a verdict and remediation hints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from edgert._compat import StrEnum

__all__ = ["Check", "DoctorReport", "Section", "Verdict"]


class Verdict(StrEnum):
    """How a section (or one check in it) stands."""

    OK = "ok"
    INFO = "info"  # nothing to judge (e.g. not a Jetson, which is fine on a workstation)
    WARN = "warn"  # works, but not as well as it could: a hint says what to change
    FAIL = "fail"  # the capability is missing here
    ERROR = "error"  # the probe itself failed; the rest of the report is unaffected


#: The first lines of the text report say what each verdict means.
LEGEND = ("verdicts: ok = as it should be; info = a fact, nothing to judge; warn = works, not as "
          "well as it could; fail = missing or refused here; error = the probe itself failed")

_RANK = {Verdict.INFO: 0, Verdict.OK: 1, Verdict.WARN: 2, Verdict.FAIL: 3, Verdict.ERROR: 4}


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """One fact, with its own verdict where it has one."""

    name: str
    value: Any
    verdict: Verdict = Verdict.INFO
    detail: str | None = None


@dataclass(kw_only=True, slots=True)
class Section:
    """One area of the report (system, jetson, gpu, tensorrt, realtime, thermal)."""

    name: str
    title: str
    checks: list[Check] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    error: str | None = None
    verdict_override: Verdict | None = None

    def add(self, name: str, value: Any, verdict: Verdict = Verdict.INFO,
            detail: str | None = None) -> None:
        """Append a check."""
        self.checks.append(Check(name=name, value=value, verdict=verdict, detail=detail))

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of its checks (ERROR if the probe failed)."""
        if self.error is not None:
            return Verdict.ERROR
        if self.verdict_override is not None:
            return self.verdict_override
        worst = Verdict.INFO
        for c in self.checks:
            if _RANK[c.verdict] > _RANK[worst]:
                worst = c.verdict
        return worst

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping."""
        return {
            "title": self.title,
            "verdict": str(self.verdict),
            "checks": {c.name: _jsonable(c.value) for c in self.checks},
            "check_verdicts": {c.name: str(c.verdict) for c in self.checks
                               if c.verdict is not Verdict.INFO},
            "details": {c.name: c.detail for c in self.checks if c.detail},
            "hints": list(self.hints),
            "error": self.error,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(kw_only=True, slots=True)
class DoctorReport:
    """The whole report: what this machine is and allows."""

    edgert_version: str
    root: str
    sections: list[Section]

    def section(self, name: str) -> Section:
        """The section called ``name``.

        Raises:
            KeyError: No such section.
        """
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def verdict(self) -> Verdict:
        """The worst of the sections' verdicts (INFO when there are none), for the whole."""
        return max((s.verdict for s in self.sections), key=_RANK.__getitem__,
                   default=Verdict.INFO)

    def summary(self) -> str:
        """One line: the overall verdict and the sections that set it."""
        overall = self.verdict
        worst = ", ".join(s.title for s in self.sections if s.verdict is overall)
        if overall in (Verdict.OK, Verdict.INFO):
            return f"overall: {overall} (nothing to change)"
        what = {Verdict.WARN: "works, not as well as it could in",
                Verdict.FAIL: "something is missing or refused in",
                Verdict.ERROR: "a probe itself failed in"}[overall]
        return f"overall: {overall} ({what} {worst}; the hints there say what to change)"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the ``--json`` output and bench's environment block)."""
        return {
            "edgert_version": self.edgert_version,
            "root": self.root,
            "verdict": str(self.verdict),
            "verdicts": {s.name: str(s.verdict) for s in self.sections},
            "sections": {s.name: s.to_dict() for s in self.sections},
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def render(self) -> str:
        """The report as aligned text for a terminal."""
        lines = [f"edgert {self.edgert_version} doctor" +
                 (f" (root {self.root})" if self.root != "/" else ""), LEGEND]
        for s in self.sections:
            lines.append("")
            lines.append(f"[{str(s.verdict).upper():5}] {s.title}")
            if s.error:
                lines.append(f"        probe failed: {s.error}")
            width = max((len(c.name) for c in s.checks), default=0)
            for c in s.checks:
                mark = "" if c.verdict is Verdict.INFO else f"  [{c.verdict}]"
                lines.append(f"        {c.name:<{width}}  {_text(c.value)}{mark}")
                if c.detail:
                    lines.append(f"        {'':<{width}}    {c.detail}")
            for h in s.hints:
                lines.append(f"        hint: {h}")
        lines.extend(("", self.summary()))
        return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple | list):
        return ", ".join(_text(v) for v in value) if value else "none"
    return str(value)
