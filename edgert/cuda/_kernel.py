"""Kernels compiled at run time with NVRTC and launched through the driver API.

Used by :class:`edgert.kernels.KernelExecutable` (what ``edgert bench`` runs on a GPU) and the GPU
tests and benchmarks, where no TensorRT engine exists. Launch arguments are packed once into a
:class:`KernelArgs` whose values can be changed in place, so a hot loop launches with no per-call
packing or allocation.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import Any

from edgert._owner import Owner
from edgert.cuda._api import check, driver, nvrtc, runtime
from edgert.cuda._device import device_properties, require
from edgert.cuda._stream import Stream, _OnDevice
from edgert.errors import CudaError, InvalidArgumentError, NotSupportedError

__all__ = ["Kernel", "KernelArgs", "Module", "compile_module"]

_CTYPES = {
    "ptr": ctypes.c_void_p,
    "i32": ctypes.c_int32,
    "u32": ctypes.c_uint32,
    "i64": ctypes.c_int64,
    "u64": ctypes.c_uint64,
    "f32": ctypes.c_float,
    "f64": ctypes.c_double,
}


class KernelArgs:
    """Kernel parameters packed once; values can be updated in place between launches.

    Args:
        types: One type code per parameter: ``ptr``, ``i32``, ``u32``, ``i64``, ``u64``, ``f32``
            or ``f64``.
        values: Initial values (default zeros).

    Raises:
        InvalidArgumentError: An unknown type code or a count mismatch.
    """

    __slots__ = ("_array", "_slots")

    def __init__(self, types: Sequence[str], values: Sequence[int | float] | None = None) -> None:
        try:
            self._slots: list[Any] = [_CTYPES[t]() for t in types]
        except KeyError as err:
            raise InvalidArgumentError(f"unknown kernel argument type {err.args[0]!r}",
                                       hint=f"use one of {sorted(_CTYPES)}") from None
        self._array = (ctypes.c_void_p * max(1, len(self._slots)))(
            *[ctypes.addressof(s) for s in self._slots])
        if values is not None:
            if len(values) != len(self._slots):
                raise InvalidArgumentError(
                    f"{len(values)} values for {len(self._slots)} kernel arguments")
            for i, v in enumerate(values):
                self[i] = v

    def __setitem__(self, index: int, value: int | float) -> None:
        self._slots[index].value = value

    def __getitem__(self, index: int) -> int | float:
        value: int | float = self._slots[index].value
        return value

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def address(self) -> int:
        """Address of the ``void*[]`` array the driver reads the parameters from."""
        return ctypes.addressof(self._array)


def _unload(mod: Any) -> None:
    driver().cuModuleUnload(mod)


class Kernel:
    """One ``extern "C"`` function of a :class:`Module`. Lives as long as its module."""

    __slots__ = ("_func", "_launch", "_module", "name")

    def __init__(self, module: Module, func: Any, name: str) -> None:
        self._module = module
        self._func = func
        self.name = name
        self._launch = driver().cuLaunchKernel

    @property
    def handle(self) -> Any:
        """The raw ``CUfunction``, for hot loops that call ``cuLaunchKernel`` themselves.

        Valid while its :class:`Module` is open.
        """
        return self._func

    def max_blocks_per_sm(self, block_threads: int, shared_mem_bytes: int = 0) -> int:
        """How many blocks of this kernel fit on one SM at once (the occupancy calculator).

        A persistent kernel launches ``sm_count * max_blocks_per_sm(...)`` blocks.

        Raises:
            CudaError: The driver refused (e.g. more threads than a block can have).
        """
        return int(check(driver().cuOccupancyMaxActiveBlocksPerMultiprocessor(
            self._func, block_threads, shared_mem_bytes),
            call=f"cuOccupancyMaxActiveBlocksPerMultiprocessor({self.name})"))

    def launch(self, grid: tuple[int, int, int], block: tuple[int, int, int], args: KernelArgs,
               *, stream: Stream, shared_mem_bytes: int = 0) -> None:
        """Enqueue the kernel on ``stream``.

        Raises:
            CudaError: The launch was refused (bad configuration or arguments).
        """
        err = self._launch(self._func, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                           shared_mem_bytes, stream.raw, args.address, 0)[0]
        if int(err) != 0:
            check(err, call=f"cuLaunchKernel({self.name})")


class Module(Owner):
    """A loaded CUDA module (compiled code) owned by this object."""

    def __init__(self, handle: Any, device: int, names: Sequence[str]) -> None:
        self._handle = handle
        self._device = device
        self._kernels: dict[str, Kernel] = {}
        self._own(functools.partial(_unload, handle), "CUDA module")
        drv = driver()
        for name in names:
            func = check(drv.cuModuleGetFunction(handle, name.encode()),
                         call=f"cuModuleGetFunction({name})")
            self._kernels[name] = Kernel(self, func, name)

    def kernel(self, name: str) -> Kernel:
        """Return the kernel called ``name``.

        Raises:
            InvalidArgumentError: No such kernel was named at compile time.
        """
        self._check_open()
        try:
            return self._kernels[name]
        except KeyError:
            raise InvalidArgumentError(f"no kernel {name!r} in this module",
                                       hint=f"kernels: {sorted(self._kernels)}") from None


def _nvrtc_log(nv: Any, prog: Any) -> str:
    try:
        size = check(nv.nvrtcGetProgramLogSize(prog))
        buf = b" " * int(size)
        check(nv.nvrtcGetProgramLog(prog, buf))
        return buf.decode(errors="replace").strip("\x00 \n")
    except Exception:
        return ""


def compile_module(source: str, names: Sequence[str], *, device: int = 0,
                   options: Sequence[str] = (), program_name: str = "edgert.cu") -> Module:
    """Compile CUDA C++ ``source`` with NVRTC for ``device`` and load it.

    Args:
        source: CUDA C++ with the kernels declared ``extern "C" __global__``.
        names: The kernel names to look up.
        device: The CUDA device to compile for and load on.
        options: Extra NVRTC options (e.g. ``-use_fast_math``).
        program_name: Name shown in compiler messages.

    Raises:
        NotSupportedError: No CUDA device, or NVRTC is not installed.
        CudaError: Compilation failed (the compiler's log is in the hint) or loading failed.
    """
    require(device)
    try:
        nv = nvrtc()
        nv.nvrtcVersion()
    except Exception as err:
        raise NotSupportedError(
            f"NVRTC (the CUDA run-time compiler) is not usable: {err}",
            hint="install the CUDA toolkit's NVRTC (pip install nvidia-cuda-nvrtc)",
        ) from err
    props = device_properties(device)
    major, minor = props.compute_capability
    prog = check(nv.nvrtcCreateProgram(source.encode(), program_name.encode(), 0, [], []),
                 call="nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture=sm_{major}{minor}".encode(), b"-default-device",
                *(o.encode() for o in options)]
        status = nv.nvrtcCompileProgram(prog, len(opts), opts)[0]
        if int(status) != 0:
            log = _nvrtc_log(nv, prog)
            raise CudaError(int(status), getattr(status, "name", "NVRTC_ERROR"),
                            "kernel compilation failed", call="nvrtcCompileProgram",
                            hint=f"compiler log:\n{log}" if log else None)
        size = check(nv.nvrtcGetCUBINSize(prog), call="nvrtcGetCUBINSize")
        image = b" " * int(size)
        check(nv.nvrtcGetCUBIN(prog, image), call="nvrtcGetCUBIN")
    finally:
        nv.nvrtcDestroyProgram(prog)
    rt = runtime()
    with _OnDevice(device):
        check(rt.cudaFree(0), call="cudaFree(0)")  # makes the primary context current
        handle = check(driver().cuModuleLoadData(image), call="cuModuleLoadData")
    return Module(handle, device, names)
