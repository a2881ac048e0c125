"""The engine cache (Engine.from_onnx / EngineCache) through the fake TensorRT builder.

The fake builder's plans run the ONNX model through ONNX Runtime, so every output checked here is
computed, and compared with the numpy reference of the bundled policy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgert import models
from edgert.engine import Engine, EngineFlavour, EngineFormat
from edgert.errors import (
    EngineLoadError,
    InvalidArgumentError,
    NotSupportedError,
    PermissionDeniedError,
)
from edgert.session import InferenceSession
from edgert.store import BuildOptions
from edgert.store._cache import CacheStatus, DeviceIdentity, EngineCache
from edgert.testing import fake_tensorrt as ft

ROOT = Path(__file__).resolve().parents[1]
SHAPES = "obs:1x48,4x48,256x48"
OBS = np.random.default_rng(7).standard_normal((4, models.OBS_DIM)).astype(np.float32)


def _model(tmp_path: Path, bias_offset: float = 0.0, name: str = "policy.onnx") -> Path:
    """The bundled policy, optionally with fc3.bias shifted (a different, valid model)."""
    path = tmp_path / name
    path.write_bytes(models.policy_variant_bytes(bias_offset))
    return path


def _actions(engine: Engine) -> np.ndarray:
    with InferenceSession(engine, outputs="copy") as session:
        return np.asarray(session.infer({"obs": OBS})["actions"])


def _cache(root: Path, **kwargs: object) -> EngineCache:
    kwargs.setdefault("trt_module", ft)
    return EngineCache(root, **kwargs)  # type: ignore[arg-type]


def test_first_load_builds_then_hits_and_computes_the_model(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    cache = _cache(tmp_path / "cache")
    first = cache.load(onnx, BuildOptions(profiles=SHAPES))
    assert first.status is CacheStatus.BUILT
    assert first.plan_path is not None
    with first.engine as engine:
        assert engine.format is EngineFormat.TENSORRT_PLAN
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)
    second = cache.load(onnx, BuildOptions(profiles=SHAPES))
    assert second.status is CacheStatus.HIT
    assert second.key == first.key
    second.engine.close()
    names = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name != ".digests")
    stem = first.plan_path.name
    assert names == sorted([stem, stem + ".sig", stem[:-5] + ".json", stem[:-5] + ".lock"])


def test_engine_from_onnx_delegates_and_uses_declared_profiles(tmp_path: Path) -> None:
    with Engine.from_onnx(models.bundled_model_path(), cache_dir=tmp_path, trt_module=ft) as e:
        assert e.format is EngineFormat.TENSORRT_PLAN
        assert e.profiles[0]["obs"].max == (models.MAX_BATCH, models.OBS_DIM)
        np.testing.assert_allclose(_actions(e), models.policy_reference(OBS), atol=1e-5)


@pytest.mark.parametrize("component", ["onnx", "options", "version", "flavour", "device_name",
                                       "compute_capability"])
def test_every_key_component_forces_a_rebuild(tmp_path: Path, component: str) -> None:
    onnx = _model(tmp_path)
    gpu = DeviceIdentity(name="Orin", compute_capability=(8, 7))
    base = {"trt_module": ft, "device_identity": gpu}
    options = BuildOptions(profiles=SHAPES)
    first = _cache(tmp_path / "c", **base).load(onnx, options)
    first.engine.close()
    assert first.status is CacheStatus.BUILT
    changed = dict(base)
    if component == "onnx":
        onnx = _model(tmp_path, bias_offset=0.5, name="policy.onnx")  # same path, new bytes
    elif component == "options":
        options = BuildOptions(profiles=SHAPES, fp16=True)
    elif component == "version":
        changed["trt_module"] = ft.make_module(version="10.9.0.1")
    elif component == "flavour":
        # Only full TensorRT builds, so the flavour part of the key separates entries only in
        # principle: check that it is in the key, and that a lean runtime never reuses them.
        cache = _cache(tmp_path / "c", **changed)
        fields = cache.key_fields("0" * 64, options, ft)
        assert fields["tensorrt_flavour"] == "full"
        lean = ft.make_module(flavour="lean")
        assert cache.key_of(dict(fields, tensorrt_flavour="lean")) != cache.key_of(fields)
        # A lean runtime cannot build, so it never reuses the full runtime's entry either:
        result = _cache(tmp_path / "c", trt_module=lean, device_identity=gpu).load(onnx, options)
        assert result.status is CacheStatus.ONNXRUNTIME
        result.engine.close()
        return
    elif component == "device_name":
        changed["device_identity"] = DeviceIdentity(name="Thor", compute_capability=(8, 7))
    else:
        changed["device_identity"] = DeviceIdentity(name="Orin", compute_capability=(8, 6))
    again = _cache(tmp_path / "c", **changed).load(onnx, options)
    with again.engine:
        assert again.status is CacheStatus.BUILT, component
        assert again.key != first.key
        if component == "onnx":
            shifted = models.policy_reference(OBS) + np.float32(0.5)
            np.testing.assert_allclose(_actions(again.engine), shifted, atol=1e-4)
    plans = list((tmp_path / "c").glob("*.plan"))
    assert len(plans) == 2
    if component != "onnx":  # and the unchanged configuration still hits its own entry
        hit = _cache(tmp_path / "c", **base).load(onnx, BuildOptions(profiles=SHAPES))
        hit.engine.close()
        assert hit.status is CacheStatus.HIT


def test_timing_cache_path_is_not_part_of_the_key_and_is_persisted(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    timing = tmp_path / "timing.cache"
    cache = _cache(tmp_path / "c")
    cache.load(onnx, BuildOptions(profiles=SHAPES, timing_cache=timing)).engine.close()
    assert timing.exists()
    assert b"entries" in timing.read_bytes()
    hit = cache.load(onnx, BuildOptions(profiles=SHAPES))
    hit.engine.close()
    assert hit.status is CacheStatus.HIT


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar", "bad_sidecar", "empty"])
def test_a_corrupt_entry_is_rebuilt_not_loaded(tmp_path: Path, damage: str) -> None:
    onnx = _model(tmp_path)
    cache = _cache(tmp_path / "c")
    first = cache.load(onnx, BuildOptions(profiles=SHAPES))
    first.engine.close()
    plan = first.plan_path
    assert plan is not None
    sig = plan.with_name(plan.name + ".sig")
    data = plan.read_bytes()
    if damage == "truncate":
        plan.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        # change one weight inside the plan: still a well-formed plan, wrong numbers
        i = len(data) - 1000
        plan.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
    elif damage == "no_sidecar":
        sig.unlink()
    elif damage == "bad_sidecar":
        sig.write_text("0" * 64 + "\n")
    else:
        plan.write_bytes(b"")
    again = cache.load(onnx, BuildOptions(profiles=SHAPES))
    with again.engine as engine:
        assert again.status is CacheStatus.REBUILT
        assert again.reason
        assert "did not load" in again.reason
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)
    assert plan.read_bytes() == data


def test_a_secret_key_makes_entries_tamper_evident(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    first = _cache(tmp_path / "c", hmac_key=b"robot-secret").load(onnx, BuildOptions(
        profiles=SHAPES))
    first.engine.close()
    # an attacker who knows the (public) cache key cannot forge the sidecar
    other = _cache(tmp_path / "c", hmac_key=b"other").load(onnx, BuildOptions(profiles=SHAPES))
    other.engine.close()
    assert other.status is CacheStatus.REBUILT


def test_a_signed_plan_of_another_entry_copied_over_is_rebuilt(tmp_path: Path) -> None:
    # With a secret, the sidecar's key is derived per entry: another model's plan and its
    # valid sidecar, copied over this entry, must not pass (found by a new user's trial).
    a, b = _model(tmp_path), _model(tmp_path, bias_offset=5.0, name="other.onnx")
    cache = _cache(tmp_path / "c", hmac_key=b"fleet secret")
    first = cache.load(a, BuildOptions(profiles=SHAPES))
    first.engine.close()
    other = cache.load(b, BuildOptions(profiles=SHAPES))
    other.engine.close()
    assert first.plan_path is not None
    assert other.plan_path is not None
    for suffix in ("", ".sig"):
        Path(f"{first.plan_path}{suffix}").write_bytes(
            Path(f"{other.plan_path}{suffix}").read_bytes())
    again = cache.load(a, BuildOptions(profiles=SHAPES))
    with again.engine as engine:
        assert again.status is CacheStatus.REBUILT
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)


def test_version_compatible_builds_need_allow_host_code(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    options = BuildOptions(profiles=SHAPES, version_compatible=True)
    with pytest.raises(InvalidArgumentError, match="host code"):
        _cache(tmp_path / "c").load(onnx, options)
    assert not (tmp_path / "c").exists()  # refused before anything was built
    result = _cache(tmp_path / "c").load(onnx, options, allow_host_code=True)
    with result.engine as engine:
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)


def test_onnx_runtime_fallback_where_no_builder_exists(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    lean = ft.make_module(flavour="lean")
    result = _cache(tmp_path / "c", trt_module=lean).load(onnx)
    with result.engine as engine:
        assert result.status is CacheStatus.ONNXRUNTIME
        assert result.reason is not None
        assert "no builder" in result.reason
        assert engine.flavour is EngineFlavour.ONNXRUNTIME
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)
    assert not (tmp_path / "c").exists()
    with pytest.raises(NotSupportedError, match="no builder"):
        _cache(tmp_path / "c", trt_module=lean, fallback=False).load(onnx)


def test_without_tensorrt_from_onnx_runs_on_onnx_runtime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("full TensorRT is installed here")
    with Engine.from_onnx(_model(tmp_path), cache_dir=tmp_path / "c") as engine:
        assert engine.flavour is EngineFlavour.ONNXRUNTIME


def test_unwritable_cache_dir_says_where_to_put_it(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores permission bits; a read-only bind mount needs privileges we do not take
        # in tests, so imitate the read-only root with a path under a regular file.
        blocked = tmp_path / "file"
        blocked.write_text("")
        root = blocked / "cache"
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        root = ro / "cache"
    with pytest.raises(Exception, match="cache") as info:
        _cache(root).load(_model(tmp_path), BuildOptions(profiles=SHAPES))
    assert "EDGERT_CACHE_DIR" in str(info.value)


def test_read_only_cache_with_a_valid_entry_still_loads(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    root = tmp_path / "c"
    _cache(root).load(onnx, BuildOptions(profiles=SHAPES)).engine.close()
    for p in root.iterdir():
        p.chmod(0o444)
    root.chmod(0o555)
    try:
        hit = _cache(root).load(onnx, BuildOptions(profiles=SHAPES))
        hit.engine.close()
        assert hit.status is CacheStatus.HIT  # a hit never writes (no lock, no temp file)
    finally:
        root.chmod(0o755)


def test_a_corrupt_entry_in_a_read_only_cache_says_it_is_corrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A damaged factory image must not be reported as a mount problem only (found by a new
    # user's trial). Root ignores file modes, so the read-only file system is simulated.
    import errno

    from edgert.store import _cache as cache_module
    from edgert.store._files import unwritable

    onnx = _model(tmp_path)
    root = tmp_path / "c"
    built = _cache(root).load(onnx, BuildOptions(profiles=SHAPES))
    built.engine.close()
    assert built.plan_path is not None
    data = built.plan_path.read_bytes()
    built.plan_path.write_bytes(data[:-1000] + bytes([data[-1000] ^ 1]) + data[-999:])

    def read_only(self: object) -> None:
        raise unwritable(root, OSError(errno.EROFS, "Read-only file system"))

    monkeypatch.setattr(cache_module.FileLock, "acquire", read_only)
    with pytest.raises(PermissionDeniedError) as info:
        _cache(root).load(onnx, BuildOptions(profiles=SHAPES))
    text = str(info.value)
    assert "did not load" in text
    assert "IntegrityError" in text
    assert "cannot be rebuilt" in text
    assert "read-only" in text
    assert "restore the cache" in info.value.hint


@pytest.mark.parametrize("read_only", [False, True])
def test_an_entry_signed_before_per_entry_keys_is_told_apart_from_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: bool) -> None:
    # An upgrade turns every keyed entry's sidecar stale; saying "damaged" (and, read-only,
    # "restore the image") would send the operator the wrong way (found by review).
    import errno
    import hashlib
    import hmac

    from edgert.store import _cache as cache_module
    from edgert.store._files import unwritable

    onnx = _model(tmp_path)
    root = tmp_path / "c"
    built = _cache(root, hmac_key=b"fleet secret").load(onnx, BuildOptions(profiles=SHAPES))
    built.engine.close()
    assert built.plan_path is not None
    old_tag = hmac.new(b"fleet secret", built.plan_path.read_bytes(), hashlib.sha256)
    Path(f"{built.plan_path}.sig").write_text(old_tag.hexdigest() + "\n")
    if read_only:
        def refuse(self: object) -> None:
            raise unwritable(root, OSError(errno.EROFS, "Read-only file system"))

        monkeypatch.setattr(cache_module.FileLock, "acquire", refuse)
        with pytest.raises(PermissionDeniedError) as info:
            _cache(root, hmac_key=b"fleet secret").load(onnx, BuildOptions(profiles=SHAPES))
        assert "before per-entry sidecar keys" in str(info.value)
        assert "rebuild this cache" in info.value.hint
        assert "damaged" not in info.value.hint
        return
    again = _cache(root, hmac_key=b"fleet secret").load(onnx, BuildOptions(profiles=SHAPES))
    with again.engine as engine:
        assert again.status is CacheStatus.REBUILT
        assert "before per-entry sidecar keys" in (again.reason or "")
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)


def test_read_only_errors_are_permission_errors(tmp_path: Path) -> None:
    import errno

    from edgert.store._files import unwritable

    err = unwritable(tmp_path, OSError(errno.EROFS, "Read-only file system"))
    assert isinstance(err, PermissionDeniedError)
    assert "read-only" in err.message


_RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edgert.store import BuildOptions
    from edgert.store._cache import EngineCache
    from edgert.testing import fake_tensorrt as ft
    go = Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.001)
    result = EngineCache(sys.argv[1], trt_module=ft).load(
        sys.argv[2], BuildOptions(profiles="obs:1x48,4x48,256x48"))
    print(result.status.value)
    result.engine.close()
""")


def test_two_processes_racing_build_once(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path / "c"), str(onnx),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, text=True) for _ in range(3)]
    go.write_text("")
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["built", "hit", "hit"]
    assert len(list((tmp_path / "c").glob("*.plan"))) == 1


_KILLED = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from edgert.store import _files
    real_write = os.write
    def write(fd, data):
        if len(data) < 100_000:  # the digest memo: let it through
            return real_write(fd, data)
        n = real_write(fd, bytes(data)[: len(data) // 2])
        os.kill(os.getpid(), 9)  # SIGKILL in the middle of writing the plan
        return n
    _files.os.write = write
    from edgert.store import BuildOptions
    from edgert.store._cache import EngineCache
    from edgert.testing import fake_tensorrt as ft
    EngineCache(sys.argv[1], trt_module=ft).load(sys.argv[2],
                                                 BuildOptions(profiles="obs:1x48,4x48,256x48"))
""")


def test_kill_9_mid_write_leaves_no_entry_that_loads(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    root = tmp_path / "c"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(root), str(onnx)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -9, proc.stderr
    leftovers = [p.name for p in root.iterdir()]
    assert not list(root.glob("*.plan")), leftovers  # only a temp file and the lock remain
    assert any(".tmp-" in name for name in leftovers)
    result = _cache(root).load(onnx, BuildOptions(profiles=SHAPES))
    with result.engine as engine:
        assert result.status is CacheStatus.BUILT
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)


def test_kill_9_between_plan_and_sidecar_is_rebuilt(tmp_path: Path) -> None:
    onnx = _model(tmp_path)
    first = _cache(tmp_path / "c").load(onnx, BuildOptions(profiles=SHAPES))
    first.engine.close()
    assert first.plan_path is not None
    # the state a kill between the plan's rename and the sidecar's leaves: a new plan, an old
    # (or no) sidecar
    first.plan_path.with_name(first.plan_path.name + ".sig").unlink()
    again = _cache(tmp_path / "c").load(onnx, BuildOptions(profiles=SHAPES))
    again.engine.close()
    assert again.status is CacheStatus.REBUILT


def test_the_onnx_digest_is_remembered_only_while_the_file_provably_did_not_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from edgert.store import _digest

    onnx = _model(tmp_path)
    memo = tmp_path / "memo"
    digest, data = _digest.file_sha256(onnx, memo)
    assert data is not None
    assert digest == hashlib.sha256(data).hexdigest()
    # just written: its change time is too recent to trust the memo (racy), so it hashes again
    assert _digest.file_sha256(onnx, memo)[1] is not None
    # hashed long after its last change (as on a robot booting with last month's model):
    real = _digest.time.time_ns
    monkeypatch.setattr(_digest.time, "time_ns", lambda: real() + 10 * 10**9)
    _digest.file_sha256(onnx, memo)
    monkeypatch.setattr(_digest.time, "time_ns", real)
    assert _digest.file_sha256(onnx, memo) == (digest, None)  # remembered, not read
    # any change of the file's identity (here its size, modification time put back) rehashes
    st = onnx.stat()
    changed = models.bundled_model_path().read_bytes() + b"\x00"
    onnx.write_bytes(changed)
    os.utime(onnx, ns=(st.st_atime_ns, st.st_mtime_ns))
    again, read = _digest.file_sha256(onnx, memo)
    assert read is not None
    assert again == hashlib.sha256(changed).hexdigest()
    onnx.write_bytes(models.bundled_model_path().read_bytes())
    # and through the cache: the changed model is built, not the old entry loaded
    cache = _cache(tmp_path / "c")
    first = cache.load(onnx, BuildOptions(profiles=SHAPES))
    first.engine.close()
    onnx.write_bytes(_model(tmp_path, bias_offset=0.25, name="other.onnx").read_bytes())
    second = cache.load(onnx, BuildOptions(profiles=SHAPES))  # same size, just written
    with second.engine as engine:
        assert second.key != first.key
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS) + 0.25,
                                   atol=1e-4)


@pytest.mark.parametrize("forgery", ["plain", "sealed_with_the_public_key"])
def test_with_a_secret_a_forged_digest_memo_cannot_point_a_model_at_another_entry(
        tmp_path: Path, forgery: str) -> None:
    # A process that may write the cache (but does not know the secret) wrote a memo saying
    # model A's file has model B's digest: A's path then loaded B's entry, whose plan and
    # sidecar are validly signed -- the wrong model (0.5 off), without an error.
    import hashlib
    import json
    import time

    from edgert.store import _cache as cache_module
    from edgert.store import _digest

    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()  # two versions, same file name (the entries' names then agree)
    a, b = _model(tmp_path / "v1", name="model.onnx"), \
        _model(tmp_path / "v2", bias_offset=0.5, name="model.onnx")
    cache = _cache(tmp_path / "c", hmac_key=b"robot-secret")
    for onnx in (a, b):
        cache.load(onnx, BuildOptions(profiles=SHAPES)).engine.close()
    st = a.stat()
    body = json.dumps({"path": str(a), "identity": _digest.file_identity(st),
                       "hashed_at_ns": st.st_ctime_ns + 10**10,
                       "sha256": hashlib.sha256(b.read_bytes()).hexdigest()}).encode()
    memo = tmp_path / "c" / ".digests" / (
        hashlib.sha256(os.fsencode(os.path.abspath(a))).hexdigest()[:32] + ".json")
    assert memo.exists()
    memo.write_bytes(body if forgery == "plain" else _digest.seal(_digest.memo_key(None), body))
    cache_module.forget_process_memos()  # a new process reads the memo file
    time.sleep(0.01)
    with cache.load(a, BuildOptions(profiles=SHAPES)).engine as engine:
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)


def test_digest_memos_are_signed_and_reused_with_a_secret_too(tmp_path: Path) -> None:
    from edgert.store import _digest

    onnx = _model(tmp_path)
    st = onnx.stat()
    key = _digest.memo_key(b"robot-secret")
    memo_dir = tmp_path / "memo"
    real = _digest.time.time_ns
    try:  # hashed long after the file's last change, so the memo may be trusted
        _digest.time.time_ns = lambda: real() + 10 * 10**9  # type: ignore[assignment]
        digest, data = _digest.file_sha256(onnx, memo_dir, key)
    finally:
        _digest.time.time_ns = real  # type: ignore[assignment]
    assert data is not None
    _digest.forget_process_memos()
    assert _digest.file_sha256(onnx, memo_dir, key) == (digest, None)  # the signed memo
    _digest.forget_process_memos()
    assert _digest.file_sha256(onnx, memo_dir, _digest.memo_key(b"other"))[1] is not None
    assert onnx.stat().st_ctime_ns == st.st_ctime_ns


def _two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """v1/model.onnx and v2/model.onnx (0.5 off): same file name, so their entries' names
    differ only by key."""
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    return (_model(tmp_path / "v1", name="model.onnx"),
            _model(tmp_path / "v2", bias_offset=0.5, name="model.onnx"))


def test_a_secret_cache_never_trusts_a_digest_another_cache_of_the_process_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a secret, memos guard against corruption only: a forged one in that cache may
    # mislead it. What the process remembers from it must not reach a cache with a secret.
    import hashlib
    import json

    from edgert.store import _digest

    monkeypatch.setattr(_digest, "STABLE_S", 0.0)
    a, b = _two_versions(tmp_path)
    keyed = _cache(tmp_path / "keyed", hmac_key=b"robot-secret")
    for onnx in (a, b):
        keyed.load(onnx, BuildOptions(profiles=SHAPES)).engine.close()
    public = _cache(tmp_path / "public")
    st = a.stat()
    where = os.path.abspath(a)
    forged = json.dumps({"kind": "digest", "path": where, "identity": _digest.file_identity(st),
                         "hashed_at_ns": st.st_ctime_ns + 10**10,
                         "sha256": hashlib.sha256(b.read_bytes()).hexdigest()}).encode()
    memo = tmp_path / "public" / ".digests" / (
        hashlib.sha256(os.fsencode(where)).hexdigest()[:32] + ".json")
    memo.parent.mkdir(parents=True)
    memo.write_bytes(_digest.seal(_digest.memo_key(None), forged))
    with pytest.raises(EngineLoadError):  # misled (and caught by the build's own check)
        public.load(a, BuildOptions(profiles=SHAPES)).engine.close()
    with keyed.load(a, BuildOptions(profiles=SHAPES)).engine as engine:
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)


def _external_model(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    onnx = pytest.importorskip("onnx")
    directory.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(directory)  # weights are found beside the model, wherever this is
    model = directory / "model.onnx"
    onnx.save_model(onnx.load(str(models.bundled_model_path())), str(model),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return model


@pytest.mark.parametrize("forgery", ["unsigned", "another_models_memo"])
def test_an_external_data_memo_holds_only_for_its_own_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forgery: str) -> None:
    # Found by review: the external-data memo is named by the model's digest, outside what its
    # MAC covers. Another model's validly signed memo (saying "no external data") copied over
    # it keyed the model without its weights: retrained weights then hit the old plan.
    import json

    from edgert.store import _cache as cache_module
    from edgert.store import _digest

    monkeypatch.setattr(_digest, "STABLE_S", 0.0)
    model = _external_model(tmp_path / "ext", monkeypatch)
    plain = _model(tmp_path)
    cache = _cache(tmp_path / "c", hmac_key=b"robot-secret")
    for onnx in (model, plain):
        cache.load(onnx).engine.close()
    memos = tmp_path / "c" / ".digests"
    path, _, digest = cache._digest(model)
    mine = memos / f"external-{digest}.json"
    if forgery == "unsigned":
        mine.write_bytes(json.dumps([]).encode())
    else:
        theirs = [m for m in memos.glob("external-*.json") if m != mine]
        assert len(theirs) == 1
        mine.write_bytes(theirs[0].read_bytes())
    cache_module.forget_process_memos()
    assert list(cache._external_digests(path, None, digest)) == ["model.onnx.data"]


def test_memos_spare_a_new_process_the_model_parse_and_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgert.store import _cache as cache_module
    from edgert.store import _digest
    from edgert.store import _external as external_module

    monkeypatch.setattr(_digest, "STABLE_S", 0.0)
    model = _external_model(tmp_path / "ext", monkeypatch)
    for secret in (None, b"robot-secret"):
        cache = _cache(tmp_path / f"c{secret is None}", hmac_key=secret)
        first = cache.load(model)
        first.engine.close()
        cache_module.forget_process_memos()  # a new process

        def parse(_model: bytes) -> list[str]:
            raise AssertionError("the model was parsed again")

        with monkeypatch.context() as m:
            m.setattr(external_module, "external_locations", parse)
            m.setattr(external_module, "read_source", parse)
            m.setattr(cache_module, "read_source", parse)
            again = cache.load(model)
        again.engine.close()
        assert again.status is CacheStatus.HIT
        assert again.key == first.key


def test_a_model_with_external_weights_given_as_bytes_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by review: given as bytes, the model was keyed without its weights while the fake
    # builder found them in the working directory: retrained weights then hit the old plan.
    model = _external_model(tmp_path / "ext", monkeypatch)
    with pytest.raises(InvalidArgumentError, match="external files") as info:
        _cache(tmp_path / "cache").load(model.read_bytes(), BuildOptions(profiles=SHAPES))
    assert info.value.hint is not None
    assert "path" in info.value.hint
    assert not list((tmp_path / "cache").glob("*.plan"))


def test_the_fake_parser_finds_external_weights_beside_a_file_it_parses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _external_model(tmp_path / "ext", monkeypatch)
    monkeypatch.chdir(tmp_path)  # not where the weights are
    for how in ("parse_from_file", "bytes_with_path", "bytes_alone"):
        builder = ft.Builder(ft.Logger())
        parser = ft.OnnxParser(builder.create_network(0), ft.Logger())
        if how == "parse_from_file":
            ok = parser.parse_from_file(str(model))
        elif how == "bytes_with_path":
            ok = parser.parse(model.read_bytes(), str(model))
        else:
            ok = parser.parse(model.read_bytes())
        assert ok is (how != "bytes_alone"), (how, [str(parser.get_error(i))
                                                    for i in range(parser.num_errors)])


def test_a_device_identity_given_as_lists_still_keys_entries(tmp_path: Path) -> None:
    # Found by review: the in-process key memo hashed DeviceIdentity, whose compute capability
    # read from a JSON or YAML config is a list: load() raised TypeError.
    onnx = _model(tmp_path)
    cache = _cache(tmp_path / "c", device_identity=DeviceIdentity(
        name="Orin", compute_capability=[8, 7]))  # type: ignore[arg-type]
    for status in (CacheStatus.BUILT, CacheStatus.HIT):
        result = cache.load(onnx, BuildOptions(profiles=SHAPES))
        result.engine.close()
        assert result.status is status


def test_a_model_that_changes_while_loading_is_not_built_under_the_old_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgert.errors import EngineLoadError
    from edgert.store import _cache as cache_module

    onnx = _model(tmp_path)
    # the remembered digest says one thing, the bytes read for the build another
    monkeypatch.setattr(cache_module, "file_sha256", lambda *_args: ("ab" * 32, None))
    with pytest.raises(EngineLoadError, match="changed while it was being loaded"):
        _cache(tmp_path / "c").load(onnx, BuildOptions(profiles=SHAPES))
    assert not list((tmp_path / "c").glob("*.plan"))


def test_new_external_weights_beside_an_unchanged_onnx_file_force_a_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A model saved with ONNX external data keeps its weights in another file: the .onnx bytes
    # (and their digest) stay the same when only the weights change. The key must see them.
    onnx = pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)  # the fake parser (ONNX Runtime on bytes) finds weights here
    model = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(str(models.bundled_model_path())), str(model),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    cache = EngineCache(tmp_path / "cache", trt_module=ft)
    first = cache.load(model)
    first.engine.close()
    assert first.status is CacheStatus.BUILT
    again = cache.load(model)
    again.engine.close()
    assert again.status is CacheStatus.HIT
    weights = tmp_path / "ext.onnx.data"
    data = bytearray(weights.read_bytes())
    data[-4:] = np.float32(7.0).tobytes()  # a retrained bias, same size, same .onnx file
    weights.write_bytes(bytes(data))
    retrained = cache.load(model)
    retrained.engine.close()
    assert retrained.status is CacheStatus.BUILT
    assert retrained.key != first.key


def test_external_weights_are_found_beside_the_model_and_built_into_the_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A new user's trial: from any other working directory the fake could not build a model
    # with external weights at all (it ignored the path TensorRT's parser gets), so what the
    # cache does with retrained weights could not be tried. As TensorRT's, its plans now hold
    # the weights: the entry runs after the weights file is gone, and new weights rebuild it.
    onnx = pytest.importorskip("onnx")
    model = tmp_path / "models" / "ext.onnx"
    model.parent.mkdir()
    onnx.save_model(onnx.load(str(models.bundled_model_path())), str(model),
                    save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cache = _cache(tmp_path / "cache")
    weights = model.parent / "ext.onnx.data"
    original = weights.read_bytes()
    with cache.load(model, BuildOptions(profiles=SHAPES)).engine as engine:
        np.testing.assert_allclose(_actions(engine), models.policy_reference(OBS), atol=1e-5)
    retrained = bytearray(original)
    retrained[-4:] = (np.frombuffer(original[-4:], np.float32) + 0.25).tobytes()  # fc3.bias[-1]
    weights.write_bytes(bytes(retrained))
    result = cache.load(model, BuildOptions(profiles=SHAPES))
    assert result.status is CacheStatus.BUILT
    weights.unlink()  # the plan holds its weights
    with result.engine as engine:
        expected = models.policy_reference(OBS)
        expected[:, -1] += 0.25
        np.testing.assert_allclose(_actions(engine), expected, atol=1e-5)


def test_a_build_error_names_the_model_file(tmp_path: Path) -> None:
    # A new user's trial: the parser's refusal named "<bytes>", not the file they passed.
    onnx_pkg = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgert.store import BuildError

    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], domain="edgert.test")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx = tmp_path / "broken.onnx"
    onnx_pkg.save_model(helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("edgert.test", 1)]), str(onnx))
    with pytest.raises(BuildError, match=r"broken\.onnx") as info:
        _cache(tmp_path / "cache").load(onnx)
    assert "<bytes>" not in str(info.value)


def test_a_directory_where_the_plan_goes_is_named_not_called_read_only(tmp_path: Path) -> None:
    # A new user's trial: the error blamed a read-only cache and suggested moving the cache.
    from edgert.errors import EdgeRTError

    onnx = _model(tmp_path)
    cache = _cache(tmp_path / "cache")
    built = cache.load(onnx, BuildOptions(profiles=SHAPES))
    built.engine.close()
    assert built.plan_path is not None
    built.plan_path.unlink()
    built.plan_path.mkdir()
    with pytest.raises(EdgeRTError, match="not a file is there") as info:
        cache.load(onnx, BuildOptions(profiles=SHAPES))
    assert not isinstance(info.value, PermissionDeniedError)
    assert info.value.hint is not None
    assert "move" in info.value.hint


def test_every_build_option_but_the_timing_cache_is_in_the_key() -> None:
    # A BuildOptions field that changes the plan but not the key would load a plan built with
    # other options. A new field must be added here (and to key_fields) to pass.
    import dataclasses

    changed = {
        "fp16": ({}, {"fp16": True}), "bf16": ({}, {"bf16": True}),
        "int8": ({}, {"int8": True}), "strongly_typed": ({}, {"strongly_typed": True}),
        "profiles": ({}, {"profiles": SHAPES}), "workspace_bytes": ({}, {"workspace_bytes": 1}),
        "version_compatible": ({}, {"version_compatible": True}),
        "exclude_lean_runtime": ({"version_compatible": True},
                                 {"version_compatible": True, "exclude_lean_runtime": True}),
        "hardware_compatibility": ({}, {"hardware_compatibility": "ampere_plus"}),
        "optimization_level": ({}, {"optimization_level": 5}),
    }
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    assert fields == set(changed) | {"timing_cache"}
    for name, (before, after) in changed.items():
        assert BuildOptions(**before).key_fields() != BuildOptions(**after).key_fields(), name
    assert BuildOptions().key_fields() == BuildOptions(timing_cache="t.cache").key_fields()
