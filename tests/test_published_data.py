"""CIFAR-10 (binary), FEMNIST and Shakespeare (LEAF JSON) from tiny files in the published formats.

Each test writes a few records exactly as the publishers lay them out, loads them through
``load_dataset``, and checks the values that come back against what was written.
"""
import json

import numpy as np
import pytest
import torch

from fedlab_utils.data import load_dataset, partition
from fedlab_utils.published_data import CIFAR10_RECORD_BYTES, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES, LEAF_LETTERS


def _write_cifar(folder, records_per_file=3, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE):
        labels = rng.integers(0, 10, records_per_file, dtype=np.uint8)
        pixels = rng.integers(0, 256, (records_per_file, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
        written[name] = (labels, pixels)
    return written


def test_cifar10_binary_records_load_as_written(tmp_path):
    written = _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-bin")
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert len(ds.y_train) == 15 and len(ds.y_test) == 3
    labels, pixels = written["data_batch_2.bin"]
    assert ds.y_train[3:6].tolist() == labels.tolist()
    # record layout: 1,024 red, then green, then blue bytes, each 32x32 row-major
    first = pixels[0]
    assert torch.equal((ds.x_train[3] * 255).round().to(torch.uint8),
                       torch.from_numpy(first.reshape(3, 32, 32)))
    assert ds.x_train[3, 1, 0, 0].item() == pytest.approx(first[1024] / 255)
    labels, _ = written[CIFAR10_TEST_FILE]
    assert ds.y_test.tolist() == labels.tolist()


def test_cifar10_found_through_fedlab_data(tmp_path, monkeypatch):
    _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-bin", records_per_file=1)
    monkeypatch.setenv("FEDLAB_DATA", str(tmp_path))
    assert len(load_dataset("cifar10").y_train) == 5


def test_truncated_cifar10_file_is_refused_by_name(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    _write_cifar(folder)
    path = folder / "data_batch_4.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"data_batch_4\.bin.*3073-byte records.*cifar"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_missing_cifar10_file_names_it_and_the_source(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    _write_cifar(folder)
    (folder / "data_batch_5.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_5\.bin.*binary version"):
        load_dataset("cifar10", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="FEDLAB_DATA"):
        load_dataset("cifar10", data_dir=tmp_path / "elsewhere")


def test_cifar10_pickle_version_is_refused(tmp_path):
    (tmp_path / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="pickle"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_label_out_of_range_is_refused(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    _write_cifar(folder)
    record = bytes([11]) + bytes(3072)
    (folder / CIFAR10_TEST_FILE).write_bytes(record)
    with pytest.raises(ValueError, match=r"test_batch\.bin.*label byte 11"):
        load_dataset("cifar10", data_dir=tmp_path)


def _leaf_file(path, users):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"users": list(users), "num_samples": [len(d["y"]) for d in users.values()],
                                "user_data": users}))


def _femnist(tmp_path, layout=("data", "train")):
    rng = np.random.default_rng(0)

    def user(n, label):
        return {"x": rng.random((n, 784)).round(3).tolist(), "y": [label] * n}
    train_root = tmp_path / "femnist" / "/".join(layout)
    test_root = tmp_path / "femnist" / "/".join(layout[:-1] + ("test",))
    _leaf_file(train_root / "all_data_0_niid_train.json", {"f0001": user(3, 61), "f0002": user(2, 5)})
    _leaf_file(train_root / "all_data_1_niid_train.json", {"f0003": user(4, 0)})
    _leaf_file(test_root / "all_data_0_niid_test.json", {"f0001": user(1, 61), "f0003": user(2, 0)})


@pytest.mark.parametrize("layout", [("data", "train"), ("train",)])
def test_femnist_leaf_json_loads_with_writers_as_natural_clients(tmp_path, layout):
    _femnist(tmp_path, layout)
    ds = load_dataset("femnist", data_dir=tmp_path)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 62
    assert ds.y_train.tolist() == [61, 61, 61, 5, 5, 0, 0, 0, 0]
    assert ds.natural_clients.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert ds.y_test.tolist() == [61, 0, 0]
    parts = partition(ds.y_train, 3, "natural", natural_ids=ds.natural_clients, min_samples=1)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]


def test_truncated_leaf_json_is_refused_by_name(tmp_path):
    _femnist(tmp_path)
    path = tmp_path / "femnist" / "data" / "train" / "all_data_1_niid_train.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(ValueError, match=r"all_data_1_niid_train\.json.*not valid JSON"):
        load_dataset("femnist", data_dir=tmp_path)


def test_leaf_file_with_fewer_samples_than_announced_is_refused(tmp_path):
    _femnist(tmp_path)
    path = tmp_path / "femnist" / "data" / "train" / "all_data_1_niid_train.json"
    doc = json.loads(path.read_text())
    doc["num_samples"] = [5]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"f0003.*5 samples"):
        load_dataset("femnist", data_dir=tmp_path)


def test_missing_leaf_split_names_the_folder_and_leaf(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shakespeare train.*LEAF"):
        load_dataset("shakespeare", data_dir=tmp_path)


def test_shakespeare_characters_map_to_leaf_vocabulary(tmp_path):
    assert len(LEAF_LETTERS) == 80 and len(set(LEAF_LETTERS)) == 80
    line = "To be, or not to be: that is the question. Whether 'tis nobler in the mind to su"
    assert len(line) == 80
    roles = {"THE_TRAGEDY_OF_HAMLET_HAMLET": {"x": [line, line[1:] + "f"], "y": ["f", "e"]},
             "THE_TRAGEDY_OF_HAMLET_OPHELIA": {"x": [line[::-1]], "y": ["O"]}}
    _leaf_file(tmp_path / "shakespeare" / "data" / "train" / "all_data_niid_0_keep_0_train_9.json", roles)
    _leaf_file(tmp_path / "shakespeare" / "data" / "test" / "all_data_niid_0_keep_0_test_9.json",
               {"THE_TRAGEDY_OF_HAMLET_OPHELIA": {"x": [line], "y": ["f"]}})
    ds = load_dataset("shakespeare", data_dir=tmp_path)
    assert ds.input_shape == (80,) and ds.num_classes == 80 and ds.x_train.dtype == torch.int64
    assert "".join(LEAF_LETTERS[i] for i in ds.x_train[0].tolist()) == line
    assert [LEAF_LETTERS[i] for i in ds.y_train.tolist()] == ["f", "e", "O"]
    assert ds.natural_clients.tolist() == [0, 0, 1]


def test_shakespeare_window_of_wrong_length_is_refused(tmp_path):
    _leaf_file(tmp_path / "shakespeare" / "train" / "a.json", {"R": {"x": ["too short"], "y": ["x"]}})
    _leaf_file(tmp_path / "shakespeare" / "test" / "a.json", {"R": {"x": ["too short"], "y": ["x"]}})
    with pytest.raises(ValueError, match="80-character"):
        load_dataset("shakespeare", data_dir=tmp_path)


def test_bad_data_dir_type_names_the_argument():
    with pytest.raises(ValueError, match="data_dir=3"):
        load_dataset("cifar10", data_dir=3)
