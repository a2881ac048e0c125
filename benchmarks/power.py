"""Read cost of edgert's power sensors: thermal zones, power rails and NVML.

On any machine it builds fake Jetson trees (edgert.testing.jetson) and times ThermalZones.read(),
ThermalZones.temp_c("tj") and PowerRails.read() against the floor of one raw
os.open/os.read/os.close of a single attribute, measured in the same run. With --root / on a real
Jetson it times the real sysfs instead (kernel sensor latency then dominates). Where NVML works
it also times NvmlSensors.read() and temperature_c() against a raw pynvml temperature call.

    python benchmarks/power.py                 # table
    python benchmarks/power.py --json out.json # table and JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgert.power import PowerRails, ThermalZones


def measure(fn: Callable[[], object], iterations: int, warmup: int = 200) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(iterations):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    samples.sort()
    return {
        "iterations": iterations,
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "max_us": samples[-1] / 1000,
    }


def raw_read(path: str) -> Callable[[], bytes]:
    flags = os.O_RDONLY | os.O_NONBLOCK

    def read() -> bytes:
        fd = os.open(path, flags)
        try:
            return os.read(fd, 4096)
        finally:
            os.close(fd)

    return read


def bench_tree(label: str, root: Path, iterations: int) -> dict[str, Any]:
    zones = ThermalZones(root)
    rails = PowerRails(root)
    result: dict[str, Any] = {"tree": label, "zones": len(zones.names),
                              "sensors": len(zones.read()), "rails": len(rails.names)}
    try:
        tj_key = zones.resolve("tj")
    except Exception:
        tj_key = None
    floor_path = next((str(root / "sys/class/thermal" / p / "temp")
                       for p in sorted(os.listdir(root / "sys/class/thermal"))
                       if p.startswith("thermal_zone")), None) if (
        root / "sys/class/thermal").is_dir() else None
    if floor_path is not None:
        result["raw_single_read"] = measure(raw_read(floor_path), iterations)
    result["zones_read_all"] = measure(zones.read, iterations)
    if tj_key is not None:
        result["zone_tj"] = measure(lambda: zones.temp_c(tj_key), iterations)
    if rails.names:
        result["rails_read_all"] = measure(rails.read, iterations)
        result["rails_total"] = measure(rails.total, iterations)
    floor = result.get("raw_single_read", {}).get("p50_us")
    if floor:
        result["ratios_to_single_read_p50"] = {
            k: round(v["p50_us"] / floor, 2) for k, v in result.items()
            if isinstance(v, dict) and "p50_us" in v and k != "raw_single_read"}
    return result


def bench_nvml(iterations: int) -> dict[str, Any]:
    try:
        import pynvml

        from edgert.power import NvmlSensors

        sensors = NvmlSensors(0)
    except Exception as err:
        return {"available": False, "reason": str(err).splitlines()[0]}
    with sensors:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        raw = measure(lambda: pynvml.nvmlDeviceGetTemperature(handle, 0), iterations)
        raw_v = None
        if hasattr(pynvml, "nvmlDeviceGetTemperatureV"):
            raw_v = measure(lambda: pynvml.nvmlDeviceGetTemperatureV(handle, 0), iterations)
        temp = measure(sensors.temperature_c, iterations)
        read = measure(sensors.read, iterations)
        sample = sensors.read()
        return {
            "available": True, "device": sensors.name,
            "raw_pynvml_temperature": raw, "raw_pynvml_temperature_v": raw_v,
            "temperature_c": temp, "read_all": read,
            "ratios_to_raw_temperature_p50": {
                "temperature_c": round(temp["p50_us"] / raw["p50_us"], 2),
                "read_all": round(read["p50_us"] / raw["p50_us"], 2),
            },
            "fields_supported": [k for k in ("temperature_c", "power_mw", "power_limit_mw",
                                             "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct",
                                             "mem_util_pct", "clock_event_mask")
                                 if getattr(sample, k) is not None],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--root", type=Path, default=None,
                        help="time this real root (e.g. /) instead of fake trees")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--no-nvml", action="store_true")
    args = parser.parse_args()
    if args.iterations < 1:
        parser.error("--iterations must be 1 or more")

    results: dict[str, Any] = {
        "benchmark": "power", "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "trees": [],
    }
    if args.root is not None:
        results["trees"].append(bench_tree(str(args.root), args.root, args.iterations))
    else:
        from edgert.testing.jetson import build_jetson_tree

        for flavour in ("jp6-orin-nx", "jp5-agx-orin"):
            with tempfile.TemporaryDirectory() as tmp, build_jetson_tree(Path(tmp), flavour) as t:
                results["trees"].append(bench_tree(f"fake {flavour}", t.root, args.iterations))
    if not args.no_nvml:
        results["nvml"] = bench_nvml(max(1000, args.iterations // 4))

    print(f"{'tree / measurement':44} {'p50 µs':>9} {'p99 µs':>9} {'x floor':>8}")
    for tree in results["trees"]:
        print(f"{tree['tree']} ({tree['sensors']} temperature sensors, {tree['rails']} rails)")
        ratios = tree.get("ratios_to_single_read_p50", {})
        for key, value in tree.items():
            if isinstance(value, dict) and "p50_us" in value:
                ratio = ratios.get(key)
                print(f"  {key:42} {value['p50_us']:9.2f} {value['p99_us']:9.2f} "
                      f"{'' if ratio is None else f'{ratio:8.2f}'}")
    nvml = results.get("nvml")
    if nvml is not None:
        if nvml.get("available"):
            print(f"NVML ({nvml['device']}; supported: {', '.join(nvml['fields_supported'])})")
            for key in ("raw_pynvml_temperature", "raw_pynvml_temperature_v", "temperature_c",
                        "read_all"):
                v = nvml[key]
                if v is None:
                    continue
                print(f"  {key:42} {v['p50_us']:9.2f} {v['p99_us']:9.2f}")
        else:
            print(f"NVML: not available ({nvml['reason']})")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
