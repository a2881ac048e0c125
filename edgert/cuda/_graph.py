"""CUDA graph capture of work enqueued on a stream, and replay, as owned objects.

Capture uses ``cudaStreamCaptureModeThreadLocal``: only the capturing thread is restricted, so
other threads of the robot's process (another session, a torch preprocessing thread) keep
working. Global mode would make their legacy-stream work fail with
``cudaErrorStreamCaptureImplicit``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from edgert._owner import Owner
from edgert.cuda._api import check, runtime
from edgert.cuda._stream import Stream
from edgert.errors import CudaError, InvalidArgumentError

__all__ = ["CudaGraph", "GraphCapture", "capture_graph"]


def _destroy_graph(graph: Any, exec_: Any) -> None:
    rt = runtime()
    rt.cudaGraphExecDestroy(exec_)
    rt.cudaGraphDestroy(graph)


class CudaGraph(Owner):
    """An instantiated CUDA graph (the captured graph and its executable form), owned here.

    Made by :class:`GraphCapture` or :func:`capture_graph`, not directly. Replaying it reruns the
    captured work with the same pointers and sizes: refill the captured input buffers, then
    :meth:`launch`.
    """

    def __init__(self, graph: Any, exec_: Any, device: int) -> None:
        self._graph = graph
        self._exec = exec_
        self._device = device
        self._own(lambda: _destroy_graph(graph, exec_), "CUDA graph")

    @property
    def exec_handle(self) -> Any:
        """The raw ``cudaGraphExec_t``, for hot loops that call ``cudaGraphLaunch`` themselves.

        Valid while this graph is open; it is destroyed by :meth:`close`.
        """
        return self._exec

    @property
    def node_count(self) -> int:
        """Number of nodes captured (kernels, copies, ...).

        Raises:
            CudaError: The query failed.
        """
        self._check_open()
        _nodes, count = check(runtime().cudaGraphGetNodes(self._graph, 0),
                              call="cudaGraphGetNodes")
        return int(count)

    def upload(self, stream: Stream) -> None:
        """Pre-upload the graph to the device so the first launch is not slower than the rest.

        Raises:
            CudaError: The runtime refused.
        """
        self._check_open()
        check(runtime().cudaGraphUpload(self._exec, stream.raw), call="cudaGraphUpload")

    def launch(self, stream: Stream) -> None:
        """Enqueue one replay of the graph on ``stream``.

        Raises:
            CudaError: The launch failed.
        """
        self._check_open()
        check(runtime().cudaGraphLaunch(self._exec, stream.raw), call="cudaGraphLaunch")


class GraphCapture:
    """Context manager capturing the work enqueued on ``stream`` inside the block.

    Example::

        with GraphCapture(stream) as cap:
            buf.copy_from(host, stream=stream)
            executable.execute_async_v3(stream.handle)
        graph = cap.graph          # a CudaGraph; replay with graph.launch(stream)

    If the block raises, or the capture was invalidated by an uncapturable call, the partial
    capture is discarded and the stream is usable again; the exception (a
    :class:`~edgert.errors.CudaError` for an invalidated capture) propagates.

    Args:
        stream: A non-default stream (capture on the legacy stream is not allowed).

    Raises:
        InvalidArgumentError: ``stream`` is the legacy default stream.
    """

    def __init__(self, stream: Stream) -> None:
        if stream.handle == 0:
            raise InvalidArgumentError(
                "cannot capture a CUDA graph on the legacy default stream",
                hint="create an edgert.cuda.Stream() and enqueue the work on it",
            )
        self._stream = stream
        self._graph: CudaGraph | None = None

    @property
    def graph(self) -> CudaGraph:
        """The captured, instantiated graph.

        Raises:
            InvalidArgumentError: The capture has not completed.
        """
        if self._graph is None:
            raise InvalidArgumentError("the capture has not completed successfully")
        return self._graph

    def __enter__(self) -> GraphCapture:
        rt = runtime()
        check(rt.cudaStreamBeginCapture(
            self._stream.raw, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            call="cudaStreamBeginCapture")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        rt = runtime()
        err, graph = rt.cudaStreamEndCapture(self._stream.raw)
        if exc_type is not None:
            if int(err) == 0 and graph is not None:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()  # clear the sticky-free error an aborted capture leaves
            return
        if int(err) != 0:
            rt.cudaGetLastError()
            check(err, call="cudaStreamEndCapture")
        try:
            exec_ = check(rt.cudaGraphInstantiate(graph, 0), call="cudaGraphInstantiate")
        except CudaError:
            rt.cudaGraphDestroy(graph)
            raise
        self._graph = CudaGraph(graph, exec_, self._stream.device)


def capture_graph(stream: Stream, enqueue: Callable[[], object]) -> CudaGraph:
    """Capture what ``enqueue()`` puts on ``stream`` into a :class:`CudaGraph`.

    Raises:
        CudaError: Capture or instantiation failed (the stream is usable again).
        InvalidArgumentError: ``stream`` is the legacy default stream.
    """
    with GraphCapture(stream) as cap:
        enqueue()
    return cap.graph
