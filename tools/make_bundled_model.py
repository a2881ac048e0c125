#!/usr/bin/env python3
"""Regenerate edgert's bundled control policy (ONNX model + .npz weights), byte for byte.

    python tools/make_bundled_model.py           # rewrite edgert/models/control_policy.*
    python tools/make_bundled_model.py --check   # exit 1 if the shipped files differ

Weights come from numpy's PCG64 bit generator (whose raw stream numpy keeps stable across
releases) turned into uniform values by plain integer arithmetic, He-uniform scaled, and rounded
to multiples of 2**-8 so that the .npz compresses well (98 KB instead of 326 KB). The ONNX file
is written with IR version 8 and opset 13, which every ONNX Runtime since 1.10 and TensorRT's
ONNX parser read. The .npz is a zip written with fixed timestamps so it is reproducible too.
Needs the ``onnx`` package.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgert import models  # noqa: E402

SEED = 20261121
IR_VERSION = 8
OPSET = 13
QUANTUM = 2.0**-8


def make_weights(seed: int = SEED) -> dict[str, np.ndarray]:
    """Deterministic float32 weights keyed by ``models.WEIGHT_NAMES``."""
    bits = np.random.PCG64(seed)
    sizes = [(models.OBS_DIM, models.HIDDEN_DIM), (models.HIDDEN_DIM, models.HIDDEN_DIM),
             (models.HIDDEN_DIM, models.ACTION_DIM)]
    out: dict[str, np.ndarray] = {}
    for index, (fan_in, fan_out) in enumerate(sizes, start=1):
        limit = np.sqrt(6.0 / fan_in)
        for part, shape, scale in (("weight", (fan_in, fan_out), limit),
                                   ("bias", (fan_out,), 0.1)):
            raw = bits.random_raw(int(np.prod(shape)))
            unit = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
            values = np.round((2.0 * unit - 1.0) * scale / QUANTUM) * QUANTUM
            out[f"fc{index}.{part}"] = values.astype(np.float32).reshape(shape)
    return out


def make_onnx(weights: dict[str, np.ndarray]) -> bytes:
    """The ONNX model (Gemm + Relu layers, dynamic batch) as bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, prev = [], models.INPUT_NAME
    for index in (1, 2, 3):
        out = models.OUTPUT_NAME if index == 3 else f"fc{index}"
        nodes.append(helper.make_node(
            "Gemm", [prev, f"fc{index}.weight", f"fc{index}.bias"], [out], name=f"fc{index}"))
        prev = out
        if index < 3:
            nodes.append(helper.make_node("Relu", [out], [f"relu{index}"], name=f"relu{index}"))
            prev = f"relu{index}"
    graph = helper.make_graph(
        nodes, "control_policy",
        [helper.make_tensor_value_info(models.INPUT_NAME, TensorProto.FLOAT,
                                       ["batch", models.OBS_DIM])],
        [helper.make_tensor_value_info(models.OUTPUT_NAME, TensorProto.FLOAT,
                                       ["batch", models.ACTION_DIM])],
        initializer=[numpy_helper.from_array(weights[n], n) for n in models.WEIGHT_NAMES])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgert", producer_version="1",
                              doc_string="edgert bundled control policy: 48 -> 256 -> 256 -> 12")
    model.ir_version = IR_VERSION
    profile = {models.INPUT_NAME: {"min": [1, models.OBS_DIM], "opt": [1, models.OBS_DIM],
                                   "max": [models.MAX_BATCH, models.OBS_DIM]}}
    helper.set_model_props(model, {"edgert.profiles": json.dumps(profile, sort_keys=True),
                                   "edgert.seed": str(SEED)})
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString(deterministic=True))


def make_npz(weights: dict[str, np.ndarray]) -> bytes:
    """The weights as a compressed .npz with fixed zip timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in models.WEIGHT_NAMES:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            array = io.BytesIO()
            np.lib.format.write_array(array, weights[name], allow_pickle=False)
            zf.writestr(info, array.getvalue(), compresslevel=9)
    return buffer.getvalue()


def build() -> dict[Path, bytes]:
    """File path -> the bytes it must hold."""
    weights = make_weights()
    return {models.bundled_model_path(): make_onnx(weights),
            models.bundled_weights_path(): make_npz(weights)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the shipped files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, data in build().items():
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path)
            print(f"{path.relative_to(ROOT)}: {len(data):,} bytes"
                  f"{' (differs)' if path in stale else ' (matches)'}")
        else:
            path.write_bytes(data)
            print(f"wrote {path.relative_to(ROOT)}: {len(data):,} bytes")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
