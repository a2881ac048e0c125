"""Shared test configuration: hardware tiers skip cleanly where the hardware is absent."""

from __future__ import annotations

import pytest


def _cuda_available() -> bool:
    import edgert.cuda

    return edgert.cuda.is_available()


def _full_tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return _cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_skip = trt_skip = None
    for item in items:
        if "gpu" in item.keywords:
            if gpu_skip is None:
                import edgert.cuda

                reason = edgert.cuda.unavailable_reason()
                gpu_skip = pytest.mark.skip(reason=f"needs a CUDA device: {reason}") if reason \
                    else False
            if gpu_skip:
                item.add_marker(gpu_skip)
        if "trt" in item.keywords:
            if trt_skip is None:
                trt_skip = False if _full_tensorrt_available() else pytest.mark.skip(
                    reason="needs full TensorRT (with its builder) and a CUDA device")
            if trt_skip:
                item.add_marker(trt_skip)


@pytest.fixture
def requires_gpu() -> None:
    """Skip the test unless a CUDA device is usable."""
    if not _cuda_available():
        import edgert.cuda

        pytest.skip(f"needs a CUDA device: {edgert.cuda.unavailable_reason()}")


@pytest.fixture(autouse=True)
def _fresh_cache_process_memos() -> None:
    """Each test starts as a new process would: nothing remembered of earlier tests' cache
    entries (edgert.store keeps digests and checks in memory while files provably did not
    change)."""
    import sys

    cache = sys.modules.get("edgert.store._cache")
    if cache is not None:
        cache.forget_process_memos()
