"""Cache entries verified once per boot: a signed memo lets a hit skip hashing its plan again.

Checking an entry's HMAC sidecar reads and hashes the whole plan on every load: 0.3 ms for a
0.4 MB plan, tens of ms for a large one, as much as deserializing a small plan. After a full
check succeeds the cache writes ``<plan>.verified``: the identity of the plan and of its sidecar
(device, inode, size, modification and change times in ns), the boot it happened in
(``/proc/sys/kernel/random/boot_id``) and when, under an HMAC-SHA256 with the entry's tag key --
the cache's secret when it has one, so whoever cannot sign entries cannot forge a memo either.
A later load in the same boot whose plan and sidecar still have that identity, checked again
after the plan's bytes were read, uses those bytes without hashing them.

The rules are the ONNX digests' (:mod:`edgert.store._digest`): a file changed less than
:data:`~edgert.store._digest.STABLE_S` before the check is not memoized (timestamps coarser
than a nanosecond), and any write through the kernel moves a file's change time, which no
process can set back. What a memo cannot see is storage that corrupts bytes behind the file
system's back; the first load of every boot hashes the plan again and catches that. No boot id
(not Linux), a memo of another boot, an unreadable or unsigned memo: the full check, as before.
Memos are written without fsync: losing one after a power cut costs one more full check.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

from edgert.store._digest import STABLE_S, file_identity
from edgert.store._files import atomic_write, read_small

__all__ = ["SUFFIX", "boot_id", "plan_stats", "remember_verified", "verified_identity"]

#: Suffix of the memo next to a plan (``model-KEY.plan.verified``).
SUFFIX = ".verified"
_SIG_SUFFIX = ".sig"
_MAX_MEMO_BYTES = 4096
_NOT_READ = "?"
_boot: str | None = _NOT_READ


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


def _mac(tag_key: bytes, body: bytes) -> str:
    return hmac.new(tag_key, body, hashlib.sha256).hexdigest()


def verified_identity(plan: Path, tag_key: bytes) -> list[int] | None:
    """The plan identity that a valid memo of this boot vouches for, or None.

    None: no boot id, no memo, a memo of another boot or with a wrong MAC, or a sidecar that
    changed since. The caller compares the plan's identity *after* reading its bytes.
    """
    boot = boot_id()
    if boot is None:
        return None
    try:
        raw = read_small(_memo_path(plan), _MAX_MEMO_BYTES)
        mac, _, body = raw.partition(b"\n")
        if not hmac.compare_digest(_mac(tag_key, body).encode(), mac):
            return None
        doc = json.loads(body)
        if doc["boot"] != boot or doc["sig"] != file_identity(os.stat(_sig_path(plan))):
            return None
        identity = doc["plan"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return identity if isinstance(identity, list) else None


def plan_stats(plan: Path) -> tuple[list[int], list[int]] | None:
    """The identities of the plan and its sidecar now, or None if either cannot be seen."""
    try:
        return file_identity(os.stat(plan)), file_identity(os.stat(_sig_path(plan)))
    except OSError:
        return None


def remember_verified(plan: Path, tag_key: bytes, before: tuple[list[int], list[int]] | None,
                      checked_at_ns: int) -> bool:
    """Write the memo of a full check that began at ``checked_at_ns`` and succeeded.

    ``before``: :func:`plan_stats` taken before the check read the files. Nothing is written
    (False) unless both files are unchanged since then and were already unchanged for
    ``STABLE_S`` when the check began, or when the memo cannot be written (read-only cache).
    """
    boot = boot_id()
    if boot is None or before is None or plan_stats(plan) != before:
        return False
    plan_id, sig_id = before
    newest_change_ns = max(plan_id[4], sig_id[4])
    if checked_at_ns - newest_change_ns < STABLE_S * 1e9:
        return False
    body = json.dumps({"boot": boot, "plan": plan_id, "sig": sig_id,
                       "checked_at_ns": checked_at_ns, "name": plan.name},
                      sort_keys=True).encode()
    try:
        atomic_write(Path(_memo_path(plan)), _mac(tag_key, body).encode() + b"\n" + body,
                     durable=False)
    except Exception:  # a read-only cache still works: it checks in full every time
        return False
    return True
