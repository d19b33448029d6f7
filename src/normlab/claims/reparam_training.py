"""Claims on training with a reparameterized or normalized layer instead of BatchNorm's batch
statistics: weight norm with data-dependent init (C19), normalization propagation (C21) and
cosine normalization (C23). Each trains MLPs on flattened digits (`mlp_runs.train_mlp`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

import normlab
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.mlp_runs import curves_figure, digits_flat, one_thread, show, train_mlp
from normlab.claims.rules import clearly_below, mean

__all__ = ["C19", "C21", "C23"]

WIDTH = 100


def _checkpoints(steps: int) -> list[int]:
    return [steps * i // 10 for i in range(1, 11)]


def _runs(build: Callable[[], nn.Module], seeds: int, steps: int, **kw: Any) -> list[dict]:
    return [
        train_mlp(build, seed, steps=steps, checkpoints=_checkpoints(steps), **kw)
        for seed in range(seeds)
    ]


def _curve_mean(n: Mapping[str, Any], name: str) -> list[float | None]:
    """Per seed: the mean mini-batch loss over all steps (equal windows), None if diverged."""
    return [None if None in c else statistics.fmean(c) for c in (r["loss"] for r in n[name])]


def _relu_mlp(layer: Callable[[int, int], list[nn.Module]], head: nn.Module) -> nn.Sequential:
    return nn.Sequential(
        *layer(64, WIDTH), *layer(WIDTH, WIDTH), *layer(WIDTH, WIDTH), head,
    )


def _plain_layer(i: int, o: int) -> list[nn.Module]:
    return [nn.Linear(i, o), nn.ReLU()]


def _bn_layer(i: int, o: int) -> list[nn.Module]:
    return [nn.Linear(i, o), normlab.BatchNorm(o), nn.ReLU()]


def _figure(title: str, labels: Mapping[str, str]) -> Callable[[Mapping[str, Any]], Any]:
    def draw(n: Mapping[str, Any]) -> Any:
        curves = {label: [r["loss"] for r in n[key]] for key, label in labels.items()}
        return curves_figure(title, n["steps"], curves, log=True)
    return draw


# ---------------------------------------------------------------- C19: weight norm, early training

C19_SIZES = {"smoke": (2, 10), "quick": (5, 100), "full": (10, 200)}  # seeds, steps
SPEEDUP_MARGIN = 0.05


def _weight_normed() -> nn.Sequential:
    model = _relu_mlp(_plain_layer, nn.Linear(WIDTH, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            normlab.weight_norm(m)
    return model


def measure_c19(size: Size) -> Numbers:
    seeds, steps = C19_SIZES[size]
    return {
        "steps": _checkpoints(steps), "optimizer": "adam", "lr": 1e-3,
        "plain": _runs(lambda: _relu_mlp(_plain_layer, nn.Linear(WIDTH, 10)), seeds, steps,
                       lr=1e-3, optimizer="adam"),
        "weight_norm": _runs(_weight_normed, seeds, steps, lr=1e-3, optimizer="adam",
                             prepare=lambda m, b: normlab.init_weight_norm_(m, b)),
    }


def decide_c19(n: Mapping[str, Any]) -> str:
    plain, wn = _curve_mean(n, "plain"), _curve_mean(n, "weight_norm")
    margin = SPEEDUP_MARGIN * mean(plain)
    if clearly_below(wn, plain, margin):
        return REPRODUCED
    if clearly_below(plain, wn, SPEEDUP_MARGIN * mean(wn)):
        return CONTRADICTED
    return NOT_REPRODUCED


C19 = Claim(
    id="C19",
    claim="Weight Norm (with data-dependent init) speeds up early training vs plain "
    "parameterization",
    source="Salimans & Kingma 2016",
    kind="X",
    rule="ReLU MLP 64→100→100→100→10 on digits, Adam lr 1e-3, batch 64, 100 steps, 5 seeds; "
    "plain (torch's default init) vs weight_norm on every Linear with init_weight_norm_ on 256 "
    "training examples. Early loss = mean mini-batch loss over the 100 steps. Reproduced if "
    f"weight norm's is clearly below plain's (gap > both spreads and > {SPEEDUP_MARGIN:.0%} of "
    "plain's mean); contradicted if plain's is clearly below weight norm's by the same rule; "
    "otherwise not reproduced.",
    measure=measure_c19,
    decide=decide_c19,
    figure=_figure("C19: early training, weight norm + data-dependent init vs plain",
                   {"plain": "plain", "weight_norm": "weight norm + init"}),
    summarize=lambda n: (
        f"mean loss over the first {n['steps'][-1]} steps: plain {show(_curve_mean(n, 'plain'))}"
        f", weight norm {show(_curve_mean(n, 'weight_norm'))}"
    ),
)


# ---------------------------------------------------------------- C21: normalization propagation

C21_SIZES = {"smoke": (2, 10, 1), "quick": (3, 300, 5), "full": (5, 1000, 9)}  # +timing rounds
BN_LIKE = 1.1  # "BN-like speed": mean loss within 10% of BN's
MUCH_SLOWER = 0.5  # contradicted: clearly above BN's by more than 50% of it


def _norm_prop() -> nn.Sequential:
    model = nn.Sequential(
        normlab.NormPropLinear(64, WIDTH), normlab.NormPropLinear(WIDTH, WIDTH),
        normlab.NormPropLinear(WIDTH, WIDTH), normlab.NormPropLinear(WIDTH, 10, activation=None),
    )
    for m in model:
        nn.init.orthogonal_(m.weight)
    return model


def _batch_norm_mlp() -> nn.Sequential:
    return _relu_mlp(_bn_layer, nn.Linear(WIDTH, 10))


def _per_sample_deviation(build: Callable[[], nn.Module]) -> float:
    """max |f(x_1:2 as a batch of 2) − f(x_1:2 in a batch of 32)| in training mode (where batch
    statistics would show; BN refuses a batch of 1)."""
    x = digits_flat()[0][:32]
    torch.manual_seed(0)
    model = build().train()
    with torch.no_grad():
        return (model(x[:2]) - model(x)[:2]).abs().max().item()


def _time_ratio(rounds: int) -> list[float]:
    """Per round: seconds of 20 SGD steps of the NormProp net / of the BN net (alternating)."""
    x, y, _, _ = digits_flat()
    ratios = []
    with one_thread():
        for _ in range(rounds):
            seconds = []
            for build in (_norm_prop, _batch_norm_mlp):
                torch.manual_seed(0)
                model = build().train()
                opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
                start = time.perf_counter()
                for step in range(20):
                    batch = slice(64 * step, 64 * step + 64)
                    loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                seconds.append(time.perf_counter() - start)
            ratios.append(round(seconds[0] / seconds[1], 4))
    return ratios


def measure_c21(size: Size) -> Numbers:
    seeds, steps, rounds = C21_SIZES[size]
    kw: dict[str, Any] = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9}
    return {
        "steps": _checkpoints(steps), **kw,
        "norm_prop": _runs(_norm_prop, seeds, steps, **kw),
        "batch_norm": _runs(_batch_norm_mlp, seeds, steps, **kw),
        "per_sample_deviation": {
            "norm_prop": _per_sample_deviation(_norm_prop),
            "control_batch_norm": _per_sample_deviation(_batch_norm_mlp),
        },
        "time_ratio_norm_prop_over_batch_norm": _time_ratio(rounds),
    }


def decide_c21(n: Mapping[str, Any]) -> str:
    np_loss, bn_loss = _curve_mean(n, "norm_prop"), _curve_mean(n, "batch_norm")
    dev = n["per_sample_deviation"]
    if dev["norm_prop"] > 1e-3 or clearly_below(bn_loss, np_loss, MUCH_SLOWER * mean(bn_loss)):
        return CONTRADICTED
    no_batch_stats = dev["norm_prop"] <= 1e-5 and dev["control_batch_norm"] > 1e-3
    if no_batch_stats and mean(np_loss) <= BN_LIKE * mean(bn_loss):
        return REPRODUCED
    return NOT_REPRODUCED


C21 = Claim(
    id="C21",
    claim="Normalization Propagation trains without batch statistics at BN-like speed",
    source="Arpit et al. 2016",
    kind="X",
    rule="MLP 64→100→100→100→10 on per-feature standardized digits, SGD lr 0.05 momentum 0.9, "
    "batch 64, 300 steps, 3 seeds: NormPropLinear layers (orthogonal init) vs Linear→BN→ReLU. "
    "Speed = mean mini-batch loss over all steps. Reproduced if two samples' NormProp outputs "
    "are the same as a batch of 2 as in a batch of 32 (<= 1e-5; BN's differ, control > 1e-3) "
    f"and NormProp's mean loss <= {BN_LIKE:g} × BN's; contradicted if that per-sample "
    f"deviation exceeds 1e-3 or "
    f"BN's loss is clearly below NormProp's by more than {MUCH_SLOWER:.0%} of BN's (and both "
    "spreads); otherwise not reproduced. The time per step (NormProp/BN, rounds alternating in "
    "one process, one thread) is reported, not judged: the machine is shared.",
    measure=measure_c21,
    decide=decide_c21,
    figure=_figure("C21: normalization propagation vs BatchNorm",
                   {"norm_prop": "NormProp", "batch_norm": "BatchNorm"}),
    summarize=lambda n: (
        f"mean loss NormProp {show(_curve_mean(n, 'norm_prop'))}, BN "
        f"{show(_curve_mean(n, 'batch_norm'))}; time per step NormProp/BN median "
        f"{statistics.median(n['time_ratio_norm_prop_over_batch_norm']):.2f} (not judged)"
    ),
)


# ---------------------------------------------------------------- C23: cosine normalization

C23_SIZES = {"smoke": (2, 10), "quick": (5, 400), "full": (10, 1500)}
ONE_POINT = 1.0  # "at least as well": test error at most 1 point (≈ 4 of 360 digits) above BN's
BOUND_SLACK = 1e-6


def _cosine_layer(i: int, o: int) -> list[nn.Module]:
    return [normlab.CosineLinear(i, o), nn.ReLU()]


def _cosine_mlp() -> nn.Sequential:
    return _relu_mlp(_cosine_layer, nn.Linear(WIDTH, 10))


def _max_output(kind: type) -> Callable[[nn.Module], float]:
    """max |output| of every ``kind`` layer of a trained model on all digits (train + test)."""
    def inspect(model: nn.Module) -> float:
        seen: list[float] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: seen.append(o.abs().max().item()))
                 for m in model.modules() if isinstance(m, kind)]
        with torch.no_grad():
            model(torch.cat(digits_flat()[::2]))
        for h in hooks:
            h.remove()
        return max(seen)
    return inspect


def measure_c23(size: Size) -> Numbers:
    seeds, steps = C23_SIZES[size]
    kw: dict[str, Any] = {"lr": 0.05, "optimizer": "sgd", "momentum": 0.9}
    return {
        "steps": _checkpoints(steps), **kw,
        "cosine": _runs(_cosine_mlp, seeds, steps, inspect=_max_output(normlab.CosineLinear),
                        **kw),
        "batch_norm": _runs(_batch_norm_mlp, seeds, steps, inspect=_max_output(normlab.BatchNorm),
                            **kw),
    }


def _bounds(n: Mapping[str, Any], name: str) -> list[float]:
    """Per seed: the largest |pre-activation| of the trained net (its norm layers' outputs)."""
    return [r["inspect"] for r in n[name]]


def _errors(n: Mapping[str, Any], name: str) -> list[float | None]:
    return [r["test_error"] for r in n[name]]


def decide_c23(n: Mapping[str, Any]) -> str:
    bound = max(_bounds(n, "cosine"))
    cos, bn = _errors(n, "cosine"), _errors(n, "batch_norm")
    if bound > 1 + 1e-3 or clearly_below(bn, cos, ONE_POINT):
        return CONTRADICTED
    control = min(_bounds(n, "batch_norm")) > 1
    if bound <= 1 + BOUND_SLACK and control and mean(cos) <= mean(bn) + ONE_POINT:
        return REPRODUCED
    return NOT_REPRODUCED


C23 = Claim(
    id="C23",
    claim="Cosine Normalization bounds pre-activations and trains at least as well as BN in MLPs",
    source="Luo et al. 2017",
    kind="X",
    rule="MLP 64→100→100→100→10 on digits, SGD lr 0.05 momentum 0.9, batch 64, 400 steps, 5 "
    "seeds: CosineLinear→ReLU ×3 → Linear vs Linear→BN→ReLU ×3 → Linear. Reproduced if every "
    f"CosineLinear output on all digits after training has |y| <= 1 + {BOUND_SLACK:g} while BN's "
    "outputs exceed 1 (control), and the cosine net's mean final test error is at most "
    f"{ONE_POINT:g} point above BN's; contradicted if |y| exceeds 1 + 1e-3 or BN's error is "
    f"clearly below the cosine net's by more than {ONE_POINT:g} point (gap > both spreads); "
    "otherwise not reproduced.",
    measure=measure_c23,
    decide=decide_c23,
    figure=_figure("C23: cosine normalization vs BatchNorm",
                   {"cosine": "CosineLinear", "batch_norm": "BatchNorm"}),
    summarize=lambda n: (
        f"test error cosine {show(_errors(n, 'cosine'))}%, BN {show(_errors(n, 'batch_norm'))}%; "
        f"max |cosine pre-activation| {max(_bounds(n, 'cosine')):.6f}, BN "
        f"{min(_bounds(n, 'batch_norm')):.3g}"
    ),
)
