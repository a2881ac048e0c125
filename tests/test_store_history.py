"""The store's history under power cuts, cut and copied lines, and an edgert downgrade.

Each activation and rollback writes its line, with the rollback stack it leaves, before the
``active`` link moves; the rollback target comes from the newest line whose stack ends at the
link's version. A brute force drives the history the way ModelStore does (found by review: no
replay of a history without stacks could tell lost from duplicated lines).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from edgert.store import _history
from edgert.store._history import StoreEvent, append_event, current_stack, read_history
from edgert.store._history import rollback_target as target_of

_FAULTS = ("ok", "power_cut_before_link", "copied_twice", "cut_after_1_byte", "cut_halfway",
           "cut_before_newline")


def _write(path: Path, event: StoreEvent, fault: str) -> bool:
    """Write ``event``'s line as ``fault`` says; whether the link then moved."""
    if fault.startswith("cut"):
        whole = path.with_suffix(".whole")
        whole.unlink(missing_ok=True)
        append_event(whole, event)
        raw = whole.read_bytes().lstrip(b"\n")
        keep = {"cut_after_1_byte": 1, "cut_halfway": len(raw) // 2,
                "cut_before_newline": len(raw) - 1}[fault]
        with open(path, "ab") as f:
            f.write(raw[:keep])
        return False  # the power went mid-line: the link never moved
    append_event(path, event)
    if fault == "copied_twice":
        append_event(path, event)
    return fault != "power_cut_before_link"


def _run(steps: list[tuple[str, str]], path: Path) -> str | None:
    path.unlink(missing_ok=True)
    link: str | None = None
    truth: list[str] = []  # the versions the link went through, as a rollback stack
    for op, fault in steps:
        events = read_history(path)
        if op == "rollback":
            if link is None:
                continue
            want = truth[-2] if len(truth) >= 2 else None
            got = target_of(events, link)
            if got != want:
                return f"target {got}, want {want}"
            if got is None:
                continue
            stack = current_stack(events, link)
            event = StoreEvent(event="rollback", version=got, previous=link,
                               stack=tuple(stack[:-1]))
            if _write(path, event, fault):
                link = got
                truth.pop()
        elif op != link:
            stack = current_stack(events, link) if link else []
            event = StoreEvent(event="activate", version=op, previous=link,
                               stack=(*stack, op))
            if _write(path, event, fault):
                link = op
                truth.append(op)
    if link is not None and target_of(read_history(path), link) != (
            truth[-2] if len(truth) >= 2 else None):
        return "final target wrong"
    return None


def test_no_fault_a_power_cut_or_a_copy_can_do_changes_the_rollback_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_history.os, "fsync", lambda fd: None)  # the order is what matters
    monkeypatch.setattr(_history._log, "warning", lambda *a: None)
    path = tmp_path / "history.jsonl"
    wrong = []
    for length in (1, 2, 3):
        for ops in itertools.product(("A", "B", "C", "rollback"), repeat=length):
            for faults in itertools.product(_FAULTS, repeat=length):
                if sum(f != "ok" for f in faults) > 1:
                    continue
                problem = _run(list(zip(ops, faults, strict=True)), path)
                if problem:
                    wrong.append((ops, faults, problem))
    assert not wrong, wrong[:5]


def test_lines_of_an_older_edgert_after_recorded_stacks_are_replayed() -> None:
    # Found by review: after a downgrade, the older edgert's lines (no stacks) came after the
    # stacked ones, and the newest stacked line ending at the link was stale.
    events = [StoreEvent(event="activate", version="A", stack=("A",)),
              StoreEvent(event="activate", version="B", previous="A", stack=("A", "B")),
              StoreEvent(event="activate", version="C", previous="B", stack=("A", "B", "C")),
              StoreEvent(event="rollback", version="B", previous="C"),
              StoreEvent(event="activate", version="D", previous="B"),
              StoreEvent(event="activate", version="C", previous="D")]
    assert target_of(events, "C") == "D"


def test_a_stack_longer_than_the_cap_still_rolls_back_within_it(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    stack: tuple[str, ...] = ()
    for i in range(_history.MAX_STACK + 6):
        version = f"v{i}"
        stack = (*stack, version)
        append_event(path, StoreEvent(event="activate", version=version, stack=stack))
    last = f"v{_history.MAX_STACK + 5}"
    assert target_of(read_history(path), last) == f"v{_history.MAX_STACK + 4}"
    line = path.read_text().splitlines()[-1]
    assert len(json.loads(line)["stack"]) == _history.MAX_STACK
