"""An example pytest-benchmark suite that compares device time, not Python wall time.

    pytest examples/bench_suite --benchmark-only          # edgert installed (pip install -e .)
    PYTHONPATH=. pytest -p edgert.pytest_plugin examples/bench_suite --benchmark-only
                                                          # a clone, not installed
    pytest ... --edgert-model model.plan --benchmark-json=out.json   # another model

``edgert_benchmark`` counts as a benchmark for pytest-benchmark, so ``--benchmark-only`` runs
these tests (and skips any test that is not a benchmark).

``edgert_session`` is the model under test (the bundled policy unless ``--edgert-model`` or the
``edgert_model`` marker says otherwise); ``edgert_benchmark`` runs requests through it and hands
each request's device time (CUDA events on a GPU; the synchronous run on the host) to
pytest-benchmark, whose tables, ``--benchmark-compare`` and JSON then speak device time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgert.models import policy_reference

OBS = np.random.default_rng(0).standard_normal((1, 48)).astype(np.float32)


def test_policy_compute(edgert_session: Any, edgert_benchmark: Any) -> None:
    outputs = edgert_benchmark(edgert_session, {"obs": OBS}, rounds=200)
    np.testing.assert_allclose(outputs["actions"], policy_reference(OBS), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.edgert_model("bundled", slots=1)
def test_policy_batches(edgert_session: Any, edgert_benchmark: Any, batch: int) -> None:
    obs = np.zeros((batch, 48), np.float32)
    outputs = edgert_benchmark(edgert_session, {"obs": obs}, rounds=100)
    assert outputs["actions"].shape == (batch, 12)


@pytest.mark.benchmark(group="round trip")
def test_policy_round_trip(edgert_session: Any, edgert_benchmark: Any) -> None:
    edgert_benchmark(edgert_session, {"obs": OBS}, stage="total", rounds=100)
