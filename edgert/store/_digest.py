"""SHA-256 of a model file, remembered across processes while the file provably did not change.

Hashing a model on every start costs as much as loading a small plan. A digest is remembered
(in the engine cache's ``.digests`` directory) with the file's identity: device, inode, size,
modification and change times in nanoseconds. It is reused only when all of them are equal
*and* the file's change time was at least :data:`STABLE_S` older than the moment it was hashed:
any later write moves the change time past that moment, which the kernel does not let a process
set back (git's "racy clean" rule, for timestamps coarser than a nanosecond). Anything else --
no memo, a different stat, a racy one, an unreadable memo -- hashes the file again.

Memos are signed (:func:`seal`) with the cache's :func:`memo_key`: with a secret ``hmac_key``,
a process that may write the cache cannot make a model's path name another model's digest (and
so load another, validly signed entry in its place).

A process also keeps what it learnt in memory (:data:`_SEEN`, same rules), so loading the same
model again -- a hot swap back, a rollback -- costs one ``stat`` and no file read at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any, TypeVar

from edgert._fileio import MAX_MODEL_BYTES, read_file
from edgert.store._files import atomic_write, read_small

__all__ = ["STABLE_S", "bounded_put", "file_identity", "file_sha256", "forget_process_memos",
           "memo_key", "seal", "unseal"]

K = TypeVar("K")
V = TypeVar("V")

#: How long a file must have been unchanged before it was hashed for its digest to be reused.
STABLE_S = 2.0
#: At most this many files are remembered in a process (then it starts again, from nothing).
_MAX_SEEN = 1024
_LABEL = b"edgert-digest-memo"
#: This process's digests: (memo key, absolute path) -> (identity, hashed at ns, SHA-256).
_SEEN: dict[tuple[bytes, str], tuple[list[int], int, str]] = {}


def memo_key(secret: bytes | None) -> bytes:
    """The key that signs a cache's memos: public without a secret (they then guard against
    corruption only), derived from the secret with one (a process that may write the cache but
    does not know the secret cannot forge a memo that points a model at another entry)."""
    return _LABEL if secret is None else hmac.new(secret, _LABEL, hashlib.sha256).digest()


def seal(key: bytes, body: bytes) -> bytes:
    """``body`` under its HMAC-SHA256 (hex, first line). The MAC does not cover the file's
    name: a body must say what it is about (kind, path, digest) and readers check that."""
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b"\n" + body


def unseal(key: bytes, raw: bytes) -> Any:
    """The JSON document :func:`seal` wrapped, or None if its MAC is not ``key``'s."""
    mac, _, body = raw.partition(b"\n")
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest().encode(), mac):
        return None
    return json.loads(body)


def forget_process_memos() -> None:
    """Forget the digests this process remembered (as a new process would start)."""
    _SEEN.clear()


def file_identity(st: os.stat_result) -> list[int]:
    """Device, inode, size, modification and change times (ns): what a write always moves."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _trusted(identity: object, hashed_at_ns: object, st: os.stat_result) -> bool:
    """Whether a digest taken at ``hashed_at_ns`` of a file with ``identity`` holds for ``st``."""
    return identity == file_identity(st) and isinstance(hashed_at_ns, int) and \
        hashed_at_ns - st.st_ctime_ns >= STABLE_S * 1e9


def bounded_put(table: dict[K, V], key: K, value: V, limit: int) -> V:
    """``table[key] = value``, starting ``table`` again from nothing once it holds ``limit``
    entries (the process memos of the cache: a long-running process cannot grow them)."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value


def _remember(seen: tuple[bytes, str], identity: list[int], hashed_at_ns: int,
              digest: str) -> None:
    bounded_put(_SEEN, seen, (identity, hashed_at_ns, digest), _MAX_SEEN)


def file_sha256(path: Path, memo_dir: Path | None,
                key: bytes = _LABEL) -> tuple[str, bytes | None]:
    """The file's SHA-256 (hex), and its bytes when they had to be read.

    ``memo_dir``: where memos live (None: hash every time); ``key``: what signs them
    (:func:`memo_key`).

    Raises:
        OSError: The file cannot be read (callers turn it into their own error).
    """
    st = os.stat(path)
    memo = None
    name = os.fspath(path)
    seen = (key, name if name.startswith("/") else os.path.abspath(name))
    if memo_dir is not None:
        hit = _SEEN.get(seen)
        if hit is not None and _trusted(hit[0], hit[1], st):
            return hit[2], None
        memo = memo_dir / (hashlib.sha256(os.fsencode(seen[1])).hexdigest()[:32] + ".json")
        try:
            doc = unseal(key, read_small(memo))
            digest = doc["sha256"]
            # the memo names its file inside what is signed: one copied over another's fails
            if doc["kind"] == "digest" and doc["path"] == seen[1] and isinstance(digest, str) \
                    and _trusted(doc["identity"], doc["hashed_at_ns"], st):
                _remember(seen, file_identity(st), doc["hashed_at_ns"], digest)
                return digest, None
        except Exception:  # whatever the memo holds (RecursionError too): hash again
            pass
    hashed_at = time.time_ns()
    # Bounded and regular files only: a FIFO hung here, /dev/zero filled the memory (found by
    # a hostile-files trial).
    data = read_file(path, max_bytes=MAX_MODEL_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    if memo is not None and file_identity(os.stat(path)) == file_identity(st):
        _remember(seen, file_identity(st), hashed_at, digest)
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            doc_bytes = json.dumps({"kind": "digest", "path": seen[1],
                                    "identity": file_identity(st), "hashed_at_ns": hashed_at,
                                    "sha256": digest}).encode()
            atomic_write(memo, seal(key, doc_bytes), durable=False)
        except Exception:  # a read-only cache still works, it just hashes every time
            pass
    return digest, data
