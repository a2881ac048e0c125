"""The engine cache: build a TensorRT plan once per (model, options, TensorRT, GPU), then load it.

An entry is three files in the cache directory, named ``<model stem>-<key>``: the plan, its
integrity sidecar ``.plan.sig`` (the HMAC-SHA256 tag that :meth:`Engine.load` checks, the same
format as every signed edgert model) and ``.json`` (the key's parts, for people and tools). The
key is the SHA-256 of: the ONNX model's SHA-256 (and that of each external-data file it names),
the build options that change the plan, the
TensorRT version and flavour, and the GPU's name and compute capability. Change any of them and
the plan is built again -- TensorRT plans run only on the TensorRT version and the GPU kind that
built them.

Crash safety: each file is written to a temp file, fsynced and renamed (see
:mod:`edgert.store._files`); the sidecar is written after the plan, so an entry whose plan or
sidecar is missing, truncated or altered fails its integrity check and is rebuilt, never loaded.
An ``flock`` per entry makes processes that start together build once: the others wait, then
load what the first wrote. Loading a valid entry needs no write access, so a cache prepared at
first boot keeps working on a read-only root.

The ONNX model's SHA-256 is remembered between starts while the file provably did not change
(:mod:`edgert.store._digest`), so a hit costs a ``stat`` instead of hashing the model; the plan
is checked against its sidecar at its first load of each boot, and later loads of that boot use
a signed memo of that check while the plan and sidecar provably did not change
(:mod:`edgert.store._verified`).

Without a key of your own the sidecar is keyed by the cache key: it detects corruption, not
tampering. Pass ``hmac_key=`` (a secret) to make entries tamper-evident; version-compatible plans,
which embed host code, are loaded only with ``allow_host_code=True`` and then always through
that check.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert._compat import StrEnum
from edgert._fileio import MAX_MODEL_BYTES
from edgert.engine import Engine, EngineFlavour, IntegrityStatus, OnnxRuntimeOptions
from edgert.engine._integrity import SIDECAR_SUFFIX
from edgert.engine._source import EngineFormat, ModelSource, Source, read_source, sniff
from edgert.engine._trt_module import flavour_of, requires_cuda
from edgert.errors import (
    EdgeRTError,
    EngineLoadError,
    IntegrityError,
    InvalidArgumentError,
    NotSupportedError,
    RequestTimeoutError,
)
from edgert.store import _digest, _external, _verified
from edgert.store._builder import EngineBuilder, ProgressCallback, has_builder
from edgert.store._digest import bounded_put, file_sha256, memo_key
from edgert.store._external import external_digests
from edgert.store._files import (
    FileLock,
    atomic_write,
    read_small,
    remove_stale_temps,
    unwritable,
)
from edgert.store._options import BuildOptions
from edgert.store._verified import (
    read_plan,
    remember_verified,
    sig_identity,
    verified_identity,
)

__all__ = ["CacheResult", "CacheStatus", "DeviceIdentity", "EngineCache", "default_cache_dir",
           "forget_process_memos"]

#: Why an entry signed before per-entry sidecar keys is rebuilt (not a damaged one).
_LEGACY = ("the cached entry was signed by an edgert before per-entry sidecar keys (it is not "
           "damaged, but its signature no longer binds it to this entry)")

_log = logging.getLogger("edgert.store")
#: Cache keys by what they are derived from (see EngineCache._key).
_KEYS: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}
_KEY_FORMAT = 1
_ENV = "EDGERT_CACHE_DIR"


class CacheStatus(StrEnum):
    """How :meth:`EngineCache.load` got its engine."""

    HIT = "hit"  # a valid entry was loaded
    BUILT = "built"  # no entry: built and stored
    REBUILT = "rebuilt"  # an entry was corrupt or would not load: built again
    ONNXRUNTIME = "onnxruntime"  # nothing here can build: the ONNX model runs on ONNX Runtime


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceIdentity:
    """The GPU a plan is built for (part of the cache key)."""

    name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheResult:
    """What :meth:`EngineCache.load` did.

    Attributes:
        engine: The loaded engine (the caller owns it and closes it).
        status: Hit, built, rebuilt, or ONNX Runtime fallback.
        key: The cache key (None for the fallback).
        plan_path: The entry's plan file (None for the fallback).
        reason: Why it rebuilt or fell back (None for hits and first builds).
        build_s: Seconds spent building (0 for hits).
    """

    engine: Engine
    status: CacheStatus
    key: str | None
    plan_path: Path | None
    reason: str | None
    build_s: float


def forget_process_memos() -> None:
    """Forget what this process remembered of model digests, checked plans and keys: the next
    loads behave as a new process's would (benchmarks and tests)."""
    _digest.forget_process_memos()
    _verified.forget_process_memos()
    _external.forget_process_memos()
    _KEYS.clear()


def default_cache_dir() -> Path:
    """``$EDGERT_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgert/engines``, else ``~/.cache/...``."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "edgert" / "engines"


def _device_identity(trt: ModuleType, device: int) -> DeviceIdentity:
    if not requires_cuda(trt):
        return DeviceIdentity(name=f"host ({getattr(trt, '__name__', 'fake')})",
                              compute_capability=(0, 0))
    import edgert.cuda

    props = edgert.cuda.device_properties(device)
    return DeviceIdentity(name=props.name, compute_capability=props.compute_capability)


class EngineCache:
    """A directory of plans built from ONNX models, keyed so a stale plan is never loaded.

    Args:
        cache_dir: Where entries live (default :func:`default_cache_dir`). On robots with a
            read-only root, put it on a writable partition (``/var/lib/...``, a data partition).
        trt_module: A TensorRT module with a builder (default: import ``tensorrt``); e.g.
            :mod:`edgert.testing.fake_tensorrt`.
        device: CUDA device the plans are built for and loaded on.
        hmac_key: Secret that signs and verifies entries (default: corruption checks only).
        device_identity: The GPU to key entries by, instead of asking CUDA (cross-checks, tests).
        fallback: Where nothing can build, run the ONNX model on ONNX Runtime (True) or raise.
        lock_timeout_s: How long to wait for another process building the same entry.

    Raises:
        InvalidArgumentError: An argument is malformed.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, *,
                 trt_module: ModuleType | None = None, device: int = 0,
                 hmac_key: str | bytes | None = None,
                 device_identity: DeviceIdentity | None = None, fallback: bool = True,
                 lock_timeout_s: float | None = None) -> None:
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise InvalidArgumentError(f"device must be a CUDA device ordinal >= 0, got {device!r}")
        if hmac_key is not None and not hmac_key:
            raise InvalidArgumentError("hmac_key is empty", hint="pass a secret, or None")
        self.root = Path(os.fspath(cache_dir)) if cache_dir is not None else default_cache_dir()
        self._trt_module = trt_module
        self.device = device
        self._secret = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
        self._memo_key = memo_key(self._secret)
        self._identity = device_identity
        self.fallback = fallback
        self.lock_timeout_s = lock_timeout_s
        self._plans: dict[tuple[str, str], Path] = {}  # (stem, key) -> plan path
        self._digests = self.root / ".digests"  # memos of model digests

    # -- what can build here ------------------------------------------------------------

    def _builder_module(self) -> tuple[ModuleType | None, str | None]:
        """The module that builds, or None and why nothing can."""
        trt = self._trt_module
        if trt is None:
            try:
                trt = importlib.import_module("tensorrt")
            except Exception as err:
                return None, f"full TensorRT cannot be imported ({err})"
        if not has_builder(trt) or flavour_of(trt) is not EngineFlavour.FULL:
            return None, f"{getattr(trt, '__name__', 'the TensorRT module')} has no builder"
        if requires_cuda(trt):
            import edgert.cuda

            if not edgert.cuda.is_available():
                return None, f"no CUDA device ({edgert.cuda.unavailable_reason()})"
        return trt, None

    def key_fields(self, onnx_sha256: str, options: BuildOptions, trt: ModuleType, *,
                   external_data: dict[str, str] | None = None) -> dict[str, Any]:
        """The parts of a cache key (see the module documentation).

        ``external_data`` maps each external-data file the model names to its SHA-256.
        """
        identity = self._identity or _device_identity(trt, self.device)
        fields = {
            "format": _KEY_FORMAT,
            "onnx_sha256": onnx_sha256,
            "build": options.key_fields(),
            "tensorrt_version": str(getattr(trt, "__version__", "unknown")),
            "tensorrt_flavour": flavour_of(trt).value,
            "device_name": identity.name,
            "compute_capability": list(identity.compute_capability),
        }
        if external_data:  # only then: keys of models without external data stay as they were
            fields["onnx_external_data"] = dict(sorted(external_data.items()))
        return fields

    @staticmethod
    def key_of(fields: dict[str, Any]) -> str:
        """The key: SHA-256 of the fields' canonical JSON."""
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def _key(self, digest: str, options: BuildOptions, trt: ModuleType,
             external: dict[str, str]) -> tuple[dict[str, Any], str]:
        """:meth:`key_fields` and :meth:`key_of`, remembered in this process by their inputs."""
        identity = self._identity or _device_identity(trt, self.device)
        inputs = (type(self), digest, options, tuple(sorted(external.items())),
                  str(getattr(trt, "__version__", "unknown")), flavour_of(trt), identity.name,
                  tuple(identity.compute_capability))
        try:
            known = _KEYS.get(inputs)
        except TypeError:  # something unhashable in the options: derive it every time
            fields = self.key_fields(digest, options, trt, external_data=external)
            return fields, self.key_of(fields)
        if known is None:
            fields = self.key_fields(digest, options, trt, external_data=external)
            known = bounded_put(_KEYS, inputs, (fields, self.key_of(fields)), 1024)
        return dict(known[0]), known[1]

    def _tag_key(self, key: str) -> bytes:
        """The HMAC key of the entry for ``key``'s sidecar.

        With a secret it is derived from the secret *and* the cache key, so a signed plan of
        one entry copied over another (another model, options, TensorRT or GPU) fails the other
        entry's check: a tag over the plan's bytes alone would pass it (found by a new user's
        trial). Without a secret it is public: corruption checks only.
        """
        label = f"edgert-cache:{key}".encode()
        if self._secret is None:
            return label
        return hmac.new(self._secret, label, hashlib.sha256).digest()

    # -- loading -------------------------------------------------------------------------

    def load(self, onnx: Source, build: BuildOptions | None = None, *,
             allow_host_code: bool = False, progress: ProgressCallback | None = None,
             onnx_options: OnnxRuntimeOptions | None = None,
             temp_dir: str | os.PathLike[str] | None = None) -> CacheResult:
        """Load the plan built from ``onnx`` with ``build``, building it first if needed.

        Args:
            onnx: Path to the ONNX model, or its bytes.
            build: Build options (default :class:`BuildOptions` ()).
            allow_host_code: Let version-compatible plans (which embed host code) load; they
                are loaded only through the entry's HMAC check.
            progress: Builder progress callback (see :class:`EngineBuilder`).
            onnx_options: ONNX Runtime options for the fallback.
            temp_dir: Writable directory for a plan's embedded lean runtime.

        Returns:
            A :class:`CacheResult`; its ``engine`` is yours to close.

        Raises:
            InvalidArgumentError: Not an ONNX model, bad options, or a version-compatible
                build without ``allow_host_code``.
            NotSupportedError: Nothing can build here and ``fallback`` is off.
            PermissionDeniedError: The entry must be built but the cache directory is not
                writable (read-only root): the message says where to put the cache instead.
            BuildError: TensorRT could not build the model.
            RequestTimeoutError: Another process held the entry's lock past ``lock_timeout_s``.
        """
        options = build if build is not None else BuildOptions()
        if not isinstance(options, BuildOptions):
            raise InvalidArgumentError("build must be a BuildOptions")
        if options.embeds_host_code and not allow_host_code:
            raise InvalidArgumentError(
                "version-compatible plans embed a lean runtime (host code), and "
                "allow_host_code is False",
                hint="pass allow_host_code=True (cached plans are loaded only after their HMAC "
                     "sidecar verifies; give the cache hmac_key= to make that tamper-proof), "
                     "or build with exclude_lean_runtime=True")
        trt, why = self._builder_module()
        if trt is None:
            return self._fallback(onnx, why or "", onnx_options)
        path, data, digest = self._digest(onnx)
        external = self._external_digests(path, data, digest)
        fields, key = self._key(digest, options, trt, external)
        stem = (path.stem if path is not None else "model")[:64]
        plan_path = self._plans.get((stem, key)) or bounded_put(
            self._plans, (stem, key), self.root / f"{stem}-{key[:32]}.plan", 256)
        load = {"trt_module": trt, "device": self.device, "allow_host_code": allow_host_code,
                "temp_dir": temp_dir}
        engine, problem = self._try_load(plan_path, key, load)
        if engine is not None:
            return CacheResult(engine=engine, status=CacheStatus.HIT, key=key,
                               plan_path=plan_path, reason=None, build_s=0.0)
        lock = FileLock(plan_path.with_suffix(".lock"), timeout_s=self.lock_timeout_s)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except RequestTimeoutError:
            raise
        except EdgeRTError as err:  # the lock file cannot be made (read-only cache)
            raise self._cannot_build(err, problem) from err
        except OSError as err:
            raise self._cannot_build(unwritable(self.root, err), problem) from err
        try:
            # Whoever held the lock before us may have built it.
            engine, again = self._try_load(plan_path, key, load)
            if engine is not None:
                return CacheResult(engine=engine, status=CacheStatus.HIT, key=key,
                                   plan_path=plan_path, reason=None, build_s=0.0)
            problem = problem or again
            if problem:
                _log.warning("engine cache: rebuilding %s: %s", plan_path.name, problem)
            remove_stale_temps(self.root)
            src = read_source(data) if data is not None else read_source(path or "")
            label = str(path) if path is not None else "<bytes>"
            if sniff(src.data, label).format is not EngineFormat.ONNX:
                raise InvalidArgumentError(f"{label} is not an ONNX model",
                                           hint="the cache builds plans from .onnx files; load "
                                                "plans with Engine.load")
            if data is None and hashlib.sha256(src.data).hexdigest() != digest:
                raise EngineLoadError(
                    f"{label} changed while it was being loaded; nothing was built",
                    path=label, hint="load it again once the copy is complete")
            start = time.monotonic()
            with EngineBuilder(trt_module=trt, device=self.device) as builder:
                plan = builder.build(src.data, options, progress=progress, model_path=path)
            build_s = time.monotonic() - start
            atomic_write(plan_path, plan)
            tag = hmac.new(self._tag_key(key), plan, hashlib.sha256).hexdigest()
            atomic_write(plan_path.with_name(plan_path.name + ".sig"), (tag + "\n").encode())
            meta = dict(fields, key=key, built_at_unix_s=round(time.time(), 3),
                        build_s=round(build_s, 3), plan_sha256=hashlib.sha256(plan).hexdigest(),
                        source=str(path) if path is not None else None)
            atomic_write(plan_path.with_suffix(".json"),
                         (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        finally:
            lock.release()
        engine, problem_after = self._try_load(plan_path, key, load)
        if engine is None:
            raise EngineLoadError(
                f"the plan just built for {label} does not load: {problem_after}",
                path=str(plan_path),
                hint="this TensorRT cannot run what it built: check the GPU and the TensorRT "
                     "install (`edgert doctor`)")
        return CacheResult(engine=engine,
                           status=CacheStatus.REBUILT if problem else CacheStatus.BUILT,
                           key=key, plan_path=plan_path, reason=problem, build_s=build_s)

    @staticmethod
    def _cannot_build(err: EdgeRTError, problem: str | None) -> EdgeRTError:
        """``err`` (the cache cannot be written), saying first why the entry had to be built:
        a corrupt entry in a read-only cache is not a mount problem."""
        if problem is None:
            return err
        if problem == _LEGACY:
            first = ("rebuild this cache with this edgert (Engine.from_onnx on a writable copy "
                     "with the same hmac_key) and ship that, or ")
        else:
            first = ("restore the cache from the image it came from (its plan or sidecar was "
                     "damaged), or ")
        err.reword(message=f"{problem}, and it cannot be rebuilt: {err.message}",
                   hint=first + (err.hint or "make the cache writable"))
        return err

    def _try_load(self, plan_path: Path, key: str,
                  load: dict[str, Any]) -> tuple[Engine | None, str | None]:
        """The entry's engine, or None and why not (None when there is no entry at all)."""
        tag_key = self._tag_key(key)
        try:
            if self._secret is None:  # memos guard against corruption, not an attacker
                checked_at = time.time_ns()
                read = read_plan(plan_path)
                if read is not None:
                    data, plan_id = read
                    src = ModelSource(data=data, path=plan_path)
                    if plan_id == verified_identity(plan_path, tag_key):
                        # checked in full earlier this boot (edgert.store._verified)
                        return Engine._load_verified(src, IntegrityStatus.HMAC_THIS_BOOT,
                                                     **load), None
                    sig_id = sig_identity(plan_path)
                    engine = Engine.load(src, hmac_key=tag_key, **load)
                    remember_verified(plan_path, tag_key, plan_id, sig_id, checked_at)
                    return engine, None
            if not plan_path.exists():
                return None, None
            return Engine.load(plan_path, hmac_key=tag_key, **load), None
        except (IntegrityError, EngineLoadError) as err:  # corrupt, truncated, stale: rebuild
            if isinstance(err, IntegrityError) and self._legacy_signed(plan_path):
                return None, _LEGACY
            return None, f"the cached entry did not load ({type(err).__name__}: {err.message})"

    def _legacy_signed(self, plan_path: Path) -> bool:
        """Whether the entry's sidecar is the secret's tag over the plan alone: signed by an
        edgert before per-entry keys, not damaged (told apart only, never loaded)."""
        if self._secret is None:
            return False
        try:
            plan = read_small(plan_path, MAX_MODEL_BYTES)
            text = read_small(f"{plan_path}{SIDECAR_SUFFIX}", 4096).decode("ascii").split()
        except (OSError, UnicodeDecodeError):
            return False
        legacy = hmac.new(self._secret, plan, hashlib.sha256).hexdigest()
        return bool(text) and hmac.compare_digest(text[0].lower(), legacy)

    def _digest(self, onnx: Source) -> tuple[Path | None, bytes | None, str]:
        """(path, bytes if they were read, SHA-256) of the ONNX model."""
        if isinstance(onnx, ModelSource):  # already read once: hash exactly those bytes
            given = bytes(onnx.data)
            return onnx.path, given, hashlib.sha256(given).hexdigest()
        if isinstance(onnx, (bytes, bytearray, memoryview)):
            given = bytes(onnx)
            return None, given, hashlib.sha256(given).hexdigest()
        path = onnx if isinstance(onnx, Path) else Path(os.fspath(onnx))
        try:
            digest, read = file_sha256(path, self._digests, self._memo_key)
        except OSError:
            read_source(path)  # raises the library's error for a missing/unreadable file
            raise
        return path, read, digest

    def _external_digests(self, path: Path | None, data: bytes | None,
                          digest: str) -> dict[str, str]:
        """SHA-256 of each external-data file the model names (see :func:`external_digests`)."""
        return external_digests(path, data, digest, self._digests, self._memo_key)

    def _fallback(self, onnx: Source, why: str,
                  onnx_options: OnnxRuntimeOptions | None) -> CacheResult:
        if not self.fallback:
            raise NotSupportedError(f"cannot build a TensorRT plan here: {why}",
                                    hint="build on a machine with full TensorRT and a GPU, or "
                                         "allow the ONNX Runtime fallback")
        reason = f"no TensorRT builder: {why}; running the ONNX model on ONNX Runtime"
        _log.info("engine cache: %s", reason)
        engine = Engine.load(onnx, runtime="onnxruntime", onnx_options=onnx_options)
        return CacheResult(engine=engine, status=CacheStatus.ONNXRUNTIME, key=None,
                           plan_path=None, reason=reason, build_s=0.0)


def from_onnx(path: Source, *, cache_dir: str | os.PathLike[str] | None,
              build: BuildOptions | None, **kwargs: Any) -> Engine:
    """What :meth:`Engine.from_onnx` does (see there)."""
    cache_args = {k: kwargs.pop(k) for k in ("trt_module", "device", "hmac_key", "fallback",
                                             "lock_timeout_s") if k in kwargs}
    result = EngineCache(cache_dir, **cache_args).load(path, build, **kwargs)
    return result.engine

