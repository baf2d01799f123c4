"""Checks for notebook 07 (from simulation to deployment on Flower)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from fedlab_utils.core.aggregators.fedavg import weighted_average

from ..i18n import gettext
from . import call_safely, expect, expect_tensors_close, passed

__all__ = ["check_client_train", "check_aggregate_replies", "check_envelope_prediction", "check_accuracy_gap_prediction", "check_can_connect", "SAN_CASES"]

#: (the server certificate's SANs, the address a SuperNode dials with --superlink).  Hand-made:
#: ports to strip, IPv6 in brackets, names in another case, an IP that a name resolves to, and
#: a name for an address (TLS compares what was dialled with the SANs, nothing is looked up).
SAN_CASES = [
    (["localhost", "127.0.0.1", "::1", "203.0.113.5"], "203.0.113.5:9092"),
    (["localhost", "127.0.0.1", "::1", "203.0.113.5"], "198.51.100.7:9092"),
    (["localhost", "127.0.0.1", "::1", "203.0.113.5"], "LocalHost:9092"),
    (["localhost", "127.0.0.1", "::1", "203.0.113.5"], "[::1]:9092"),
    (["localhost", "127.0.0.1", "::1", "203.0.113.5"], "fl.example.org:9092"),
    (["localhost", "127.0.0.1", "::1", "fl.example.org"], "fl.example.org:9092"),
    (["localhost", "127.0.0.1", "::1", "fl.example.org"], "203.0.113.5:9092"),
    (["localhost", "127.0.0.1", "::1", "fl.example.org"], "example.org:9092"),
    (["localhost"], "127.0.0.1:9092"),
    (["localhost"], "localhost:443"),
    (["127.0.0.1"], "localhost:9092"),
    (["10.0.0.2", "::1"], "[2001:db8::1]:9092"),
]


# ----------------------------------------------------------------------------- build: the ClientApp's train
def _train_case(seed: int | None):
    """A hand-made Flower TRAIN message and a SuperNode's context: round 2 of a small task, with a
    global model that is NOT the task's initial model (so a client that skips loading it is seen)."""
    import time

    from flwr.app import ConfigRecord, Context, Message, MessageType, Metadata, RecordDict

    from fedlab_utils.compression.wire import Fp32Codec
    from fedlab_utils.deploy.apps import DeploymentConfig, build_task

    if seed is None:
        config = DeploymentConfig(dataset="digits", num_clients=3, partition="iid", rounds=3, local_epochs=1,
                                  batch_size=32, lr=0.05, uplink="q8", seed=0)
        partition_id, round_idx = 1, 2
    else:
        config = DeploymentConfig(dataset="digits", num_clients=4, partition="dirichlet", alpha=0.5, rounds=3,
                                  local_epochs=1, batch_size=16, lr=0.1, uplink="fp32", seed=seed)
        partition_id, round_idx = seed % 4, 3
    _, _, model = build_task(config)
    generator = torch.Generator().manual_seed(1234 + (seed or 0))
    global_state = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()}
    metadata = Metadata(run_id=7, message_id=f"train-{round_idx}-{partition_id}", src_node_id=1, dst_node_id=100 + partition_id,
                        reply_to_message_id="", group_id=str(round_idx), created_at=time.time(), ttl=3600.0,
                        message_type=MessageType.TRAIN)
    msg = Message(RecordDict({"fedlab": ConfigRecord({"global": Fp32Codec().encode(global_state), "round": round_idx})}),
                  metadata=metadata)

    def context():
        return Context(run_id=7, node_id=100 + partition_id, state=RecordDict(), run_config=config.to_run_config(),
                       node_config={"partition-id": partition_id, "num-partitions": config.num_clients})

    return config, msg, context, global_state


def check_client_train(fn: Callable, seed: int | None = None) -> None:
    """``fn(msg, context)`` is a ClientApp's ``train``: it must load the global arrays the message
    carries, train the SuperNode's client on them, and reply to ``msg`` with the encoded update
    (``content["fedlab"]["payload"]``) and the client's id and sample count
    (``content["metrics"]["partition-id"]``, ``["num-examples"]``).  Compared byte for byte with the
    package's ``flower._client_train`` on a hand-made message."""
    from flwr.app import Message

    from fedlab_utils.deploy.apps import _client_train, make_codec

    config, msg, context, global_state = _train_case(seed)
    reply = call_safely(fn, msg, context(), what="client_train")
    reference = _client_train(msg, context())
    expect(isinstance(reply, Message), gettext(
        "client_train must return a Flower Message, got {kind}: Message(RecordDict({{...}}), reply_to=msg).").format(
            kind=type(reply).__name__))
    expect(reply.metadata.reply_to_message_id == msg.metadata.message_id, gettext(
        "The reply does not answer the message it received: build it with Message(content, reply_to=msg), so "
        "that the SuperLink routes it back to the ServerApp."))
    content = reply.content
    expect("fedlab" in content.config_records and "payload" in content.config_records["fedlab"], gettext(
        "The reply carries no content['fedlab']['payload']: put the encoded update, as bytes, in a "
        "ConfigRecord({'payload': ...}) under 'fedlab'."))
    expect("metrics" in content.metric_records and "num-examples" in content.metric_records["metrics"], gettext(
        "The reply has no sample count: FedAvg weights each update by its client's samples, so the server needs "
        "MetricRecord({'partition-id': ..., 'num-examples': len(data)}) under 'metrics'."))
    metrics, want = content.metric_records["metrics"], reference.content.metric_records["metrics"]
    expect(metrics["num-examples"] == want["num-examples"], gettext(
        "num-examples is {got}; this client holds {want} samples (len(data)), the weight of its update in "
        "FedAvg.").format(got=metrics["num-examples"], want=want["num-examples"]))
    expect(metrics.get("partition-id") == want["partition-id"], gettext(
        "partition-id is {got!r}; this SuperNode is client {want} (context.node_config['partition-id']): the "
        "server needs it to match the update with its client.").format(got=metrics.get("partition-id"),
                                                                       want=want["partition-id"]))
    payload = bytes(content.config_records["fedlab"]["payload"])
    expected = bytes(reference.content.config_records["fedlab"]["payload"])
    if payload == expected:
        passed("client_train")
        return
    template = {k: torch.zeros_like(v) for k, v in global_state.items()}
    try:
        if len(payload) != len(expected):  # the run's codec gives every update of this model one size
            raise ValueError("size")
        sent = make_codec(config.uplink).decode(payload, template)
    except Exception:  # not the run's codec's format
        raise AssertionError(gettext(
            "The payload is not in the run's uplink format ({codec}): encode the update with "
            "make_codec(config.uplink).encode(update, partition_id).").format(codec=config.uplink)) from None
    update = make_codec(config.uplink).decode(expected, template)
    weights = {k: update[k] + global_state[k] for k in update}
    if all(torch.allclose(sent[k], weights[k], atol=0.05 * (weights[k].abs().max().item() + 1e-12)) for k in sent):
        raise AssertionError(gettext(
            "The payload holds the trained weights, not the update: send state_delta(trained, received), the "
            "change from the global model the client received."))
    raise AssertionError(gettext(
        "The update differs from the reference client's. Load the global arrays the message carries "
        "(Fp32Codec().decode(bytes(sent['global']), model_state(model))) into the model BEFORE training, and "
        "train with config.local() and client_generator(config.seed, round, partition_id)."))


def _replies_cases(seed: int | None) -> list[list[tuple[int, int, dict | None]]]:
    """Lists of (client_id, num_samples, update or None for a client whose reply never came)."""
    if seed is None:
        u = [{"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([3.0])},
             {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([-1.0])},
             {"w": torch.tensor([2.0, 2.0]), "b": torch.tensor([0.0])}]
        return [[(2, 60, u[2]), (0, 10, u[0]), (1, 30, None)],  # client 1 timed out, replies out of order
                [(0, 10, u[0]), (1, 30, u[1]), (2, 60, u[2])],  # everyone replied
                [(0, 10, None), (1, 30, None)]]  # nobody replied
    g = torch.Generator().manual_seed(seed)
    cases = []
    for clients in (3, 6):
        case = []
        for cid in torch.randperm(clients, generator=g).tolist():
            update = {"w": torch.randn(3, 2, generator=g), "b": torch.randn(3, generator=g)}
            case.append((cid, int(torch.randint(1, 400, (1,), generator=g)) + (500 if cid == 0 else 0),
                         None if cid == clients - 1 else update))
        cases.append(case)
    return cases


def check_aggregate_replies(fn: Callable, seed: int | None = None) -> None:
    """``fn(replies)`` gets ``[(client_id, num_samples, update_or_None), ...]`` in arrival order
    (``None``: the client's reply never came) and must return FedAvg over the clients that
    replied (weights = their own sample counts) or ``None`` when nobody replied."""
    hint = (gettext("Keep only the replies whose update is not None, weight each by its own num_samples divided by "
                    "the total of the clients that replied, and return None when nobody replied."))
    for replies in _replies_cases(seed):
        arrived = [(cid, n, u) for cid, n, u in replies if u is not None]
        answer = call_safely(fn, [(c, n, None if u is None else {k: v.clone() for k, v in u.items()})
                                  for c, n, u in replies], what="aggregate_replies")
        if not arrived:
            expect(answer is None, gettext('aggregate_replies: nobody replied, so there is nothing to average; return None (the server keeps its model), got {type_answer_name}. {hint}').format(type_answer_name=type(answer).__name__, hint=hint))
            continue
        expect(isinstance(answer, dict), gettext('aggregate_replies should return a dict of tensors, got {type_answer_name}. {hint}').format(type_answer_name=type(answer).__name__, hint=hint))
        expected = weighted_average([u for _, _, u in arrived], [n for _, n, _ in arrived])
        everyone = sum(n for _, n, _ in replies)
        diluted = {k: sum(n / everyone * u[k] for _, n, u in arrived) for k in expected}
        if len(arrived) < len(replies) and all(k in answer and isinstance(answer[k], torch.Tensor)
                                               and answer[k].shape == diluted[k].shape
                                               and torch.allclose(answer[k], diluted[k]) for k in diluted):
            raise AssertionError(gettext("aggregate_replies divided by the samples of ALL sampled clients, including the "
                                         "ones that never replied: the update shrinks towards zero. ") + hint)
        plain = {k: sum(u[k] for _, _, u in arrived) / len(arrived) for k in expected}
        if all(k in answer and isinstance(answer[k], torch.Tensor) and answer[k].shape == plain[k].shape
               and torch.allclose(answer[k], plain[k]) for k in plain) and not all(
                torch.allclose(plain[k], expected[k]) for k in plain):
            raise AssertionError(gettext("aggregate_replies returned the plain mean of the replies; weight them by their "
                                         "sample counts. ") + hint)
        expect_tensors_close(answer, expected, "aggregate_replies", atol=1e-5, hint=hint)
    passed("aggregate_replies")


#: A prediction of the envelope's share passes within this relative band of the measured share.
ENVELOPE_BAND = 0.3


def check_envelope_prediction(answer, records: list[dict], band: float = ENVELOPE_BAND) -> None:
    """Predict-then-check: ``answer`` predicts, in percent of the payload, how many bytes Flower adds
    to each uplink message of a run (``records``: its rounds, with ``flower_bytes_up``,
    ``ledger_bytes_up`` and ``replied``).  It passes within ``band`` (relative) of the measured
    share, ``100 * (Flower bytes - ledger bytes) / ledger bytes``; either way it prints why."""
    replies = sum(len(r["replied"]) for r in records)
    ledger = sum(r["ledger_bytes_up"] for r in records)
    envelope = sum(r["flower_bytes_up"] for r in records) - ledger
    expect(replies > 0 and ledger > 0, gettext("the run has no uplink message to measure (no client replied)"))
    measured = 100 * envelope / ledger
    got = answer.item() if isinstance(answer, torch.Tensor) and answer.numel() == 1 else answer
    expect(isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got),
           gettext('envelope prediction: expected a number in percent, got {answer!r}').format(answer=answer))
    low, high = (1 - band) * measured, (1 + band) * measured
    why = (gettext("Flower adds about {envelope_replies:.0f} B to every uplink message (ids, record and key names, content hashes) whatever the message carries; this run's payload is {ledger_replies:,.0f} B per message, so the envelope is {measured:.2f}% of it.").format(envelope_replies=envelope / replies, ledger_replies=ledger / replies, measured=measured))
    if low <= got <= high:
        print(gettext('✓ envelope prediction: you said {got:.3g}%, measured {measured:.2f}% (the band is {low:.2f}% to {high:.2f}%). {why}').format(got=got, measured=measured, low=low, high=high, why=why))
        return
    if 0 < got < low:
        hint = (gettext("Too small. If you scaled the fp32 run's share down with the payload, the envelope does not shrink "
                        "with it: it is a fixed number of bytes, so a 4x smaller payload makes it a 4x larger share. "))
    elif got > high:
        hint = (gettext("Too large. Flower's envelope is a few hundred bytes, not a fraction of the payload: read it off the "
                        "pitfall's fp32 rounds (Flower bytes minus ledger bytes, per client that replied). "))
    else:
        hint = gettext("Flower's message is always larger than the payload inside it: the share is positive. ")
    raise AssertionError(gettext('envelope prediction: you said {got:.3g}%, measured {measured:.2f}% (the band is {low:.2f}% to {high:.2f}%). {hint}{why}').format(got=got, measured=measured, low=low, high=high, hint=hint, why=why))


#: A prediction of the accuracy gap passes within this many percentage points of the measured gap.
GAP_BAND_POINTS = 1.0


def check_accuracy_gap_prediction(answer, flower_accuracy: list[float], simulated_accuracy: list[float],
                                  band_points: float = GAP_BAND_POINTS) -> None:
    """Predict-then-check: ``answer`` predicts the largest gap, in accuracy points, between a Flower
    deployment's per-round accuracy and the in-process ``run()``'s (both fractions in [0, 1], one
    per round).  It passes within ``band_points`` of the measured gap; either way it prints why."""
    expect(len(flower_accuracy) == len(simulated_accuracy) and len(flower_accuracy) > 0,
           gettext('accuracy gap: {len_flower_accuracy} Flower rounds vs {len_simulated_accuracy} run() rounds').format(len_flower_accuracy=len(flower_accuracy), len_simulated_accuracy=len(simulated_accuracy)))
    measured = 100 * max(abs(f - s) for f, s in zip(flower_accuracy, simulated_accuracy))
    got = answer.item() if isinstance(answer, torch.Tensor) and answer.numel() == 1 else answer
    expect(isinstance(got, (int, float)) and not isinstance(got, bool) and math.isfinite(got),
           gettext('accuracy gap prediction: expected a number of accuracy points, got {answer!r}').format(answer=answer))
    why = (gettext("Seeded identically, nothing random is left that the seed does not fix: the same shuffles, the same "
                   "payloads, and the ServerApp sorts the replies by client before averaging. Separate processes and a "
                   "network change when things happen, not what is computed; only the order of float additions "
                   "(threads, other CPUs) can move the last bits."))
    expect(got >= 0, gettext('accuracy gap prediction: you said {got:.3g} points, but a gap is a distance between two accuracies: it cannot be negative. {why}').format(got=got, why=why))
    if abs(got - measured) <= band_points:
        print(gettext('✓ accuracy gap prediction: you said {got:.3g} points, measured {measured:.2f} (the band is ±{band_points:g} point). {why}').format(got=got, measured=measured, band_points=band_points, why=why))
        return
    raise AssertionError(gettext('accuracy gap prediction: you said {got:.3g} points, measured {measured:.2f} (the band is ±{band_points:g} point). {why}').format(got=got, measured=measured, band_points=band_points, why=why))


def check_can_connect(fn: Callable) -> None:
    """``fn(sans, address)`` must say whether a SuperNode dialling ``address`` (``host:port`` or
    ``[IPv6]:port``) accepts a server certificate with these SANs: the host, without its port, must
    equal an IP SAN (for an IP) or a DNS SAN, ignoring case (for a name).  The answer key is
    :func:`fedlab_utils.lessons.deployment.san_allows`, the rule TLS clients apply (RFC 6125)."""
    from fedlab_utils.lessons.deployment import san_allows

    hint = (gettext("Take the host out of the address (drop ':port', and the [ ] around an IPv6 address); an IP must be "
                    "one of the IP SANs, a name one of the DNS names (case does not matter); nothing is looked up, so "
                    "'localhost' does not cover 127.0.0.1, nor a name its IP."))
    for sans, address in SAN_CASES:
        answer = call_safely(fn, list(sans), address, what="can_connect")
        expect(isinstance(answer, bool), gettext('can_connect({sans}, {address!r}) should return True or False, got {answer!r}. {hint}').format(sans=sans, address=address, answer=answer, hint=hint))
        expected = san_allows(sans, address)
        message = (gettext('can_connect({sans}, {address!r}) returned {answer}, but a SuperNode dialling {address} accepts that certificate. {hint}')
                   if expected else
                   gettext('can_connect({sans}, {address!r}) returned {answer}, but a SuperNode dialling {address} refuses that certificate. {hint}'))
        expect(answer == expected, message.format(sans=sans, address=address, answer=answer, hint=hint))
    passed("can_connect")
