"""Issue 30's researcher trial, replayed through run() as they met it: a class where an instance
belongs (D2), an import path whose module fails or lacks the name (D3) and error feedback around a
codec without ``name`` (D4) are each refused (or run) before round 1, naming the argument."""
from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from fedlab_utils.core import Callback, run
from fedlab_utils.data import ClientData

RESEARCHER_MODULE = '''
import torch


class PowerSGD:
    """A stateful codec (reset, state_dict) with a constructor argument."""

    def __init__(self, rank=2):
        self.rank, self.name = rank, f"PowerSGD rank {rank}"

    def encode(self, update, client_id=0):
        return b"".join(t.detach().float().contiguous().numpy().tobytes() for t in update.values())

    def decode(self, payload, template):
        flat = torch.frombuffer(bytearray(payload), dtype=torch.float32)
        out, offset = {}, 0
        for key, t in template.items():
            out[key] = flat[offset:offset + t.numel()].reshape(t.shape).to(t.dtype)
            offset += t.numel()
        return out

    def reset(self):
        pass

    def state_dict(self):
        return {"rank": self.rank}

    def load_state_dict(self, state):
        self.rank = state["rank"]


class Nameless:
    """No name, no reset: the plainest codec there is."""

    def encode(self, update, client_id=0):
        return PowerSGD().encode(update, client_id)

    def decode(self, payload, template):
        return PowerSGD().decode(payload, template)


class NesterovServer:
    def step(self, global_state, update):
        return {k: v + update[k] for k, v in global_state.items()}


class Krum:
    def __init__(self, f=1):
        self.f = f

    def __call__(self, results, global_model, round_idx):
        return results[0].update
'''


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """The researcher's module (``researcher_parts_t30``) and one whose own import fails."""
    (tmp_path / "researcher_parts_t30.py").write_text(textwrap.dedent(RESEARCHER_MODULE), encoding="utf-8")
    (tmp_path / "broken_parts_t30.py").write_text("import a_dependency_that_is_not_installed_t30\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    import researcher_parts_t30

    yield researcher_parts_t30
    import sys

    sys.modules.pop("researcher_parts_t30", None)
    sys.modules.pop("broken_parts_t30", None)


class Rounds(Callback):
    def __init__(self):
        self.started = 0

    def on_round_start(self, round_idx, history):
        self.started += 1


def go(counter: Rounds | None = None, **parts):
    g = torch.Generator().manual_seed(0)
    clients = [ClientData(torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(2)]
    torch.manual_seed(0)
    counter = counter if counter is not None else Rounds()
    history = run(nn.Linear(4, 3), clients, (clients[0].x, clients[0].y), rounds=2, progress=False,
                  callbacks=[counter], **parts)
    return history, counter


@pytest.mark.parametrize("argument, name", [("uplink", "PowerSGD"), ("uplink", "Nameless"),
                                            ("downlink", "Nameless"), ("server", "NesterovServer"),
                                            ("aggregate", "Krum")])
def test_d2_a_class_where_an_instance_belongs_is_refused_naming_the_argument(parts, argument, name):
    """D2: PowerSGD (with reset), a class without reset, a server, an aggregator: each passed as
    the class is refused before round 1, naming the argument and both right ways to pass it."""
    counter = Rounds()
    with pytest.raises(TypeError) as info:
        go(counter, **{argument: getattr(parts, name)})
    message = str(info.value)
    assert message.startswith(f"{argument}={name} is a class")
    assert f"`{name}()`" in message and f"'researcher_parts_t30:{name}'" in message
    assert "is not a aggregate" not in message
    assert counter.started == 0


def test_d2_the_same_parts_as_instances_and_by_import_path_run(parts):
    history, counter = go(uplink=parts.PowerSGD(rank=3), server=parts.NesterovServer(), aggregate=parts.Krum())
    assert counter.started == 2 and history.config["uplink"] == "PowerSGD rank 3"
    history, _ = go(uplink="researcher_parts_t30:PowerSGD(rank=4)", aggregate="researcher_parts_t30:Krum(f=1)")
    assert history.config["uplink"] == "PowerSGD rank 4"


@pytest.mark.parametrize("spec, says", [
    ("no_such_module_t30:Codec", "module 'no_such_module_t30' cannot be imported: No module named 'no_such_module_t30'"),
    ("broken_parts_t30:Codec", "No module named 'a_dependency_that_is_not_installed_t30'"),
    ("researcher_parts_t30:Nothing", "module 'researcher_parts_t30' has no 'Nothing'"),
])
def test_d3_an_import_path_that_fails_says_why_before_round_1(parts, spec, says):
    counter = Rounds()
    with pytest.raises(ValueError) as info:
        go(counter, uplink=spec)
    assert str(info.value).startswith(f"uplink={spec!r}") and says in str(info.value)
    assert counter.started == 0


def test_d4_error_feedback_around_a_codec_without_a_name_runs(parts):
    history, counter = go(uplink="ef:researcher_parts_t30:Nameless")
    assert counter.started == 2 and history.config["uplink"] == "EF(Nameless)"
    plain, _ = go(uplink=parts.Nameless())
    assert plain.config["uplink"] == "Nameless"
    assert plain.records[0].bytes_up == history.records[0].bytes_up  # EF sends what its codec sends
