"""Shared test settings: headless plots, no progress bars, a small dataset fixture."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FEDLAB_PROGRESS", "0")

import pytest  # noqa: E402
import torch  # noqa: E402

from fedlab_utils.data import load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8×8 digits: small and fast, real data."""
    return load_dataset("digits", seed=0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread avoids oversubscribing a shared CPU (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
