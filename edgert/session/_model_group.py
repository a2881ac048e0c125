"""Several models on one GPU, control first: a reserved SM partition at the highest priority.

    >>> group = ModelGroup(control_sms=16)                         # doctest: +SKIP
    >>> policy, camera = group.control(policy_engine), group.add(camera_engine)  # doctest: +SKIP

:meth:`ModelGroup.control` sessions run on a partition of ``control_sms`` SMs (a green context)
with the highest stream priority; :meth:`ModelGroup.add` sessions share the rest of the SMs at
the default priority. Perception can then fill its SMs with persistent GEMMs and the control
model still finds its own SMs free. Priority alone only helps against kernels made of many short
blocks; see docs/multimodel.md for what each buys.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from edgert._owner import Owner
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.session._options import SessionOptions, SessionOverrides
from edgert.session._session import InferenceSession

if TYPE_CHECKING:
    from edgert._executable import Executable
    from edgert.engine import Engine
    from edgert.memory import BufferPool

__all__ = ["ModelGroup", "PartitionMode", "SessionPlacement"]


class PartitionMode(str, Enum):
    """What a :class:`ModelGroup` does about SM partitions."""

    REQUIRE = "require"
    """Partition, or raise NotSupportedError where green contexts are missing."""
    AUTO = "auto"
    """Partition where green contexts exist; elsewhere priorities only (see ``partitioned``)."""
    OFF = "off"
    """Never partition; stream priorities only."""


class GroupSessionOptions(SessionOverrides, total=False):
    """What a :class:`ModelGroup` passes on to each :class:`InferenceSession` it makes."""

    options: SessionOptions | None
    pool: BufferPool | None
    device_pool: BufferPool | None


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionPlacement:
    """Where one session of a group runs.

    Attributes:
        role: ``control`` or ``shared``.
        partition: The partition's name, or ``whole GPU``.
        sm_count: SMs its kernels can use.
        priority: Its stream's priority (numerically lower is more urgent).
    """

    role: str
    partition: str
    sm_count: int
    priority: int


def _release_group(sessions: list[InferenceSession], parts: Any) -> None:
    """Close a group's sessions (newest first), then its partitions."""
    for s in reversed(sessions):
        s.close()
    sessions.clear()
    if parts is not None:
        parts.close()


class ModelGroup(Owner):
    """Control model on reserved SMs at the highest priority; everything else on the rest.

    Args:
        control_sms: SMs to reserve for control sessions, a positive int; rounded up to a size
            the device accepts (Hopper: a multiple of 8, at least 8; Orin: a multiple of 2, at
            least 4; see ``edgert doctor``).
        device: The CUDA device.
        partitions: ``"require"`` (default), ``"auto"`` or ``"off"`` (:class:`PartitionMode`).

    Raises:
        NotSupportedError: No CUDA device; or green contexts are missing and ``partitions`` is
            ``"require"``.
        InvalidArgumentError: ``control_sms`` is not a positive int, or leaves too few SMs for
            the rest.
        CudaError: The driver refused.
    """

    def __init__(self, *, control_sms: int = 16, device: int = 0,
                 partitions: PartitionMode | str = PartitionMode.REQUIRE) -> None:
        from edgert.cuda import device_properties, green_context_support, partition_sms
        from edgert.cuda._green import check_sm_count

        check_sm_count(control_sms, "control_sms")
        try:
            mode = PartitionMode(partitions)
        except ValueError:
            raise InvalidArgumentError(f"partitions must be 'require', 'auto' or 'off', not "
                                       f"{partitions!r}") from None
        self._device = device
        self._sessions: list[InferenceSession] = []
        self._placements: list[SessionPlacement] = []
        self._parts: Any = None
        self._sms = device_properties(device).multiprocessor_count
        if mode is not PartitionMode.OFF:
            support = green_context_support(device)
            if support.supported and support.layout is not None:
                size = support.layout.legal_size(control_sms)
                self._parts = partition_sms([size], device=device)
            elif mode is PartitionMode.REQUIRE:
                raise NotSupportedError(
                    f"SM partitions are not available on device {device}: {support.reason}",
                    hint="pass partitions='auto' to fall back to stream priorities (no "
                         "protection from persistent kernels such as large GEMMs)")
        # The release closes over the session list and the partitions, never over self (a
        # bound method would keep a forgotten group alive and its safety net would never run).
        self._own(functools.partial(_release_group, self._sessions, self._parts), "ModelGroup")

    @property
    def partitioned(self) -> bool:
        """Whether control sessions have SMs of their own."""
        return self._parts is not None

    @property
    def placements(self) -> tuple[SessionPlacement, ...]:
        """Where each session made by the group runs, in the order they were made."""
        return tuple(self._placements)

    def control(self, model: Engine | Executable,
                **session_options: Unpack[GroupSessionOptions]) -> InferenceSession:
        """A session on the reserved SMs at the highest stream priority.

        Args:
            model: An Engine or Executable (see :class:`InferenceSession`).
            **session_options: Other :class:`InferenceSession` options.

        Raises:
            InvalidArgumentError: ``partition``, ``priority``, ``stream`` or ``device`` given.
            ResourceClosedError: The group is closed.
        """
        part = self._parts[0] if self._parts is not None else None
        return self._session(model, "control", part, "highest", session_options)

    def add(self, model: Engine | Executable,
            **session_options: Unpack[GroupSessionOptions]) -> InferenceSession:
        """A session on the SMs not reserved for control, at the default priority.

        Raises:
            InvalidArgumentError: ``partition``, ``priority``, ``stream`` or ``device`` given.
            ResourceClosedError: The group is closed.
        """
        part = self._parts.rest if self._parts is not None else None
        return self._session(model, "shared", part, None, session_options)

    def _session(self, model: Engine | Executable, role: str, part: Any,
                 priority: str | None, options: GroupSessionOptions) -> InferenceSession:
        self._check_open()
        taken = {"partition", "priority", "stream", "device"} & set(options)
        if taken:
            raise InvalidArgumentError(
                f"a ModelGroup sets {sorted(taken)} itself",
                hint="make an InferenceSession directly to place a model by hand")
        session = InferenceSession(model, device=self._device, partition=part,
                                   priority=priority, **options)
        self._sessions.append(session)
        stream = session.stream
        assert stream is not None  # a group's sessions run on its CUDA device
        self._placements.append(SessionPlacement(
            role=role, partition=part.name if part is not None else "whole GPU",
            sm_count=part.sm_count if part is not None else self._sms,
            priority=stream.priority))
        return session
