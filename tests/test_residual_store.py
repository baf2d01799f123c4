"""Error feedback's residual store: RAM up to a budget, then an unnamed temporary file.

Spilling must change nothing: the same payloads, decoded rows and residuals bit for bit, through
several rounds, in blocks and client by client, across a checkpoint; and the file must go away."""
import copy
import gc
import pickle

import numpy as np
import pytest
import torch

from fedlab_utils.compression import ErrorFeedback, QuantizeCodec, TopKCodec, flatten, payload_bytes
from fedlab_utils.compression.codecs import ResidualStore
from fedlab_utils.compression.wire import encode_rows
from fedlab_utils.core import LocalTraining, VmapTrainer, run
from fedlab_utils.data import ClientData
from fedlab_utils.models import count_parameters, make_model

TEMPLATE = {"w": torch.zeros(30, 20), "b": torch.zeros(30)}
N = 630
ROW = 4 * N  # bytes of one residual


def _update(row: torch.Tensor) -> dict:
    return {"w": row[:600].reshape(30, 20).clone(), "b": row[600:].clone()}


def _rounds(seed=0, rounds=4, clients=12):
    """Each round: a random subset of the clients, in a random order, with fresh updates."""
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        ids = [int(c) for c in rng.permutation(clients)[: rng.integers(3, clients + 1)]]
        rows = torch.from_numpy(rng.standard_normal((len(ids), N)).astype(np.float32)) * (1 + r)
        yield ids, rows


@pytest.mark.parametrize("inner", [lambda: TopKCodec(0.05), lambda: QuantizeCodec(4)])
def test_spilled_and_in_ram_residuals_are_the_same_bits_round_after_round(inner, tmp_path):
    in_ram = ErrorFeedback(inner(), ram_bytes=None)
    spilled = ErrorFeedback(inner(), ram_bytes=0, spill_dir=str(tmp_path))  # every row in the file
    split = ErrorFeedback(inner(), ram_bytes=5 * ROW + 7, spill_dir=str(tmp_path))  # 5 rows in RAM, the rest in the file
    alone = ErrorFeedback(inner())  # client by client, through encode()
    for ids, rows in _rounds():
        reference = encode_rows(in_ram, rows, ids, TEMPLATE)
        for codec in (spilled, split):
            payloads, decoded = encode_rows(codec, rows, ids, TEMPLATE)
            assert payloads == reference[0] and torch.equal(decoded, reference[1])
        assert [alone.encode(_update(rows[i]), cid) for i, cid in enumerate(ids)] == reference[0]
        for cid in in_ram.residuals:
            want = flatten(in_ram.residuals[cid])
            for codec in (spilled, split, alone):
                assert torch.equal(flatten(codec.residuals[cid]), want), cid
    assert spilled.residuals.file_bytes == 12 * ROW and spilled.residuals.ram_row_bytes == 0
    assert split.residuals.file_bytes == 7 * ROW and split.residuals.ram_row_bytes == 5 * ROW
    assert in_ram.residuals.file_bytes == 0
    assert list(tmp_path.iterdir()) == []  # the file has no name: nothing is left behind, even on a crash


def test_encode_and_encode_rows_share_the_spilled_rows(tmp_path):
    """A client encoded alone after a block (and the other way round) finds its residual in the file."""
    mixed, reference = ErrorFeedback(TopKCodec(0.1), ram_bytes=2 * ROW), ErrorFeedback(TopKCodec(0.1))
    for r, (ids, rows) in enumerate(_rounds(seed=1, rounds=6)):
        for i, cid in enumerate(ids):
            want = reference.encode(_update(rows[i]), cid)
            if (r + i) % 2:
                assert mixed.encode(_update(rows[i]), cid) == want
            else:
                assert encode_rows(mixed, rows[i:i + 1], [cid], TEMPLATE)[0] == [want]
    assert mixed.residuals.file_bytes > 0
    assert all(torch.equal(flatten(mixed.residuals[c]), flatten(reference.residuals[c])) for c in reference.residuals)


def test_a_checkpoint_holds_every_spilled_residual_and_resumes_exactly():
    whole = ErrorFeedback(TopKCodec(0.05), ram_bytes=3 * ROW)
    rounds = list(_rounds(seed=2, rounds=5))
    for ids, rows in rounds[:3]:
        encode_rows(whole, rows, ids, TEMPLATE)
    state = whole.state_dict()
    assert whole.residuals.file_bytes > 0 and set(state["residuals"]) == set(whole.residuals)
    assert all(isinstance(r["w"], torch.Tensor) and r["w"].shape == (30, 20) for r in state["residuals"].values())
    resumed = ErrorFeedback(TopKCodec(0.05), ram_bytes=0)
    resumed.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert resumed.residuals.file_bytes > 0  # loaded residuals spill as well
    for ids, rows in rounds[3:]:
        assert encode_rows(resumed, rows, ids, TEMPLATE)[0] == encode_rows(whole, rows, ids, TEMPLATE)[0]
    assert all(torch.equal(flatten(resumed.residuals[c]), flatten(whole.residuals[c])) for c in whole.residuals)


def test_reset_and_garbage_collection_delete_the_file():
    ef = ErrorFeedback(TopKCodec(0.05), ram_bytes=ROW)
    ids, rows = next(_rounds())
    encode_rows(ef, rows, ids, TEMPLATE)
    spill = ef.residuals._file
    assert spill is not None and not spill.closed and ef.residuals.file_bytes == (len(ids) - 1) * ROW
    ef.reset()
    assert spill.closed and ef.residuals.file_bytes == 0 and len(ef.residuals) == 0
    encode_rows(ef, rows, ids, TEMPLATE)  # a new run spills to a new file
    spill = ef.residuals._file
    del ef
    gc.collect()
    assert spill.closed


def test_the_store_reads_like_a_dict_of_snapshots():
    ef = ErrorFeedback(TopKCodec(0.05), ram_bytes=0)
    assert ef.residuals == {} and len(ef.residuals) == 0
    ids, rows = next(_rounds())
    encode_rows(ef, rows, ids, TEMPLATE)
    first = ef.residuals[ids[0]]
    kept = {k: v.clone() for k, v in first.items()}
    encode_rows(ef, rows * 3, ids, TEMPLATE)
    assert all(torch.equal(first[k], kept[k]) for k in kept)  # an earlier read is not overwritten
    assert ids[0] in ef.residuals and 10_000 not in ef.residuals and ef.residuals.get(10_000) is None
    assert sorted(ef.residuals) == sorted(ids) and set(ef.residuals.keys()) == set(ids)
    del ef.residuals[ids[0]]
    assert ids[0] not in ef.residuals and len(ef.residuals) == len(ids) - 1


def test_a_copy_has_its_own_residuals_and_file():
    """``payload_bytes`` measures on a deep copy; pickling (a process pool) carries every residual."""
    ef = ErrorFeedback(TopKCodec(0.05), ram_bytes=ROW)
    ids, rows = next(_rounds())
    encode_rows(ef, rows, ids, TEMPLATE)
    before = {c: flatten(ef.residuals[c]) for c in ef.residuals}
    assert payload_bytes(ef, _update(rows[0])) == len(TopKCodec(0.05).encode(_update(rows[0])))
    assert set(ef.residuals) == set(before)  # measured on a copy
    twin, clone = copy.deepcopy(ef), pickle.loads(pickle.dumps(ef))
    for other in (twin, clone):
        assert other.residuals._file is not ef.residuals._file
        assert all(torch.equal(flatten(other.residuals[c]), before[c]) for c in before)
    encode_rows(twin, rows, ids, TEMPLATE)
    assert all(torch.equal(flatten(ef.residuals[c]), before[c]) for c in before)  # the original is untouched


def test_residuals_that_are_not_float32_rows_stay_dicts():
    store = ResidualStore(ram_bytes=0)
    store[1] = {"w": torch.ones(3, dtype=torch.float64)}
    store[2] = {"w": torch.ones(4)}
    store[3] = {"w": torch.ones(2, 2)}  # another layout than the rows held: kept as it is
    assert store.file_bytes == 16 and store[1]["w"].dtype == torch.float64
    assert torch.equal(store[3]["w"], torch.ones(2, 2)) and torch.equal(store[2]["w"], torch.ones(4))
    assert torch.equal(store.read_rows([2, 7], 4), torch.stack([torch.ones(4), torch.zeros(4)]))


def test_rows_of_another_model_are_refused_until_reset():
    ef = ErrorFeedback(TopKCodec(0.05))
    ids, rows = next(_rounds())
    encode_rows(ef, rows, ids, TEMPLATE)
    other = {"w": torch.zeros(N)}
    with pytest.raises(ValueError, match="another model's: reset"):
        encode_rows(ef, rows, ids, other)
    ef.reset()
    encode_rows(ef, rows, ids, other)
    assert ef.residuals[ids[0]]["w"].shape == (N,)


def test_a_run_with_spilled_residuals_is_the_run_in_ram_and_resumes(digits, tmp_path):
    """Through run()'s folded vmap path: every residual in the file gives the same run bit for bit,
    and a checkpoint taken with spilled residuals resumes exactly."""
    picks = np.random.default_rng(0).integers(0, len(digits.y_train), size=(10, 6))
    clients = [ClientData(digits.x_train[p], digits.y_train[p]) for p in picks]
    model = make_model("mlp", digits.input_shape, 10, seed=0)
    common = dict(seed=0, progress=False, local=LocalTraining(batch_size=3, lr=0.1), fraction=0.8,
                  trainer=VmapTrainer(max_stack_bytes=4 * 4 * count_parameters(model)))
    test = (digits.x_test, digits.y_test)
    row = 4 * count_parameters(model)
    in_ram = run(model, clients, test, rounds=3, uplink=ErrorFeedback(TopKCodec(0.02), ram_bytes=None), **common)
    spilled = run(model, clients, test, rounds=3, uplink=ErrorFeedback(TopKCodec(0.02), ram_bytes=3 * row), **common)
    assert all(torch.equal(p, q) for p, q in zip(in_ram.model.parameters(), spilled.model.parameters()))
    assert in_ram.accuracy == spilled.accuracy
    assert [r.train_loss for r in in_ram.records] == [r.train_loss for r in spilled.records]
    path = tmp_path / "ef.pt"
    run(model, clients, test, rounds=2, checkpoint=path, uplink=ErrorFeedback(TopKCodec(0.02), ram_bytes=row), **common)
    resumed = run(model, clients, test, rounds=3, checkpoint=path, resume=True,
                  uplink=ErrorFeedback(TopKCodec(0.02), ram_bytes=row), **common)
    assert all(torch.equal(p, q) for p, q in zip(in_ram.model.parameters(), resumed.model.parameters()))
    assert in_ram.accuracy == resumed.accuracy


def _encode_in_child(ef, rows, ids, queue):
    payloads, _ = encode_rows(ef, rows, ids, TEMPLATE)
    queue.put((payloads, {c: flatten(ef.residuals[c]).numpy() for c in ids}))


def test_a_forked_process_gets_its_own_copy_of_the_file():
    """As with memory after fork: the child starts from the parent's residuals, and neither process
    writes the other's."""
    import multiprocessing

    ef, twin = ErrorFeedback(TopKCodec(0.05), ram_bytes=ROW), ErrorFeedback(TopKCodec(0.05), ram_bytes=None)
    ids, rows = next(_rounds(seed=4))
    for codec in (ef, twin):
        encode_rows(codec, rows, ids, TEMPLATE)
    assert ef.residuals.file_bytes == (len(ids) - 1) * ROW
    before = {c: flatten(ef.residuals[c]) for c in ef.residuals}
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_encode_in_child, args=(ef, rows * 3 + 1, ids, queue))
    child.start()
    payloads, residuals = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    expected, _ = encode_rows(twin, rows * 3 + 1, ids, TEMPLATE)
    assert payloads == expected  # the child read the parent's residuals
    assert all(np.array_equal(residuals[c], flatten(twin.residuals[c]).numpy()) for c in ids)
    assert all(torch.equal(flatten(ef.residuals[c]), before[c]) for c in before)  # the parent's are untouched


def test_a_spill_folder_that_cannot_hold_the_file_is_named(tmp_path):
    ef = ErrorFeedback(TopKCodec(0.05), ram_bytes=0, spill_dir=str(tmp_path / "missing"))
    ids, rows = next(_rounds())
    with pytest.raises(OSError, match=r"residual file in .*missing.*spill_dir with room, or a larger ram_bytes"):
        encode_rows(ef, rows, ids, TEMPLATE)


class _Lossless:
    """A folding codec whose block encoding hands back the very rows it was given as decoded."""

    folds, name = True, "lossless"

    def encode(self, update, client_id=0):
        return flatten(update).numpy().tobytes()

    def decode(self, payload, template):
        return {"all": torch.from_numpy(np.frombuffer(payload, dtype=np.float32).copy())}

    def encode_rows(self, rows, client_ids, template):
        return [rows[i].numpy().tobytes() for i in range(len(rows))], rows


def test_decoded_rows_stay_the_callers_when_the_inner_codec_returns_its_input():
    """Error feedback reuses one block for its corrected rows; what it returns must not be that block."""
    ef = ErrorFeedback(_Lossless())
    ids, rows = next(_rounds())
    _, first = encode_rows(ef, rows, ids, TEMPLATE)
    kept = first.clone()
    encode_rows(ef, rows * 7, ids, TEMPLATE)
    assert torch.equal(first, kept) and torch.equal(first, rows)
    assert all(torch.equal(flatten(ef.residuals[c]), torch.zeros(N)) for c in ids)  # lossless: nothing dropped
