"""Errors that blame the right thing: a wrong setup is reported before round 1 as a wrong argument
(clients, test, local, trainer, model), never as a failing client; rounds and runs without an
accepted update warn; numpy scalars are numbers."""
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fedlab_utils.core import ClientTransform, Faults, LocalTraining, RoundWarning, probe_model, run
from fedlab_utils.data import ClientData, partition

DIM, CLASSES = 6, 3


def tiny_clients(sizes=(12, 20, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [ClientData(torch.randn(n, DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g)) for n in sizes]


def tiny_model(dim=DIM, classes=CLASSES, dropout=False):
    torch.manual_seed(0)
    layers = [nn.Linear(dim, 5), nn.ReLU()] + ([nn.Dropout(0.5)] if dropout else []) + [nn.Linear(5, classes)]
    return nn.Sequential(*layers)


def tiny_test():
    g = torch.Generator().manual_seed(9)
    return torch.randn(10, DIM, generator=g), torch.randint(0, CLASSES, (10,), generator=g)


def run_tiny(clients=None, model=None, test=None, **kw):
    kw.setdefault("rounds", 2)
    kw.setdefault("local", LocalTraining(lr=0.2, batch_size=8))
    return run(model if model is not None else tiny_model(), tiny_clients() if clients is None else clients,
               tiny_test() if test is None else test, progress=False, **kw)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def no_client_blamed(message: str) -> bool:
    return "raised in round" not in message and "on_client_error" not in message


# ----------------------------------------------------------------------------- setup errors, before round 1
class Rewrites(ClientTransform):
    def on_update(self, update, client_id):
        return update


def test_vmap_with_a_transform_it_cannot_run_is_a_trainer_error():
    with pytest.raises(ValueError, match=r"^trainer='vmap' supports no transform or FedProx only") as info:
        run_tiny(trainer="vmap", transform=Rewrites())
    assert no_client_blamed(str(info.value))
    with pytest.raises(ValueError, match=r"^trainer='vmap'.*optimizer='sgd'"):
        run_tiny(trainer="vmap", local=LocalTraining(optimizer="adam"))


def test_vmap_with_a_model_it_cannot_run_is_a_trainer_error():
    with pytest.raises(ValueError, match=r"^trainer='vmap' needs a model without buffers.*dropout") as info:
        run_tiny(model=tiny_model(dropout=True), trainer="vmap")
    assert no_client_blamed(str(info.value))


def test_a_trainer_object_that_checks_support_is_asked_before_round_1():
    class Picky:
        calls = 0

        @staticmethod
        def check_supported(model, local, transform):
            raise ValueError("only convolutional models")

        def __call__(self, *args):
            Picky.calls += 1
            raise AssertionError("never trained")

    with pytest.raises(ValueError, match=r"^trainer=.*Picky.*cannot train this setup: only convolutional models"):
        run_tiny(trainer=Picky())
    assert Picky.calls == 0


def test_a_model_of_the_wrong_input_shape_is_a_model_error_with_the_shapes():
    with pytest.raises(ValueError, match=r"^model does not fit the data") as info:
        run_tiny(model=tiny_model(dim=10))
    message = str(info.value)
    assert "clients[0]" in message and f"({DIM},)" in message and "make_model" in message
    assert no_client_blamed(message)


def test_a_model_that_only_fits_the_clients_is_refused_on_the_test_set():
    test = (torch.randn(4, DIM + 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"^model does not fit the data.*one sample of test.*\(7,\)"):
        run_tiny(test=test)


def test_a_model_with_too_few_outputs_for_the_labels_is_a_model_error():
    with pytest.raises(ValueError, match=r"^model gives 2 outputs.*labels go up to 2.*num_classes=3"):
        run_tiny(model=tiny_model(classes=2))


def test_the_probe_draws_nothing_and_restores_every_module_mode():
    model = tiny_model(dropout=True)
    model.train()
    model[1].eval()  # a mixed state survives the probe
    before = [m.training for m in model.modules()]
    weights = [p.clone() for p in model.parameters()]
    torch.manual_seed(5)
    probe_model(model, tiny_clients(), tiny_test())
    after_probe = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after_probe, torch.rand(3))  # eval mode: dropout drew nothing from torch's RNG
    assert [m.training for m in model.modules()] == before
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_the_first_client_with_data_is_probed():
    clients = tiny_clients()
    clients[0] = ClientData(torch.randn(0, DIM + 1), torch.zeros(0, dtype=torch.long))  # empty: nothing to probe
    clients[1] = ClientData(torch.randn(4, DIM + 1), clients[1].y[:4])
    with pytest.raises(ValueError, match=r"^model does not fit the data.*clients\[1\]"):
        run_tiny(clients=clients)


def test_tensors_as_clients_name_clients_and_say_what_a_client_is():
    x, y = tiny_test()
    for bad in ([x], x, (x, y), {"a": tiny_clients()[0]}, "clients"):
        with pytest.raises(ValueError, match=r"^clients.*ClientData\(x, y\).*client_data") as info:
            run_tiny(clients=bad)
        assert no_client_blamed(str(info.value))
    with pytest.raises(ValueError, match=r"^clients is empty"):
        run_tiny(clients=[])
    with pytest.raises(ValueError, match=r"^clients\[1\] has 3 inputs but 2 labels"):
        run_tiny(clients=[tiny_clients()[0], ClientData(x[:3], y[:2])])


def test_a_test_set_that_is_not_x_and_y_names_test():
    x, y = tiny_test()
    for bad in ((x,), x, (x, y, y), [x.numpy(), y]):
        with pytest.raises(ValueError, match=r"^test.*\(x_test, y_test\)"):
            run_tiny(test=bad)
    with pytest.raises(ValueError, match=r"^test has 10 inputs and 3 labels"):
        run_tiny(test=(x, y[:3]))
    with pytest.raises(ValueError, match=r"^test has 0 inputs"):
        run_tiny(test=(x[:0], y[:0]))


def test_local_may_be_a_dict_of_its_fields_and_anything_else_names_local():
    a = run_tiny(local={"lr": 0.2, "batch_size": 8})
    b = run_tiny(local=LocalTraining(lr=0.2, batch_size=8))
    assert states_equal(a.model, b.model) and a.config["local"] == b.config["local"]
    with pytest.raises(ValueError, match=r"^local=.*has no field learning_rate; valid fields: epochs, batch_size, lr"):
        run_tiny(local={"learning_rate": 0.2})
    with pytest.raises(ValueError, match=r"^local=.*lr=-1.* out of range"):
        run_tiny(local={"lr": -1})
    with pytest.raises(ValueError, match=r"^local=3 is not valid; pass LocalTraining"):
        run_tiny(local=3)


# ----------------------------------------------------------------------------- failures in a client's own training
class BreaksOn(ClientTransform):
    def __init__(self, broken):
        self.broken = set(broken)

    def on_receive(self, model, client_id, round_idx):
        if client_id in self.broken:
            raise RuntimeError("battery died")


def test_one_failing_client_is_blamed_and_skip_is_suggested():
    with pytest.raises(RuntimeError, match=r"client 1 raised in round 1.*battery died.*on_client_error='skip'"):
        run_tiny(transform=BreaksOn([1]))


def test_a_round_where_every_client_raised_points_at_the_setup_not_skip():
    with pytest.raises(RuntimeError, match=r"every one of the 3 clients trained in round 1 raised.*check the setup") as info:
        run_tiny(transform=BreaksOn([0, 1, 2]))
    assert "on_client_error='skip'" not in str(info.value)


def test_a_client_whose_own_data_is_broken_is_a_client_failure():
    clients = tiny_clients()
    clients[2] = ClientData(torch.randn(8, DIM + 3), clients[2].y)  # not the first client: no setup check sees it
    with pytest.raises(RuntimeError, match=r"client 2 raised in round 1.*on_client_error='skip'"):
        run_tiny(clients=clients)
    h = run_tiny(clients=clients, on_client_error="skip")
    assert [r.failed for r in h.records] == [[2], [2]]


# ----------------------------------------------------------------------------- rounds without an accepted update
def round_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RoundWarning)]


def test_dropout_one_warns_once_per_round_and_once_for_the_run():
    with pytest.warns(RoundWarning) as record:
        h = run_tiny(rounds=3, faults=Faults(dropout=1.0))
    messages = round_warnings(record)
    assert len(messages) == 4
    for r in (1, 2, 3):
        assert messages[r - 1] == (f"round {r}: no client update was accepted, so the model is unchanged "
                                   "(of 3 sampled clients: 3 dropped)")
    assert messages[3] == ("the run ended without any accepted client update in 3 rounds, so the model is the "
                           "initial one (client-rounds: 9 dropped)")
    assert states_equal(h.model, tiny_model())


def test_a_round_where_all_clients_failed_or_were_rejected_warns_with_counts():
    clients = tiny_clients()
    clients[1] = ClientData(torch.full_like(clients[1].x, float("nan")), clients[1].y)
    with pytest.warns(RoundWarning, match=r"^round 1: .*of 3 sampled clients: 1 rejected, 2 failed\)$"):
        run_tiny(clients=clients, rounds=1, transform=BreaksOn([0, 2]), on_client_error="skip")


def test_a_run_with_accepted_updates_does_not_warn():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_tiny(rounds=2, faults=Faults(dropout=0.3, seed=1))
    assert round_warnings(record) == []


def test_only_some_rounds_empty_warns_for_those_rounds_only():
    faults = Faults(dropout=0.6, seed=3)
    dropped = {r: faults.dropped(r, [0, 1, 2]) for r in (1, 2, 3, 4)}
    silent = [r for r, d in dropped.items() if len(d) == 3]
    assert silent and len(silent) < 4, dropped  # the seed gives both kinds of round
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        run_tiny(rounds=4, faults=faults)
    assert [int(m.split(":")[0].split()[1]) for m in round_warnings(record)] == silent


# ----------------------------------------------------------------------------- numpy scalars are numbers
def test_numpy_scalars_are_accepted_wherever_numbers_are_and_stored_plain():
    plain = run_tiny(rounds=2, fraction=0.5, seed=1, eval_every=1, local=LocalTraining(epochs=2, lr=0.2, batch_size=8),
                     faults=Faults(dropout=0.25, seed=2))
    numpy = run_tiny(rounds=np.int64(2), fraction=np.float32(0.5), seed=np.int64(1), eval_every=np.int32(1),
                     local=LocalTraining(epochs=np.int64(2), lr=np.float64(0.2), batch_size=np.int16(8)),
                     faults=Faults(dropout=np.float32(0.25), seed=np.int64(2)))
    assert states_equal(plain.model, numpy.model)
    assert json.dumps(numpy.to_dict(), allow_nan=True) and numpy.config["rounds"] == 2
    assert type(numpy.config["fraction"]) is float and type(numpy.config["seed"]) is int
    assert type(numpy.config["local"]["epochs"]) is int and type(numpy.config["faults"]["dropout"]) is float
    assert len(partition(np.arange(40) % 4, np.int64(10), "iid", seed=np.int64(0))) == 10


@pytest.mark.parametrize("name", ["rounds", "eval_every", "checkpoint_every", "seed"])
def test_bool_is_still_refused_as_an_integer(name):
    with pytest.raises(ValueError, match=rf"^{name}=True is not valid; it must be an integer"):
        run_tiny(**{name: True})


def test_bool_is_refused_in_local_training_and_faults():
    with pytest.raises(ValueError, match="lr=True"):
        LocalTraining(lr=True)
    with pytest.raises(ValueError, match="dropout=False"):
        Faults(dropout=False)


def test_a_dataset_passed_as_clients_or_test_names_the_argument(digits):
    with pytest.raises(ValueError, match=r"^clients is a FederatedDataset, not a list of clients.*client_data"):
        run(tiny_model(dim=64, classes=10), digits, (digits.x_test, digits.y_test), rounds=1, progress=False)
    with pytest.raises(ValueError, match=r"^test is a FederatedDataset; pass test=\(x_test, y_test\)"):
        run(tiny_model(dim=64, classes=10), [ClientData(digits.x_train[:5], digits.y_train[:5])], digits, rounds=1,
            progress=False)
