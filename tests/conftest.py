"""Shared test settings: headless plots, no progress bars, one torch thread per xdist worker, the
longest test files first, a small dataset fixture."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FEDLAB_PROGRESS", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each must keep to one thread (its subprocesses inherit it)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

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


# The test files that take longest (CPU seconds measured under `make test`: the shared Flower federation,
# papermill and nbgrader runs, kernels and fresh interpreters), longest first. They are collected first,
# so that with `--dist loadfile --no-loadscope-reorder` each xdist worker starts on a long file and the
# short ones fill in at the end, instead of one worker finishing a long file alone. Only the order
# changes; a file missing here runs after these, in collection order.
LONGEST_FIRST = (
    "test_flower.py", "test_runner.py", "test_sweep.py", "test_classroom.py", "test_reproducibility.py",
    "test_i18n.py", "test_pki.py", "test_acceleration.py", "test_parallel.py", "test_small_params.py",
    "test_data.py", "test_lessons.py", "test_packaging.py", "test_compression.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
