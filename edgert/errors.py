"""The one exception hierarchy of edgert.

Every error edgert raises derives from :class:`EdgeRTError`. Messages say what failed, why (errno,
CUDA error name, TensorRT's own log line) and what to do next. Each public exception reports itself
as ``edgert.X`` in tracebacks, whatever private module raised it.

The tree::

    EdgeRTError
    ├── CudaError                 a CUDA call failed (code, name)
    ├── NotSupportedError         the machine, driver or install lacks what was asked
    ├── PermissionDeniedError     the OS refused (EPERM/EACCES); carries remediation
    ├── ResourceClosedError       use after close()
    ├── ResourceBusyError         close() or reuse refused while something still uses it
    ├── OutOfMemoryError          the OS or device has no memory (also a MemoryError)
    ├── InvalidArgumentError      bad argument values (also a ValueError)
    ├── ConcurrentUseError        an object owned by one thread was used from another at once
    ├── RequestTimeoutError       a wait ran out (also a TimeoutError)
    ├── PoolExhausted             a BufferPool budget was hit (also a MemoryError)
    ├── EngineLoadError           a model could not be loaded; carries TensorRT's log lines
    │   ├── ModelFormatError      empty, truncated, or not an engine/ONNX model at all
    │   └── VersionMismatchError  built by another TensorRT/ONNX version
    ├── IntegrityError            digest or HMAC mismatch (the model was not loaded)
    ├── InferenceError            a request failed (bad inputs, or the device failed it)
    │   └── InputError            rejected before anything was enqueued (also a ValueError)
    ├── RealtimeError             a real-time setting could not be applied
    ├── CommandError              an external command (nvpmodel, jetson_clocks) failed
    │   └── CommandTimeoutError   it did not answer in time (also a TimeoutError)
    └── RebootRequiredError       a power-mode switch that needs a reboot was refused
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CommandError",
    "CommandTimeoutError",
    "ConcurrentUseError",
    "CudaError",
    "EdgeRTError",
    "EngineLoadError",
    "InferenceError",
    "InputError",
    "IntegrityError",
    "InvalidArgumentError",
    "ModelFormatError",
    "NotSupportedError",
    "OutOfMemoryError",
    "PermissionDeniedError",
    "PoolExhausted",
    "RealtimeError",
    "RebootRequiredError",
    "RequestTimeoutError",
    "ResourceBusyError",
    "ResourceClosedError",
    "VersionMismatchError",
]


class EdgeRTError(Exception):
    """Base class of every error edgert raises.

    Args:
        message: What failed and why.
        hint: What the user should do next; appended to the message as ``Hint: ...``.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self._render())

    def _render(self) -> str:
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message

    def reword(self, *, message: str | None = None, hint: str | None = None) -> None:
        """Replace the message and/or hint of an error a lower layer raised, keeping its type
        and attributes (a caller that knows better what happened, or what to do, says so)."""
        if message is not None:
            self.message = message
        if hint is not None:
            self.hint = hint
        self.args = (self._render(),)

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle support: the error, its message, hint and attributes survive a process hop."""
        # Keyword-only constructors do not pickle by default; errors cross process boundaries
        # (pytest-xdist, multiprocessing workers), so rebuild from the rendered state.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[EdgeRTError], state: dict[str, object]) -> EdgeRTError:
    # MemoryError's own __new__ refuses subclasses created this way; BaseException's is safe.
    err = BaseException.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._render())
    return err


class CudaError(EdgeRTError):
    """A CUDA runtime or driver call failed.

    Attributes:
        code: The numeric CUDA status (``cudaError_t`` or ``CUresult``).
        name: Its symbolic name, e.g. ``cudaErrorInvalidValue``.
        call: The CUDA function that failed, when known.
    """

    def __init__(
        self,
        code: int,
        name: str,
        description: str = "",
        *,
        call: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.code = int(code)
        self.name = name
        self.description = description
        self.call = call
        where = f" in {call}" if call else ""
        text = f"{name}: {description}" if description else name
        super().__init__(f"{text}{where} (CUDA error {self.code})", hint=hint)


class NotSupportedError(EdgeRTError):
    """What was asked needs hardware, a driver or a package this machine does not have."""


class PermissionDeniedError(EdgeRTError, PermissionError):
    """The operating system refused an operation (EPERM or EACCES).

    Attributes:
        errno_value: The errno the OS returned, when there was one.
        path: The file the OS refused, when a file was refused (e.g. an unreadable model).
    """

    def __init__(self, message: str, *, hint: str | None = None, errno_value: int | None = None,
                 path: str | None = None):
        self.errno_value = errno_value
        self.path = path
        super().__init__(message, hint=hint)


class ResourceClosedError(EdgeRTError):
    """An object was used after ``close()``."""


class ResourceBusyError(EdgeRTError):
    """An object cannot be closed or reused while something still uses it (e.g. leases)."""


class OutOfMemoryError(EdgeRTError, MemoryError):
    """The OS or the device has no memory for an allocation."""


class InvalidArgumentError(EdgeRTError, ValueError):
    """An argument has a value edgert cannot use."""


class ConcurrentUseError(EdgeRTError):
    """An object that belongs to one thread at a time was used by two threads at once."""


class RequestTimeoutError(EdgeRTError, TimeoutError):
    """A wait (for a pool block, a free slot, a result) ran out of time."""


class PoolExhausted(EdgeRTError, MemoryError):
    """A :class:`~edgert.BufferPool` could not serve a request within its budget.

    Attributes:
        requested_bytes: The size asked for (before rounding to a size class).
        budget_bytes: The pool's hard limit.
        reserved_bytes: Bytes the pool holds from the allocator now.
        in_use_bytes: Bytes currently leased out.
    """

    def __init__(
        self,
        requested_bytes: int,
        *,
        budget_bytes: int,
        reserved_bytes: int,
        in_use_bytes: int,
        hint: str | None = None,
    ) -> None:
        self.requested_bytes = requested_bytes
        self.budget_bytes = budget_bytes
        self.reserved_bytes = reserved_bytes
        self.in_use_bytes = in_use_bytes
        super().__init__(
            f"pool exhausted: cannot serve {requested_bytes:,} bytes; budget {budget_bytes:,} "
            f"bytes, reserved {reserved_bytes:,}, in use {in_use_bytes:,}",
            hint=hint
            or "release leases sooner, raise max_bytes, or pass a timeout so acquire() waits",
        )


class EngineLoadError(EdgeRTError):
    """A model could not be loaded.

    Attributes:
        path: The file that was being loaded, if it came from a file.
        log_lines: TensorRT's (or ONNX Runtime's) own error lines for this load.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        path: str | None = None,
        log_lines: Sequence[str] = (),
    ) -> None:
        self.path = path
        self.log_lines = tuple(log_lines)
        super().__init__(message, hint=hint)

    def _render(self) -> str:
        text = self.message
        if self.log_lines:
            text += "\nRuntime said:\n" + "\n".join(f"  {line}" for line in self.log_lines)
        if self.hint:
            text += f"\nHint: {self.hint}"
        return text


class ModelFormatError(EngineLoadError):
    """The bytes are empty, truncated, or not a TensorRT plan or ONNX model."""


class VersionMismatchError(EngineLoadError):
    """The model was built by a TensorRT (or ONNX) version this runtime cannot read."""


class IntegrityError(EdgeRTError):
    """A model's SHA-256 digest or HMAC did not match; it was not deserialized."""


class InferenceError(EdgeRTError):
    """An inference request failed."""


class InputError(InferenceError, ValueError):
    """Inputs were rejected before anything was enqueued; the session stays usable."""


class RealtimeError(EdgeRTError):
    """A real-time setting (scheduling, affinity, memory locking) could not be applied.

    Attributes:
        errno_value: The errno the OS returned (e.g. ``errno.ENOMEM`` from mlockall), if any.
    """

    def __init__(self, message: str, *, hint: str | None = None, errno_value: int | None = None):
        self.errno_value = errno_value
        super().__init__(message, hint=hint)


class CommandError(EdgeRTError):
    """An external command failed.

    Attributes:
        argv: The command line.
        returncode: Its exit status, or ``None`` if it did not finish.
        stderr: What it printed on standard error.
    """

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message, hint=hint)


class CommandTimeoutError(CommandError, TimeoutError):
    """An external command did not finish within its timeout and was killed."""


class RebootRequiredError(EdgeRTError):
    """A power-mode switch needs a reboot and ``allow_reboot`` was not given."""


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, EdgeRTError):
        _cls.__module__ = "edgert"
del _cls
