"""The per-slot CUDA graph cache and the rules for when to capture.

A request is captured (its copies, the executable's enqueue and the timing events) once per
*key*: the input-shape signature plus the addresses of any caller-owned buffers bound that time.
Rules, from TensorRT's own practice (trtexec, Torch-TensorRT): never capture a signature before
one plain run of it (the first enqueue after a shape change does one-time work that cannot be
captured); replay while the key matches; a new key captures again; a capture that fails is never
retried for that key and the request runs plainly (logged once per session, at debug level).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Protocol

__all__ = ["GraphCache", "Replayable"]

logger = logging.getLogger("edgert.session")


class Replayable(Protocol):
    """What the cache holds: a captured graph that can be closed."""

    def close(self) -> None:
        """Release the graph."""
        ...


class GraphCache:
    """Graphs per slot and key, bounded per slot; signatures seen; keys that failed.

    Args:
        slots: Number of slots.
        max_graphs: Graphs kept per slot; the least recently captured is closed first.
    """

    __slots__ = ("_failed", "_graphs", "_logged", "_max", "_warm", "captures", "failures")

    def __init__(self, slots: int, max_graphs: int) -> None:
        self._graphs: list[dict[Hashable, Replayable]] = [{} for _ in range(slots)]
        self._max = max_graphs
        self._warm: set[Hashable] = set()
        self._failed: set[Hashable] = set()
        self._logged = False
        self.captures = 0
        self.failures = 0

    def get(self, slot: int, key: Hashable) -> Replayable | None:
        """The graph captured for ``key`` on ``slot``, or None."""
        return self._graphs[slot].get(key)

    def should_capture(self, key: Hashable, signature: Hashable) -> bool:
        """Whether to capture ``key`` now: its signature ran plainly before and it never failed."""
        return signature in self._warm and key not in self._failed

    def ran_plainly(self, signature: Hashable) -> None:
        """Note that ``signature`` has had its warm-up run on the executable."""
        self._warm.add(signature)

    def put(self, slot: int, key: Hashable, graph: Replayable) -> None:
        """Keep ``graph`` for ``key`` on ``slot``, evicting the oldest when full."""
        graphs = self._graphs[slot]
        while len(graphs) >= self._max:
            oldest = next(iter(graphs))
            graphs.pop(oldest).close()
        graphs[key] = graph
        self.captures += 1

    def failed(self, key: Hashable, error: BaseException) -> None:
        """Never capture ``key`` again; say so once per cache at debug level."""
        self._failed.add(key)
        self.failures += 1
        if not self._logged:
            self._logged = True
            logger.debug("CUDA graph capture failed; running requests without graphs where "
                         "capture fails (%s)", error)

    def count(self, slot: int | None = None) -> int:
        """Graphs held on ``slot``, or on all slots."""
        if slot is not None:
            return len(self._graphs[slot])
        return sum(len(g) for g in self._graphs)

    def drop_slot(self, slot: int) -> None:
        """Close every graph of ``slot`` (its buffers moved, so their addresses are stale)."""
        graphs = self._graphs[slot]
        for graph in graphs.values():
            graph.close()
        graphs.clear()

    def close(self) -> None:
        """Close every graph; keys and signatures are forgotten too."""
        for slot in range(len(self._graphs)):
            self.drop_slot(slot)
        self._warm.clear()
        self._failed.clear()
