#!/usr/bin/env python3
"""A ROS 2-style control node: the bundled policy at 500 Hz, real time, slower when hot.

    python examples/control_node.py --duration 10
    python examples/control_node.py --duration 2 --root /tmp/jetson   # a fake Jetson tree

With ``rclpy`` installed this is a ROS 2 node: observations arrive on ``obs`` and actions go out
on ``actions`` (``std_msgs/Float32MultiArray``); rclpy spins in its own thread. Without rclpy a
plain loop feeds synthetic observations. Either way:

* the model is loaded, the session made and warmed up, and every helper thread (rclpy, the
  thermal governor) started *before* the control thread goes real time, so none of them
  inherits SCHED_FIFO (docs/realtime.md, "create helpers first");
* the control thread runs a :class:`~edgert.realtime.PeriodicLoop` under
  ``RealtimePolicy.control_loop(strict=False)``: what the OS refuses is printed once, and the
  loop runs anyway;
* a :class:`~edgert.power.ThermalGovernor` watches the SoC and lowers the rate when hot: half at
  ``hot`` (10 °C below the passive trip), a quarter at ``critical`` (4 °C below). The step sees
  the new rate and ends its loop; the next loop runs at the new period.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgert.engine import Engine
from edgert.models import OBS_DIM, bundled_model_path
from edgert.power import ThermalGovernor, ThermalLevel, ThermalZones
from edgert.realtime import LoopReport, PeriodicLoop, RealtimePolicy, Tick
from edgert.session import InferenceSession

LEVELS = (
    ThermalLevel(name="nominal"),
    ThermalLevel(name="hot", margin_c=10.0, hysteresis_c=4.0, min_dwell_s=10.0),
    ThermalLevel(name="critical", margin_c=4.0, hysteresis_c=2.0, min_dwell_s=10.0),
)
RATE_FACTOR = {"nominal": 1.0, "hot": 0.5, "critical": 0.25}


class Ros2Io:
    """Observations from the ``obs`` topic, actions to ``actions`` (only when rclpy exists)."""

    def __init__(self, rclpy: Any) -> None:
        from std_msgs.msg import Float32MultiArray

        self._rclpy = rclpy
        self._msg = Float32MultiArray
        rclpy.init()
        self.node = rclpy.create_node("edgert_control")
        self.latest: np.ndarray[Any, Any] | None = None
        self.node.create_subscription(Float32MultiArray, "obs", self._on_obs, 1)
        self._pub = self.node.create_publisher(Float32MultiArray, "actions", 1)
        self._spin = threading.Thread(target=rclpy.spin, args=(self.node,), daemon=True)
        self._spin.start()

    def _on_obs(self, msg: Any) -> None:
        data = np.asarray(msg.data, dtype=np.float32)
        if data.size == OBS_DIM:
            self.latest = data

    def observe(self, obs: np.ndarray[Any, Any], tick: Tick) -> None:
        latest = self.latest
        if latest is not None:
            obs[0, :] = latest

    def publish(self, actions: np.ndarray[Any, Any]) -> None:
        msg = self._msg()
        msg.data = actions.ravel().tolist()
        self._pub.publish(msg)

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.shutdown()


class PlainIo:
    """Synthetic observations (slow sine waves), computed in place: no allocation per step."""

    def __init__(self) -> None:
        self._phases = np.linspace(0.0, np.pi, OBS_DIM, dtype=np.float32)
        self.published = 0

    def observe(self, obs: np.ndarray[Any, Any], tick: Tick) -> None:
        np.add(self._phases, np.float32(tick.wake_ns * 1e-9), out=obs[0])
        np.sin(obs[0], out=obs[0])

    def publish(self, actions: np.ndarray[Any, Any]) -> None:
        self.published += 1

    def close(self) -> None:
        pass


class ControlNode:
    """The control loop: infer every period; restart at a new period when the rate changes."""

    def __init__(self, session: InferenceSession, io: Any, *, rate_hz: float,
                 policy: RealtimePolicy) -> None:
        self.session = session
        self.io = io
        self.base_rate_hz = rate_hz
        self.rate_hz = rate_hz
        self.policy = policy
        self.inputs = {"obs": np.zeros((1, OBS_DIM), np.float32)}
        self.segments: list[tuple[float, LoopReport]] = []
        self._loop: PeriodicLoop | None = None
        self._segment_rate = rate_hz
        self._stopping = False

    def on_level(self, change: Any) -> None:
        """ThermalGovernor callback (its own thread): only records the new rate."""
        rate = self.base_rate_hz * RATE_FACTOR.get(change.level.name, 1.0)
        print(f"thermal level {change.previous.name} -> {change.level.name} at "
              f"{change.temp_c:.1f} °C: rate {self.rate_hz:g} -> {rate:g} Hz", flush=True)
        self.rate_hz = rate

    def stop(self) -> None:
        self._stopping = True
        loop = self._loop
        if loop is not None:
            loop.stop()

    def step(self, tick: Tick) -> None:
        if (self._stopping or self.rate_hz != self._segment_rate) and self._loop is not None:
            self._loop.stop()  # the last step of this loop (a stop() may predate its start)
        self.io.observe(self.inputs["obs"], tick)
        actions = self.session.infer(self.inputs)["actions"]
        self.io.publish(actions)

    def run(self, duration_s: float) -> None:
        end = time.monotonic() + duration_s if duration_s > 0 else None
        while not self._stopping:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            rate = self._segment_rate = self.rate_hz
            loop = self._loop = PeriodicLoop(1.0 / rate, policy=self.policy)
            print(f"control loop {'restarted' if self.segments else 'started'} at {rate:g} Hz",
                  flush=True)
            iterations = None if left is None else max(1, int(left * rate))
            report = loop.run(self.step, iterations=iterations)
            self.segments.append((rate, report))
            if len(self.segments) == 1 and report.policy is not None and \
                    report.policy.refused:
                refused = ", ".join(f"{o.setting} ({o.detail.split(':')[0]})"
                                    for o in report.policy.refused)
                print(f"real time: running without {refused}; `edgert doctor` shows how to "
                      "allow it", flush=True)


def make_governor(root: Path, node: ControlNode) -> ThermalGovernor | None:
    zones = ThermalZones(root)
    if not zones.names:
        print("no thermal zones here: running without a thermal governor")
        return None
    watch = "tj" if "tj" in zones.aliases else list(zones.names)
    try:
        governor = ThermalGovernor(zones, LEVELS, zones=watch, interval_s=0.5,
                                   on_change=node.on_level)
    except Exception as err:  # no passive trip point: nothing to keep a margin from
        print(f"no thermal governor: {getattr(err, 'message', err)}")
        return None
    governor.step()  # the level now, before the loop starts
    print(f"thermal governor on {', '.join(governor.zones)}: {governor.temp_c} °C, level "
          f"{governor.level.name}, passive trip {governor.passive_trip_c} °C")
    return governor.start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--rate", type=float, default=500.0, help="control rate in Hz (500)")
    ap.add_argument("--duration", type=float, default=0.0,
                    help="seconds to run (default: until Ctrl-C or SIGTERM)")
    ap.add_argument("--root", type=Path, default=Path("/"),
                    help="read thermal zones under this directory (a fake tree in tests)")
    ap.add_argument("--priority", type=int, default=80, help="SCHED_FIFO priority (80)")
    ap.add_argument("--cpus", type=int, nargs="*", help="pin the control thread to these CPUs")
    args = ap.parse_args()
    if not 0 < args.rate <= 100_000 or args.duration < 0:
        ap.error("--rate must be above 0 Hz (at most 100000) and --duration 0 or more")

    engine = Engine.load(bundled_model_path())
    session = InferenceSession(engine, slots=1, timing="host")
    session.warmup()
    try:
        import rclpy
    except ImportError:
        io: Any = PlainIo()
        print("rclpy not found: a plain loop with synthetic observations")
    else:
        io = Ros2Io(rclpy)
    policy = RealtimePolicy.control_loop(priority=args.priority, cpus=args.cpus or None,
                                         strict=False)
    node = ControlNode(session, io, rate_hz=args.rate, policy=policy)
    governor = make_governor(args.root, node)
    print(f"bundled policy on {engine.runtime_module} ({session.device}) at {node.rate_hz:g} Hz",
          flush=True)

    failed: list[BaseException] = []

    def run() -> None:
        try:
            node.run(args.duration)
        except BaseException as err:  # said below, and the exit status says it too
            failed.append(err)
            raise

    control = threading.Thread(target=run, name="control")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: node.stop())
    control.start()
    while control.is_alive():
        control.join(0.2)  # short joins: the main thread keeps handling signals
    if governor is not None:
        governor.close()
    io.close()
    session.close()
    engine.close()
    for rate, r in node.segments:
        print(f"{rate:g} Hz: {r.iterations} steps, wake-up p99 {r.wake.p99_us or 0:.1f} us, "
              f"step p99 {r.step.p99_us or 0:.1f} us, {r.deadline_misses} deadline misses, "
              f"{r.skipped_periods} skipped periods")
    if failed:
        print(f"control loop failed: {failed[0]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
