"""Integrity checks that run before a model is parsed: SHA-256 digests and HMAC-SHA256 tags.

Trust model. A SHA-256 digest proves the bytes are the ones whose digest you pinned (e.g. in the
robot's release manifest). An HMAC-SHA256 tag proves they were signed by someone holding the key.
Neither makes a model safe by itself: a version-compatible TensorRT plan carries host code (its
embedded lean runtime) that TensorRT executes, so ``allow_host_code=True`` is code execution and
belongs only with a plan whose digest or tag was verified. Both comparisons use
:func:`hmac.compare_digest`, so a wrong value leaks nothing through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from edgert._compat import StrEnum
from edgert._fileio import MAX_KEY_BYTES, FileRefusedError, read_file
from edgert.errors import IntegrityError, InvalidArgumentError, PermissionDeniedError

__all__ = ["SIDECAR_SUFFIX", "IntegrityStatus", "Key", "check_integrity", "parse_digest"]

#: Suffix of the HMAC sidecar file read next to a model (``model.plan.sig``).
SIDECAR_SUFFIX = ".sig"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class IntegrityStatus(StrEnum):
    """What was verified before a model was loaded."""

    UNCHECKED = "unchecked"
    SHA256 = "sha256-verified"
    HMAC = "hmac-verified"
    SHA256_AND_HMAC = "sha256-and-hmac-verified"
    #: An engine cache hit whose plan file passed its HMAC check earlier in this boot and, by
    #: its identity, did not change since (the bytes were not hashed again: docs/lifecycle.md).
    HMAC_THIS_BOOT = "hmac-verified-this-boot"


@dataclass(frozen=True, kw_only=True, slots=True)
class _Expected:
    sha256: bytes | None
    hmac_key: bytes | None
    signature: bytes | None


def parse_digest(value: str | bytes, what: str) -> bytes:
    """A 32-byte digest from 64 hex characters (str) or 32 raw bytes.

    Raises:
        InvalidArgumentError: Anything else.
    """
    if isinstance(value, (bytes, bytearray)):
        if len(value) == 32:
            return bytes(value)
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            value = ""
    text = str(value).strip()
    if text.lower().startswith("sha256:"):
        text = text[7:]
    if not _HEX64.fullmatch(text):
        raise InvalidArgumentError(
            f"{what} must be 64 hexadecimal characters (or 32 raw bytes), got {value!r}",
            hint="compute it with `sha256sum model.plan` or hashlib.sha256(data).hexdigest()")
    return bytes.fromhex(text)


Key = str | bytes | bytearray | memoryview | os.PathLike[str]


def _key(value: Key) -> bytes:
    """The key's bytes: ``bytes``-like or ``str`` as given, a path's file contents stripped.

    Anything else is refused: ``bytes(32)`` would be 32 zero bytes, a key anyone can use.
    """
    if isinstance(value, str):
        key = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        key = bytes(value)
    elif isinstance(value, os.PathLike):
        key = _read_key_file(value)
    else:
        raise InvalidArgumentError(
            f"hmac_key must be bytes, str or the path of a key file, got "
            f"{type(value).__name__}",
            hint="pass the secret key itself as bytes/str, or a pathlib.Path to the key file; "
                 "a number is not a key")
    if not key:
        raise InvalidArgumentError("hmac_key is empty", hint="pass the secret key as bytes")
    return key


def _read_key_file(path: os.PathLike[str]) -> bytes:
    try:
        return read_file(path, max_bytes=MAX_KEY_BYTES).strip()
    except FileRefusedError as err:
        raise InvalidArgumentError(f"cannot read key file {err.filename}: {err.strerror}",
                                   hint="keep the key in a small regular file") from err
    except PermissionError as err:
        raise PermissionDeniedError(
            f"cannot read key file {os.fspath(path)}: {err.strerror}", errno_value=err.errno,
            path=os.fspath(path), hint="make the key file readable by this user") from err
    except OSError as err:
        raise InvalidArgumentError(
            f"cannot read key file {os.fspath(path)}: {err.strerror or err}",
            hint="check the key file's path") from err


def _read_sidecar(path: Path | None) -> bytes:
    if path is None:
        raise InvalidArgumentError(
            "hmac_key was given for an in-memory model but no signature",
            hint="pass signature=HEX (the HMAC-SHA256 tag) along with the bytes")
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        text = read_file(sidecar, max_bytes=MAX_KEY_BYTES).decode("ascii", errors="replace")
    except FileRefusedError as err:
        raise IntegrityError(f"cannot read signature file {sidecar}: {err.strerror}",
                             hint="the .sig file must be a small regular file holding the "
                                  "64-character hex tag") from err
    except FileNotFoundError:
        raise IntegrityError(
            f"{path} has no signature: {sidecar} does not exist",
            hint="sign the model (hmac.new(key, data, 'sha256').hexdigest() into "
                 f"{sidecar.name}), or pass signature=HEX") from None
    except OSError as err:
        raise IntegrityError(f"cannot read signature file {sidecar}: {err.strerror or err}",
                             hint="make the .sig file readable") from err
    try:
        return parse_digest(text.split()[0] if text.split() else "", f"signature in {sidecar}")
    except InvalidArgumentError as err:
        raise IntegrityError(
            f"signature file {sidecar} does not hold a 64-character hex HMAC-SHA256 tag",
            hint="write hmac.new(key, data, 'sha256').hexdigest() into it") from err


def check_integrity(
    data: bytes | memoryview,
    *,
    path: Path | None,
    sha256: str | bytes | None,
    hmac_key: Key | None,
    signature: str | bytes | None,
) -> IntegrityStatus:
    """Verify ``data`` against a digest and/or an HMAC tag (argument or sidecar file).

    Raises:
        InvalidArgumentError: A digest, key or signature is malformed (a key must be bytes, str
            or a key file's path), or the key file cannot be read.
        PermissionDeniedError: The key file may not be read.
        IntegrityError: A digest or tag does not match, or the sidecar signature is missing or
            unreadable.
    """
    expected = _Expected(
        sha256=parse_digest(sha256, "sha256") if sha256 is not None else None,
        hmac_key=_key(hmac_key) if hmac_key is not None else None,
        signature=parse_digest(signature, "signature") if signature is not None else None)
    if expected.signature is not None and expected.hmac_key is None:
        raise InvalidArgumentError("signature was given without hmac_key",
                                   hint="pass the key the signature was made with")
    where = str(path) if path is not None else "the model bytes"
    if expected.sha256 is not None:
        actual = hashlib.sha256(data).digest()
        if not hmac.compare_digest(actual, expected.sha256):
            raise IntegrityError(
                f"SHA-256 of {where} is {actual.hex()}, expected {expected.sha256.hex()}; "
                "the model was not loaded",
                hint="the file is not the one you pinned: copy the right model (or, if the "
                     "model was rebuilt on purpose, update the pinned digest)")
    if expected.hmac_key is not None:
        tag = expected.signature if expected.signature is not None else _read_sidecar(path)
        actual = hmac.new(expected.hmac_key, data, hashlib.sha256).digest()
        if not hmac.compare_digest(actual, tag):
            raise IntegrityError(
                f"HMAC-SHA256 of {where} does not match its signature; the model was not loaded",
                hint="the model or its signature was altered, or a different key signed it: "
                     "deploy the model and .sig together from a trusted build")
        return IntegrityStatus.SHA256_AND_HMAC if expected.sha256 else IntegrityStatus.HMAC
    return IntegrityStatus.SHA256 if expected.sha256 is not None else IntegrityStatus.UNCHECKED
