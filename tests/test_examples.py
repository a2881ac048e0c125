"""Each example runs briefly as its own process, as a user would start it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.testing.jetson import build_jetson_tree

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run_example(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def test_control_node_plain_loop_without_thermal_zones(tmp_path: Path) -> None:
    from edgert.testing.jetson import build_bare_tree

    with build_bare_tree(tmp_path / "bare") as tree:
        proc = run_example("control_node.py", "--duration", "0.4", "--root", str(tree.root))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "rclpy not found: a plain loop" in out
    assert "no thermal zones here" in out
    assert "at 500 Hz" in out
    [segment] = [line for line in out.splitlines() if line.startswith("500 Hz: ")]
    steps = int(segment.split()[2])
    assert 150 <= steps <= 200  # 0.4 s at 500 Hz, one loop


def test_control_node_halves_its_rate_when_hot_at_start(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path / "j", temps={"tj": 92.0}) as tree:  # trip 99: "hot" at 89
        proc = run_example("control_node.py", "--duration", "0.3", "--root", str(tree.root))
    assert proc.returncode == 0, proc.stderr
    assert "thermal level nominal -> hot at 92.0 °C: rate 500 -> 250 Hz" in proc.stdout
    assert "level hot, passive trip 99.0 °C" in proc.stdout
    assert [line.split(":")[0] for line in proc.stdout.splitlines()
            if line.endswith("skipped periods")] == ["250 Hz"]


def test_control_node_slows_down_when_it_heats_up_while_running(tmp_path: Path) -> None:
    with build_jetson_tree(tmp_path / "j", temps={"tj": 50.0}) as tree:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "control_node.py"), "--duration", "120", "--root",
             str(tree.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                # Heat up only once the loop runs at its first rate: a level change before it
                # starts would make 125 Hz the first rate, with nothing to restart.
                if line.startswith("control loop started at 500 Hz"):
                    break
            tree.set_temp("tj", 96.0)  # critical: 4 °C below the trip; the governor polls 2 Hz
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("control loop restarted at 125 Hz"):
                    proc.send_signal(2)  # Ctrl-C: the node stops and prints its loops
                    break
            # Read on through the same buffered stream: communicate() reads the raw pipe and
            # would lose lines that the iteration above has already buffered.
            out = proc.stdout.read()
            proc.wait(timeout=60)
            assert proc.stderr is not None
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err
    assert "thermal level nominal -> critical at 96.0 °C" in "".join(lines)
    segments = [line.split(":")[0] for line in out.splitlines() if line.endswith("periods")]
    assert segments == ["500 Hz", "125 Hz"]


def test_throughput_with_slots() -> None:
    proc = run_example("throughput.py", "--batch", "8", "--slots", "1", "2", "--duration",
                       "0.2")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("slots ")]
    assert [line.split()[1] for line in lines] == ["1", "2"]
    assert all("requests/s" in line and "samples/s" in line for line in lines)


def test_zero_copy_explains_itself_without_cuda() -> None:
    import edgert.cuda

    if edgert.cuda.is_available():
        pytest.skip("this machine has CUDA: the GPU test runs the example")
    proc = run_example("jetson_zero_copy.py", "--requests", "10")
    assert proc.returncode == 2
    assert proc.stderr.startswith("this example needs a CUDA device: ")


@pytest.mark.gpu
def test_zero_copy_on_a_gpu() -> None:
    proc = run_example("jetson_zero_copy.py", "--requests", "200")
    assert proc.returncode == 0, proc.stderr
    assert "200 requests: round trip p50" in proc.stdout
    assert "H2D copies recorded: 0" in proc.stdout
    assert "CUDA graphs captured: 1" in proc.stdout
