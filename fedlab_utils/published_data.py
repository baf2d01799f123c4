"""The standard FL benchmark datasets, read from the files their publishers distribute.

Nothing is downloaded: a user places the published files under a data folder, and these
readers check them and turn them into a :class:`~fedlab_utils.data.FederatedDataset`.

* ``cifar10`` -- the CIFAR-10 *binary version* (Krizhevsky 2009): ``data_batch_1.bin`` ...
  ``data_batch_5.bin`` and ``test_batch.bin``, each a run of 3,073-byte records (1 label byte,
  then 3,072 pixel bytes: 1,024 red, 1,024 green, 1,024 blue, row-major 32x32).  The Python
  version of the same data is a pickle, and the course loads no pickle, so it is refused.
* ``femnist`` and ``shakespeare`` -- LEAF's JSON (Caldas et al. 2018): every file holds
  ``users``, ``num_samples`` and ``user_data`` (user -> ``{"x": [...], "y": [...]}``).  Their
  natural clients are LEAF's users: the writers of FEMNIST, the speaking roles of Shakespeare.

Where the files go is described in ``docs/datasets.md``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["CIFAR10_RECORD_BYTES", "CIFAR10_TRAIN_FILES", "CIFAR10_TEST_FILE", "LEAF_LETTERS",
           "resolve_data_dir", "load_cifar10", "load_femnist", "load_shakespeare", "encode_characters"]

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_RECORDS_PER_FILE = 10_000
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html ('CIFAR-10 binary version', cifar-10-binary.tar.gz)"
LEAF_SOURCE = "LEAF (https://github.com/TalwalkarLab/leaf): run its preprocess.sh for {name}"
# LEAF's Shakespeare vocabulary (leaf/models/utils/language_utils.py, ALL_LETTERS): 80 characters.
LEAF_LETTERS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
SHAKESPEARE_SEQUENCE = 80
FEMNIST_CLASSES = 62  # 10 digits, 26 upper-case and 26 lower-case letters


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Where the data files are: ``data_dir`` if given, else ``$FEDLAB_DATA``, else the repo's ``data/``."""
    if data_dir is not None and not isinstance(data_dir, (str, Path)):
        raise ValueError(f"data_dir={data_dir!r} is not valid; use None or a folder path")
    if data_dir:
        return Path(data_dir)
    if os.environ.get("FEDLAB_DATA"):
        return Path(os.environ["FEDLAB_DATA"])
    return DEFAULT_DATA_DIR


# ----------------------------------------------------------------------------- CIFAR-10
def _cifar10_folder(root: Path) -> Path:
    for folder in (root / "cifar10" / "cifar-10-batches-bin", root / "cifar10", root / "cifar-10-batches-bin"):
        if (folder / CIFAR10_TEST_FILE).exists():
            return folder
    for pickled in (root / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py"):
        if pickled.exists():
            raise ValueError(f"{pickled} holds CIFAR-10's Python (pickle) version, which the course does not load "
                             f"(loading a pickle can run arbitrary code); download the binary version from "
                             f"{CIFAR10_SOURCE} and unpack it to {root / 'cifar10' / 'cifar-10-batches-bin'}")
    raise FileNotFoundError(f"CIFAR-10 not found: expected {root / 'cifar10' / 'cifar-10-batches-bin'}/"
                            f"{{{','.join(CIFAR10_TRAIN_FILES)},{CIFAR10_TEST_FILE}}}; download the binary "
                            f"version from {CIFAR10_SOURCE} (pass data_dir= or set FEDLAB_DATA to its parent folder)")


def read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary file as (images uint8 N x 3 x 32 x 32, labels int64 N).

    A file whose size is not a whole number of 3,073-byte records is truncated or not a
    CIFAR-10 batch, and is refused; so is a label byte outside 0-9.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it is part of CIFAR-10's binary version, from {CIFAR10_SOURCE}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR10_RECORD_BYTES:
        raise ValueError(f"{path} has {raw.size:,} bytes, not a whole number of {CIFAR10_RECORD_BYTES}-byte records "
                         f"(a complete file has {CIFAR10_RECORDS_PER_FILE * CIFAR10_RECORD_BYTES:,}); it is truncated "
                         f"or not CIFAR-10's binary version: download it again from {CIFAR10_SOURCE}")
    records = raw.reshape(-1, CIFAR10_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path} has label byte {int(labels.max())}; CIFAR-10 labels are 0-9, so this is not "
                         f"CIFAR-10's binary version (from {CIFAR10_SOURCE})")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _as_unit_float(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)


def load_cifar10(data_dir: str | Path | None = None) -> dict:
    """CIFAR-10's official train (5 batches) and test split as float tensors in [0, 1]."""
    folder = _cifar10_folder(resolve_data_dir(data_dir))
    train = [read_cifar10_batch(folder / name) for name in CIFAR10_TRAIN_FILES]
    x_test, y_test = read_cifar10_batch(folder / CIFAR10_TEST_FILE)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return dict(x_train=_as_unit_float(x_train), y_train=torch.from_numpy(y_train), x_test=_as_unit_float(x_test),
                y_test=torch.from_numpy(y_test), num_classes=10, input_shape=(3, 32, 32), natural_clients=None)


# ----------------------------------------------------------------------------- LEAF (FEMNIST, Shakespeare)
def _leaf_split_folder(root: Path, name: str, split: str) -> Path:
    for folder in (root / name / "data" / split, root / name / split):
        if folder.is_dir() and any(folder.glob("*.json")):
            return folder
    raise FileNotFoundError(f"{name} {split} files not found: expected JSON files in {root / name / 'data' / split} "
                            f"or {root / name / split}; they come from {LEAF_SOURCE.format(name=name)} "
                            f"(pass data_dir= or set FEDLAB_DATA to the folder that holds '{name}/')")


def read_leaf_split(root: Path, name: str, split: str) -> dict[str, dict]:
    """``{user: {"x": [...], "y": [...]}}`` merged over a LEAF split's JSON files, users in file order."""
    users: dict[str, dict] = {}
    for path in sorted(_leaf_split_folder(root, name, split).glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); it is truncated or not a LEAF file: "
                             f"regenerate it with {LEAF_SOURCE.format(name=name)}") from None
        missing = [key for key in ("users", "num_samples", "user_data") if key not in doc]
        if missing:
            raise ValueError(f"{path} lacks LEAF's keys {missing} (a LEAF file has users, num_samples, user_data); "
                             f"regenerate it with {LEAF_SOURCE.format(name=name)}")
        for user, count in zip(doc["users"], doc["num_samples"]):
            data = doc["user_data"].get(user)
            if data is None or len(data.get("x", ())) != count or len(data.get("y", ())) != count:
                raise ValueError(f"{path}: user {user!r} should have {count} samples in user_data.x and .y; "
                                 f"the file is truncated or inconsistent")
            entry = users.setdefault(user, {"x": [], "y": []})
            entry["x"].extend(data["x"])
            entry["y"].extend(data["y"])
    return users


def _leaf_tensors(users: dict[str, dict], order: list[str], encode_x, encode_y) -> tuple:
    xs, ys, ids = [], [], []
    for index, user in enumerate(order):
        data = users.get(user)
        if not data or not data["y"]:
            continue
        xs.append(encode_x(data["x"]))
        ys.append(encode_y(data["y"]))
        ids.append(np.full(len(data["y"]), index, dtype=np.int64))
    return torch.cat(xs), torch.cat(ys), np.concatenate(ids)


def _load_leaf(name: str, data_dir, encode_x, encode_y) -> dict:
    root = resolve_data_dir(data_dir)
    train, test = read_leaf_split(root, name, "train"), read_leaf_split(root, name, "test")
    order = list(train)
    x_train, y_train, clients = _leaf_tensors(train, order, encode_x, encode_y)
    x_test, y_test, _ = _leaf_tensors(test, order + [u for u in test if u not in train], encode_x, encode_y)
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, natural_clients=clients)


def _femnist_images(rows: list) -> torch.Tensor:
    images = torch.tensor(rows, dtype=torch.float32)
    if images.ndim != 2 or images.shape[1] != 28 * 28:
        raise ValueError(f"FEMNIST images must be 784 pixel values each; got shape {tuple(images.shape)}")
    return images.reshape(-1, 1, 28, 28)


def _femnist_labels(labels: list) -> torch.Tensor:
    y = torch.tensor(labels, dtype=torch.int64)
    if y.min() < 0 or y.max() >= FEMNIST_CLASSES:
        raise ValueError(f"FEMNIST labels must lie in 0..{FEMNIST_CLASSES - 1}; got {int(y.min())}..{int(y.max())}")
    return y


def load_femnist(data_dir: str | Path | None = None) -> dict:
    """FEMNIST from LEAF's JSON: 28x28 images, 62 classes, the writers as natural clients."""
    return {**_load_leaf("femnist", data_dir, _femnist_images, _femnist_labels),
            "num_classes": FEMNIST_CLASSES, "input_shape": (1, 28, 28)}


def encode_characters(text: str) -> list[int]:
    """Indices of ``text``'s characters in LEAF's 80-letter vocabulary (``LEAF_LETTERS``)."""
    indices = [LEAF_LETTERS.find(ch) for ch in text]
    if -1 in indices:
        bad = sorted({ch for ch in text if ch not in LEAF_LETTERS})
        raise ValueError(f"characters {bad!r} are not in LEAF's Shakespeare vocabulary of {len(LEAF_LETTERS)} letters")
    return indices


def _shakespeare_inputs(rows: list) -> torch.Tensor:
    bad = next((row for row in rows if len(row) != SHAKESPEARE_SEQUENCE), None)
    if bad is not None:
        raise ValueError(f"Shakespeare inputs must be {SHAKESPEARE_SEQUENCE}-character strings; got one of "
                         f"{len(bad)} characters")
    return torch.tensor([encode_characters(row) for row in rows], dtype=torch.int64)


def _shakespeare_targets(rows: list) -> torch.Tensor:
    if any(len(ch) != 1 for ch in rows):
        raise ValueError("Shakespeare targets must be single characters")
    return torch.tensor([encode_characters(ch)[0] for ch in rows], dtype=torch.int64)


def load_shakespeare(data_dir: str | Path | None = None) -> dict:
    """Shakespeare from LEAF's JSON: 80-character windows, the next character as label, roles as clients."""
    return {**_load_leaf("shakespeare", data_dir, _shakespeare_inputs, _shakespeare_targets),
            "num_classes": len(LEAF_LETTERS), "input_shape": (SHAKESPEARE_SEQUENCE,)}
