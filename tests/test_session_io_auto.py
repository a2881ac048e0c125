"""What io="auto" resolves to on a CUDA device (no GPU needed: the rule and its input)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgert._executable import ProfileShape, TensorMode, TensorSpec
from edgert.session import IoMode
from edgert.session._setup import ZERO_COPY_AUTO_MAX_BYTES, auto_io, max_io_bytes


class _Mlp:
    """An executable of shape (batch, 48) -> (batch, 12), float32, batch up to ``max_batch``."""

    def __init__(self, max_batch: int, out_known: bool = True) -> None:
        prof = ProfileShape((1, 48), (1, 48), (max_batch, 48))
        self.tensors = (
            TensorSpec(name="obs", mode=TensorMode.INPUT, dtype=np.dtype(np.float32),
                       shape=(-1, 48), profiles=(prof,)),
            TensorSpec(name="act", mode=TensorMode.OUTPUT, dtype=np.dtype(np.float32),
                       shape=(-1, 12)))
        self.batch = -1
        self.out_known = out_known

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        self.batch = int(shape[0])
        return True

    def get_tensor_shape(self, name: str) -> Sequence[int]:
        return (self.batch if self.out_known else -1, 12)


def test_max_io_bytes_counts_inputs_and_outputs_at_the_largest_profile_shape() -> None:
    assert max_io_bytes(_Mlp(256), 0) == 256 * 48 * 4 + 256 * 12 * 4  # type: ignore[arg-type]
    assert max_io_bytes(_Mlp(4096), 0) == 4096 * 60 * 4  # type: ignore[arg-type]


def test_max_io_bytes_is_unknown_without_a_profile_or_an_output_shape() -> None:
    assert max_io_bytes(_Mlp(256), 1) is None  # type: ignore[arg-type]
    assert max_io_bytes(_Mlp(256, out_known=False), 0) is None  # type: ignore[arg-type]


def test_auto_io_is_zero_copy_for_small_tensors_and_on_integrated_gpus() -> None:
    small, large = ZERO_COPY_AUTO_MAX_BYTES, ZERO_COPY_AUTO_MAX_BYTES + 1
    assert auto_io(False, True, small) is IoMode.ZERO_COPY
    assert auto_io(False, True, large) is IoMode.COPY
    assert auto_io(False, True, None) is IoMode.COPY  # unknown size: copies are the safe side
    assert auto_io(True, True, large) is IoMode.ZERO_COPY  # shared memory: nothing to copy
    assert auto_io(True, False, small) is IoMode.COPY  # cannot map host memory at all
    assert auto_io(False, False, small) is IoMode.COPY
