"""edgert's DLPack capsule calls must not depend on how others configure ctypes.pythonapi."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import numpy as np
import pytest

from edgert.memory import HostBuffer
from edgert.memory._dlpack import KDL_CPU, read_capsule


@pytest.fixture
def hostile_pythonapi() -> Iterator[None]:
    # Another library configures the process-wide cached function object its own way.
    fn = ctypes.pythonapi.PyCapsule_GetPointer
    saved = (fn.argtypes, fn.restype)
    for argtypes in ([ctypes.c_void_p, ctypes.c_void_p], [ctypes.py_object, ctypes.c_char_p]):
        fn.argtypes = argtypes
        fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    yield
    fn.argtypes, fn.restype = saved


@pytest.mark.usefixtures("hostile_pythonapi")
def test_reading_a_foreign_capsule() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    capsule = arr.__dlpack__()  # the tensor lives as long as the capsule: hold it
    tensor = read_capsule(capsule)
    assert tensor.device_type == KDL_CPU
    assert tensor.ptr == arr.ctypes.data
    assert tensor.shape == (3, 4)
    del tensor, capsule
    if np.lib.NumpyVersion(np.__version__) >= "2.1.0":  # numpy exports DLPack 1.x from 2.1
        versioned = arr.__dlpack__(max_version=(1, 0))
        assert (read_capsule(versioned).version or (0, 0))[0] == 1
        del versioned


@pytest.mark.usefixtures("hostile_pythonapi")
def test_exporting_and_consuming_an_edgert_buffer() -> None:
    with HostBuffer(64) as buf:
        view = buf.view(np.int32, (16,))
        view[:] = np.arange(16)
        again = np.from_dlpack(buf)
        np.testing.assert_array_equal(again.view(np.int32), np.arange(16))
        del view, again
