"""Cache hits after the first full check of a boot: the signed memo (edgert.store._verified).

A hit may skip hashing its plan only while a memo signed with the entry's tag key says that
exactly this plan and sidecar (same identity: device, inode, size, times) passed the full check
earlier in this boot. Every way the files, the memo, the boot or the key can differ must lead
back to the full check -- and a damaged plan to a rebuild, never to a load.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgert import models
from edgert.engine import Engine, IntegrityStatus
from edgert.session import InferenceSession
from edgert.store import BuildOptions, _cache, _verified
from edgert.store._cache import CacheStatus, EngineCache
from edgert.testing import fake_tensorrt as ft

SHAPES = "obs:1x48,4x48,256x48"
OBS = np.random.default_rng(8).standard_normal((4, models.OBS_DIM)).astype(np.float32)
STABLE_S = 0.05  # far above any file system's timestamp granularity, short enough for CI


@pytest.fixture(autouse=True)
def _short_stability_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_verified, "STABLE_S", STABLE_S)
    _cache.forget_process_memos()


def _entry(tmp_path: Path, **kwargs: Any) -> tuple[EngineCache, Path, Path]:
    """A cache with a built entry that has been unchanged for longer than STABLE_S."""
    onnx = tmp_path / "policy.onnx"
    onnx.write_bytes(models.policy_variant_bytes(0.0))
    cache = EngineCache(tmp_path / "c", trt_module=ft, **kwargs)
    built = cache.load(onnx, BuildOptions(profiles=SHAPES))
    built.engine.close()
    assert built.status is CacheStatus.BUILT
    assert built.plan_path is not None
    time.sleep(STABLE_S + 0.02)
    return cache, onnx, built.plan_path


def _load(cache: EngineCache, onnx: Path) -> Any:
    return cache.load(onnx, BuildOptions(profiles=SHAPES))


def _right(result: Any) -> None:
    with result.engine as engine, InferenceSession(engine) as session:
        np.testing.assert_allclose(session.infer({"obs": OBS})["actions"],
                                   models.policy_reference(OBS), atol=1e-5)


def _always_checked_in_full(cache: EngineCache, onnx: Path, plan: Path,
                            monkeypatch: pytest.MonkeyPatch, loads: int = 2) -> None:
    """Every one of ``loads`` hits hashes the plan, and no memo is ever written."""
    full = _FullChecks(monkeypatch)
    for _ in range(loads):
        hit = _load(cache, onnx)
        assert hit.status is CacheStatus.HIT
        _right(hit)
    assert full.count == loads
    assert not Path(f"{plan}{_verified.SUFFIX}").exists()


def _checked_once_per_process(cache: EngineCache, onnx: Path, plan: Path,
                              monkeypatch: pytest.MonkeyPatch, processes: int = 2) -> None:
    """The first hit of each process hashes the plan, later ones of that process do not, and
    no memo file is written (nothing outlives the process)."""
    full = _FullChecks(monkeypatch)
    for process in range(processes):
        _cache.forget_process_memos()  # as a new process starts
        for i in range(3):
            hit = _load(cache, onnx)
            assert hit.status is CacheStatus.HIT
            assert hit.engine.integrity is (IntegrityStatus.HMAC if i == 0 else
                                            IntegrityStatus.HMAC_THIS_BOOT)
            _right(hit)
        assert full.count == process + 1
    assert not Path(f"{plan}{_verified.SUFFIX}").exists()


class _FullChecks:
    """Counts the loads that hashed the plan (Engine.load with the entry's HMAC key)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = Engine.load

        def load(*args: Any, **kwargs: Any) -> Engine:
            if kwargs.get("hmac_key") is not None:
                self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(_cache.Engine, "load", load)


def test_hits_after_the_first_full_check_of_a_boot_skip_hashing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, onnx, plan = _entry(tmp_path)
    full = _FullChecks(monkeypatch)
    first = _load(cache, onnx)
    assert first.status is CacheStatus.HIT
    assert first.engine.integrity is IntegrityStatus.HMAC
    _right(first)
    assert full.count == 1
    assert Path(f"{plan}{_verified.SUFFIX}").exists()
    for _ in range(3):
        hit = _load(cache, onnx)
        assert hit.status is CacheStatus.HIT
        assert hit.engine.integrity is IntegrityStatus.HMAC_THIS_BOOT  # not hashed this time
        _right(hit)
    assert full.count == 1  # the process remembered the check: no memo file read
    _cache.forget_process_memos()  # a new process, same boot: the memo file vouches
    hit = _load(cache, onnx)
    assert hit.engine.integrity is IntegrityStatus.HMAC_THIS_BOOT
    _right(hit)
    assert full.count == 1


def test_a_just_written_entry_is_not_memoized(tmp_path: Path) -> None:
    onnx = tmp_path / "policy.onnx"
    onnx.write_bytes(models.policy_variant_bytes(0.0))
    cache = EngineCache(tmp_path / "c", trt_module=ft)
    built = _load(cache, onnx)
    built.engine.close()
    _load(cache, onnx).engine.close()  # within STABLE_S of the write: racy, no memo
    assert not Path(f"{built.plan_path}{_verified.SUFFIX}").exists()


@pytest.mark.parametrize("damage", ["flip_in_place", "truncate", "replaced_by_rename",
                                    "sidecar_rewritten"])
def test_a_plan_changed_after_its_memo_is_checked_again_and_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    cache, onnx, plan = _entry(tmp_path)
    _load(cache, onnx).engine.close()  # the full check of this boot: memo written
    assert Path(f"{plan}{_verified.SUFFIX}").exists()
    data = plan.read_bytes()
    sig = Path(f"{plan}.sig")
    if damage == "flip_in_place":  # same size, same inode: one weight changed
        i = len(data) - 1000
        with open(plan, "r+b") as f:
            f.seek(i)
            f.write(bytes([data[i] ^ 0x01]))
    elif damage == "truncate":
        plan.write_bytes(data[: len(data) // 2])
    elif damage == "replaced_by_rename":
        other = tmp_path / "other.plan"
        other.write_bytes(data[:-1000] + bytes([data[-1000] ^ 0x01]) + data[-999:])
        other.replace(plan)
    else:
        sig.write_text("0" * 64 + "\n")
    full = _FullChecks(monkeypatch)
    again = _load(cache, onnx)
    assert full.count >= 1  # the memo no longer vouched: the plan was hashed
    assert again.status is CacheStatus.REBUILT
    _right(again)
    assert plan.read_bytes() == data


@pytest.mark.parametrize("memo", ["other_boot", "bad_mac", "garbage", "empty", "deep_json",
                                  "symlink", "fifo"])
def test_a_memo_that_does_not_vouch_leads_back_to_the_full_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memo: str) -> None:
    cache, onnx, plan = _entry(tmp_path)
    result = _load(cache, onnx)
    result.engine.close()
    path = Path(f"{plan}{_verified.SUFFIX}")
    raw = path.read_bytes()
    if memo == "other_boot":
        monkeypatch.setattr(_verified, "_boot", "00000000-0000-0000-0000-000000000000")
    elif memo == "bad_mac":
        mac, _, body = raw.partition(b"\n")
        path.write_bytes(b"0" * len(mac) + b"\n" + body)
    elif memo == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif memo == "empty":
        path.write_bytes(b"")
    elif memo == "deep_json":  # correctly signed with the public tag key, nested past the
        body = b"[" * 2000 + b"]" * 2000  # parser's recursion limit (found by review)
        tag = hmac.new(f"edgert-cache:{result.key}".encode(), body, hashlib.sha256)
        path.write_bytes(tag.hexdigest().encode() + b"\n" + body)
    elif memo == "symlink":  # a valid memo, but reached through a symlink
        real = tmp_path / "memo-elsewhere"
        real.write_bytes(raw)
        path.unlink()
        path.symlink_to(real)
    else:  # a FIFO: opening it must neither block nor be read
        path.unlink()
        os.mkfifo(path)
    _cache.forget_process_memos()  # a new process: only the memo file could vouch
    full = _FullChecks(monkeypatch)
    hit = _load(cache, onnx)
    assert hit.status is CacheStatus.HIT
    assert full.count == 1
    _right(hit)


@pytest.mark.parametrize("plan_is", ["symlink", "hard_linked"])
def test_only_a_plain_single_link_plan_file_is_memoized(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan_is: str) -> None:
    # A symlink could point elsewhere between the check and the read, a second link lets the
    # file be written by another name: both are checked in full on every load (found by review).
    cache, onnx, plan = _entry(tmp_path)
    if plan_is == "symlink":
        real = tmp_path / "plan-elsewhere"
        plan.replace(real)
        plan.symlink_to(real)
    else:
        os.link(plan, tmp_path / "second-name.plan")
    time.sleep(STABLE_S + 0.02)  # the new link moved the plan's change time
    _always_checked_in_full(cache, onnx, plan, monkeypatch)


def test_a_cache_with_a_secret_key_checks_every_load_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A process that may write the cache can change a plan without moving its change time
    # (a writable shared mapping made earlier, a FUSE file system): the tamper-evident mode
    # must never trust file identity (found by review).
    cache, onnx, plan = _entry(tmp_path, hmac_key=b"robot-secret")
    _always_checked_in_full(cache, onnx, plan, monkeypatch, loads=3)


def test_a_cache_whose_memo_cannot_be_written_checks_in_full_once_per_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, onnx, plan = _entry(tmp_path)

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(_verified, "atomic_write", refuse)
    _checked_once_per_process(cache, onnx, plan, monkeypatch)


def test_without_a_boot_id_no_memo_file_is_written(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_verified, "_boot", None)
    cache, onnx, plan = _entry(tmp_path)
    _checked_once_per_process(cache, onnx, plan, monkeypatch)
