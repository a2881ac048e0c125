"""The session's side of :class:`~edgert.OutputAllocator`: outputs whose shape is known at run time.

An executable reports -1 in an output's shape when that shape does not follow from the input
shapes (a data-dependent output such as NonZero's, or an ONNX output whose dimensions the model
does not tie to its inputs). The session then registers one :class:`SessionOutputAllocator` for
that output and never binds it by address: during a run the executable asks for memory
(``reallocate_output``) and reports the real shape (``notify_shape``). Memory comes from the
session's pools and only grows, so a steady stream of same-sized outputs allocates nothing; the
view handed out is remade only when the shape or the address changed.

Both callbacks may run on a runtime's own thread inside C++ (TensorRT's ``IOutputAllocator``):
they never raise. A failure (the pool is exhausted, a misaligned block) is kept and raised by the
runner after the run as an :class:`~edgert.errors.InferenceError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgert.errors import EdgeRTError
from edgert.session._slot import Slot, TensorBuffer

__all__ = ["SessionOutputAllocator", "packed_nbytes"]


def packed_nbytes(bits: int, shape: Sequence[int]) -> int:
    """Bytes that ``shape`` elements of ``bits`` bits take (rank not checked against a spec)."""
    return (math.prod(shape) * bits + 7) // 8


class SessionOutputAllocator:
    """Grow-only output memory from the session's pools, for the slot being run.

    One instance serves every allocated output of one runner; the runner points
    :attr:`slot` at the slot whose request is being enqueued before it calls the executable.
    A device executable asks for memory while it enqueues (TensorRT calls
    ``reallocate_output`` inside ``enqueueV3``), so the runner can copy that block to the host
    behind the work; the shape may come later, before the work completes.

    Args:
        runner: The runner whose pools and device placement are used.
    """

    __slots__ = ("error", "index", "last", "runner", "slot")

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.slot: Slot | None = None
        self.index = {spec.name: i for i, spec in enumerate(runner.out_specs)}
        self.error: BaseException | None = None
        # The buffer each output was last given: a shape notified after the runner moved on
        # to the next slot still lands with the request that asked for the memory.
        self.last: dict[str, TensorBuffer] = {}

    def start(self, slot: Slot) -> None:
        """Serve ``slot``'s request next; a shape only this run reports counts (a failed earlier
        run may have reported one for these buffers)."""
        for tb in slot.outputs:
            tb.notified = None
        self.slot = slot

    def _buffer(self, tensor_name: str) -> TensorBuffer | None:
        slot = self.slot
        i = self.index.get(tensor_name)
        if slot is None or i is None:
            self.error = EdgeRTError(
                f"the executable asked for memory for {tensor_name!r}, which is not an output "
                "the session allocates (or no request is running)")
            return None
        return slot.outputs[i]

    def reallocate_output(self, tensor_name: str, memory: int, size: int,
                          alignment: int) -> int:
        """An address of at least ``size`` bytes for ``tensor_name``; 0 if none can be had."""
        tb = self._buffer(tensor_name)
        if tb is None:
            return 0
        try:
            ptr = int(self.runner.grow_allocated(tb, max(int(size), 1)))
        except BaseException as err:  # never let an exception into the runtime's C++ frame
            self.error = err
            return 0
        if alignment > 1 and ptr % int(alignment):
            self.error = EdgeRTError(
                f"pool memory at 0x{ptr:x} is not aligned to the {alignment} bytes the "
                f"executable asks for output {tensor_name!r}")
            return 0
        tb.alloc_nbytes = int(size)
        self.last[tensor_name] = tb
        return ptr

    def notify_shape(self, tensor_name: str, shape: Sequence[int]) -> None:
        """Keep the real shape of the output just written."""
        tb = self.last.get(tensor_name) or self._buffer(tensor_name)
        if tb is None:
            return
        try:
            tb.notified = tuple(int(d) for d in shape)
        except (TypeError, ValueError) as err:
            self.error = err

    def take_error(self) -> BaseException | None:
        """The failure a callback ran into since the last call, if any; clears it."""
        err = self.error
        self.error = None
        return err
