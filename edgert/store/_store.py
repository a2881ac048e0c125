"""ModelStore: versioned models on the robot, with health-gated activation and rollback.

Layout of the store directory::

    versions/<version>/manifest.json   what was installed (sha256, signature, notes, ...)
    versions/<version>/model.onnx      or model.plan (+ model.plan.sig when signed)
    active -> versions/<version>       symlink, replaced atomically (rename) on activation
    history.jsonl                      one JSON line per install, activation, refusal, rollback
    .lock                              flock serializing changes between processes

Installing copies into a temp directory, fsyncs, then renames it into ``versions/`` -- a version
directory is complete or absent. Activating loads the candidate, runs the health gate
(:mod:`edgert.store._health`) and only then swaps the ``active`` link; a refusal leaves the
current version active and raises :class:`HealthCheckError` saying why. Rollback returns to the
version that was active before the current one (a stack replayed from the history).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from edgert.engine import Engine, EngineFlavour, EngineFormat, OnnxRuntimeOptions
from edgert.engine._integrity import check_integrity
from edgert.engine._onnx_external import refuse_external_data
from edgert.engine._source import read_source, sniff
from edgert.errors import (
    EdgeRTError,
    IntegrityError,
    InvalidArgumentError,
)
from edgert.store._errors import HealthCheckError, StoreError
from edgert.store._files import FileLock, atomic_write, fsync_dir, unwritable
from edgert.store._health import HealthPolicy, HealthReport, check_health
from edgert.store._history import StoreEvent, append_event, current_stack, rollback_target
from edgert.store._manifest import MANIFEST_NAME, Manifest, check_version_name, version_tuple
from edgert.store._options import BuildOptions
from edgert.store._store_read import ACTIVE, HISTORY, StoreReader

__all__ = ["ModelStore", "StoreEvent", "describe"]

_log = logging.getLogger("edgert.store")
_STORE_HINT = ("put the model store on a writable partition (robots often mount / read-only), "
               "e.g. ModelStore('/var/lib/edgert/models'), --root or EDGERT_STORE_DIR")


def _copy_synced(data: bytes | memoryview, path: Path) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelStore(StoreReader):
    """A directory of model versions (see the module documentation).

    Args:
        root: The store directory (created on first install); on a writable partition.
        hmac_key: Secret that models must be signed with (HMAC-SHA256) to be installed; their
            signature is checked again on every load. None: SHA-256 checks only.
        keep: Versions kept; older inactive ones are deleted (never the active version, the
            one a rollback would return to, or versions installed after the active one).
        trt_module: TensorRT module for plans and builds (e.g. the fake).
        cache_dir: Build ONNX versions into TensorRT plans through this engine cache (None:
            ONNX versions run on ONNX Runtime).
        build: Build options for that.
        device: CUDA device.
        allow_host_code: Let version-compatible plans run their embedded runtime (only after
            their SHA-256 and, with a key, HMAC verified).
        onnx_options: ONNX Runtime options.
        lock_timeout_s: How long a change waits for another process's (None: as long as it
            takes); then :class:`~edgert.errors.RequestTimeoutError`.

    Raises:
        InvalidArgumentError: A bad argument.
    """

    def __init__(self, root: str | os.PathLike[str], *, hmac_key: str | bytes | None = None,
                 keep: int = 5, trt_module: ModuleType | None = None,
                 cache_dir: str | os.PathLike[str] | None = None,
                 build: BuildOptions | None = None, device: int = 0,
                 allow_host_code: bool = False,
                 onnx_options: OnnxRuntimeOptions | None = None,
                 lock_timeout_s: float | None = None) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
            raise InvalidArgumentError(f"keep must be an int >= 2, got {keep!r}",
                                       hint="the store must keep at least the active version "
                                            "and one to roll back to")
        if hmac_key is not None and not hmac_key:
            raise InvalidArgumentError("hmac_key is empty")
        self.root = Path(os.fspath(root))
        self._key = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
        self.keep = keep
        self._trt = trt_module
        self._cache_dir = cache_dir
        self._build = build
        self._device = device
        self._allow_host_code = allow_host_code
        self._onnx_options = onnx_options
        self.lock_timeout_s = lock_timeout_s

    # -- writing --------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise unwritable(self.root, err, _STORE_HINT) from err
        with FileLock(self.root / ".lock", timeout_s=self.lock_timeout_s,
                      holder="is changing this model store", hint=_STORE_HINT):
            yield

    def _record(self, event: StoreEvent) -> None:
        try:
            append_event(self.root / HISTORY, event)
        except OSError as err:  # a full disk: an edgert error, not a raw OSError (review)
            raise unwritable(self.root, err, _STORE_HINT) from err

    def install(self, model: str | os.PathLike[str], version: str, *, notes: str = "",
                min_tensorrt: str | None = None, sha256: str | None = None,
                signature: str | None = None,
                reference_onnx: str | os.PathLike[str] | None = None) -> Manifest:
        """Verify a model and copy it into the store as ``version`` (not yet active).

        Args:
            model: A ``.onnx`` or ``.plan`` file.
            version: Its label (letters, digits, ``._+-``).
            notes: Free text for the manifest.
            min_tensorrt: Oldest TensorRT version that may run it (e.g. ``"10.3"``).
            sha256: The digest you expect (from the release manifest); checked before copying.
            signature: HMAC-SHA256 tag (hex); default ``<model>.sig``. Required with a key.
            reference_onnx: For a plan, the ONNX it was built from: the health gate's reference.

        Raises:
            StoreError: The version exists already.
            IntegrityError: The digest or signature does not match.
            ModelFormatError: Not a model.
            InvalidArgumentError: Bad arguments.
            PermissionDeniedError: The store is not writable.
        """
        check_version_name(version)
        if min_tensorrt is not None and not version_tuple(min_tensorrt)[0]:
            raise InvalidArgumentError(f"min_tensorrt {min_tensorrt!r} is not a version")
        src = read_source(model)
        assert src.path is not None
        if signature is not None and self._key is None:
            raise InvalidArgumentError("a signature was given but the store has no hmac_key",
                                       hint="make the store with ModelStore(root, hmac_key=...)")
        check_integrity(src.data, path=src.path, sha256=sha256, hmac_key=self._key,
                        signature=signature)
        header = sniff(src.data, src.label)
        if header.format is EngineFormat.ONNX:
            refuse_external_data(src.data, src.label)
        ref = read_source(reference_onnx) if reference_onnx is not None else None
        if ref is not None and sniff(ref.data, ref.label).format is not EngineFormat.ONNX:
            raise InvalidArgumentError(f"reference_onnx {ref.label} is not an ONNX model")
        if ref is not None:
            refuse_external_data(ref.data, ref.label)
        digest = hashlib.sha256(src.data).hexdigest()
        suffix = ".onnx" if header.format is EngineFormat.ONNX else ".plan"
        tag = None
        if self._key is not None:
            tag = hmac.new(self._key, src.data, hashlib.sha256).hexdigest()
        manifest = Manifest(
            version=version, file="model" + suffix, format=header.format.value, sha256=digest,
            signature=tag, min_tensorrt=min_tensorrt, notes=notes,
            installed_at_unix_s=round(time.time(), 6),
            reference="reference.onnx" if ref is not None else None,
            reference_sha256=hashlib.sha256(ref.data).hexdigest() if ref is not None else None)
        if self._key is not None:
            manifest = manifest.sealed(self._key)
        with self._locked():
            final = self._versions_dir / version
            if final.exists():
                raise StoreError(f"version {version!r} is already installed in {self.root}",
                                 hint="versions are immutable: install under a new label")
            self._versions_dir.mkdir(exist_ok=True)
            tmp = self._versions_dir / f".tmp-{version}-{secrets.token_hex(4)}"
            try:
                tmp.mkdir()
                _copy_synced(src.data, tmp / manifest.file)
                if tag is not None:
                    _copy_synced((tag + "\n").encode(), tmp / (manifest.file + ".sig"))
                if ref is not None:
                    _copy_synced(ref.data, tmp / "reference.onnx")
                _copy_synced(manifest.to_json().encode(), tmp / MANIFEST_NAME)
                fsync_dir(tmp)
                os.rename(tmp, final)
                fsync_dir(self._versions_dir)
            except OSError as err:
                shutil.rmtree(tmp, ignore_errors=True)
                raise unwritable(self._versions_dir, err, _STORE_HINT) from err
            self._record(StoreEvent(event="install", version=version, detail=notes))
            self._prune_after_success(version)
        return manifest

    # -- activation -----------------------------------------------------------------------

    def activate(self, version: str, *, policy: HealthPolicy | None = None) -> HealthReport:
        """Make ``version`` active if it passes the health gate.

        Args:
            version: An installed version.
            policy: What it must pass (default :class:`HealthPolicy` ()).

        Returns:
            The health report of the activated version.

        Raises:
            HealthCheckError: Its outputs disagree with the reference, it is too slow, or it
                needs a newer TensorRT; the current version stays active.
            StoreError: Not installed.
            IntegrityError: Its file does not match its manifest or signature.
            EngineLoadError: It does not load here (the current version stays active).
        """
        policy = policy if policy is not None else HealthPolicy()
        with self._locked():
            manifest = self.manifest(version)
            previous = self.active
            if previous is not None and previous.version == version:
                raise StoreError(f"version {version!r} is already active",
                                 hint="install the new model under a new version label")
            with self.load(version) as candidate:
                report = self._gate(manifest, candidate, policy)
            if not report.passed:
                self._record(StoreEvent(event="refuse", version=version,
                                        previous=previous.version if previous else None,
                                        detail="; ".join(report.reasons)))
                kept = f"{previous.version} stays active" if previous else "nothing is active"
                raise HealthCheckError(
                    f"version {version!r} was not activated ({kept}): "
                    + "; ".join(report.reasons), report=report,
                    hint="fix the model, or state the tolerances and latency budget it must "
                         "meet in HealthPolicy")
            stack = current_stack(self.history(), previous.version) if previous else []
            self._move_link(StoreEvent(event="activate", version=version,
                                       previous=previous.version if previous else None,
                                       detail=report.summary(), stack=(*stack, version)))
            self._prune_after_success(version)
        return report

    def _move_link(self, event: StoreEvent) -> None:
        """Record ``event`` (with its stack), then point ``active`` at its version: the line
        of whatever the link points to is on the storage device before the link moves."""
        self._record(event)
        try:
            self._point_to(event.version)
        except BaseException as err:
            try:
                moved = os.readlink(self.root / ACTIVE) == os.path.join("versions",
                                                                        event.version)
            except OSError:
                moved = False
            if moved:  # it moved; only making that durable failed (found by review)
                raise StoreError(
                    f"the {event.event} to {event.version!r} happened (the active link points "
                    f"to it), but it may not survive a power cut: {err}",
                    hint="check the storage device; the history records it") from err
            try:
                self._record(StoreEvent(event="refuse", version=event.version,
                                        previous=event.previous,
                                        detail=f"the {event.event} did not happen: the active "
                                               f"link could not be moved ({err})"))
            except Exception:
                pass
            raise

    def _gate(self, manifest: Manifest, candidate: Engine,
              policy: HealthPolicy) -> HealthReport:
        runs_on_trt = candidate.flavour is not EngineFlavour.ONNXRUNTIME
        if manifest.min_tensorrt is not None and runs_on_trt and \
                version_tuple(candidate.runtime_version) < version_tuple(manifest.min_tensorrt):
            return HealthReport(passed=False, reasons=(
                f"it needs TensorRT >= {manifest.min_tensorrt}; this machine runs "
                f"{candidate.runtime_version}",))
        reference, label = self._reference(manifest, candidate, policy)
        try:
            return check_health(candidate, reference, policy, reference_label=label)
        finally:
            if reference is not None:
                reference.close()

    def _point_to(self, version: str) -> None:
        tmp = self.root / f".{ACTIVE}.tmp-{secrets.token_hex(4)}"
        try:
            os.symlink(os.path.join("versions", version), tmp)
            os.replace(tmp, self.root / ACTIVE)  # atomic: readers see old or new, never none
            fsync_dir(self.root)
        except OSError as err:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise unwritable(self.root, err, _STORE_HINT) from err

    def rollback(self, *, policy: HealthPolicy | None = None) -> Manifest:
        """Return to the version that was active before the current one.

        The target is verified (SHA-256, signature) and loaded; with ``policy`` it must also
        pass the health gate again.

        Raises:
            StoreError: Nothing to roll back to.
            IntegrityError: The target's file no longer matches its manifest.
            HealthCheckError: ``policy`` was given and the target failed it.
        """
        with self._locked():
            current = self.active
            stack = current_stack(self.history(), current.version) if current else []
            if len(stack) < 2 or current is None:
                raise StoreError("there is no earlier activated version to roll back to",
                                 hint="see `edgert store list` for the history")
            target = self.manifest(stack[-2])
            with self.load(target.version) as engine:
                if policy is not None:
                    report = self._gate(target, engine, policy)
                    if not report.passed:
                        raise HealthCheckError(
                            f"rollback to {target.version!r} refused ({current.version} stays "
                            "active): " + "; ".join(report.reasons), report=report,
                            hint="activate a version that passes, or roll back without the "
                                 "check if the target is known to be good")
            self._move_link(StoreEvent(event="rollback", version=target.version,
                                       previous=current.version, stack=tuple(stack[:-1])))
        return target

    def reseal(self) -> list[str]:
        """Seal the manifests of a keyed store made before sealed manifests (once, after the
        upgrade); returns the versions sealed. Each version's model must verify against its
        digest and the store's key first. What the labels say cannot be checked after the
        fact: run it on a store you trust.

        Raises:
            InvalidArgumentError: The store has no key.
            IntegrityError: A version's model does not verify, or its manifest was sealed and
                then changed (nothing of it is sealed).
            StoreError: A damaged version directory.
        """
        key = self._key
        if key is None:
            raise InvalidArgumentError("only a store with an hmac_key seals its manifests")
        sealed = []
        with self._locked():
            for m in self.versions():
                if m.seal is not None:  # sealed, or sealed and then changed: never re-sealed
                    if not m.seal_holds(key):
                        raise IntegrityError(
                            f"the manifest of version {m.version!r} was changed since it was "
                            "sealed; nothing more was sealed",
                            hint="remove that version (or install it again under a new label) "
                                 "and find what wrote into the store")
                    continue
                ready = m.sealed(key)
                self._verified(ready, ready.file, ready.sha256, True)
                if ready.reference is not None and ready.reference_sha256 is not None:
                    self._verified(ready, ready.reference, ready.reference_sha256, False)
                atomic_write(self._versions_dir / m.version / MANIFEST_NAME,
                             ready.to_json().encode())
                sealed.append(m.version)
        return sealed

    def _prune_after_success(self, keep_also: str) -> None:
        """Keep N, after an install or activation that succeeded: a failure here (a damaged
        version directory) is logged, never reported as the install or activation failing
        (found by a hostile-files trial: the link had moved, the call raised)."""
        try:
            self._prune(keep_also)
        except (EdgeRTError, OSError) as err:
            _log.warning("%s: old versions were not pruned: %s", self.root, err)

    def _prune(self, keep_also: str) -> None:
        versions = self.versions(strict=False)  # never delete what cannot be read
        if len(versions) <= self.keep:
            return
        active = self.active
        events = self.history()
        protected = {m for m in (keep_also, active.version if active else None,
                                 rollback_target(events, active.version) if active else None)
                     if m}
        # Versions installed after the active one are candidates waiting for activation: in
        # the history's order, not by wall-clock time (a robot's clock may step back before NTP
        # syncs, and a new install was pruned: found by review).
        installed = {e.version: i for i, e in enumerate(events) if e.event == "install"}
        since = installed.get(active.version, -1) if active else -1
        # A version the history has no install line for (a power cut before the line, a
        # history moved away) may be a candidate too: never pruned (found by review).
        protected |= {m.version for m in versions
                      if m.version not in installed or installed[m.version] > since}
        excess = len(versions) - self.keep
        for m in versions:
            if excess <= 0:
                break
            if m.version in protected:
                continue
            shutil.rmtree(self._versions_dir / m.version, ignore_errors=True)
            self._record(StoreEvent(event="remove", version=m.version,
                                    detail=f"keep={self.keep}"))
            excess -= 1

    def __repr__(self) -> str:
        return f"<ModelStore {self.root}>"


def describe(store: ModelStore) -> dict[str, Any]:
    """The store as JSON-ready data (for ``edgert store list --json``)."""
    active = store.active
    return {
        "root": str(store.root),
        "active": active.version if active else None,
        "versions": [dict(json.loads(m.to_json())) for m in store.versions()],
        "history": [asdict(e) for e in store.history()],
    }
