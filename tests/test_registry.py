"""The registry of named parts: every spec resolves to the part it names, run() takes names and
import paths, wrong specs and wrong kinds raise naming the argument, and a part's identity is its
full configuration."""
import textwrap

import pytest
import torch

from fedlab_utils.compression import (
    ErrorFeedback,
    Fp32Codec,
    QuantizeCodec,
    RandomKCodec,
    SignCodec,
    SparseCodec,
    TopKCodec,
)
from fedlab_utils.core import (
    ClientTransform,
    FedAvgM,
    FedAvgServer,
    FedOpt,
    FedProx,
    LocalTraining,
    Median,
    SequentialTrainer,
    TrimmedMean,
    VmapTrainer,
    fedavg_aggregate,
    registry,
    run,
)
from fedlab_utils.data import client_data, load_dataset, partition
from fedlab_utils.models import make_model


@pytest.mark.parametrize("spec, cls, settings", [
    ("fp32", Fp32Codec, {}), ("q8", QuantizeCodec, {"bits": 8}), ("Q4", QuantizeCodec, {"bits": 4}),
    ("topk:0.01", TopKCodec, {"fraction": 0.01}), ("randk:0.25", RandomKCodec, {"fraction": 0.25}),
    ("sign", SignCodec, {}), ("sparse", SparseCodec, {})])
def test_codec_specs(spec, cls, settings):
    codec = registry.resolve_codec(spec)
    assert type(codec) is cls
    assert all(getattr(codec, k) == v for k, v in settings.items())
    update = {"w": torch.randn(6, 5)}
    assert codec.decode(codec.encode(update), update)["w"].shape == (6, 5)


def test_error_feedback_wraps_any_codec():
    codec = registry.resolve_codec("ef:topk:0.1")
    assert isinstance(codec, ErrorFeedback) and isinstance(codec.inner, TopKCodec) and codec.inner.fraction == 0.1
    assert registry.resolve_codec(None).name == "fp32"


@pytest.mark.parametrize("spec", ["q0", "q17", "topk:2", "topk:x", "randk:0", "gzip", "", "ef:", "ef:gzip",
                                  "ef:ef:q8"])
def test_bad_codec_specs_name_the_argument_and_list_the_valid_ones(spec):
    with pytest.raises(ValueError, match=r"downlink=.*valid: fp32, q<bits>"):
        registry.resolve_codec(spec, "downlink")


@pytest.mark.parametrize("spec, lr, variant", [("fedadam", 0.01, "adam"), ("fedyogi:0.1", 0.1, "yogi"),
                                               ("FedAdagrad:0.5", 0.5, "adagrad")])
def test_server_specs(spec, lr, variant):
    server = registry.resolve_server(spec)
    assert isinstance(server, FedOpt) and server.lr == lr and server.variant == variant


def test_server_specs_fedavg_and_momentum():
    assert isinstance(registry.resolve_server("fedavg"), FedAvgServer)
    assert registry.resolve_server("fedavgm:0.5") == FedAvgM(lr=0.5)
    for bad in ("fedsgd", "fedadam:x", "fedadam:-1"):
        with pytest.raises(ValueError, match=r"server=.*fedavgm\[:<lr>\]"):
            registry.resolve_server(bad)


def test_aggregate_transform_and_trainer_specs():
    assert registry.resolve_aggregate("mean") is fedavg_aggregate
    assert registry.resolve_aggregate("median") == Median()
    assert registry.resolve_aggregate("trimmed_mean:0.1") == TrimmedMean(0.1)
    with pytest.raises(ValueError, match="aggregate=.*trimmed_mean"):
        registry.resolve_aggregate("trimmed_mean:0.5")
    assert registry.resolve_transform("fedprox:0.1").mu == 0.1
    assert type(registry.resolve_transform("none")) is ClientTransform
    assert isinstance(registry.resolve_trainer("vmap"), VmapTrainer)
    assert isinstance(registry.resolve_trainer("auto"), SequentialTrainer)  # no model to decide on
    model = make_model("mlp", (1, 8, 8), 10)
    assert isinstance(registry.resolve_trainer("auto", model=model, local=LocalTraining()), VmapTrainer)
    assert isinstance(registry.resolve_trainer("auto", model=model, local=LocalTraining(optimizer="adam")),
                      SequentialTrainer)
    with pytest.raises(ValueError, match="trainer=.*sequential, vmap, auto"):
        registry.resolve_trainer("threads")


def test_a_part_of_the_wrong_kind_is_a_type_error_naming_the_argument():
    with pytest.raises(TypeError, match="uplink=FedAvgServer"):
        registry.resolve_codec(FedAvgServer(), "uplink")
    with pytest.raises(TypeError, match="server=.*step"):
        registry.resolve_server(Fp32Codec(), "server")
    with pytest.raises(TypeError, match="aggregate="):
        registry.resolve_aggregate(3)
    with pytest.raises(TypeError, match="transform="):
        registry.resolve_transform(Fp32Codec())
    with pytest.raises(ValueError, match="kind='gadget'"):
        registry.resolve("gadget", "x")


@pytest.fixture
def my_parts(tmp_path, monkeypatch):
    (tmp_path / "my_fl_parts.py").write_text(textwrap.dedent('''
        from fedlab_utils.compression import Fp32Codec

        class MyCodec(Fp32Codec):
            name = "mine"

        def half_server():
            from fedlab_utils.core import FedAvgServer
            return FedAvgServer(lr=0.5)

        def first_client(results, global_model, round_idx):
            return results[0].update

        NOT_A_CODEC = 3

        class NeedsRank(Fp32Codec):
            def __init__(self, rank):
                self.rank = rank
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_fl_parts"


def test_import_paths_name_a_class_a_factory_or_a_part(my_parts):
    codec = registry.resolve_codec(f"{my_parts}:MyCodec")
    assert type(codec).__name__ == "MyCodec" and codec.name == "mine"
    assert isinstance(registry.resolve_codec(f"ef:{my_parts}:MyCodec").inner, type(codec))
    assert registry.resolve_server(f"{my_parts}:half_server").lr == 0.5
    assert registry.resolve_aggregate(f"{my_parts}:first_client").__name__ == "first_client"
    with pytest.raises(TypeError, match="uplink=3 is not a codec"):
        registry.resolve_codec(f"{my_parts}:NOT_A_CODEC")
    with pytest.raises(ValueError, match="NeedsRank needs arguments"):
        registry.resolve_codec(f"{my_parts}:NeedsRank")
    with pytest.raises(ValueError, match="has no 'Nothing'"):
        registry.resolve_codec(f"{my_parts}:Nothing")


@pytest.fixture(scope="module")
def federation():
    ds = load_dataset("digits", seed=0)
    clients = client_data(ds, partition(ds.y_train, 4, "iid", seed=0), torch.device("cpu"))
    return make_model("mlp", ds.input_shape, 10, hidden=(16,)), clients, (ds.x_test, ds.y_test)


def test_run_takes_names(federation, my_parts):
    model, clients, test = federation
    q8 = run(model, clients, test, rounds=1, uplink="q8", progress=False)
    assert q8.config["uplink"] == "q8" and q8.records[0].bytes_up < run(
        model, clients, test, rounds=1, progress=False).records[0].bytes_up / 3.5
    h = run(model, clients, test, rounds=2, uplink="ef:topk:0.01", server="fedadam", aggregate="median",
            transform="fedprox:0.01", trainer="auto", progress=False)
    assert (h.config["uplink"], h.config["server"], h.config["aggregate"]) == ("EF(top1%)", repr(FedOpt()), "median")
    assert h.config["trainer"].startswith("VmapTrainer")
    mine = run(model, clients, test, rounds=1, uplink=f"{my_parts}:MyCodec", progress=False)
    assert mine.config["uplink"] == "mine"
    with pytest.raises(ValueError, match="uplink='q99'"):
        run(model, clients, test, rounds=1, uplink="q99", progress=False)
    with pytest.raises(TypeError, match="server="):
        run(model, clients, test, rounds=1, server=Fp32Codec(), progress=False)


def test_spec_of_is_the_full_configuration_not_the_name():
    class LowRank:
        def __init__(self, rank):
            self.rank, self.name, self._cache = rank, "lowrank", {}

    assert registry.spec_of(LowRank(2)) != registry.spec_of(LowRank(16))
    assert registry.spec_of(LowRank(2)) == registry.spec_of(LowRank(2))
    ef = registry.spec_of(registry.resolve_codec("ef:q4"))
    assert ef["inner"]["bits"] == 4 and "residuals" not in ef
    server = registry.resolve_server("fedavgm")
    server.step({"w": torch.zeros(2)}, {"w": torch.ones(2)})  # state is not configuration
    assert registry.spec_of(server) == registry.spec_of(registry.resolve_server("fedavgm"))
    assert registry.spec_of(fedavg_aggregate) == "fedlab_utils.core.aggregators.fedavg:fedavg_aggregate"
    assert registry.spec_of(FedProx(0.1)) == {"type": "fedlab_utils.core.training.FedProx", "mu": 0.1}

    class Loop:
        def __init__(self):
            self.me, self.k = self, 3

    assert registry.spec_of(Loop())["k"] == 3  # a part that refers to itself still has a finite spec


# ----------------------------------------------------------------------------- one table, one parser (issues 29, 30)
def test_one_parser_splits_name_and_argument():
    assert registry.parse_spec("q8") == ("q", "8")
    assert registry.parse_spec(" TopK:0.01 ") == ("topk", "0.01")
    assert registry.parse_spec("ef:topk:0.01") == ("ef", "topk:0.01")
    assert registry.parse_spec("median") == ("median", None)


def test_register_adds_a_named_part_that_every_resolver_finds():
    @registry.register("aggregate", "first_client", "first_client")
    def _first(arg, argument, spec, **_):
        return lambda results, model, round_idx: results[0].update

    try:
        assert callable(registry.resolve("aggregate", "first_client"))
        assert "first_client" in registry.forms("aggregate")
        with pytest.raises(ValueError, match="first_client"):
            registry.resolve("aggregate", "nothing_of_the_kind")
    finally:
        del registry._TABLE["aggregate"]["first_client"]


@pytest.fixture
def researcher_module(tmp_path, monkeypatch):
    """A researcher's own module: a codec and an aggregator that take constructor arguments, a
    module whose own import fails."""
    (tmp_path / "mycodecs_rs.py").write_text(textwrap.dedent('''
        import torch
        from fedlab_utils.compression import Fp32Codec

        class RankCodec(Fp32Codec):
            def __init__(self, rank=2, scale=1.0):
                self.rank, self.scale = rank, scale
                self.name = f"rank{rank}"

        class Krum:
            def __init__(self, f=1):
                self.f = f
            def __call__(self, results, global_model, round_idx):
                return results[0].update
    '''))
    (tmp_path / "broken_rs.py").write_text("import no_such_dependency_rs\nclass Codec: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_import_paths_take_literal_arguments(researcher_module):
    codec = registry.resolve_codec("mycodecs_rs:RankCodec(rank=4, scale=0.5)")
    assert (codec.rank, codec.scale) == (4, 0.5)
    assert registry.resolve_aggregate("mycodecs_rs:Krum(f=1)").f == 1
    assert registry.resolve_codec("ef:mycodecs_rs:RankCodec(3)").inner.rank == 3
    with pytest.raises(ValueError, match="arguments must be literals"):
        registry.resolve_codec("mycodecs_rs:RankCodec(rank=__import__('os').getpid())")
    with pytest.raises(ValueError, match="cannot be built"):
        registry.resolve_codec("mycodecs_rs:RankCodec(nope=1)")


def test_a_part_checkpoint_identity_includes_its_arguments(researcher_module):
    four = registry.spec_of(registry.resolve_codec("mycodecs_rs:RankCodec(rank=4)"))
    two = registry.spec_of(registry.resolve_codec("mycodecs_rs:RankCodec(rank=2)"))
    assert four["rank"] == 4 and two["rank"] == 2 and four != two


def test_import_errors_name_their_cause(researcher_module):
    with pytest.raises(ValueError, match=r"uplink='no_such_module_xyz:Codec': module 'no_such_module_xyz' cannot be "
                                         r"imported: No module named 'no_such_module_xyz'"):
        registry.resolve_codec("no_such_module_xyz:Codec")
    with pytest.raises(ValueError, match="No module named 'no_such_dependency_rs'"):
        registry.resolve_codec("broken_rs:Codec")
    with pytest.raises(ValueError, match="module 'mycodecs_rs' has no 'Nothing'"):
        registry.resolve_codec("mycodecs_rs:Nothing")


@pytest.mark.parametrize("kind, argument, cls", [("codec", "uplink", "RankCodec"), ("codec", "downlink", "RankCodec"),
                                                 ("server", "server", "Krum"), ("aggregate", "aggregate", "Krum"),
                                                 ("transform", "transform", "Krum")])
def test_a_class_where_an_instance_belongs_says_how_to_pass_it(researcher_module, kind, argument, cls):
    import mycodecs_rs

    with pytest.raises(TypeError, match=rf"{argument}={cls} is a class.*`{cls}\(\)`.*'mycodecs_rs:{cls}'"):
        registry.resolve(kind, getattr(mycodecs_rs, cls), argument)


def test_errors_use_the_right_article():
    with pytest.raises(TypeError, match="is not an aggregate"):
        registry.resolve_aggregate(3)
    with pytest.raises(TypeError, match="is not a codec"):
        registry.resolve_codec(3)


def test_error_feedback_around_a_codec_without_a_name():
    class Plain:
        def encode(self, update, client_id=None):
            return Fp32Codec().encode(update)

        def decode(self, payload, template):
            return Fp32Codec().decode(payload, template)

    assert registry.resolve_codec("ef:fp32").name == "EF(fp32)"
    from fedlab_utils.compression import ErrorFeedback
    assert ErrorFeedback(Plain()).name == "EF(Plain)"
