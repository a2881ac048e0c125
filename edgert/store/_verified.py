"""Cache entries verified once per boot: a signed memo lets a hit skip hashing its plan again.

Checking an entry's HMAC sidecar reads and hashes the whole plan on every load: 0.3 ms for a
0.4 MB plan, tens of ms for a large one, as much as deserializing a small plan. After a full
check succeeds the cache writes ``<plan>.verified``: the identity of the plan file that was read
and checked (device, inode, size, modification and change times in ns, from ``fstat`` of the one
descriptor it was read through, equal before and after the read) and of its sidecar, the boot it
happened in (``/proc/sys/kernel/random/boot_id``) and when, under an HMAC-SHA256 with the entry's
tag key. A later load in the same boot reads the plan through one descriptor the same way and
uses its bytes without hashing them if that identity is the memo's.

What it guards against is corruption, not an attacker: a process that may write the cache can
change a plan without moving its change time (through a writable shared mapping made earlier,
or from a FUSE or network file system that reports what it likes). So a cache with a secret
``hmac_key`` -- the tamper-evident mode -- never uses memos and checks every load in full.

The rules are the ONNX digests' (:mod:`edgert.store._digest`): a file changed less than
:data:`~edgert.store._digest.STABLE_S` before the check is not memoized (timestamps coarser
than a nanosecond), and an ordinary write moves a file's change time, which no process can set
back. Only a regular file with one link, opened without following a symlink, is memoized or
vouched for. Storage that corrupts bytes behind the file system's back is caught by the first
load of the next boot, which checks in full. No boot id (not Linux), a memo of another boot, an
unreadable, unsigned or malformed memo: the full check, as before. Memos are written without
fsync: losing one after a power cut costs one more full check.

The process keeps what it vouched for in memory too (same rules; a read-only cache included),
so loading an entry again -- a hot swap back, a rollback -- reads no memo.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from edgert._fileio import MAX_MODEL_BYTES, read_fd
from edgert.store._digest import STABLE_S, bounded_put, file_identity, seal, unseal
from edgert.store._files import NOFOLLOW_FLAGS, atomic_write, read_small

__all__ = ["SUFFIX", "boot_id", "forget_process_memos", "read_plan", "remember_verified",
           "sig_identity", "verified_identity"]

#: Suffix of the memo next to a plan (``model-KEY.plan.verified``).
SUFFIX = ".verified"
_SIG_SUFFIX = ".sig"
_MAX_MEMO_BYTES = 4096
_NOT_READ = "?"
_boot: str | None = _NOT_READ
_MAX_VOUCHED = 256
#: This process's checks: (tag key, plan path) -> (plan identity, sidecar identity).
_VOUCHED: dict[tuple[bytes, str], tuple[list[int], list[int]]] = {}


def forget_process_memos() -> None:
    """Forget the checks this process remembered (as a new process would start)."""
    _VOUCHED.clear()


def _vouch(plan: Path, tag_key: bytes, plan_id: list[int], sig_id: list[int]) -> None:
    bounded_put(_VOUCHED, (tag_key, os.path.abspath(plan)), (plan_id, sig_id), _MAX_VOUCHED)


def boot_id() -> str | None:
    """This boot's id (read once per process), or None where the kernel does not give one."""
    global _boot
    if _boot == _NOT_READ:
        try:
            with open("/proc/sys/kernel/random/boot_id", "rb") as f:
                _boot = f.read(64).decode("ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            _boot = None
    return _boot


def _memo_path(plan: Path) -> str:
    return os.fspath(plan) + SUFFIX


def _sig_path(plan: Path) -> str:
    return os.fspath(plan) + _SIG_SUFFIX


def read_plan(plan: Path) -> tuple[bytes, list[int]] | None:
    """The plan's bytes and the identity of the file they came from, or None.

    One descriptor, opened without following a symlink in the last component: the file must be
    regular with one link, and ``fstat`` before and after the read must agree. None also for a
    file that is missing, unreadable or too large (the full check then reports it).
    """
    try:
        fd = os.open(plan, NOFOLLOW_FLAGS)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        data = read_fd(fd, plan, max_bytes=MAX_MODEL_BYTES)
        after = os.fstat(fd)
    except (OSError, MemoryError):
        return None
    finally:
        os.close(fd)
    identity = file_identity(st)
    return (data, identity) if file_identity(after) == identity else None


def verified_identity(plan: Path, tag_key: bytes) -> list[int] | None:
    """The plan identity that a valid memo of this boot vouches for, or None.

    None: no boot id, no memo, a memo of another boot, with a wrong MAC or malformed, or a
    sidecar that changed since.
    """
    vouched = _VOUCHED.get((tag_key, os.path.abspath(plan)))
    if vouched is not None and vouched[1] == sig_identity(plan):
        return vouched[0]
    boot = boot_id()
    if boot is None:
        return None
    try:
        doc = unseal(tag_key, read_small(_memo_path(plan), _MAX_MEMO_BYTES))
        sig = sig_identity(plan)
        if doc["boot"] != boot or sig is None or doc["sig"] != sig:
            return None
        identity = doc["plan"]
    except Exception:  # whatever the memo holds, it only ever means "check in full"
        return None
    if not isinstance(identity, list):
        return None
    _vouch(plan, tag_key, identity, sig)
    return identity


def sig_identity(plan: Path) -> list[int] | None:
    """The identity of the plan's sidecar now, or None if it cannot be seen."""
    try:
        return file_identity(os.stat(_sig_path(plan)))
    except (OSError, ValueError):
        return None


def remember_verified(plan: Path, tag_key: bytes, plan_id: list[int], sig_id: list[int] | None,
                      checked_at_ns: int) -> bool:
    """Remember a full check that began at ``checked_at_ns`` and succeeded: in this process,
    and in the memo file beside the plan (True when that was written).

    ``plan_id``: from :func:`read_plan`, the bytes that were checked; ``sig_id``: the sidecar's
    :func:`sig_identity` before the check read it. Nothing is remembered unless the sidecar is
    unchanged since and both files were already unchanged for ``STABLE_S`` when the check
    began; no memo file is written without a boot id or on a read-only cache.
    """
    if sig_id is None or sig_identity(plan) != sig_id:
        return False
    if checked_at_ns - max(plan_id[4], sig_id[4]) < STABLE_S * 1e9:
        return False
    _vouch(plan, tag_key, plan_id, sig_id)
    boot = boot_id()
    if boot is None:
        return False
    body = json.dumps({"boot": boot, "plan": plan_id, "sig": sig_id,
                       "checked_at_ns": checked_at_ns, "name": plan.name},
                      sort_keys=True).encode()
    try:
        atomic_write(Path(_memo_path(plan)), seal(tag_key, body), durable=False)
    except Exception:  # a read-only cache still works: it checks in full every time
        return False
    return True
