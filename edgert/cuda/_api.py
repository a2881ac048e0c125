"""The one place in edgert that imports cuda-python's bindings, and the status checker.

cuda-python 12.6+ and 13.x ship the bindings as ``cuda.bindings.{runtime,driver,nvrtc}``; older
12.x releases exposed them as ``cuda.cudart``/``cuda.cuda``/``cuda.nvrtc``. Both are accepted.
Importing is lazy: ``import edgert`` never loads CUDA, and a control process that only uses
``edgert.realtime`` or ``edgert.power`` never pays for it.

The runtime API is used for everything except kernel modules (NVRTC output is loaded through the
driver API). Without an NVIDIA driver the runtime API returns ``cudaErrorInsufficientDriver``,
while the driver API raises from its loader; callers go through :func:`runtime` first.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, NoReturn

from edgert.errors import CudaError, NotSupportedError

__all__ = ["bindings_version", "check", "cuda_error", "driver", "event_query_fn", "nvrtc",
           "raise_cuda", "runtime"]

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}

_NEW = {"runtime": "cuda.bindings.runtime", "driver": "cuda.bindings.driver",
        "nvrtc": "cuda.bindings.nvrtc"}
_OLD = {"runtime": "cuda.cudart", "driver": "cuda.cuda", "nvrtc": "cuda.nvrtc"}


def _load(kind: str) -> ModuleType:
    mod = _modules.get(kind)
    if mod is not None:
        return mod
    with _lock:
        mod = _modules.get(kind)
        if mod is not None:
            return mod
        import importlib

        errors: list[str] = []
        for name in (_NEW[kind], _OLD[kind]):
            try:
                mod = importlib.import_module(name)
                break
            except ImportError as err:
                errors.append(f"{name}: {err}")
        if mod is None:
            raise NotSupportedError(
                "cuda-python is not importable (" + "; ".join(errors) + ")",
                hint="install it with `pip install 'cuda-python>=12.6'` (an edgert dependency)",
            )
        _modules[kind] = mod
        return mod


def runtime() -> Any:
    """Return the CUDA runtime bindings module (``cuda.bindings.runtime``).

    Raises:
        NotSupportedError: cuda-python is not installed.
    """
    return _load("runtime")


def driver() -> Any:
    """Return the CUDA driver bindings module (``cuda.bindings.driver``).

    Raises:
        NotSupportedError: cuda-python is not installed.
    """
    return _load("driver")


def nvrtc() -> Any:
    """Return the NVRTC bindings module (``cuda.bindings.nvrtc``).

    Raises:
        NotSupportedError: cuda-python is not installed.
    """
    return _load("nvrtc")


_event_query: Any = None


def event_query_fn() -> Any:
    """The driver's ``cuEventQuery`` through ctypes, taking a raw event handle (an int).

    A busy-wait calls it in a loop: through cuda-python's wrapper one query costs about 2.4 us
    on an H200 host (issue 15), through ctypes a fraction of that, so a spin notices completion
    sooner and burns less. Runtime ``cudaEvent_t`` and driver ``CUevent`` handles are the same
    object (CUDA Runtime API, "Interactions with the CUDA Driver API"). It returns the driver's
    ``CUresult``: 0 done, 600 not ready (the runtime's numbers for both); ask the runtime for
    anything else, to report it in the runtime's words.

    Returns:
        The ctypes function, or None where libcuda cannot be loaded (the caller then queries
        through the runtime bindings).
    """
    global _event_query
    if _event_query is None:
        import ctypes

        try:
            fn = ctypes.CDLL("libcuda.so.1").cuEventQuery
        except (OSError, AttributeError):
            _event_query = False
        else:
            fn.argtypes = [ctypes.c_void_p]
            fn.restype = ctypes.c_int
            _event_query = fn
    return _event_query or None


def bindings_version() -> str | None:
    """The installed cuda-bindings (or cuda-python) version, or None if not installed."""
    try:
        import cuda.bindings as cb

        return str(cb.__version__)
    except Exception:
        pass
    try:
        from importlib.metadata import version

        return version("cuda-python")
    except Exception:
        return None


# What to do next, for the statuses a robot engineer actually meets.
_HINTS: dict[str, str] = {
    "cudaErrorInsufficientDriver": "install or upgrade the NVIDIA driver (nvidia-smi must work), "
    "or use device='host'",
    "cudaErrorNoDevice": "no CUDA device is visible: check nvidia-smi and CUDA_VISIBLE_DEVICES, "
    "or use device='host'",
    "cudaErrorInvalidDevice": "the device index is out of range: see `edgert doctor` for the "
    "devices present",
    "cudaErrorMemoryAllocation": "the allocation did not fit: free memory, lower the pool budget "
    "or the batch size",
    "cudaErrorInvalidValue": "an argument is out of range (a null or foreign pointer, a zero or "
    "too large size): check the call's arguments",
    "cudaErrorStreamCaptureImplicit": "work on the legacy default stream during a capture: "
    "use non-blocking streams and thread-local capture mode",
    "cudaErrorStreamCaptureUnsupported": "this call cannot be captured into a CUDA graph: run it "
    "before capturing, or disable graphs (cuda_graph='off')",
    "cudaErrorStreamCaptureInvalidated": "the capture was invalidated by an illegal operation; "
    "disable graphs for this executable (cuda_graph='off')",
    "cudaErrorNotReady": "the work has not finished: synchronize first",
    "cudaErrorIllegalAddress": "a kernel touched invalid memory; the CUDA context is now "
    "unusable: restart the process (run under compute-sanitizer to find it)",
    "cudaErrorLaunchFailure": "a kernel failed; the CUDA context is now unusable: restart the "
    "process",
    "cudaErrorHostMemoryAlreadyRegistered": "this memory is already page-locked: use it as it is",
    "cudaErrorHostMemoryNotRegistered": "this memory was not registered with cudaHostRegister",
}
_DEFAULT_HINT = ("check the call's arguments; CUDA reports errors asynchronously, so set "
                 "CUDA_LAUNCH_BLOCKING=1 to find the call that really failed")


def _status_name(status: Any) -> str:
    name = getattr(status, "name", None)
    return str(name) if name else f"CUDA status {int(status)}"


def _describe(status: Any) -> str:
    try:
        rt = runtime()
        if isinstance(status, rt.cudaError_t):
            err, text = rt.cudaGetErrorString(status)
            return text.decode() if isinstance(text, bytes) else str(text)
        drv = driver()
        if isinstance(status, drv.CUresult):
            err, text = drv.cuGetErrorString(status)
            if int(err) == 0 and text is not None:
                return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # describing an error must never raise a second one
        pass
    return ""


def cuda_error(status: Any, *, call: str | None = None, hint: str | None = None) -> CudaError:
    """The :class:`CudaError` for a failed status (not raised)."""
    name = _status_name(status)
    return CudaError(int(status), name, _describe(status), call=call,
                     hint=hint or _HINTS.get(name, _DEFAULT_HINT))


def raise_cuda(status: Any, *, call: str | None = None, hint: str | None = None) -> NoReturn:
    """Raise :class:`CudaError` for a failed status.

    Raises:
        CudaError: Always.
    """
    raise cuda_error(status, call=call, hint=hint)


def check(result: Any, *, call: str | None = None, hint: str | None = None) -> Any:
    """Turn what a cuda-python call returned into its value, or raise.

    cuda-python returns ``(status,)`` or ``(status, value, ...)``; a bare status is accepted too.

    Args:
        result: The call's return value.
        call: The function's name, for the message.
        hint: What to do next, overriding the built-in hint for this status.

    Returns:
        None for a bare status, the value for one value, else the tuple of values.

    Raises:
        CudaError: The status is not success; the message has the error name, CUDA's own
            description and what to do next.
    """
    if isinstance(result, tuple):
        status = result[0]
        rest = result[1:]
    else:
        status = result
        rest = ()
    if int(status) != 0:
        raise_cuda(status, call=call, hint=hint)
    if not rest:
        return None
    if len(rest) == 1:
        return rest[0]
    return rest

