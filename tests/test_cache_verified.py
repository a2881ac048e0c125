"""Cache hits after the first full check of a boot: the signed memo (edgert.store._verified).

A hit may skip hashing its plan only while a memo signed with the entry's tag key says that
exactly this plan and sidecar (same identity: device, inode, size, times) passed the full check
earlier in this boot. Every way the files, the memo, the boot or the key can differ must lead
back to the full check -- and a damaged plan to a rebuild, never to a load.
"""

from __future__ import annotations

import hashlib
import hmac
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
        assert hit.engine.integrity is IntegrityStatus.HMAC
        _right(hit)
    assert full.count == 1  # the memo vouched for the plan's bytes


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


@pytest.mark.parametrize("memo", ["other_boot", "bad_mac", "garbage", "empty", "other_key"])
def test_a_memo_that_does_not_vouch_leads_back_to_the_full_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memo: str) -> None:
    cache, onnx, plan = _entry(tmp_path)
    _load(cache, onnx).engine.close()
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
    else:  # the right memo, but signed with the public per-key tag, for a cache with a secret
        cache = EngineCache(tmp_path / "c", trt_module=ft, hmac_key=b"robot-secret")
        rebuilt = _load(cache, onnx)  # the old sidecar does not verify under the secret
        assert rebuilt.status is CacheStatus.REBUILT
        rebuilt.engine.close()
        time.sleep(STABLE_S + 0.02)
        _load(cache, onnx).engine.close()  # checked in full under the secret: memo signed
        _, _, body = path.read_bytes().partition(b"\n")
        public = hmac.new(f"edgert-cache:{rebuilt.key}".encode(), body, hashlib.sha256)
        path.write_bytes(public.hexdigest().encode() + b"\n" + body)
    full = _FullChecks(monkeypatch)
    hit = _load(cache, onnx)
    assert hit.status is CacheStatus.HIT
    assert full.count == 1
    _right(hit)


def test_a_cache_whose_memo_cannot_be_written_checks_in_full_every_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, onnx, plan = _entry(tmp_path)

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(_verified, "atomic_write", refuse)
    full = _FullChecks(monkeypatch)
    for _ in range(2):
        hit = _load(cache, onnx)
        assert hit.status is CacheStatus.HIT
        _right(hit)
    assert full.count == 2
    assert not Path(f"{plan}{_verified.SUFFIX}").exists()


def test_without_a_boot_id_nothing_is_memoized(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_verified, "_boot", None)
    cache, onnx, plan = _entry(tmp_path)
    full = _FullChecks(monkeypatch)
    for _ in range(2):
        _load(cache, onnx).engine.close()
    assert full.count == 2
    assert not Path(f"{plan}{_verified.SUFFIX}").exists()
