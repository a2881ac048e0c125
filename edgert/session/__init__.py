"""Sessions: asynchronous, pipelined, zero-copy, graph-captured inference on CUDA streams.

:class:`InferenceSession` drives an :class:`~edgert.engine.Engine` (or any
:class:`~edgert.engine.Executable`) on a CUDA device or, without one, on the host. See
docs/sessions.md for the latency and throughput recipes and for who owns output views.
:class:`ModelGroup` places several models on one GPU, the control model on SMs of its own
(docs/multimodel.md).
"""

from edgert.session._model_group import ModelGroup, PartitionMode, SessionPlacement
from edgert.session._options import (
    BusyMode,
    ContiguityMode,
    GraphMode,
    IoMode,
    OutputMode,
    SessionOptions,
    SyncMode,
    TimingMode,
)
from edgert.session._pending import Pending, RequestTimings, SessionStats
from edgert.session._session import InferenceSession
from edgert.session._swap import SwapResult

__all__ = [
    "BusyMode",
    "ContiguityMode",
    "GraphMode",
    "InferenceSession",
    "IoMode",
    "ModelGroup",
    "OutputMode",
    "PartitionMode",
    "Pending",
    "RequestTimings",
    "SessionOptions",
    "SessionPlacement",
    "SessionStats",
    "SwapResult",
    "SyncMode",
    "TimingMode",
]
