"""Shared test configuration: hypothesis profiles and a fixed torch seed.

Profiles: ``dev`` (the default) and ``ci``, loaded when the ``CI`` environment variable
is set; ``ci`` is derandomized so every CI run draws the same examples. The
``HYPOTHESIS_PROFILE`` environment variable picks a profile explicitly.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("dev", deadline=None, max_examples=25)
settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True, database=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch RNG state (``torch.manual_seed(0)``)."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def single_thread():
    """One intra-op thread for a module of tests on tiny tensors (restored afterwards).

    On these 2-core machines, splitting a few-hundred-element op over threads costs far more
    than it saves, and under load it is 10-100x slower (gradcheck runs thousands of them).
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
