"""Acceleration (lesson 04): fewer rounds through server optimizers, faster rounds through vmap.

Energy is power × time, so a federation spends less when it needs **fewer rounds** or when each
round **runs faster**.  Both levers plug into the one loop of :func:`fedlab_utils.core.loop.run`;
the parts themselves live in the core, where the lesson imports them from:

* server optimizers (FedAvgM, FedAdam, FedYogi, FedAdagrad) and aggregators:
  :mod:`fedlab_utils.core`; FedProx: :mod:`fedlab_utils.core.training`;
* the vmap trainer, which trains all sampled clients of a round at once:
  :mod:`fedlab_utils.core.vmap_trainer`; picking a trainer by name: :mod:`fedlab_utils.core.registry`;
* timing a training step or a trainer: :mod:`fedlab_utils.ledger.timing`;
* rounds and joules to a target accuracy: :mod:`fedlab_utils.core.history`.

What is lesson 04's own:

* :func:`quadratic_drift` -- client drift on two quadratic clients, in 2-D, with any server optimizer;
* the article's pitfall: :func:`article_loop` (a fresh random input and target every step: nothing
  to learn), :func:`fixed_data_loop` (the corrected loop) and :func:`adam_vs_adamw`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fedlab_utils.core.registry import TRAINERS
from fedlab_utils.core.servers.fedavg import FedAvgServer
from fedlab_utils.core.training import PRECISIONS, make_optimizer
from fedlab_utils.validation import check_int, choice, integer, optional_path, real

__all__ = ["quadratic_drift", "article_loop", "fixed_data_loop", "adam_vs_adamw", "RULES_04",
           "RELATIONS_04", "scaffold_quadratic", "plot_client_drift", "deadline_table",
           "plot_deadline_runs"]

# ----------------------------------------------------------------------------- notebook 04's parameters
#: Notebook 04's parameters and what is valid for each (``validation.check_parameters``).
RULES_04 = {
    "seed": integer(0),
    "dataset": choice(("digits", "mnist5k", "synthetic", "mnist", "fashion_mnist")),
    "num_clients": integer(2, 200),
    "partition": choice(("shards", "dirichlet", "iid")),
    "alpha": real(0.0, low_inclusive=False),
    "rounds": integer(5, 500),
    "local_epochs": integer(1, 20),
    "client_lr": real(0.0, 1.0, low_inclusive=False),
    "server_lr": real(0.0, 1.0, low_inclusive=False),
    "server_momentum": real(0.0, 1.0, high_inclusive=False),
    "target": real(0.0, 1.0, low_inclusive=False, high_inclusive=False),
    "trainer": choice(TRAINERS),
    "precision": choice(PRECISIONS),
    "demo_compile": choice((True, False)),
    "data_dir": optional_path(),
    "device": lambda name, value: value,  # resolved (and refused with a clear error) by devices.get_device
    "results_path": optional_path(),
}


def _vmap_runs_fp32(p: dict) -> None:
    if p["trainer"] == "vmap" and p["precision"] != "fp32":
        raise ValueError(f"precision={p['precision']!r} needs trainer='sequential' (the vmap trainer runs fp32 SGD "
                         "only); valid with trainer='vmap': precision='fp32'")


def _fp16_needs_cuda(p: dict) -> None:
    on_cuda = torch.cuda.is_available() and str(p["device"]).split(":")[0] in ("auto", "cuda")
    if p["precision"] == "fp16" and not on_cuda:
        raise ValueError(f"precision='fp16' needs a CUDA device (device={p['device']!r}, CUDA available: "
                         f"{torch.cuda.is_available()}); valid here: precision='fp32' or 'bf16'")


#: Relations between notebook 04's parameters, checked after each one alone.
RELATIONS_04 = (_vmap_runs_fp32, _fp16_needs_cuda)


# ----------------------------------------------------------------------------- client drift, in 2-D
def quadratic_drift(server=None, rounds: int = 30, local_steps: int = 5, lr: float = 0.2,
                    centers=((2.0, 1.0), (-1.0, 3.0)), curvatures=((1.0, 0.02), (0.2, 0.05))) -> dict:
    """FedAvg on two clients with quadratic losses ``f_i(w) = ½ Σ_j a_ij (w_j − c_ij)²``.

    Each round both clients take ``local_steps`` gradient steps from the global ``w`` and drift
    towards their *own* optimum ``c_i``; the server averages the two updates and applies
    ``server`` (default FedAvg).  Returns the global path (rounds+1 × 2), the clients' end points
    per round, and the optimum of the global objective ``f_1 + f_2``.  Pure arithmetic: instant.
    """
    check_int("rounds", rounds, 1)
    check_int("local_steps", local_steps, 1)
    server = server or FedAvgServer()
    c = torch.tensor(centers, dtype=torch.float64)
    a = torch.tensor(curvatures, dtype=torch.float64)
    w = torch.zeros(2, dtype=torch.float64)
    path, ends = [w.clone()], []
    for _ in range(rounds):
        locals_ = []
        for ci, ai in zip(c, a):
            wi = w.clone()
            for _ in range(local_steps):
                wi = wi - lr * ai * (wi - ci)
            locals_.append(wi)
        ends.append(torch.stack(locals_))
        update = {"w": torch.stack(locals_).mean(0) - w}
        w = server.step({"w": w}, update)["w"]
        path.append(w.clone())
    optimum = (a * c).sum(0) / a.sum(0)
    return {"path": torch.stack(path).numpy(), "client_ends": torch.stack(ends).numpy(),
            "optimum": optimum.numpy(), "centers": c.numpy(), "curvatures": a.numpy()}


# ----------------------------------------------------------------------------- the article's pitfall
class _ArticleNet(nn.Module):
    """The article's ``SimpleNet``: one ``Linear(10, 2)``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        return self.fc(x)


def article_loop(steps: int = 10, seed: int = 0, optimizer: str = "adamw", lr: float = 0.01,
                 device: torch.device | str = "cpu") -> list[float]:
    """The article's "acceleration" loop, with ``F`` imported: every step draws a *fresh* random
    input and a *fresh* random target.  Returns the loss of every step.

    Since the target is noise independent of the input, the best the model can do is predict
    the noise's mean (0), where the expected MSE is the noise's variance, 1.0: nothing is learned.
    """
    check_int("steps", steps, 1)
    torch.manual_seed(seed)
    model = _ArticleNet().to(device)
    opt = make_optimizer(optimizer, model.parameters(), lr,
                         weight_decay=0.01 if optimizer == "adamw" else 0.0)  # torch's AdamW default
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        output = model(torch.randn(10).to(device))
        loss = F.mse_loss(output, torch.randn(2).to(device))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def fixed_data_loop(steps: int = 200, seed: int = 0, optimizer: str = "adamw", lr: float = 0.01,
                    n: int = 256, noise: float = 0.1) -> dict:
    """The corrected loop: a fixed dataset ``y = x·W* + noise`` (unit-variance targets) that the same model can fit.

    Returns the per-step training losses and the floor (the noise variance, ``noise²``).
    """
    check_int("steps", steps, 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=gen)
    w_true = torch.randn(10, 2, generator=gen) / 10 ** 0.5  # targets of unit variance, like the article's noise
    y = x @ w_true + noise * torch.randn(n, 2, generator=gen)
    torch.manual_seed(seed)
    model = _ArticleNet()
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay=0.01 if optimizer == "adamw" else 0.0)
    return {"losses": _fit_full_batch(model, x, y, opt, steps), "floor": noise ** 2}


def _fit_full_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                    steps: int) -> list[float]:
    """``steps`` full-batch MSE steps on one fixed dataset; the per-step losses."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def adam_vs_adamw(steps: int = 200, seed: int = 0, lr: float = 0.01, weight_decay: float = 0.0) -> dict:
    """Train the same model from the same start with Adam and AdamW (both at ``weight_decay``).

    Returns both loss curves and the largest weight difference at the end: with
    ``weight_decay=0`` the two optimizers are the same algorithm, so it is exactly 0.
    """
    curves, weights = {}, {}
    for name in ("adam", "adamw"):
        torch.manual_seed(seed)
        model = _ArticleNet()
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(256, 10, generator=gen)
        y = x @ torch.randn(10, 2, generator=gen) + 0.1 * torch.randn(256, 2, generator=gen)
        opt = make_optimizer(name, model.parameters(), lr, weight_decay)
        curves[name] = _fit_full_batch(model, x, y, opt, steps)
        weights[name] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return {"adam": curves["adam"], "adamw": curves["adamw"],
            "max_weight_diff": float((weights["adam"] - weights["adamw"]).abs().max())}


# ----------------------------------------------------------------------------- the lesson's figures and tables
def scaffold_quadratic(centers, curvatures, rounds: int, local_steps: int = 5, lr: float = 0.2):
    """SCAFFOLD (Karimireddy et al. 2020, option II) on the clients of :func:`quadratic_drift`:
    ``f_k(w) = ½ Σ_j a_kj (w_j − c_kj)²``.  Each local step uses the drift-corrected gradient
    ``g_k(w) − c_k + c``; after ``local_steps`` steps ``c_k ← c_k − c + (w − w_k)/(K·lr)`` and ``c`` is
    their mean.  Returns the global path (rounds+1 × 2)."""
    import numpy as np

    centers, curvatures = np.asarray(centers, float), np.asarray(curvatures, float)
    w, c_k, c = np.zeros(2), np.zeros_like(centers), np.zeros(2)
    path = [w.copy()]
    for _ in range(rounds):
        ends = []
        for k in range(len(centers)):
            w_k = w.copy()
            for _ in range(local_steps):
                w_k = w_k - lr * (curvatures[k] * (w_k - centers[k]) - c_k[k] + c)
            ends.append(w_k)
        c_k = np.array([c_k[k] - c + (w - ends[k]) / (local_steps * lr) for k in range(len(centers))])
        c = c_k.mean(0)
        w = np.mean(ends, 0)
        path.append(w.copy())
    return np.array(path)


def plot_client_drift(toy: dict, short_rounds: int, long_rounds: int):
    """Notebook 04's drift figure: the paths of ``toy`` (name -> :func:`quadratic_drift`-style dict with
    ``path``; the first carries the clients) over the global loss's contours for ``short_rounds``,
    and every path's distance to the global optimum over all rounds.  Returns ``(fig, distances)``,
    ``distances[name][rounds]`` for both round counts."""
    import matplotlib.pyplot as plt
    import numpy as np

    from fedlab_utils.i18n import N_
    from fedlab_utils.viz.fonts import figure_label as fl

    ref = next(iter(toy.values()))
    fig, (ax, ax_d) = plt.subplots(1, 2, figsize=(11.5, 4.4))
    g1, g2 = np.meshgrid(np.linspace(-1.5, 2.5, 120), np.linspace(-0.5, 3.5, 120))
    loss = sum(0.5 * (a[0] * (g1 - c[0]) ** 2 + a[1] * (g2 - c[1]) ** 2) for a, c in zip(ref["curvatures"], ref["centers"]))
    ax.contour(g1, g2, loss, levels=15, cmap="Greys", linewidths=0.6)
    distances = {}
    for name, res in toy.items():
        ax.plot(*res["path"][:short_rounds + 1].T, marker=".", label=fl(N_("{name}, {rounds} rounds")).format(name=name, rounds=short_rounds))
        distance = np.linalg.norm(res["path"] - ref["optimum"], axis=1)
        ax_d.semilogy(np.maximum(distance, 1e-12), label=name)
        distances[name] = {short_rounds: float(distance[short_rounds]), long_rounds: float(distance[long_rounds])}
    ax.scatter(*ref["client_ends"][0].T, marker="x", c="C3", label=fl(N_("client end points, round 1")))
    ax.scatter(*np.asarray(ref["centers"]).T, marker="s", c="C2", label=fl(N_("client optima")))
    ax.scatter(*ref["optimum"], marker="*", s=160, c="k", label=fl(N_("global optimum")))
    ax.set(xlabel="$w_1$", ylabel="$w_2$", title=fl(N_("Client drift on two quadratic clients")))
    ax.legend(fontsize=7)
    ax_d.set(xlabel=fl(N_("round")), ylabel=fl(N_("distance to the global optimum")),
             title=fl(N_("{rounds} rounds: bias vs speed")).format(rounds=long_rounds))
    ax_d.legend(fontsize=8)
    fig.tight_layout()
    return fig, distances


def deadline_table(runs: dict, deadlines: dict, target: float):
    """One row per deadline run: the deadline, late updates, simulated seconds (all rounds and to
    ``target``), final accuracy, total and wasted joules, uplink MB (a ``pandas.DataFrame``)."""
    import pandas as pd

    from fedlab_utils.i18n import gettext
    from fedlab_utils.viz.tables import labelled

    to_target = f"sim s to {100 * target:.0f}%"
    table = pd.DataFrame({
        name: {"deadline s": deadlines[name], "late updates": h.totals()["late"],
               "sim s (all rounds)": h.totals()["sim_time_s"],
               to_target: h.sim_time_to_accuracy(target),
               "final acc %": 100 * h.final_accuracy, "J total": h.totals()["joules_total"],
               "J wasted": h.totals()["wasted_joules"], "MB up": h.totals()["bytes_up"] / 1e6}
        for name, h in runs.items()}).T
    # keyed in English (notebooks index the columns by name), shown in the reader's language
    return labelled(table, {
        "deadline s": gettext("deadline s"), "late updates": gettext("late updates"),
        "sim s (all rounds)": gettext("sim s (all rounds)"),
        to_target: gettext("sim s to {target:.0f}%").format(target=100 * target),
        "final acc %": gettext("final acc %"), "J total": gettext("J total"), "J wasted": gettext("J wasted"),
        "MB up": gettext("MB up")})


def plot_deadline_runs(runs: dict, table, target: float):
    """Notebook 04's deadline figure: accuracy against simulated seconds per run (with ``target``),
    and the joules each run wasted on late updates.  Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    from fedlab_utils.i18n import N_
    from fedlab_utils.viz.fonts import figure_label as fl

    total = next(iter(runs.values())).totals()["joules_total"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in runs.items():
        ax1.plot(np.cumsum([r.sim_time_s for r in h.records]), 100 * np.asarray(h.accuracy), marker=".", label=name)
    ax1.axhline(100 * target, color="grey", ls="--", lw=0.8, label=f"{100 * target:.0f}%")
    ax1.set(xlabel=fl(N_("simulated seconds (sum of round times)")), ylabel=fl(N_("test accuracy (%)")),
            title=fl(N_("Time to accuracy")))
    ax1.legend()
    ax2.bar(list(runs), table["J wasted"], color="C3")
    ax2.set(ylabel=fl(N_("joules wasted on late updates")),
            title=fl(N_("What the deadline threw away (every run: {total:,.0f} J in all)")).format(total=total))
    ax2.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return fig
