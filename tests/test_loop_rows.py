"""A round's per-client rows are typed: :class:`ClientRow`, read by field or by name, round-tripped
through JSON, and the number of samples a client processed is called ``samples_processed``."""
import json

import pytest

from fedlab_utils.core import ClientRow, Faults, History, LocalTraining, run
from fedlab_utils.data import client_data, partition
from fedlab_utils.models import make_model


def test_rows_are_typed_and_name_the_samples_processed(digits):
    clients = client_data(digits, partition(digits.y_train, 4, "iid", seed=0))
    h = run(make_model("mlp", digits.input_shape, 10, seed=0), clients, (digits.x_test, digits.y_test), rounds=2,
            seed=0, progress=False, local=LocalTraining(epochs=2, batch_size=8, lr=0.1), faults=Faults(dropout=0.3, seed=2))
    rows = [row for r in h.records for row in r.client_rows]
    assert all(isinstance(row, ClientRow) for row in rows)
    for row in rows:
        assert row["status"] == row.status and row["bytes_up"] == row.bytes_up
        expected = 2 * len(clients[row.client_id]) if row.status == "accepted" else 0  # every epoch counted
        assert row.samples_processed == expected
    assert {row.status for row in rows} == {"accepted", "dropped"}
    with pytest.raises(KeyError):
        rows[0]["samples"]
    again = History.from_dict(json.loads(json.dumps(h.to_dict())))
    assert all(isinstance(row, ClientRow) for r in again.records for row in r.client_rows)
    assert json.dumps(again.to_dict()) == json.dumps(h.to_dict())  # NaN losses of dropped rows included


def test_a_history_written_with_the_old_key_still_loads(digits):
    clients = client_data(digits, partition(digits.y_train, 2, "iid", seed=0))
    h = run(make_model("mlp", digits.input_shape, 10, seed=0), clients, (digits.x_test, digits.y_test), rounds=1,
            seed=0, progress=False)
    d = json.loads(json.dumps(h.to_dict()))
    for row in d["records"][0]["client_rows"]:
        row["samples"] = row.pop("samples_processed")
    assert json.dumps(History.from_dict(d).to_dict()) == json.dumps(h.to_dict())
