"""A slot: everything one in-flight request needs, allocated once and reused.

Each slot owns, per tensor, a host lease (pinned staging or landing memory; mapped in zero-copy
mode; OS-locked on the host device) and, in copy mode on a GPU, a device lease; plus its CUDA
events and the preallocated fields its timings are written to. Buffers grow (through the pool)
only when a request needs more than they hold; they never shrink.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np

from edgert._executable import TensorLocation, TensorSpec

__all__ = ["Signature", "Slot", "TensorBuffer"]

#: Input shapes of one request, in input order; None for an optional input left out.
Signature = tuple[tuple[int, ...] | None, ...]


class TensorBuffer:
    """One tensor's memory in one slot.

    Attributes:
        spec: The tensor.
        name: ``spec.name``.
        dtype: ``spec.dtype``.
        host: Host lease (staging, landing, mapped or OS-locked memory), or None.
        device: Device lease (copy mode on a GPU), or None.
        shape: Shape of the current request.
        nbytes: Bytes of the current request.
        small: ``nbytes`` is at most the size below which inputs are always staged.
        view: numpy view of ``host`` with ``shape``, or None.
        dview: Device view for ``outputs="device"``, or None.
        bind_ptr: The address bound to the executable for this slot.
        host_ptr: Host address of ``host`` (0 when none).
        dev_ptr: Device address the copies target (0 when none).
        allocated: An output the executable writes through the session's
            :class:`~edgert.OutputAllocator` for the current shapes (its shape is known only
            once it has run); never bound by address.
        alloc_nbytes: Bytes the executable last asked the allocator for.
        notified: The shape the executable last reported for an allocated output.
        echo: For an output that is also a graph input: that input's buffer in the same slot
            (the session copies the input; the executable is never given this output).
        packed: Several elements per byte (INT4, UINT4, FP4, INT2, UINT2): ``view`` holds the
            packed bytes.
        objects: Strings: never in raw memory; ``view`` is the numpy object array itself.
    """

    __slots__ = ("alloc_nbytes", "allocated", "bind_ptr", "dev_ptr", "device", "dtype", "dview",
                 "echo", "host", "host_ptr", "name", "nbytes", "notified", "objects", "packed",
                 "shape", "small", "spec", "view")

    def __init__(self, spec: TensorSpec) -> None:
        self.spec = spec
        self.name = spec.name  # copies of the spec's, read on the hot path
        self.dtype = spec.dtype
        self.host: Any = None
        self.device: Any = None
        self.shape: tuple[int, ...] | None = None
        self.nbytes = 0
        self.small = False
        self.view: np.ndarray[Any, Any] | None = None
        self.dview: Any = None
        self.bind_ptr = 0
        self.host_ptr = 0
        self.dev_ptr = 0
        self.allocated = False
        self.alloc_nbytes = 0
        self.notified: tuple[int, ...] | None = None
        self.echo: TensorBuffer | None = None
        self.packed = spec.element_bits != 8 * spec.dtype.itemsize
        self.objects = spec.dtype.kind == "O"

    @property
    def unbound(self) -> bool:
        """Whether the executable is never given this tensor's address."""
        return self.allocated or self.echo is not None or self.objects

    @property
    def host_resident(self) -> bool:
        """Whether the executable reads this tensor from host memory (TensorRT shape tensors)."""
        return self.spec.location is TensorLocation.HOST

    def release(self) -> None:
        """Give the leases back (the slot's work must have completed)."""
        self.view = None
        self.dview = None
        for lease in (self.host, self.device):
            if lease is not None and not lease.released:
                lease.release()
        self.host = self.device = None
        self.bind_ptr = self.host_ptr = self.dev_ptr = 0
        self.shape = None
        self.alloc_nbytes = 0
        self.notified = None


class Slot:
    """Buffers, events, state and timing fields of one request slot.

    Attributes:
        index: Position among the session's slots.
        inputs: Input buffers, in the executable's input order.
        outputs: Output buffers, in output order.
        sig: Input shapes of the request the buffers are shaped for.
        busy: A request is in flight in this slot.
        generation: Bumped by every request and whenever the slot's buffers change; a Pending
            compares it to its own.
        served: Requests the slot ran (a swap frees the old model by this count).
        error: The failure of the current request, raised by ``result()``.
        events: Raw CUDA events ``(start, h2d, compute, end)``; any may be None.
        h2d: ``(device_ptr, host_ptr, nbytes)`` copies before compute.
        d2h: ``(host_ptr, device_ptr, nbytes)`` copies after compute.
        d2d: ``(device_ptr, device_ptr, nbytes)`` copies of caller device memory that overlaps
            the session's own buffers, made before compute.
        copy_bytes: Bytes the two lists move.
        binds: ``(name, address)`` for every tensor, as the executable must see them.
        keep: Caller objects to keep alive until the request completes.
        external: ``h2d``/``binds`` name caller memory (the next request must rebuild them).
        wait_stream: Completion is awaited with a stream synchronize (no end event recorded).
        timed: Device timing of the current request: 0 none, 1 total only, 2 per stage.
        results: Read-only mapping of output name to the view (or device view) handed out.
        allocs: Outputs written through the session's output allocator for the current shapes.
        echoes: Outputs that are also graph inputs (copied from the input by the session).
        packed: Packed sub-byte outputs (handed out unpacked where ml_dtypes is installed).
        objects: String tensors, inputs and outputs (passed as numpy object arrays).
        special: Any of ``allocs``, ``echoes``, ``packed``, ``objects`` (one test on the hot
            path).
    """

    __slots__ = (
        "allocs",
        "binds",
        "busy",
        "copy_bytes",
        "d2d",
        "d2h",
        "echoes",
        "error",
        "ev_compute",
        "ev_end",
        "ev_h2d",
        "ev_start",
        "event_owners",
        "external",
        "generation",
        "h2d",
        "index",
        "inputs",
        "keep",
        "objects",
        "outputs",
        "packed",
        "results",
        "results_device",
        "served",
        "sig",
        "special",
        "t_compute_ns",
        "t_d2h_ns",
        "t_device_ns",
        "t_enqueue_ns",
        "t_h2d_ns",
        "t_latency_ns",
        "t_submit_ns",
        "timed",
        "unsettled",
        "wait_stream",
    )

    def __init__(self, index: int, inputs: list[TensorBuffer],
                 outputs: list[TensorBuffer]) -> None:
        self.index = index
        self.inputs = inputs
        self.outputs = outputs
        self.sig: Signature | None = None
        self.busy = False
        self.generation = 0
        self.served = 0
        #: A reshape of it began and did not finish (an exception, even an asynchronous one
        #: such as KeyboardInterrupt, left it midway): the next one first forgets every address.
        self.unsettled = False
        self.error: BaseException | None = None
        self.event_owners: list[Any] = []
        self.ev_start: Any = None
        self.ev_h2d: Any = None
        self.ev_compute: Any = None
        self.ev_end: Any = None
        self.h2d: list[tuple[int, int, int]] = []
        self.d2h: list[tuple[int, int, int]] = []
        self.d2d: list[tuple[int, int, int]] = []
        self.copy_bytes = 0
        self.binds: tuple[tuple[str, int], ...] = ()
        self.allocs: tuple[TensorBuffer, ...] = ()
        self.echoes: tuple[TensorBuffer, ...] = ()
        self.packed: tuple[TensorBuffer, ...] = ()
        self.objects: tuple[TensorBuffer, ...] = ()
        self.special = False
        self.keep: Any = None
        self.external = False
        self.results: MappingProxyType[str, Any] = MappingProxyType({})
        self.results_device: MappingProxyType[str, Any] = MappingProxyType({})
        self.timed = 0
        self.wait_stream = False
        self.t_submit_ns = 0
        self.t_enqueue_ns = 0
        self.t_h2d_ns: int | None = None
        self.t_compute_ns: int | None = None
        self.t_d2h_ns: int | None = None
        self.t_device_ns: int | None = None
        self.t_latency_ns: int | None = None

    def rebuild(self, *, copies: bool) -> None:
        """Recompute the copy lists, bindings and result mappings after the buffers changed."""
        h2d = []
        d2h = []
        if copies:
            for tb in self.inputs:
                if not tb.host_resident and tb.host is not None and tb.nbytes:
                    h2d.append((tb.dev_ptr, tb.host_ptr, tb.nbytes))
            for tb in self.outputs:
                if not tb.host_resident and tb.host is not None and tb.nbytes and \
                        not tb.allocated:
                    d2h.append((tb.host_ptr, tb.dev_ptr, tb.nbytes))
        self.h2d = h2d
        self.d2h = d2h
        self.d2d = []
        self.copy_bytes = sum(n for _, _, n in h2d) + sum(n for _, _, n in d2h)
        self.allocs = tuple(tb for tb in self.outputs if tb.allocated)
        self.echoes = tuple(tb for tb in self.outputs if tb.echo is not None)
        self.packed = tuple(tb for tb in self.outputs if tb.packed)
        self.objects = tuple(tb for tb in (*self.inputs, *self.outputs) if tb.objects)
        self.special = bool(self.allocs or self.echoes or self.packed or self.objects)
        self.binds = tuple((tb.spec.name, tb.bind_ptr) for tb in (*self.inputs, *self.outputs)
                           if not tb.unbound)
        self.results = MappingProxyType({tb.spec.name: tb.view for tb in self.outputs})
        self.results_device = MappingProxyType({tb.spec.name: tb.dview for tb in self.outputs})
        # Last: a rebuild that an exception (even KeyboardInterrupt) stopped midway leaves a
        # slot bound to caller memory marked so, and the next plain request rebuilds it again.
        self.external = False

    def release(self) -> None:
        """Give every lease back."""
        for tb in (*self.inputs, *self.outputs):
            tb.release()
        self.results = MappingProxyType({})
        self.results_device = MappingProxyType({})
        self.sig = None
        self.keep = None

    def close_events(self) -> None:
        """Destroy the slot's CUDA events."""
        for ev in self.event_owners:
            ev.close()
        self.event_owners.clear()
        self.ev_start = self.ev_h2d = self.ev_compute = self.ev_end = None
