"""Building a session: resolve the device and modes, make streams, pools, slots and the runner."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgert._executable import Executable, Placement, TensorSpec
from edgert.errors import InvalidArgumentError, NotSupportedError
from edgert.session._options import (
    GraphMode,
    IoMode,
    OutputMode,
    SessionOptions,
    SyncMode,
    TimingMode,
)
from edgert.session._pending import SessionStats
from edgert.session._resources import Resources
from edgert.session._runner import Runner
from edgert.session._slot import Slot, TensorBuffer

if TYPE_CHECKING:
    from edgert.cuda import Stream

__all__ = ["DeviceChoice", "build_runner", "initial_signature"]

_MIB = 1 << 20
_DEFAULT_BUDGET = 256 * _MIB  # when a dynamic input has no profile to size from
#: io="auto" on a discrete GPU: zero-copy when a request's inputs and outputs at the profile's
#: largest shapes total at most this. Kernels then read and write them over PCIe, which costs
#: less than the two copy nodes (and their fixed cost) it saves while tensors are small; large
#: tensors (images) are copied. Measured in docs/sessions.md ("Why these defaults").
ZERO_COPY_AUTO_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceChoice:
    """What a session was built with."""

    runner: Runner
    options: SessionOptions
    device: int | str
    stream: Stream | None
    pipelined: bool


def initial_signature(specs: tuple[TensorSpec, ...], profile: int) -> tuple[
        tuple[int, ...] | None, ...]:
    """Shapes the buffers start with: static shapes, else the profile's opt, else 1 per -1;
    None for optional inputs (the model's default)."""
    sig: list[tuple[int, ...] | None] = []
    for spec in specs:
        if spec.optional:
            sig.append(None)
        elif not spec.is_dynamic:
            sig.append(spec.shape)
        elif profile < len(spec.profiles):
            sig.append(spec.profiles[profile].opt)
        else:
            sig.append(tuple(1 if d < 0 else d for d in spec.shape))
    return tuple(sig)


def _pow2(n: int) -> int:
    return 1 << max(9, (max(n, 1) - 1).bit_length())


def _max_tensor_bytes(exe: Executable, profile: int) -> list[int] | None:
    """Bytes of every tensor at the profile's largest input shapes; None where unknown.

    Sets each dynamic input to its profile's max shape, then reads the outputs' shapes.
    """
    sizes: list[int] = []
    for spec in exe.tensors:
        if not spec.is_input:
            continue
        if spec.is_dynamic and profile >= len(spec.profiles):
            return None
        shape = spec.max_shape(profile)
        sizes.append(spec.nbytes(shape))
        if spec.is_dynamic and not exe.set_input_shape(spec.name, shape):
            return None
    for spec in exe.tensors:
        if spec.is_input:
            continue
        shape = tuple(int(d) for d in exe.get_tensor_shape(spec.name))
        if len(shape) != len(spec.shape) or any(d < 0 for d in shape):
            return None
        sizes.append(spec.nbytes(shape))
    return sizes


def _budget(exe: Executable, profile: int, slots: int) -> int:
    """A pool budget from the largest shapes the profile allows (with room to round up)."""
    sizes = _max_tensor_bytes(exe, profile)
    if sizes is None:
        return _DEFAULT_BUDGET
    return max(8 * _MIB, 2 * slots * sum(_pow2(n) for n in sizes))


def max_io_bytes(exe: Executable, profile: int) -> int | None:
    """Bytes a request's inputs and outputs take at the profile's largest shapes, if known."""
    sizes = _max_tensor_bytes(exe, profile)
    return None if sizes is None else sum(sizes)


def auto_io(integrated: bool, can_map: bool, io_bytes: int | None) -> IoMode:
    """What ``io="auto"`` means on a CUDA device (see :data:`ZERO_COPY_AUTO_MAX_BYTES`)."""
    if not can_map:
        return IoMode.COPY
    if integrated:
        return IoMode.ZERO_COPY
    small = io_bytes is not None and io_bytes <= ZERO_COPY_AUTO_MAX_BYTES
    return IoMode.ZERO_COPY if small else IoMode.COPY


def _executable(model: Any, profile: int, stream_handle: int, res: Resources) -> Executable:
    create = getattr(model, "create_context", None)
    if callable(create):
        exe: Executable = create(profile=profile, stream_handle=stream_handle)
        res.closers.append(exe.close)
        return exe
    if isinstance(model, Executable):
        return model
    raise InvalidArgumentError(
        f"model must be an edgert Engine or an Executable, not {type(model).__name__}",
        hint="load one with edgert.Engine.load(path)")


def _placement(model: Any) -> Placement:
    """Where the model wants tensor memory, as its engine says.

    An executable made by an engine carries the engine's placement; a borrowed one whose
    engine runs on host memory (the fake TensorRT, whose contexts read and write the raw host
    addresses they are given) must never be given device pointers either.
    """
    placement = Placement(getattr(model, "placement", Placement.DEVICE))
    engine_placement = getattr(getattr(model, "engine", None), "placement", None)
    if engine_placement is not None and Placement(engine_placement) is Placement.HOST:
        return Placement.HOST
    return placement


def _device(device: int | str | None, placement: Placement) -> int | str:
    if placement is Placement.HOST:
        if device not in (None, "host"):
            raise InvalidArgumentError(
                f"this model runs on the host (its runtime reads host memory), not on CUDA "
                f"device {device!r}", hint="pass device='host' or leave device unset")
        return "host"
    if device == "host":
        return "host"
    from edgert.cuda import is_available, require

    if device is None:
        return 0 if is_available() else "host"
    if isinstance(device, bool) or not isinstance(device, int):
        raise InvalidArgumentError(f"device must be a CUDA ordinal, 'host' or None, not "
                                   f"{device!r}")
    require(device)
    return device


def _slots(exe: Executable, n: int) -> list[Slot]:
    ins = [t for t in exe.tensors if t.is_input]
    outs = [t for t in exe.tensors if not t.is_input]
    return [Slot(i, [TensorBuffer(t) for t in ins], [TensorBuffer(t) for t in outs])
            for i in range(n)]


def build_runner(model: Any, options: SessionOptions, stats: SessionStats, res: Resources, *,
                 device: int | str | None, stream: Any, priority: Any, pool: Any,
                 device_pool: Any, partition: Any = None) -> DeviceChoice:
    """Resolve everything and return the runner; what it makes is registered in ``res``.

    Raises:
        InvalidArgumentError: Contradictory options.
        NotSupportedError: The machine or executable lacks what was asked.
    """
    from edgert.memory import BufferPool

    placement = _placement(model)
    if partition is not None and device is None:
        device = partition.device
    where = _device(device, placement)
    if partition is not None and where != partition.device:
        raise InvalidArgumentError(
            f"the partition is on device {partition.device}, the session on {where!r}",
            hint="leave device unset, or pass the partition's device")
    if where == "host":
        return _build_host(model, options, stats, res, stream=stream, priority=priority,
                           pool=pool, pool_cls=BufferPool)
    assert isinstance(where, int)
    return _build_cuda(model, options, stats, res, where, stream=stream, priority=priority,
                       pool=pool, device_pool=device_pool, pool_cls=BufferPool,
                       partition=partition)


def _build_host(model: Any, options: SessionOptions, stats: SessionStats, res: Resources, *,
                stream: Any, priority: Any, pool: Any, pool_cls: Any) -> DeviceChoice:
    from edgert.session._host_runner import HostRunner

    if stream is not None or priority is not None:
        raise InvalidArgumentError("stream= and priority= need a CUDA device; this session "
                                   "runs on the host")
    if options.outputs is OutputMode.DEVICE:
        raise InvalidArgumentError("outputs='device' needs a CUDA device; this session runs on "
                                   "the host", hint="use outputs='view' or 'copy'")
    if options.cuda_graph is GraphMode.ON:
        raise NotSupportedError("cuda_graph='on' needs a CUDA device; this session runs on "
                                "the host", hint="use cuda_graph='auto'")
    io = IoMode.ZERO_COPY if options.io is IoMode.AUTO else options.io
    resolved = dataclasses.replace(options, io=io, cuda_graph=GraphMode.OFF)
    exe = _executable(model, options.profile, 0, res)
    if pool is None:
        pool = pool_cls.for_host(max_bytes=_budget(exe, options.profile, options.slots + 1),
                                 device="host")
        res.closers.append(pool.close)
    slots = _slots(exe, options.slots)
    res.slots = slots
    runner = HostRunner(exe, options=resolved, slots=slots, stats=stats, host_pool=pool,
                        device_pool=None, copies=False)
    runner.zero_copy = io is IoMode.ZERO_COPY
    if options.slots > 1:
        runner.use_work_set()
    res.runner = runner
    _shape_slots(runner, options.profile)
    return DeviceChoice(runner=runner, options=resolved, device="host", stream=None,
                        pipelined=False)


def _new_stream(partition: Any, device: int, priority: Any) -> Any:
    from edgert.cuda import Stream

    if partition is not None:  # a green-context stream: its kernels run on the partition's SMs
        return partition.stream(priority=priority)
    return Stream(device=device, priority=priority)


def _stream(stream: Any, priority: Any, device: int, res: Resources,
            partition: Any = None) -> Any:
    from edgert.cuda import Stream, as_stream_handle

    if stream is not None and partition is not None:
        raise InvalidArgumentError("pass either stream= or partition=, not both",
                                   hint="make the stream with partition.stream(), or let the "
                                        "session make it")
    if stream is None:
        made = _new_stream(partition, device, priority)
        res.closers.append(made.close)
        return made
    if priority is not None:
        raise InvalidArgumentError("pass either stream= or priority=, not both",
                                   hint="create the stream with the priority you want")
    adopted = stream if isinstance(stream, Stream) else Stream.from_handle(
        as_stream_handle(stream), device=device, owner=stream)
    if adopted.handle == 0:
        raise InvalidArgumentError(
            "the legacy default stream (0) serialises with all other work and cannot be "
            "captured into CUDA graphs", hint="pass an edgert.cuda.Stream() or leave stream unset")
    return adopted


def _build_cuda(model: Any, options: SessionOptions, stats: SessionStats, res: Resources,
                device: int, *, stream: Any, priority: Any, pool: Any, device_pool: Any,
                pool_cls: Any, partition: Any = None) -> DeviceChoice:
    from edgert.cuda import Event, device_properties
    from edgert.session._cuda_runner import CudaRunner
    from edgert.session._graphs import GraphCache

    props = device_properties(device)
    io = options.io
    if io is IoMode.ZERO_COPY and not props.can_map_host_memory:
        raise NotSupportedError(f"device {device} ({props.name}) cannot map host memory, so "
                                "zero-copy I/O is impossible", hint="use io='copy'")
    compute = _stream(stream, priority, device, res, partition)
    exe = _executable(model, options.profile, compute.handle, res)
    if io is IoMode.AUTO:
        io = auto_io(props.integrated, props.can_map_host_memory,
                     max_io_bytes(exe, options.profile))
    graph_mode = options.cuda_graph
    if graph_mode is not GraphMode.OFF and not exe.graph_capturable:
        if graph_mode is GraphMode.ON:
            raise NotSupportedError(
                "cuda_graph='on', but this executable cannot be captured (data-dependent output "
                "shapes, or its runtime forbids capture)", hint="use cuda_graph='auto' or 'off'")
        graph_mode = GraphMode.OFF
    copies = io is IoMode.COPY
    pipelined = copies and options.slots > 1
    side: list[Stream | None] = [None, None]
    if pipelined:
        for i in range(2):
            made = _new_stream(partition, device, compute.priority)
            res.closers.append(made.close)
            side[i] = made
    budget = _budget(exe, options.profile, options.slots)
    if pool is None:
        pool = pool_cls.for_host(max_bytes=budget, mapped=not copies, device=device)
        res.closers.append(pool.close)
    if copies and device_pool is None:
        device_pool = pool_cls.for_device(max_bytes=budget, device=device)
        res.closers.append(device_pool.close)
    slots = _slots(exe, options.slots)
    res.slots = slots
    stages = options.timing is TimingMode.STAGES
    # Only sync='blocking' records blocking-sync end events: recording one makes the driver's
    # own thread take an interrupt per request (6-11 us of CPU on an H200, issue 15), so
    # 'adaptive' spins on a plain event and records a blocking one only when it gives up.
    blocking = options.sync is SyncMode.BLOCKING
    for slot in slots:
        def event(timing: bool, blocking_sync: bool = False, slot: Slot = slot) -> Any:
            ev = Event(timing=timing, blocking_sync=blocking_sync, device=device)
            slot.event_owners.append(ev)
            return ev.raw

        if stages:
            slot.ev_start = event(True)
        if copies and (stages or pipelined):
            slot.ev_h2d = event(stages)
            slot.ev_compute = event(stages)
        slot.ev_end = event(stages, blocking)
    graphs = None if graph_mode is GraphMode.OFF else GraphCache(options.slots,
                                                                  options.max_graphs)
    resolved = dataclasses.replace(options, io=io, cuda_graph=graph_mode)
    runner = CudaRunner(exe, options=resolved, slots=slots, stats=stats, host_pool=pool,
                        device_pool=device_pool, copies=copies, stream=compute,
                        h2d_stream=side[0], d2h_stream=side[1], graphs=graphs)
    res.runner = runner
    _shape_slots(runner, options.profile)
    return DeviceChoice(runner=runner, options=resolved, device=device, stream=compute,
                        pipelined=pipelined)


def _shape_slots(runner: Runner, profile: int) -> None:
    sig = initial_signature(runner.in_specs, profile)
    for slot in runner.slots:
        runner.reshape(slot, sig)
