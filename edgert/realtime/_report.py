"""What applying a RealtimePolicy did: the per-setting outcomes and the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["PolicyReport", "SettingOutcome"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SettingOutcome:
    """What happened to one setting.

    Attributes:
        setting: ``scheduler``, ``affinity``, ``memory_lock``, ``prefault_stack``,
            ``prefault_heap``, ``gc``, ``cpu_dma_latency`` or ``timer_slack``.
        applied: Whether it took effect (or, in ``restored``, was undone).
        detail: What was done, or what failed and why.
        hint: What to change so it is permitted (refusals only).
        errno_value: The OS error number of a refusal, when there was one.
    """

    setting: str
    applied: bool
    detail: str
    hint: str | None = None
    errno_value: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"setting": self.setting, "applied": self.applied, "detail": self.detail,
                "hint": self.hint, "errno": self.errno_value}


@dataclass(frozen=True, kw_only=True, slots=True)
class PolicyReport:
    """What :meth:`RealtimePolicy.apply` applied and what the OS refused.

    Attributes:
        thread_id: Native id (TID) of the thread the policy was applied to.
        thread_name: Its Python name.
        applied: Settings in effect.
        refused: Settings the OS refused (only with ``strict=False``), with reasons and hints.
    """

    thread_id: int
    thread_name: str
    applied: tuple[SettingOutcome, ...] = ()
    refused: tuple[SettingOutcome, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing was refused."""
        return not self.refused

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return {"thread_id": self.thread_id, "thread_name": self.thread_name,
                "applied": [o.to_dict() for o in self.applied],
                "refused": [o.to_dict() for o in self.refused]}

    def __str__(self) -> str:
        lines = [f"real-time policy on thread {self.thread_name} (tid {self.thread_id}):"]
        lines += [f"  applied  {o.setting}: {o.detail}" for o in self.applied]
        for o in self.refused:
            lines.append(f"  REFUSED  {o.setting}: {o.detail}")
            if o.hint:
                lines.append(f"           hint: {o.hint}")
        return "\n".join(lines)
