"""Hold a CUDA stream until the host says so: stream-ordering tests without sleeps."""

from __future__ import annotations

import numpy as np
import pytest

from edgert import cuda
from edgert.memory import HostBuffer


def gate(stream: cuda.Stream, flag: HostBuffer) -> None:
    """Make ``stream`` wait until the host writes 1 into ``flag`` (cuStreamWaitValue32)."""
    from edgert.cuda._api import driver

    drv = driver()
    flag.view(np.uint32)[0] = 0
    geq = int(drv.CUstreamWaitValue_flags.CU_STREAM_WAIT_VALUE_GEQ)
    try:
        err = drv.cuStreamWaitValue32(stream.handle, flag.device_ptr, 1, geq)[0]
    except Exception as exc:  # an old driver or bindings without stream memory operations
        pytest.skip(f"cuStreamWaitValue32 is not usable here ({exc!r})")
    if int(err) != 0:
        pytest.skip(f"cuStreamWaitValue32 is not available here ({err})")
