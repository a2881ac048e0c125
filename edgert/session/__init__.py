"""Sessions: asynchronous, pipelined, zero-copy, graph-captured inference on CUDA streams.

:class:`InferenceSession` drives an :class:`~edgert.engine.Engine` (or any
:class:`~edgert.engine.Executable`) on a CUDA device or, without one, on the host. See
docs/sessions.md for the latency and throughput recipes and for who owns output views.
:class:`ModelGroup` places several models on one GPU, the control model on SMs of its own
(docs/multimodel.md).
"""

from edgert._protocols import TensorInput
from edgert.session._model_group import (
    GroupSessionOptions,
    ModelGroup,
    PartitionMode,
    SessionPlacement,
)
from edgert.session._options import (
    BusyMode,
    ContiguityMode,
    GraphMode,
    IoMode,
    OutputMode,
    SessionOptions,
    SessionOverrides,
    SyncMode,
    TimingMode,
)
from edgert.session._pending import Output, Pending, RequestTimings, SessionStats
from edgert.session._session import InferenceSession
from edgert.session._swap import SwapResult

__all__ = [
    "BusyMode",
    "ContiguityMode",
    "GraphMode",
    "GroupSessionOptions",
    "InferenceSession",
    "IoMode",
    "ModelGroup",
    "Output",
    "OutputMode",
    "PartitionMode",
    "Pending",
    "RequestTimings",
    "SessionOptions",
    "SessionOverrides",
    "SessionPlacement",
    "SessionStats",
    "SwapResult",
    "SyncMode",
    "TensorInput",
    "TimingMode",
]
