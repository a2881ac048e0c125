"""Reading a model store: its versions, the active one, its history, and verified loads.

:class:`~edgert.store.ModelStore` changes a store (install, activate, rollback); this base
reads one. Every load checks the model against its manifest's SHA-256 and, in a store with a
key, its HMAC signature and the manifest's seal.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from edgert.engine import (
    Engine,
    EngineFlavour,
    EngineFormat,
    IntegrityStatus,
    OnnxRuntimeOptions,
)
from edgert.engine._integrity import check_integrity
from edgert.engine._source import ModelSource, read_source
from edgert.errors import IntegrityError, InvalidArgumentError
from edgert.store._cache import EngineCache
from edgert.store._errors import StoreError
from edgert.store._health import HealthPolicy
from edgert.store._history import StoreEvent, read_history
from edgert.store._manifest import Manifest, check_version_name, is_version_name
from edgert.store._options import BuildOptions

__all__ = ["ACTIVE", "HISTORY", "StoreReader"]

ACTIVE = "active"
HISTORY = "history.jsonl"


class StoreReader:
    """What reads a store (the base of :class:`~edgert.store.ModelStore`)."""

    root: Path
    _key: bytes | None
    _trt: ModuleType | None
    _cache_dir: str | os.PathLike[str] | None
    _build: BuildOptions | None
    _device: int
    _allow_host_code: bool
    _onnx_options: OnnxRuntimeOptions | None

    # -- reading --------------------------------------------------------------------------

    @property
    def _versions_dir(self) -> Path:
        return self.root / "versions"

    def versions(self, *, strict: bool = True) -> list[Manifest]:
        """Installed versions, oldest first. Directories whose names cannot be version labels
        are not versions and are left out.

        Args:
            strict: Raise on a version directory with a broken manifest (False: leave it out).

        Raises:
            StoreError: A version directory has a broken manifest (with ``strict``).
        """
        try:
            dirs = [d for d in self._versions_dir.iterdir()
                    if is_version_name(d.name) and d.is_dir()]
        except FileNotFoundError:
            return []
        manifests = []
        for d in dirs:
            try:
                manifests.append(Manifest.read(d))
            except StoreError:
                if strict:
                    raise
        return sorted(manifests, key=lambda m: (m.installed_at_unix_s, m.version))

    def manifest(self, version: str) -> Manifest:
        """One version's manifest.

        Raises:
            StoreError: Not installed, or a broken manifest.
        """
        directory = self._versions_dir / check_version_name(version)
        if not directory.is_dir():
            installed = ", ".join(m.version for m in self.versions()) or "none"
            raise StoreError(f"version {version!r} is not installed in {self.root}",
                             hint=f"installed: {installed}")
        return Manifest.read(directory)

    @property
    def active(self) -> Manifest | None:
        """The active version, or None before the first activation."""
        link = self.root / ACTIVE
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"{link} is not a symlink ({err.strerror})",
                             hint="the store was edited by hand; activate a version again") \
                from err
        return self.manifest(Path(target).name)

    def history(self) -> list[StoreEvent]:
        """Every install, activation, refusal, rollback and removal, oldest first."""
        return read_history(self.root / HISTORY)

    # -- loading --------------------------------------------------------------------------

    def _verified(self, manifest: Manifest, name: str, sha256: str,
                  signed: bool) -> tuple[Path, bytes]:
        path = self._versions_dir / manifest.version / name
        if self._key is None and manifest.seal is not None:
            # A sealed manifest says the store was installed with a key. Without it the seal
            # cannot be checked, and whoever can write the store can replace the model and its
            # digest together: a tampered version loaded as "sha256-verified" (new user's trial).
            raise IntegrityError(
                f"version {manifest.version!r} was installed with a key (its manifest is "
                "sealed), and this store was opened without one: the seal and the model's "
                "signature cannot be checked",
                hint="open the store with its key: ModelStore(root, hmac_key=...), or "
                     "--hmac-key-file for `edgert store`")
        src = read_source(path)
        # The digest is the store's own record, not one the user pinned (a new user's trial):
        # say what happened and what to do -- a changed file, or a key that does not verify.
        try:
            check_integrity(src.data, path=path, sha256=sha256, hmac_key=None, signature=None)
        except IntegrityError as err:
            raise IntegrityError(
                f"stored version {manifest.version!r} changed since it was installed: "
                f"{err.message}",
                hint="versions are immutable: install the model again under a new version "
                     "label (or roll back), and find what wrote into the store") from err
        if signed:
            try:
                check_integrity(src.data, path=path, sha256=None, hmac_key=self._key,
                                signature=None)
            except IntegrityError as err:
                raise IntegrityError(
                    f"stored version {manifest.version!r} is unchanged but its signature does "
                    f"not verify with this store's key: {err.message}",
                    hint="open the store with the key it was installed with "
                         "(hmac_key=, --hmac-key-file); if that is the key, its .sig was "
                         "changed: install the signed model again under a new label") from err
        # Last, so that a wrong key is said as such above. ``signed`` must not come from the
        # manifest: whoever can replace the model can also edit manifest.json. A keyed store
        # demands the tag, and the manifest's seal: without it another version's signed model,
        # copied in with its digest, ran under this version's label (found by a hostile-files
        # trial).
        if self._key is not None and not manifest.seal_holds(self._key):
            if manifest.seal is None:
                raise IntegrityError(
                    f"the manifest of version {manifest.version!r} carries no seal (installed "
                    "by an edgert before sealed manifests)",
                    hint="if this store is as you installed it, seal its manifests once with "
                         "`edgert store reseal` (ModelStore.reseal(), with the store's key); "
                         "else install the model again under a new version label")
            raise IntegrityError(
                f"the manifest of version {manifest.version!r} was changed since it was "
                "installed (its seal does not hold)",
                hint="something wrote into the store: install the model again under a new "
                     "version label (or roll back), and find what changed it")
        return path, bytes(src.data)

    def load(self, version: str | None = None) -> Engine:
        """Load a version (default: the active one), verifying it first.

        ONNX versions are built into TensorRT plans through the engine cache when the store
        has a ``cache_dir`` (falling back to ONNX Runtime where nothing builds), else they run
        on ONNX Runtime.

        Raises:
            StoreError: No such version, or none active.
            IntegrityError: The file no longer matches its manifest or signature.
            EngineLoadError: The runtime refused it.
        """
        manifest = self._pick(version)
        path, data = self._verified(manifest, manifest.file, manifest.sha256,
                                    self._key is not None)
        if manifest.format == EngineFormat.ONNX.value and self._cache_dir is not None:
            # The verified bytes, not the path: the file could change after the check.
            # With the store's key: a public tag let v3's plan, re-tagged, run as v2 (review).
            cache = EngineCache(self._cache_dir, trt_module=self._trt, device=self._device,
                                hmac_key=self._key)
            return cache.load(data, self._build, allow_host_code=self._allow_host_code,
                              onnx_options=self._onnx_options).engine
        # Checked above, as the engine says (it read "unchecked": a hostile-files trial).
        src = ModelSource(data=data, path=path)
        checked = IntegrityStatus.SHA256_AND_HMAC if self._key is not None else \
            IntegrityStatus.SHA256
        if manifest.format == EngineFormat.ONNX.value:
            return Engine._load_verified(src, checked, onnx_options=self._onnx_options)
        return Engine._load_verified(src, checked, trt_module=self._trt, device=self._device,
                                     allow_host_code=self._allow_host_code)

    def _pick(self, version: str | None) -> Manifest:
        if version is not None:
            return self.manifest(version)
        active = self.active
        if active is None:
            raise StoreError(f"no version of {self.root} is active",
                             hint="install a version and activate it")
        return active

    def _reference(self, manifest: Manifest, candidate: Engine,
                   policy: HealthPolicy) -> tuple[Engine | None, str | None]:
        kind = policy.reference
        onnx: tuple[Path, bytes] | None = None
        if manifest.reference is not None and manifest.reference_sha256 is not None:
            onnx = self._verified(manifest, manifest.reference, manifest.reference_sha256, False)
        elif manifest.format == EngineFormat.ONNX.value and \
                candidate.flavour is not EngineFlavour.ONNXRUNTIME:
            onnx = self._verified(manifest, manifest.file, manifest.sha256, False)
        if kind in ("auto", "onnx") and onnx is not None:
            return Engine.load(onnx[1], onnx_options=self._onnx_options), \
                f"{manifest.version}'s ONNX model on ONNX Runtime"
        if kind == "onnx":
            raise InvalidArgumentError(
                f"version {manifest.version!r} has no ONNX model to compare with (or it already "
                "runs on ONNX Runtime)", hint="install the plan with reference_onnx=, or use "
                                              "reference='current'")
        current = self.active
        if kind in ("auto", "current") and current is not None and \
                current.version != manifest.version:
            return self.load(current.version), f"the active version {current.version}"
        if kind == "current":
            raise InvalidArgumentError("no other version is active to compare with",
                                       hint="use reference='onnx' or 'none'")
        return None, None
