"""The external-data files an ONNX model names, and their SHA-256, for its cache key.

A model saved with external data keeps its weights in other files: the ``.onnx`` bytes (and
their digest) stay the same when only the weights change, so the key must cover those files
too. Which files a model names is remembered by the model's digest (content-addressed, in the
cache's ``.digests`` directory and in this process); each file's digest is remembered as the
model's own is (:mod:`edgert.store._digest`). Memos are signed and name the model they are
about: another model's memo copied over this one's is not believed.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgert.engine._onnx_external import external_locations
from edgert.engine._source import read_source
from edgert.errors import InvalidArgumentError
from edgert.store._digest import bounded_put, file_sha256, seal, unseal
from edgert.store._files import atomic_write, read_small

__all__ = ["external_digests", "forget_process_memos"]

#: External-data files each model names, by (memo key, model SHA-256): content-addressed.
_EXTERNAL: dict[tuple[bytes, str], list[str]] = {}


def forget_process_memos() -> None:
    """Forget what this process remembered (as a new process would start)."""
    _EXTERNAL.clear()


def external_digests(path: Path | None, data: bytes | None, digest: str, memo_dir: Path,
                     key: bytes) -> dict[str, str]:
    """SHA-256 of each external-data file the model names (new weights, new key).

    Args:
        path: The model's file (None: it was given as bytes).
        data: Its bytes, if they were read already.
        digest: Its SHA-256.
        memo_dir: Where memos live.
        key: What signs them (:func:`edgert.store._digest.memo_key`).

    Raises:
        InvalidArgumentError: A model given as bytes names external files.
    """
    if path is None:
        # Bytes alone: there is no directory to find (and key) external weights in. Refused
        # here: a builder that looked in the working directory would build them into a plan
        # keyed without them, and retrained weights would then hit it (found by review).
        locations = _EXTERNAL.get((key, digest))
        if locations is None:
            try:
                locations = external_locations(data or b"")
            except ValueError:
                locations = []  # not protobuf: the build refuses it with the parser's message
        if locations:
            raise InvalidArgumentError(
                f"this ONNX model keeps its weights in external files ({locations[0]}...), "
                "and it was given as bytes: the cache can neither find nor key them",
                hint="pass the model's path (its weights are found beside it), or save it "
                     "with the weights inside (onnx.save_model(..., "
                     "save_as_external_data=False))")
        return {}
    locations = _EXTERNAL.get((key, digest))
    if locations is None:
        locations = bounded_put(_EXTERNAL, (key, digest),
                                _locations(path, data, digest, memo_dir, key), 1024)
    out: dict[str, str] = {}
    for location in locations:
        try:
            out[location] = file_sha256(path.parent / location, memo_dir, key)[0]
        except OSError as err:
            out[location] = f"unreadable: {err.strerror or err}"  # the build will say so
    return out


def _locations(path: Path, data: bytes | None, digest: str, memo_dir: Path,
               key: bytes) -> list[str]:
    """The external-data files the model names: from its memo, else parsed (and memoized)."""
    memo = memo_dir / f"external-{digest}.json"  # content-addressed
    if data is None:
        try:
            doc = unseal(key, read_small(memo))
            loaded = doc["locations"]  # of this model: a memo copied over another's fails
            if doc["kind"] == "external" and doc["onnx_sha256"] == digest and \
                    isinstance(loaded, list) and all(isinstance(x, str) for x in loaded):
                return loaded
        except Exception:  # whatever the memo holds (RecursionError too): parse the model
            pass
    model = data if data is not None else read_source(path).data
    try:
        locations = external_locations(model)
    except ValueError:
        locations = []  # not protobuf: the build refuses it with the parser's message
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        doc_bytes = json.dumps({"kind": "external", "onnx_sha256": digest,
                                "locations": locations}).encode()
        atomic_write(memo, seal(key, doc_bytes), durable=False)
    except Exception:  # a read-only cache still works, it just parses every time
        pass
    return locations
