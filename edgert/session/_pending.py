"""Pending requests, their timings, and the session's preallocated latency recorders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edgert.errors import EdgeRTError
from edgert.stats import LatencyStats

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy as np

    from edgert.memory import DeviceView
    from edgert.session._slot import Slot

    #: One output as ``infer``/``result`` return it: a numpy array (``outputs="copy"`` or
    #: ``"view"``), or a device view (``outputs="device"``).
    Output: TypeAlias = "np.ndarray[Any, Any] | DeviceView"

__all__ = ["Pending", "RequestSource", "RequestTimings", "SessionStats"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestTimings:
    """Where one request's time went. A stage that did not happen (or was not timed) is None.

    Attributes:
        enqueue_ns: Host time from the call to ``submit``/``infer`` until the work was enqueued
            (validation, staging, copies, launch).
        h2d_ns: Device time of the host-to-device copies (CUDA events).
        compute_ns: Device time of the executable (CUDA events); on the host device, the host
            time of the synchronous run.
        d2h_ns: Device time of the device-to-host copies.
        device_ns: Device time from the first event to the last.
        latency_ns: Host time from the call until completion was observed.
    """

    enqueue_ns: int
    h2d_ns: int | None
    compute_ns: int | None
    d2h_ns: int | None
    device_ns: int | None
    latency_ns: int | None


class SessionStats:
    """One :class:`~edgert.stats.LatencyStats` per stage, allocated when the session is made.

    Attributes:
        enqueue: Host enqueue time of every request.
        h2d: Device time of input copies.
        compute: Device (or host-device run) time of the executable.
        d2h: Device time of output copies.
        device: Device time from the request's first event to its last.
        latency: Host round trip, from the call until completion was observed.
    """

    __slots__ = ("compute", "d2h", "device", "enqueue", "h2d", "latency")

    def __init__(self, capacity: int) -> None:
        self.enqueue = LatencyStats(capacity)
        self.h2d = LatencyStats(capacity)
        self.compute = LatencyStats(capacity)
        self.d2h = LatencyStats(capacity)
        self.device = LatencyStats(capacity)
        self.latency = LatencyStats(capacity)

    def reset(self) -> None:
        """Forget every sample (for example after a warm-up)."""
        for stats in self.all().values():
            stats.reset()

    def all(self) -> dict[str, LatencyStats]:
        """The recorders by stage name."""
        return {"enqueue": self.enqueue, "h2d": self.h2d, "compute": self.compute,
                "d2h": self.d2h, "device": self.device, "latency": self.latency}

    def to_dict(self) -> dict[str, Any]:
        """Every stage's summary as JSON-ready dicts (nanoseconds)."""
        return {name: stats.summary().to_dict() for name, stats in self.all().items()}


class RequestSource(Protocol):
    """What a :class:`Pending` asks of the session that made it (one slot, one generation)."""

    def done(self, slot: Slot, generation: int) -> bool:
        """Whether the request has finished or failed (or its slot moved on). Never blocks."""
        ...

    def result(self, slot: Slot, generation: int, timeout: float | None) -> Mapping[str, Output]:
        """Wait for the request, then its outputs (or raise its failure)."""
        ...

    def timings(self, slot: Slot, generation: int) -> RequestTimings | None:
        """The request's timings once collected; None before or when not recorded."""
        ...


class Pending:
    """A submitted request. Valid until its slot is reused (``slots`` submits later).

    ``done()`` asks without waiting; ``result()`` waits, then returns the outputs (or raises the
    request's failure); ``timings`` says where the time went once it is done.
    """

    __slots__ = ("_generation", "_session", "_slot")

    def __init__(self, session: RequestSource, slot: Slot, generation: int) -> None:
        self._session = session
        self._slot = slot
        self._generation = generation

    def done(self) -> bool:
        """Whether the request has finished (or failed). Never blocks.

        Raises:
            CudaError: Asking the device failed.
        """
        return self._session.done(self._slot, self._generation)

    def result(self, timeout: float | None = None) -> Mapping[str, Output]:
        """Wait for the request and return its outputs by name.

        With ``outputs="view"`` the arrays are views of the slot's pinned buffers: read or copy
        them before ``slots`` more requests are submitted.

        Args:
            timeout: Seconds to wait; None waits as long as it takes.

        Raises:
            RequestTimeoutError: The request did not finish within ``timeout``.
            InferenceError: The request failed on the device or in the executable (the CUDA or
                runtime error is chained), or its slot was already reused.
            ConcurrentUseError: Another thread is using the session right now.
            ResourceClosedError: The session is closed.
        """
        return self._session.result(self._slot, self._generation, timeout)

    @property
    def timings(self) -> RequestTimings | None:
        """The request's timings once collected by ``result()``; None before, or with
        ``timing="off"``."""
        return self._session.timings(self._slot, self._generation)

    def __repr__(self) -> str:
        try:
            done = self._session.done(self._slot, self._generation)
        except EdgeRTError:  # a failed device: the request is over either way
            done = True
        state = "done" if done else "pending"
        return f"<edgert.session.Pending slot={self._slot.index} {state}>"
