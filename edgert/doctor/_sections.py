"""The doctor's probes, one function per section; each is run in isolation by :func:`run`."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edgert._version import __version__
from edgert.doctor._report import DoctorReport, Section, Verdict
from edgert.platform import find_tensorrt, read_jetson, read_system

if TYPE_CHECKING:
    from edgert.cuda import CudaStatus

__all__ = ["SECTIONS", "run_doctor"]


def system_section(root: Path) -> Section:
    """Kernel, preemption model, CPUs, Python."""
    s = Section(name="system", title="System")
    info = read_system(root)
    s.add("kernel", info.kernel_release)
    s.add("kernel_build", info.kernel_version)
    if info.preemption == "PREEMPT_RT":
        s.add("preemption", "PREEMPT_RT", Verdict.OK)
    elif info.preemption == "PREEMPT_DYNAMIC":
        mode = info.preempt_dynamic_mode
        value = f"PREEMPT_DYNAMIC ({mode})" if mode else "PREEMPT_DYNAMIC (mode not readable)"
        verdict = Verdict.OK if mode == "full" else Verdict.WARN
        s.add("preemption", value, verdict)
        if mode != "full":
            s.hints.append("boot with preempt=full (or a PREEMPT_RT kernel) for the lowest "
                           "scheduling latency; the active mode is in "
                           "/sys/kernel/debug/sched/preempt")
    elif info.preemption is None and root != Path("/"):  # a fake tree without it: a fact
        s.add("preemption", None, Verdict.INFO,
              "not readable in this tree (no proc/sys/kernel/version)")
    elif info.preemption is None:
        s.add("preemption", None, Verdict.WARN, "the kernel build string is not readable")
    else:
        s.add("preemption", info.preemption, Verdict.WARN)
        s.hints.append("this kernel is not fully preemptible: expect millisecond wake-up "
                       "outliers; use a PREEMPT_RT kernel for control loops (JetPack ships one "
                       "as an OTA package)")
    s.add("machine", info.machine)
    s.add("python", info.python)
    s.add("cpus_online", len(info.cpus_online))
    s.add("isolated_cpus", info.isolated_cpus)
    s.add("nohz_full_cpus", info.nohz_full_cpus)
    return s


def jetson_section(root: Path) -> Section:
    """Jetson model, L4T/JetPack release, nvpmodel mode."""
    s = Section(name="jetson", title="Jetson")
    info = read_jetson(root)
    s.add("is_jetson", info.is_jetson)
    if not info.is_jetson:
        s.add("model", info.model)
        return s
    s.add("model", info.model, Verdict.OK if info.model else Verdict.WARN)
    s.add("l4t_release", info.l4t_release,
          Verdict.OK if info.l4t_release else Verdict.WARN,
          None if info.l4t_release else "/etc/nv_tegra_release is missing or unreadable")
    s.add("jetpack", info.jetpack)
    mode_name = None
    try:
        from edgert.power import NvpModel

        model = NvpModel(root=root)
        if info.nvpmodel_mode_id is not None:
            for mode in model.modes:
                if mode.id == info.nvpmodel_mode_id:
                    mode_name = mode.name
    except Exception:  # nvpmodel.conf absent or malformed: report the id alone
        mode_name = None
    if info.nvpmodel_mode_id is None:
        s.add("nvpmodel_mode", None, Verdict.INFO, "no persisted mode in /var/lib/nvpmodel/status")
    else:
        label = f"{info.nvpmodel_mode_id} ({mode_name})" if mode_name else str(
            info.nvpmodel_mode_id)
        s.add("nvpmodel_mode", label)
    return s


def gpu_section(root: Path) -> Section:
    """Driver, CUDA runtime and devices (always of the live machine)."""
    from edgert import cuda

    s = Section(name="gpu", title="GPU (CUDA)")
    status = cuda.probe()
    s.add("cuda_python", status.bindings_version)
    s.add("driver_cuda_version", _ver(status.driver_version))
    s.add("runtime_cuda_version", _ver(status.runtime_version))
    s.add("available", status.available, _availability_verdict(status), status.reason)
    if root != Path("/"):
        s.add("note", "GPU facts come from the live driver, not from --root")
    if not status.available:
        if status.driver_version is None and status.runtime_version is not None:
            s.add("runs_on", "no CUDA device: models run on the CPU through ONNX Runtime")
            s.hints.append("this is fine for trying edgert; for CUDA, TensorRT and the latency "
                           "figures of a robot, install the NVIDIA driver on a machine with a GPU")
        else:
            s.hints.append("without a GPU edgert runs models on the CPU through ONNX Runtime "
                           "(device='host'); fix the driver for CUDA: the reason is above")
        return s
    devices = []
    for i in range(status.device_count):
        p = cuda.device_properties(i)
        devices.append({
            "index": p.index, "name": p.name,
            "compute_capability": f"{p.compute_capability[0]}.{p.compute_capability[1]}",
            "total_memory_mib": p.total_memory_bytes >> 20,
            "multiprocessors": p.multiprocessor_count, "integrated": p.integrated,
            "can_map_host_memory": p.can_map_host_memory,
            "memory_pools": p.memory_pools_supported,
            "stream_priorities": f"{p.stream_priority_range[0]} (lowest) .. "
                                 f"{p.stream_priority_range[1]} (highest)",
            "pci_bus_id": p.pci_bus_id,
        })
    s.add("device_count", status.device_count)
    for d in devices:
        s.add(f"device{d['index']}", d)
    from edgert.doctor._green import add_green_context_checks

    add_green_context_checks(s, status.device_count)
    return s


def _availability_verdict(status: CudaStatus) -> Verdict:
    """ok with a device; info without an NVIDIA driver (a CPU machine: models run through ONNX
    Runtime, nothing is broken); warn when the driver sees no device (a container without GPU
    access, say); fail when a driver is there but CUDA cannot use it (too old, broken)."""
    if status.available:
        return Verdict.OK
    if status.driver_version is None and status.runtime_version is not None:
        return Verdict.INFO
    if status.device_count == 0 and "cudaErrorNoDevice" in (status.reason or ""):
        return Verdict.WARN
    return Verdict.FAIL


def tensorrt_section(root: Path) -> Section:
    """Which TensorRT flavours import (no Runtime is created)."""
    s = Section(name="tensorrt", title="TensorRT")
    flavours = find_tensorrt()
    usable = [f for f in flavours if f.version is not None]
    for f in flavours:
        if f.version is not None:
            s.add(f.flavour, f"{f.module} {f.version}", Verdict.OK)
        elif f.error is not None:
            s.add(f.flavour, f"{f.module}: import failed", Verdict.WARN, f.error)
        else:
            s.add(f.flavour, "not installed")
    try:
        import onnxruntime

        s.add("onnxruntime", onnxruntime.__version__, Verdict.OK)
    except Exception:
        s.add("onnxruntime", "not installed")
    if not usable:
        s.verdict_override = Verdict.WARN
        s.hints.append("no TensorRT runtime imports: on Jetson it comes with JetPack "
                       "(apt install python3-libnvinfer); on x86 `pip install edgert[lean]` gives "
                       "the lean runtime for version-compatible plans, and NVIDIA's package index "
                       "gives full TensorRT (pip install tensorrt). ONNX models still run through "
                       "ONNX Runtime")
    elif not any(f.flavour == "full" for f in usable):
        s.hints.append("only the lean/dispatch runtime is present: it loads version-compatible "
                       "plans only (build with --versionCompatible)")
    return s


def _ver(v: tuple[int, int] | None) -> str | None:
    return f"{v[0]}.{v[1]}" if v else None


SECTIONS: dict[str, Callable[[Path], Section]] = {
    "system": system_section,
    "jetson": jetson_section,
    "gpu": gpu_section,
    "tensorrt": tensorrt_section,
}


def run_doctor(root: Path | str = Path("/"),
               sections: dict[str, Callable[[Path], Section]] | None = None) -> DoctorReport:
    """Build the doctor's report. Each probe is isolated: one that fails becomes an error line.

    Args:
        root: Where /proc, /sys, /etc and /var are read from (a fake tree in tests).
        sections: Probes to run (default: all, in report order).

    Returns:
        The report; it never raises for a machine's state.
    """
    root = Path(root)
    out = []
    for name, probe in (sections or _all_sections()).items():
        try:
            out.append(probe(root))
        except Exception as err:
            where = traceback.extract_tb(err.__traceback__)[-1]
            sec = Section(name=name, title=name.capitalize())
            sec.error = (f"{type(err).__name__}: {err} "
                         f"({Path(where.filename).name}:{where.lineno})")
            out.append(sec)
    return DoctorReport(edgert_version=__version__, root=str(root), sections=out)


def _all_sections() -> dict[str, Callable[[Path], Section]]:
    from edgert.doctor._realtime import realtime_section
    from edgert.doctor._thermal import thermal_section

    return {**SECTIONS, "realtime": realtime_section, "thermal": thermal_section}
