"""The bundled default model: a small control policy, for demos, tests and ``edgert bench``.

``control_policy.onnx`` maps an observation of 48 floats to 12 actions through two hidden layers
of 256 units with ReLU: ``actions = relu(relu(obs @ W1 + b1) @ W2 + b2) @ W3 + b3``. The batch
dimension is dynamic (1 to :data:`MAX_BATCH`, declared as the model's ``edgert.profiles``
metadata). Its weights are deterministic (seeded; ``tools/make_bundled_model.py`` regenerates both
files byte for byte) and are shipped a second time as ``control_policy.npz`` so that GPU kernels
can load exactly the same numbers. :func:`policy_reference` is the numpy implementation that
every backend is checked against.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgert.errors import EdgeRTError, InvalidArgumentError

__all__ = [
    "ACTION_DIM",
    "HIDDEN_DIM",
    "INPUT_NAME",
    "MAX_BATCH",
    "MODEL_FILENAME",
    "OBS_DIM",
    "OUTPUT_NAME",
    "WEIGHTS_FILENAME",
    "WEIGHT_NAMES",
    "bundled_model_path",
    "bundled_weights_path",
    "load_policy_weights",
    "policy_reference",
    "policy_variant_bytes",
]

#: Observation size (the input's last dimension).
OBS_DIM = 48
#: Width of both hidden layers.
HIDDEN_DIM = 256
#: Action size (the output's last dimension).
ACTION_DIM = 12
#: Largest batch in the model's input profile.
MAX_BATCH = 256
#: Name of the input tensor.
INPUT_NAME = "obs"
#: Name of the output tensor.
OUTPUT_NAME = "actions"
#: File name of the bundled ONNX model inside the package.
MODEL_FILENAME = "control_policy.onnx"
#: File name of the weights (.npz) inside the package, shared by the ONNX model and GPU kernels.
WEIGHTS_FILENAME = "control_policy.npz"
#: Arrays in the weights file; stored (in, out), so a layer is ``x @ weight + bias``.
WEIGHT_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")

_HERE = Path(__file__).resolve().parent


def bundled_model_path() -> Path:
    """Path of the bundled ONNX control policy (IR version 8, opset 13)."""
    return _HERE / MODEL_FILENAME


def bundled_weights_path() -> Path:
    """Path of the ``.npz`` holding the same weights, keyed by :data:`WEIGHT_NAMES`."""
    return _HERE / WEIGHTS_FILENAME


@functools.cache
def _weights() -> dict[str, npt.NDArray[np.float32]]:
    with np.load(bundled_weights_path(), allow_pickle=False) as npz:
        weights = {name: np.ascontiguousarray(npz[name], dtype=np.float32)
                   for name in WEIGHT_NAMES}
    for array in weights.values():
        array.flags.writeable = False
    return weights


def load_policy_weights() -> dict[str, npt.NDArray[np.float32]]:
    """The policy's weights as read-only float32 arrays, keyed by :data:`WEIGHT_NAMES`."""
    return dict(_weights())


def policy_reference(obs: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """The policy computed with numpy in float32: ``(batch, 48) -> (batch, 12)``.

    A single observation of shape ``(48,)`` gives actions of shape ``(12,)``.

    Raises:
        InvalidArgumentError: ``obs`` does not end in 48 values.
    """
    x = np.asarray(obs, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[-1] != OBS_DIM:
        raise InvalidArgumentError(
            f"observations must have shape (batch, {OBS_DIM}) or ({OBS_DIM},), got {x.shape}")
    w = _weights()
    h = np.maximum(x @ w["fc1.weight"] + w["fc1.bias"], np.float32(0))
    h = np.maximum(h @ w["fc2.weight"] + w["fc2.bias"], np.float32(0))
    out: npt.NDArray[np.float32] = h @ w["fc3.weight"] + w["fc3.bias"]
    return out


def policy_variant_bytes(bias_offset: float) -> bytes:
    """The bundled ONNX policy with ``bias_offset`` added to its last bias: a different valid
    model with the same interface, whose actions are ``policy_reference(obs) + bias_offset``
    (for hot-swap, store and cache tests).

    Raises:
        EdgeRTError: The bias is not stored once, as raw float32, in the model's bytes (the
            shipped file is generated, so this would be a packaging bug).
    """
    data = bundled_model_path().read_bytes()
    if not bias_offset:
        return data
    bias = _weights()["fc3.bias"]
    shifted = bias + np.float32(bias_offset)
    if data.count(bias.tobytes()) != 1:  # the shipped file is generated: this would be a bug
        raise EdgeRTError("the bundled model's fc3.bias is not stored once, as raw float32, "
                          "in its ONNX bytes; cannot make a variant")
    return data.replace(bias.tobytes(), shifted.tobytes())
