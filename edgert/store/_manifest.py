"""The manifest of one installed model version (``manifest.json`` in its directory)."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from edgert._fileio import read_file
from edgert.errors import InvalidArgumentError
from edgert.store._errors import StoreError

__all__ = ["MANIFEST_NAME", "Manifest", "check_version_name", "is_version_name",
           "version_tuple"]

#: File name of a version's manifest.
MANIFEST_NAME = "manifest.json"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_FORMAT = 1
_MAX_MANIFEST_BYTES = 1 << 20
_TEXT = ("version", "file", "format", "sha256", "notes")
_OPTIONAL_TEXT = ("signature", "min_tensorrt", "reference", "reference_sha256", "seal")


def is_version_name(name: str) -> bool:
    """Whether ``name`` could be a version label (other directories are not versions)."""
    return bool(_VERSION.fullmatch(name))


def _check_fields(doc: Any) -> dict[str, Any]:
    """The manifest's fields, each of its type (a hand-edited or damaged one says which)."""
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON {type(doc).__name__}, not an object")
    if doc.pop("manifest_format", None) != _FORMAT:
        raise ValueError("unknown manifest_format")
    for key in _TEXT:
        if key in doc and not isinstance(doc[key], str):
            raise ValueError(f"{key} is not text")
    for key in _OPTIONAL_TEXT:
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise ValueError(f"{key} is not text")
    for key in (*_TEXT, *_OPTIONAL_TEXT):
        if isinstance(doc.get(key), str):
            doc[key].encode("utf-8")  # a lone surrogate cannot be written out: ValueError
    at = doc.get("installed_at_unix_s", 0.0)
    if isinstance(at, bool) or not isinstance(at, (int, float)) or \
            not math.isfinite(float(at)):  # float(10**400) raises OverflowError
        raise ValueError("installed_at_unix_s is not a finite number")
    return doc


def check_version_name(version: str) -> str:
    """A version label must be a safe directory name.

    Raises:
        InvalidArgumentError: It is not.
    """
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise InvalidArgumentError(
            f"bad version label {version!r}",
            hint="use 1-64 characters of letters, digits and ._+- starting with a letter or "
                 "digit, e.g. 2026.12.04 or v3.1")
    return version


def version_tuple(text: str) -> tuple[int, ...]:
    """``"10.8.0.43"`` -> ``(10, 8, 0, 43)``, ``"10.3"`` -> ``(10, 3, 0, 0)`` (non-digits
    ignored)."""
    parts = []
    for piece in text.split(".")[:4]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    # Padded: "10.3" and "10.3.0" are one version; unpadded, (10, 3) < (10, 3, 0) and a runtime
    # that reports "10.3" was refused a model that needs "10.3.0".
    return tuple(parts + [0] * (4 - len(parts)))


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What was installed as one version.

    Attributes:
        version: The version label.
        file: The model's file name inside the version directory.
        format: ``onnx`` or ``tensorrt-plan``.
        sha256: SHA-256 of the model file (checked on every load).
        signature: HMAC-SHA256 tag of the model (with the store's key), if it was signed.
        min_tensorrt: Oldest TensorRT that may run it (checked at activation).
        notes: Free text (release notes, training run).
        installed_at_unix_s: When it was installed.
        reference: An ONNX model installed with a plan, used as its health reference.
        reference_sha256: That file's SHA-256.
        seal: In a store with a key, HMAC-SHA256 of every other field (:meth:`sealed`): binds
            the version label to the model's digest, which the model's own signature cannot.
    """

    version: str
    file: str
    format: str
    sha256: str
    signature: str | None = None
    min_tensorrt: str | None = None
    notes: str = ""
    installed_at_unix_s: float = 0.0
    reference: str | None = None
    reference_sha256: str | None = None
    seal: str | None = None

    def _seal_of(self, key: bytes) -> str:
        fields = asdict(self)
        del fields["seal"]
        body = json.dumps(fields, sort_keys=True).encode()
        return hmac.new(key, b"edgert-store-manifest:" + body, hashlib.sha256).hexdigest()

    def sealed(self, key: bytes) -> Manifest:
        """This manifest with its seal under ``key``."""
        return replace(self, seal=self._seal_of(key))

    def seal_holds(self, key: bytes) -> bool:
        """Whether the manifest carries a seal made with ``key`` over exactly its fields."""
        return self.seal is not None and hmac.compare_digest(self.seal, self._seal_of(key))

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps(dict(asdict(self), manifest_format=_FORMAT), indent=2,
                          sort_keys=True) + "\n"

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """The manifest in a version directory.

        Raises:
            StoreError: Missing or malformed.
        """
        path = directory / MANIFEST_NAME
        try:
            raw = read_file(path, max_bytes=_MAX_MANIFEST_BYTES)  # never a FIFO or a device
        except FileNotFoundError:
            raise StoreError(f"{path} is missing", hint="the version directory is incomplete: "
                             "remove it and install the version again") from None
        except OSError as err:
            raise StoreError(f"{path} cannot be read ({err.strerror or err})",
                             hint="remove the version and install it again") from err
        try:
            manifest = cls(**_check_fields(json.loads(raw.decode("utf-8"))))
            check_version_name(manifest.version)
        except (ValueError, TypeError, RecursionError, OverflowError,
                InvalidArgumentError) as err:
            raise StoreError(f"{path} is not a valid manifest ({err})",
                             hint="remove the version and install it again") from err
        if manifest.version != directory.name:
            raise StoreError(f"{path} says version {manifest.version!r} but lives in "
                             f"{directory.name!r}", hint="the store was edited by hand")
        return manifest
