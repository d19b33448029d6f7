"""C20: with normalization, L2 weight decay does not regularize; it raises the effective learning
rate η/‖w‖² (van Laarhoven 2017).

A weight w followed by BatchNorm is scale-invariant: f(a·w) = f(w) for a > 0, so ∇f(a·w) =
∇f(w)/a and w·∇_w L = 0. Plain SGD with weight decay λ steps w' = (1 − ηλ) w − η ∇L(w); in the
direction ŵ = w/‖w‖ that is ŵ' ∝ ŵ − η/((1 − ηλ)‖w‖²) ∇L(ŵ). So a run *without* decay whose
learning rate on w is η̃_t = η ‖w̃_t‖² / ((1 − ηλ) ‖w_t‖²) (w̃ its own weight, w the decayed
run's) follows the same directions, hence computes the same function at every step: decay acts
only through the effective learning rate. The experiment checks this equivalence (float64) and
measures ‖w‖ and η/‖w‖² with and without decay.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import normlab
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.mlp_runs import digits_flat, one_thread, show
from normlab.claims.rules import clearly_below, exact_verdict

__all__ = ["C20"]

F64 = torch.float64
LR = 0.1
DECAY = 0.01
TOLERANCE = 1e-9
TRAJECTORY_TOLERANCE = 1e-6
GROSS = 1e-4
CONTROL_MIN = 1e-3
SIZES: dict[str, dict[str, int]] = {
    "smoke": {"steps": 10, "seeds": 2},
    "quick": {"steps": 500, "seeds": 3},
    "full": {"steps": 2000, "seeds": 5},
}


def _model() -> nn.Sequential:
    """64 → [Linear (no bias) → BN → ReLU] × 2 → Linear 10; the two hidden weights are
    scale-invariant (ε = 1e-12)."""
    return nn.Sequential(
        nn.Linear(64, 64, bias=False, dtype=F64), normlab.BatchNorm(64, eps=1e-12, dtype=F64),
        nn.ReLU(),
        nn.Linear(64, 64, bias=False, dtype=F64), normlab.BatchNorm(64, eps=1e-12, dtype=F64),
        nn.ReLU(), nn.Linear(64, 10, dtype=F64),
    )


def _invariant(model: nn.Sequential) -> list[nn.Parameter]:
    return [model[0].weight, model[3].weight]


def _exact_checks(seed: int) -> dict[str, float]:
    x, y, _, _ = digits_flat(F64)
    torch.manual_seed(seed)
    model = _model().train()
    batch, labels = x[:128], y[:128]
    base = model(batch).detach()
    out: dict[str, float] = {}
    for a in (0.5, 4.0):
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            scaled[0].weight.mul_(a)
            scaled[3].weight.mul_(a)
        out[f"output_change_w_times_{a:g}"] = _rel(scaled(batch).detach(), base)
    loss = nn.functional.cross_entropy(model(batch), labels)
    grads = torch.autograd.grad(loss, _invariant(model))
    for i, (w, g) in enumerate(zip(_invariant(model), grads, strict=True)):
        out[f"w{i + 1}_dot_grad"] = abs((w * g).sum().item()) / (w.norm() * g.norm()).item()
    control = copy.deepcopy(model)
    with torch.no_grad():
        control[6].weight.mul_(4.0)
    out["control_output_layer_times_4"] = _rel(control(batch).detach(), base)
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _groups(model: nn.Sequential, decay: float) -> list[dict[str, Any]]:
    inv = {id(p) for p in _invariant(model)}
    rest = [p for p in model.parameters() if id(p) not in inv]
    return [
        *({"params": [w], "weight_decay": decay} for w in _invariant(model)),
        {"params": rest, "weight_decay": 0.0},
    ]


def _train(seed: int, steps: int) -> dict[str, Any]:
    """Decayed, undecayed and LR-matched undecayed runs in lockstep on the same batches."""
    x, y, x_test, y_test = digits_flat(F64)
    torch.manual_seed(seed)
    models = {"decay": _model()}
    models["no_decay"] = copy.deepcopy(models["decay"])
    models["matched"] = copy.deepcopy(models["decay"])
    opts = {
        name: torch.optim.SGD(_groups(m, DECAY if name == "decay" else 0.0), lr=LR)
        for name, m in models.items()
    }
    g = torch.Generator().manual_seed(seed)
    every = max(1, steps // 20)
    record: dict[str, Any] = {
        "loss": {k: [] for k in models}, "norm": {"decay": [], "no_decay": []},
        "matched_deviation": 0.0, "no_decay_deviation": 0.0,
    }
    for step in range(1, steps + 1):
        idx = torch.randint(len(x), (64,), generator=g)
        decayed_norms = [w.norm().item() for w in _invariant(models["decay"])]
        for i, w in enumerate(_invariant(models["matched"])):
            ratio = w.norm().item() ** 2 / decayed_norms[i] ** 2
            opts["matched"].param_groups[i]["lr"] = LR * ratio / (1 - LR * DECAY)
        losses = {}
        for name, model in models.items():
            loss = nn.functional.cross_entropy(model.train()(x[idx]), y[idx])
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            losses[name] = loss.item()
        ref = abs(losses["decay"])
        for other in ("matched", "no_decay"):
            key = f"{other}_deviation"
            record[key] = max(record[key], abs(losses[other] - losses["decay"]) / ref)
        if step % every == 0:
            for name in models:
                record["loss"][name].append(round(losses[name], 6))
            for name in ("decay", "no_decay"):
                record["norm"][name].append([w.norm().item() for w in _invariant(models[name])])
    with torch.no_grad():
        record["test_error"] = {
            name: 100 * (m.eval()(x_test).argmax(1) != y_test).double().mean().item()
            for name, m in models.items()
        }
    record["steps"] = [every * i for i in range(1, steps // every + 1)]
    return record


def measure_c20(size: Size) -> Numbers:
    cfg = SIZES[size]
    with one_thread():
        return {
            "lr": LR, "weight_decay": DECAY,
            "exact": _exact_checks(0),
            "runs": [_train(seed, cfg["steps"]) for seed in range(cfg["seeds"])],
        }


def final_norm(n: Mapping[str, Any], name: str) -> list[float]:
    """‖(W1, W2)‖ at the end of each seed's run."""
    return [sum(v**2 for v in r["norm"][name][-1]) ** 0.5 for r in n["runs"]]


def final_effective_lr(n: Mapping[str, Any], name: str) -> list[float]:
    """η/‖W_l‖² at the end, averaged over the two scale-invariant layers, per seed."""
    return [sum(n["lr"] / v**2 for v in r["norm"][name][-1]) / 2 for r in n["runs"]]


def decide_c20(n: Mapping[str, Any]) -> str:
    holds = {k: v for k, v in n["exact"].items() if not k.startswith("control")}
    trajectory = max(r["matched_deviation"] for r in n["runs"])
    controls = {
        "output_layer": n["exact"]["control_output_layer_times_4"],
        "no_decay_trajectory": min(r["no_decay_deviation"] for r in n["runs"]),
    }
    exact = exact_verdict(holds, TOLERANCE, GROSS, controls, CONTROL_MIN)
    if exact == CONTRADICTED or trajectory > GROSS:
        return CONTRADICTED
    if clearly_below(final_norm(n, "no_decay"), final_norm(n, "decay")):
        return CONTRADICTED
    if (
        exact == REPRODUCED and trajectory <= TRAJECTORY_TOLERANCE
        and clearly_below(final_norm(n, "decay"), final_norm(n, "no_decay"))
        and clearly_below(final_effective_lr(n, "no_decay"), final_effective_lr(n, "decay"))
    ):
        return REPRODUCED
    return NOT_REPRODUCED


def figure_c20(n: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4))
    ax_norm, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for seed, r in enumerate(n["runs"]):
        for name, style in (("decay", "-"), ("no_decay", "--")):
            norms = [sum(v**2 for v in pair) ** 0.5 for pair in r["norm"][name]]
            ax_norm.plot(r["steps"], norms, style, color=f"C{seed}",
                         label=f"seed {seed}, {name}")
        ax_loss.plot(r["steps"], r["loss"]["decay"], "-", color=f"C{seed}", lw=2, alpha=0.5)
        ax_loss.plot(r["steps"], r["loss"]["matched"], ":", color="k", lw=1)
    ax_norm.set_ylabel("‖(W1, W2)‖")
    ax_loss.set_ylabel("mini-batch loss")
    ax_loss.set_title("decay: colour; LR-matched, no decay: dotted", fontsize=8)
    for ax in (ax_norm, ax_loss):
        ax.set_xlabel("step")
    ax_norm.legend(fontsize=6)
    fig.suptitle(f"C20: SGD η = {n['lr']}, λ = {n['weight_decay']} on BN-followed weights",
                 fontsize=9)
    fig.tight_layout()
    return fig


def summarize_c20(n: Mapping[str, Any]) -> str:
    exact = max(v for k, v in n["exact"].items() if not k.startswith("control"))
    return (
        f"‖w‖ decay {show(final_norm(n, 'decay'))} vs none {show(final_norm(n, 'no_decay'))}; "
        f"η/‖w‖² decay {show(final_effective_lr(n, 'decay'))} vs none "
        f"{show(final_effective_lr(n, 'no_decay'))}; matched-LR trajectory deviation "
        f"{max(r['matched_deviation'] for r in n['runs']):.2g} (constant LR: "
        f"{min(r['no_decay_deviation'] for r in n['runs']):.2g}); exact {exact:.2g}"
    )


C20 = Claim(
    id="C20",
    claim="With normalization, L2 weight decay does not regularize; it raises the effective "
    "learning rate η/‖w‖²",
    source="van Laarhoven 2017",
    kind="E/X",
    rule=f"float64 MLP on digits, [Linear (no bias) → BN (ε 1e-12) → ReLU] × 2 → Linear; plain "
    f"SGD η = {LR}, batch 64, 500 steps, 3 seeds; decay λ = {DECAY} on the two BN-followed "
    f"weights only. Exact: output change under w → a·w (a = 0.5, 4) and |w·∇_w L|/(‖w‖‖∇_w L‖) "
    f"<= {TOLERANCE:g}; a no-decay run with per-step LR η‖w̃_t‖²/((1 − ηλ)‖w_t‖²) on those "
    f"weights matches the decayed run's mini-batch loss at every step within "
    f"{TRAJECTORY_TOLERANCE:g} (relative); controls (must exceed {CONTROL_MIN:g}): scaling the "
    f"output layer changes the output, and the constant-LR no-decay run deviates. Empirical: the "
    f"final ‖(W1, W2)‖ with decay clearly below (gap > both spreads) that without, and the "
    f"final η/‖W‖² (mean of the two layers) clearly above. Reproduced if all hold; contradicted "
    f"if an exact deviation or the trajectory deviation exceeds {GROSS:g}, or the norm without "
    f"decay is clearly below the norm with it; otherwise not reproduced.",
    measure=measure_c20,
    decide=decide_c20,
    figure=figure_c20,
    summarize=summarize_c20,
)
