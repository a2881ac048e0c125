"""Reading a model once and recognising what it is from its first bytes.

A TensorRT plan starts with the tag ``ftrt`` (TensorRT reads it as the little-endian 32-bit value
1953657958). The next 32-bit word is a serialization tag; when it is 0 (current TensorRT
releases), bytes 24..27 hold the TensorRT version that built the plan as major, minor, patch,
build -- the same bytes ``trtexec --getPlanVersionOnly`` prints. Plans from the fake TensorRT
(:mod:`edgert.testing.fake_tensorrt`) use the same layout with ``EDGEFAKE`` at bytes 8..15.

An ONNX model is a protobuf ``ModelProto``. Its top level is scanned without the ``onnx``
package: every field must be well formed and inside the buffer (a truncated file fails here),
and ``ir_version``, ``graph`` and ``opset_import`` must be present.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from edgert._compat import StrEnum
from edgert._fileio import MAX_MODEL_BYTES, FileRefusedError, check_path, read_file
from edgert.engine._protowire import Truncated
from edgert.engine._protowire import fields as proto_fields
from edgert.errors import (
    EngineLoadError,
    InvalidArgumentError,
    ModelFormatError,
    OutOfMemoryError,
    PermissionDeniedError,
)

__all__ = [
    "FAKE_PLAN_MARKER",
    "PLAN_MAGIC",
    "EngineFormat",
    "ModelHeader",
    "ModelSource",
    "read_model_header",
    "read_source",
    "sniff",
]

#: The tag a serialized TensorRT plan starts with (read as the 32-bit value 1953657958).
PLAN_MAGIC = b"ftrt"
FAKE_PLAN_MARKER = b"EDGEFAKE"
_PLAN_VERSION_OFFSET = 24
# A ModelProto's top level holds a handful of fields (ir_version, opsets, producer, graph,
# metadata, functions); a buffer of millions of tiny fields is not one, and scanning it in Python
# would take seconds.
_MAX_TOP_FIELDS = 100_000



class EngineFormat(StrEnum):
    """What a model file is."""

    TENSORRT_PLAN = "tensorrt-plan"
    ONNX = "onnx"


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSource:
    """A model's bytes, read once, and where they came from.

    :meth:`Engine.load <edgert.engine.Engine.load>`, :func:`read_model_header` and the engine
    cache accept one wherever they accept a path or bytes, and use its bytes as they are: a model
    read once (for its hash, say) is not read again.

    Attributes:
        data: The model's bytes.
        path: The file they were read from; ``None`` for a model given as bytes.
    """

    data: bytes | memoryview
    path: Path | None

    @property
    def label(self) -> str:
        """The path, or ``<bytes>`` for an in-memory model."""
        return str(self.path) if self.path is not None else "<bytes>"


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelHeader:
    """What the first bytes of a model say, without deserializing it.

    Attributes:
        format: TensorRT plan or ONNX.
        size_bytes: Size of the whole model.
        plan_serialization_tag: The plan's second 32-bit word (0 on current TensorRT).
        trt_version: The TensorRT version that built the plan, where the header says.
        fake_plan: The plan was made by :mod:`edgert.testing.fake_tensorrt`.
        onnx_ir_version: The ONNX IR version.
        onnx_opsets: ``{domain: version}`` of the model's operator sets (``""`` = default).
        onnx_producer: ``producer_name producer_version``, if set.
    """

    format: EngineFormat
    size_bytes: int
    plan_serialization_tag: int | None = None
    trt_version: tuple[int, int, int, int] | None = None
    fake_plan: bool = False
    onnx_ir_version: int | None = None
    onnx_opsets: tuple[tuple[str, int], ...] = ()
    onnx_producer: str | None = None

    @property
    def trt_version_str(self) -> str | None:
        """The plan's TensorRT version as ``major.minor.patch.build``."""
        return ".".join(map(str, self.trt_version)) if self.trt_version else None


#: What Engine.load and read_model_header take: a path, the model's bytes, or a ModelSource
#: that read_source already read (used as it is: one read, whoever asks).
Source = str | os.PathLike[str] | bytes | bytearray | memoryview | ModelSource


def read_source(source: Source, *, max_bytes: int = MAX_MODEL_BYTES) -> ModelSource:
    """Read a model from a path (one bounded read) or take it from memory.

    The file is opened without blocking and must be a regular file of at most ``max_bytes``
    (see :mod:`edgert._fileio`): a FIFO, a device such as ``/dev/zero`` or a file that grows
    while it is read is refused instead of hanging or filling memory. A :class:`ModelSource`
    (already read) is returned as it is.

    Raises:
        InvalidArgumentError: ``source`` is not a path or bytes, the path contains a NUL byte,
            or ``max_bytes`` is not a positive int.
        EngineLoadError: The file is missing, a directory, not a regular file, larger than
            ``max_bytes``, changing while read, or unreadable.
        PermissionDeniedError: The OS refused to open it (``.path`` says which file).
        OutOfMemoryError: There was no memory for its bytes.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise InvalidArgumentError(f"max_bytes must be a positive int, got {max_bytes!r}")
    if isinstance(source, ModelSource):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            data = source if isinstance(source, bytes) else memoryview(source).cast("B")
        except TypeError as err:
            raise InvalidArgumentError(
                f"the model's bytes must be contiguous ({err})",
                hint="pass bytes(...) or a C-contiguous buffer") from err
        return ModelSource(data=data, path=None)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"source must be a path or the model's bytes, got {type(source).__name__}",
            hint="pass a str/pathlib.Path to a .plan/.engine/.onnx file, or bytes")
    try:
        path = Path(check_path(source))
        data = read_file(path, max_bytes=max_bytes)
    except FileRefusedError as err:
        raise _refused(err, source, max_bytes) from err
    except FileNotFoundError as err:
        raise EngineLoadError(
            f"model file {path} does not exist", path=str(path),
            hint="check the path (relative paths are resolved from the current directory: "
                 f"{Path.cwd()})") from err
    except IsADirectoryError as err:
        raise EngineLoadError(
            f"{path} is a directory, not a model file", path=str(path),
            hint="pass the .plan/.engine or .onnx file inside it") from err
    except PermissionError as err:
        raise PermissionDeniedError(
            f"cannot read model file {path}: {err.strerror}", errno_value=err.errno,
            path=str(path),
            hint="make the file readable by this user (chmod/chown), or run as its owner") from err
    except OSError as err:
        raise EngineLoadError(
            f"cannot read model file {path}: {err.strerror or err}", path=str(path),
            hint="check the storage device and the file") from err
    except MemoryError as err:
        raise OutOfMemoryError(
            f"no memory to read model file {path}",
            hint="free memory, or load a smaller model") from err
    return ModelSource(data=data, path=path)


def _refused(err: FileRefusedError, source: str | os.PathLike[str],
             max_bytes: int) -> EngineLoadError | InvalidArgumentError:
    if err.reason == "nul-in-path":
        return InvalidArgumentError(
            f"model path {os.fspath(source)!r} contains a NUL byte, which no file name can hold",
            hint="check where the path came from (a C string, a corrupted config)")
    where = str(err.filename)
    hints = {
        "not-regular": "pass a regular model file (a FIFO or device is not read: it could block "
                       "forever or never end); to stream a model, read it yourself and pass "
                       "the bytes",
        "too-large": f"if the model really is this big, pass a larger max_bytes= (now "
                     f"{max_bytes:,}) to Engine.load",
        "changed": "wait until the file is completely written (write to a temporary name, then "
                   "rename it into place)",
    }
    return EngineLoadError(f"cannot read model file {where}: {err.strerror}", path=where,
                           hint=hints.get(err.reason))


def _plan_header(data: bytes | memoryview) -> ModelHeader:
    tag = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else None
    version = None
    if tag == 0 and len(data) >= _PLAN_VERSION_OFFSET + 4:
        version = tuple(data[_PLAN_VERSION_OFFSET:_PLAN_VERSION_OFFSET + 4])
    return ModelHeader(
        format=EngineFormat.TENSORRT_PLAN, size_bytes=len(data), plan_serialization_tag=tag,
        trt_version=version,  # type: ignore[arg-type]
        fake_plan=bytes(data[8:16]) == FAKE_PLAN_MARKER)


def _onnx_header(data: bytes | memoryview, label: str) -> ModelHeader:
    """Scan a ModelProto's top level; raises ModelFormatError if it is not one."""
    not_onnx = ModelFormatError(
        f"{label} is neither a TensorRT plan nor an ONNX model ({len(data):,} bytes; "
        f"starts with {bytes(data[:8]).hex(' ')})", path=label,
        hint="TensorRT plans start with the tag 'ftrt' and ONNX models are protobuf ModelProto "
             "files: check that the file was copied completely and is the one you meant")
    try:
        fields = proto_fields(data, _MAX_TOP_FIELDS)
    except Truncated:
        raise ModelFormatError(
            f"{label} looks like a truncated ONNX model: a field runs past the end of its "
            f"{len(data):,} bytes", path=label,
            hint="copy the model again and compare its size or sha256 with the original") \
            from None
    except ValueError:
        raise not_onnx from None
    ir = graph = None
    opsets: list[tuple[str, int]] = []
    producer: list[str] = []
    for number, wire, value in fields:
        if number == 1 and wire == 0:
            ir = int(value)
        elif number == 7 and wire == 2:
            graph = value
        elif number == 8 and wire == 2 and not isinstance(value, int):
            domain, version = "", 0
            try:
                for n, w, v in proto_fields(value):
                    if n == 1 and w == 2 and not isinstance(v, int):
                        domain = bytes(v).decode("utf-8", "replace")
                    elif n == 2 and w == 0:
                        version = int(v)
            except ValueError:
                raise not_onnx from None
            opsets.append((domain, version))
        elif number in (2, 3) and wire == 2 and not isinstance(value, int):
            producer.append(bytes(value).decode("utf-8", "replace"))
    if ir is None or graph is None:
        raise not_onnx
    if not opsets:
        raise ModelFormatError(
            f"{label} is an ONNX model without opset_import (truncated after its graph?)",
            path=label, hint="copy the model again, or re-export it with onnx.save")
    return ModelHeader(format=EngineFormat.ONNX, size_bytes=len(data), onnx_ir_version=ir,
                       onnx_opsets=tuple(opsets), onnx_producer=" ".join(producer) or None)


def sniff(data: bytes | memoryview, label: str = "<bytes>") -> ModelHeader:
    """Recognise a model from its bytes.

    Raises:
        ModelFormatError: Empty, truncated, or neither a TensorRT plan nor an ONNX model.
    """
    # Slicing a memoryview shares the buffer: the graph field of a 50 MiB model is not copied.
    data = data if isinstance(data, memoryview) else memoryview(data)
    if len(data) == 0:
        raise ModelFormatError(
            f"{label} is empty (0 bytes)", path=label,
            hint="the file was not written completely: copy or export it again")
    if bytes(data[:4]) == PLAN_MAGIC:
        return _plan_header(data)
    if len(data) >= 8:
        prefix = struct.unpack_from("<I", data, 0)[0]
        if prefix < 65536 and bytes(data[4 + prefix:8 + prefix]) == PLAN_MAGIC:
            raise ModelFormatError(
                f"{label} has {4 + prefix} bytes before TensorRT's 'ftrt' tag: it is a plan "
                "wrapped in a metadata prefix (some exporters write a 4-byte length and a JSON "
                "header first)", path=label,
                hint=f"strip the first {4 + prefix} bytes, or export the raw engine "
                     "(e.g. trtexec --saveEngine)")
    return _onnx_header(data, label)


def read_model_header(source: Source, *, max_bytes: int = MAX_MODEL_BYTES) -> ModelHeader:
    """Read a model and say what it is, without deserializing it (no GPU needed).

    The file is read as :meth:`Engine.load <edgert.engine.Engine.load>` reads it (one bounded
    read of a regular file).

    Raises:
        InvalidArgumentError: Not a path or bytes, or a path with a NUL byte.
        EngineLoadError: The file cannot be read, is not a regular file or is over ``max_bytes``.
        PermissionDeniedError: The OS refused to open it.
        ModelFormatError: Empty, truncated, or not a model.
    """
    src = read_source(source, max_bytes=max_bytes)
    return sniff(src.data, src.label)
