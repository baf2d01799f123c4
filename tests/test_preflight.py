"""Labels the loss cannot take are a setup error before round 1 (issue 30, D9): float labels,
``int32`` labels and a column of labels are refused naming the client (or ``test``), the dtype
and what is valid, before any client trains; the labels every dataset of the course yields pass."""
import pytest
import torch
from torch import nn

from fedlab_utils.core import Callback, probe_model, run
from fedlab_utils.data import ClientData

DIM, CLASSES = 6, 3


def clients(label_dtype=torch.int64, sizes=(12, 20, 8)):
    g = torch.Generator().manual_seed(0)
    return [ClientData(torch.randn(n, DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g).to(label_dtype))
            for n in sizes]


def held_out(label_dtype=torch.int64):
    g = torch.Generator().manual_seed(9)
    return torch.randn(10, DIM, generator=g), torch.randint(0, CLASSES, (10,), generator=g).to(label_dtype)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(DIM, 5), nn.ReLU(), nn.Linear(5, CLASSES))


class RoundCounter(Callback):
    def __init__(self):
        self.started = 0

    def on_round_start(self, round_idx, history):
        self.started += 1


def run_tiny(data, test, callbacks=()):
    return run(model(), data, test, rounds=2, local={"lr": 0.2, "batch_size": 8}, progress=False, callbacks=callbacks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32, torch.bool])
def test_labels_the_loss_cannot_take_are_refused_before_round_1(dtype):
    counter = RoundCounter()
    with pytest.raises(ValueError) as info:
        run_tiny(clients(dtype), held_out(), callbacks=[counter])
    message = str(info.value)
    assert message.startswith("clients[0] has labels the loss cannot take")
    assert f"clients[0].y is {dtype}" in message and "valid labels: class indices" in message
    assert "torch.int64" in message and "y.long()" in message
    assert counter.started == 0  # refused before round 1: no client trained


def test_a_later_client_with_other_labels_is_the_one_named():
    data = clients()
    data[2] = ClientData(data[2].x, data[2].y.float())
    with pytest.raises(ValueError, match=r"^clients\[2\] has labels.*clients\[2\]\.y is torch\.float32"):
        run_tiny(data, held_out())


def test_float_test_labels_name_test():
    with pytest.raises(ValueError, match=r"^test has labels the loss cannot take: test's labels \(test\[1\]\) is "
                                         r"torch\.float32.*valid labels"):
        run_tiny(clients(), held_out(torch.float32))


def test_a_column_of_labels_is_refused_naming_its_shape():
    data = [ClientData(c.x, c.y[:, None]) for c in clients()]
    with pytest.raises(ValueError, match=r"^clients\[0\] has labels.*torch\.int64 of shape \(1,\) per sample"):
        run_tiny(data, held_out())


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8])
def test_labels_the_loss_takes_train(dtype):
    counter = RoundCounter()
    history = run_tiny(clients(dtype), held_out(dtype), callbacks=[counter])
    assert counter.started == 2 and len(history.accuracy) == 2


def test_every_course_dataset_passes_the_probe():
    """What data.load_dataset yields for each dataset its notebooks train on passes, with its model."""
    from fedlab_utils.data import client_data, load_dataset, partition
    from fedlab_utils.models import make_model

    for name, net in (("synthetic", "mlp"), ("mnist5k", "cnn"), ("digits", "mlp")):
        ds = load_dataset(name)
        data = client_data(ds, partition(ds.y_train, 2, "iid", seed=0))
        probe_model(make_model(net, ds.input_shape, ds.num_classes), data, (ds.x_test, ds.y_test))
    # Shakespeare's tensors (fedlab_utils.published_data): 80 character ids in, the next one's id out, int64
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 80, (6, 80), generator=g), torch.randint(0, 80, (6,), generator=g)
    probe_model(make_model("char_lstm", (80,), 80), [ClientData(x, y)], (x, y))
