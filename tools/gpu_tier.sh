#!/usr/bin/env bash
# The GPU tier and GPU benchmarks, as run on the device machine (see docs/cli.md and the issues):
#   tools/gpu_tier.sh tests   # pytest -m gpu (everything GPU-marked) + the doctor's JSON
#   tools/gpu_tier.sh bench   # benchmarks/{memory,session,power}.py and `edgert bench`
# Run from the repository root on a machine with a CUDA device. Where the lean/dispatch runtime
# wheels were carried in .whl/ (../shared/tools/device-wheels.sh), they are installed first.
# Everything lands in $OUT (default ./gpu-out); the last lines printed are the summaries.
set -uo pipefail
phase=${1:-tests}
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,temperature.gpu,clocks.sm --format=csv,noheader \
  | tee "$out/gpu.txt"
case $phase in
  tests)
    python3 -m edgert doctor --json > "$out/doctor.json"; echo "doctor rc=$?"
    python3 -m pytest -m gpu -q -p no:cacheprovider -rs tests 2>&1 | tee "$out/pytest_gpu.log" \
      | tail -n 25
    python3 -m pytest -q -p no:cacheprovider tests/test_bench.py tests/test_bench_cli.py \
      tests/test_pytest_plugin.py tests/test_examples.py 2>&1 | tee "$out/pytest_bench.log" \
      | tail -n 8
    ;;
  bench)
    python3 benchmarks/memory.py --json "$out/memory.json" > "$out/memory.txt" 2>&1
    echo "memory rc=$?"
    python3 benchmarks/session.py --json "$out/session.json" > "$out/session.txt" 2>&1
    echo "session rc=$?"
    python3 benchmarks/power.py --iterations 5000 --json "$out/power.json" > "$out/power.txt" 2>&1
    echo "power rc=$?"
    python3 -m edgert bench --duration 5 --json "$out/bench_default.json" > "$out/bench.txt" 2>&1
    echo "bench rc=$?"
    tail -n 40 "$out/session.txt"; tail -n 25 "$out/memory.txt"; tail -n 30 "$out/bench.txt"
    ;;
  *) echo "usage: $0 tests|bench" >&2; exit 2 ;;
esac
