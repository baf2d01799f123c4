"""FedDF (several architectures), logit sharing and SplitFed run as protocols on the one loop
and give the numbers their own loops gave before the refactor.

``EXPECTED`` was measured with the technique modules' former round loops (git 7045354) on the
tiny configurations below: per round ``[clients, accuracy, test loss, train loss, bytes up,
bytes down, client FLOPs]`` and the sum of the final model's parameters.  Bytes, FLOPs and
client lists must match exactly; accuracy and losses up to float rounding.
"""
import pytest
import torch

from fedlab_utils.core import Faults, LocalTraining
from fedlab_utils.data import ClientData, client_data, partition
from fedlab_utils.ledger import Energy, get_profile
from fedlab_utils.lessons.distillation import proxy_split, run_feddf_heterogeneous, run_logit_sharing
from fedlab_utils.lessons.parallel import splitfed_run
from fedlab_utils.models import make_model

EXPECTED = {'feddf': {'FedDF hetero · a': {'records': [[[0], 0.175, 2.279737701416016, 2.234275698661804, 4840, 4840, 505600],
                                            [[2], 0.205, 2.2484437561035158, 2.2783952355384827, 4840, 4840, 505600]],
                                'param_sum': -5.783551455999259},
           'FedDF hetero · b': {'records': [[[1, 3], 0.095, 2.271501159667969, 2.286973863840103, 4880, 4880, 505600],
                                            [[1, 3],
                                             0.2,
                                             2.2260450744628906,
                                             2.2483600080013275,
                                             4880,
                                             4880,
                                             505600]],
                                'param_sum': 2.8000507842516527}},
 'fedmd': {'records': [[[0, 1, 2, 3], 0.16499999999999998, 2.2752398300170897, 2.3235925883054733, 4800, 0, 2590720],
                       [[0, 1, 2, 3],
                        0.16749999999999998,
                        2.24570442199707,
                        2.2567510455846786,
                        4800,
                        4800,
                        3804160]],
           'param_sum': -4.572111392073566},
 'fd': {'records': [[[0, 1, 2, 3], 0.16499999999999998, 2.2752398300170897, 2.3235925883054733, 800, 0, 2969600],
                    [[0, 1, 2, 3], 0.22375, 2.256299705505371, 1.1330636069178581, 800, 800, 2969600]],
        'param_sum': -4.941581974595465},
 'splitfed_v1': {'records': [[[0, 1], 0.1, 2.3364913940429686, 2.2537396649519605, 34498, 34432, 1216512],
                             [[0, 1], 0.1, 2.340470886230469, 2.1426781713962555, 34498, 34432, 1216512]],
                 'param_sum': 0.2859531136637088},
 'splitfed_v2': {'records': [[[0, 1],
                              0.06666666666666667,
                              2.3132560729980467,
                              2.293066541353862,
                              34498,
                              34432,
                              1216512],
                             [[0, 1], 0.1, 2.326708984375, 2.1687083144982653, 34498, 34432, 1216512]],
                 'param_sum': -3.110080028698576}}

SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def small(digits):
    proxy, private = proxy_split(len(digits.y_train), 60, seed=0, num_clients=4)
    idx = private[:400]
    parts = partition(digits.y_train[idx], 4, "iid", seed=0)
    clients = client_data(digits, [idx[p] for p in parts])
    return clients, digits.x_train[proxy], (digits.x_test[:200], digits.y_test[:200])


LOCAL = LocalTraining(epochs=1, batch_size=32, lr=0.1, optimizer="sgdm")


def assert_same(history, expected):
    got = [[r.clients, r.accuracy, r.loss, r.train_loss, r.bytes_up, r.bytes_down, r.client_flops]
           for r in history.records]
    assert len(got) == len(expected["records"])
    for g, e in zip(got, expected["records"]):
        assert g[0] == e[0] and g[4:] == e[4:]
        assert g[1:4] == pytest.approx(e[1:4], rel=1e-5, abs=1e-6)
    param_sum = float(sum(p.double().sum() for p in history.model.state_dict().values()))
    assert param_sum == pytest.approx(expected["param_sum"], rel=1e-5, abs=1e-5)
    profile = get_profile(history.profile)
    for r in history.records:  # energy: one client-round at a time, summed
        per_client = sum((profile.energy(row["flops"], row["bytes_up"], row["bytes_down"]) for row in r.client_rows),
                         Energy())
        assert r.energy.total == pytest.approx(per_client.total)
        assert sum(row["bytes_up"] for row in r.client_rows) == r.bytes_up


def test_feddf_heterogeneous_keeps_its_numbers(digits, small):
    clients, proxy_x, test = small
    torch.manual_seed(0)
    archs = {"a": make_model("mlp", digits.input_shape, 10, hidden=(16,)),
             "b": make_model("mlp", digits.input_shape, 10, hidden=(8,))}
    hs = run_feddf_heterogeneous(archs, ["a", "b", "a", "b"], clients, proxy_x, test, rounds=2, fraction=0.75,
                                 local=LOCAL, seed=1, distill_epochs=1)
    assert list(hs) == list(EXPECTED["feddf"])
    for name, h in hs.items():
        assert_same(h, EXPECTED["feddf"][name])


@pytest.mark.parametrize("mode", ["proxy", "per_class"])
def test_logit_sharing_keeps_its_numbers(digits, small, mode):
    clients, proxy_x, test = small
    torch.manual_seed(0)
    model = make_model("mlp", digits.input_shape, 10, hidden=(16,))
    kw = {"proxy_x": proxy_x} if mode == "proxy" else {"temperature": 2.0, "alpha": 0.5}
    h = run_logit_sharing(model, clients, test, rounds=2, mode=mode, local=LOCAL, seed=1, **kw)
    assert_same(h, EXPECTED["fedmd" if mode == "proxy" else "fd"])


def splitfed_setup():
    torch.manual_seed(0)
    cnn = make_model("cnn", SHAPE, 10)
    g = torch.Generator().manual_seed(2)
    clients = [ClientData(torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g))
               for n in (20, 13)]
    test = (torch.randn(30, *SHAPE, generator=g), torch.randint(0, 10, (30,), generator=g))
    return cnn, clients, test, LocalTraining(epochs=2, batch_size=8, lr=0.05, optimizer="sgdm")


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_splitfed_keeps_its_numbers(variant):
    cnn, clients, test, local = splitfed_setup()
    h = splitfed_run(cnn, clients, test, cut=3, rounds=2, local=local, seed=3, num_classes=10, variant=variant)
    assert_same(h, EXPECTED[f"splitfed_{variant}"])


def test_splitfed_gains_fraction_faults_and_profile_objects():
    cnn, clients, test, local = splitfed_setup()
    profile = get_profile("phone-wifi")
    h = splitfed_run(cnn, clients, test, cut=3, rounds=2, local=local, seed=3, num_classes=10, fraction=0.5,
                     energy_profile=profile, faults=Faults(dropout=1.0), progress=False)
    assert h.profile is profile
    for r in h.records:
        assert len(r.clients) == 1 and r.dropped == r.clients and r.bytes_up == 0 and r.bytes_down > 0
    assert h.totals()["dropped"] == 2
