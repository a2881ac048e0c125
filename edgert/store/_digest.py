"""SHA-256 of a model file, remembered across processes while the file provably did not change.

Hashing a model on every start costs as much as loading a small plan. A digest is remembered
(in the engine cache's ``.digests`` directory) with the file's identity: device, inode, size,
modification and change times in nanoseconds. It is reused only when all of them are equal
*and* the file's change time was at least :data:`STABLE_S` older than the moment it was hashed:
any later write moves the change time past that moment, which the kernel does not let a process
set back (git's "racy clean" rule, for timestamps coarser than a nanosecond). Anything else --
no memo, a different stat, a racy one, an unreadable memo -- hashes the file again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from edgert.store._files import atomic_write, read_small

__all__ = ["STABLE_S", "file_identity", "file_sha256"]

#: How long a file must have been unchanged before it was hashed for its digest to be reused.
STABLE_S = 2.0


def file_identity(st: os.stat_result) -> list[int]:
    """Device, inode, size, modification and change times (ns): what a write always moves."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def file_sha256(path: Path, memo_dir: Path | None) -> tuple[str, bytes | None]:
    """The file's SHA-256 (hex), and its bytes when they had to be read.

    Raises:
        OSError: The file cannot be read (callers turn it into their own error).
    """
    st = os.stat(path)
    memo = None
    if memo_dir is not None:
        name = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32] + ".json"
        memo = memo_dir / name
        try:
            doc = json.loads(read_small(memo))
            if doc["identity"] == file_identity(st) and \
                    doc["hashed_at_ns"] - st.st_ctime_ns >= STABLE_S * 1e9:
                return str(doc["sha256"]), None
        except Exception:  # whatever the memo holds (RecursionError too): hash again
            pass
    hashed_at = time.time_ns()
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if memo is not None and file_identity(os.stat(path)) == file_identity(st):
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(memo, json.dumps({"path": str(path), "identity": file_identity(st),
                                           "hashed_at_ns": hashed_at,
                                           "sha256": digest}).encode())
        except Exception:  # a read-only cache still works, it just hashes every time
            pass
    return digest, data
