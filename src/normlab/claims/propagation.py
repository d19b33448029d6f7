"""Claims on how signals propagate through deep networks: BN against vanishing gradients in deep
sigmoid nets (C02) and the self-normalizing fixed point of SELU networks (C16)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import normlab
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.mlp_runs import curves_figure, digits_flat, one_thread, show, train_mlp
from normlab.claims.rules import clearly_below, exact_verdict, mean

__all__ = ["C02", "C16"]


def _sig(value: float) -> float:
    """``value`` to 6 significant digits (JSON-sized)."""
    return float(f"{value:.6g}")


# ---------------------------------------------------------------- C02: deep sigmoid nets

CHANCE = math.log(10.0)  # the cross-entropy of a uniform guess over 10 classes
STALLED = 0.9 * CHANCE
TRAINED = 0.5 * CHANCE
GRAD_DECADES = 1.0
C02_SIZES: dict[str, dict[str, int]] = {
    "smoke": {"depth": 4, "steps": 10, "seeds": 2},
    "quick": {"depth": 20, "steps": 400, "seeds": 3},
    "full": {"depth": 20, "steps": 1500, "seeds": 5},
}


def _sigmoid_mlp(depth: int, width: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    fan_in = 64
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width))
        if batch_norm:
            layers.append(normlab.BatchNorm(width))
        layers.append(nn.Sigmoid())
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _layer_grad_norms(model: nn.Sequential, seed: int) -> list[float]:
    """‖∂L/∂W_l‖ of every Linear at initialization, on 256 training examples."""
    x, y, _, _ = digits_flat()
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:256]
    with one_thread():
        nn.functional.cross_entropy(model.train()(x[idx]), y[idx]).backward()
    return [_sig(m.weight.grad.norm().item()) for m in model if isinstance(m, nn.Linear)]


def measure_c02(size: Size) -> Numbers:
    cfg = C02_SIZES[size]
    depth, steps = cfg["depth"], cfg["steps"]
    checkpoints = [steps * i // 10 for i in range(1, 11)]
    out: Numbers = {"depth": depth, "width": 64, "steps": checkpoints, "lr": 0.1}
    for name, bn in (("plain", False), ("batch_norm", True)):
        runs, grads = [], []
        for seed in range(cfg["seeds"]):
            runs.append(train_mlp(
                lambda bn=bn: _sigmoid_mlp(depth, 64, bn), seed, steps=steps,
                checkpoints=checkpoints, lr=0.1,
            ))
            torch.manual_seed(seed)
            grads.append(_layer_grad_norms(_sigmoid_mlp(depth, 64, bn), seed))
        out[name] = {"loss": [r["loss"] for r in runs], "grad_norm_per_layer": grads}
    return out


def _final(n: Mapping[str, Any], name: str) -> list[float | None]:
    return [curve[-1] for curve in n[name]["loss"]]


def _grad_decades(n: Mapping[str, Any], name: str) -> float:
    """Mean over seeds of log10(‖∂L/∂W_1‖ / ‖∂L/∂W_depth‖) (first vs last hidden layer)."""
    depth = n["depth"]
    return mean([
        math.log10(max(g[0], 1e-38) / max(g[depth - 1], 1e-38))
        for g in n[name]["grad_norm_per_layer"]
    ])


def decide_c02(n: Mapping[str, Any]) -> str:
    plain, bn = _final(n, "plain"), _final(n, "batch_norm")
    if clearly_below(plain, bn) or mean(bn) > STALLED:
        return CONTRADICTED
    stalls = mean(plain) > STALLED
    trains = mean(bn) < TRAINED
    vanishing = _grad_decades(n, "plain") < _grad_decades(n, "batch_norm") - GRAD_DECADES
    if stalls and trains and clearly_below(bn, plain) and vanishing:
        return REPRODUCED
    return NOT_REPRODUCED


def figure_c02(n: Mapping[str, Any]) -> Any:
    fig = curves_figure(
        f"C02: {n['depth']}-layer sigmoid MLP on digits",
        n["steps"], {"plain": n["plain"]["loss"], "BatchNorm": n["batch_norm"]["loss"]},
    )
    fig.axes[0].legend(fontsize=8, loc="lower left")
    ax = fig.add_axes((0.62, 0.45, 0.3, 0.3))
    for name in ("plain", "batch_norm"):
        per_layer = list(zip(*n[name]["grad_norm_per_layer"], strict=True))
        ax.plot([mean(v) for v in per_layer], lw=1)
    ax.set_yscale("log")
    ax.set_title("‖∂L/∂W‖ per layer at init", fontsize=7)
    ax.tick_params(labelsize=6)
    return fig


C02 = Claim(
    id="C02",
    claim="BN makes deep sigmoid networks trainable where the plain net stalls (vanishing "
    "gradients)",
    source="Ioffe & Szegedy 2015",
    kind="X",
    rule=f"20 hidden sigmoid layers of width 64 (torch's default init) on digits, SGD lr 0.1 "
    f"momentum 0.9, batch 64, 400 steps, 3 seeds, with and without BatchNorm before each "
    f"sigmoid; L = mean mini-batch loss over the last 40 steps. Reproduced if the plain net "
    f"stalls (mean L > 0.9·ln 10 = {STALLED:.3f}), the BN net trains (mean L < 0.5·ln 10 = "
    f"{TRAINED:.3f}), BN's L is clearly below plain's (gap > both spreads), and the plain net's "
    f"gradient vanishes: mean log10(‖∂L/∂W_1‖/‖∂L/∂W_20‖) at init more than {GRAD_DECADES:g} "
    f"decade below BN's. Contradicted if plain's L is clearly below BN's or BN stalls too "
    f"(mean L > {STALLED:.3f}). Otherwise not reproduced.",
    measure=measure_c02,
    decide=decide_c02,
    figure=figure_c02,
    summarize=lambda n: (
        f"final loss plain {show(_final(n, 'plain'))}, BN {show(_final(n, 'batch_norm'))}; "
        f"log10 grad ratio layer 1/{n['depth']}: plain {_grad_decades(n, 'plain'):.2f}, "
        f"BN {_grad_decades(n, 'batch_norm'):.2f}"
    ),
)


# ---------------------------------------------------------------- C16: SELU self-normalizes

LAMBDA = 1.0507009873554804934193349852946  # Klambauer et al. 2017, eq. (14)
ALPHA = 1.6732632423543772848170429916717
MEAN_BAND = 0.1  # Theorem 1's domain: μ in [−0.1, 0.1], ν in [0.8, 1.5]
VAR_BAND = (0.8, 1.5)
MEAN_FAR = 0.3
VAR_FAR = (0.5, 2.0)
C16_SIZES: dict[str, dict[str, int]] = {
    "smoke": {"depth": 8, "width": 64, "seeds": 2},
    "quick": {"depth": 64, "width": 256, "seeds": 3},
    "full": {"depth": 64, "width": 512, "seeds": 5},
}


def selu_moments() -> dict[str, float]:
    """E[selu(z)] and Var[selu(z)] for z ~ N(0, 1), in closed form, float64.

    With Φ(−t) = erfc(t/√2)/2 and E[e^{tz}; z < 0] = e^{t²/2} Φ(−t):
    E = λ (1/√(2π) + α (e^{1/2} Φ(−1) − 1/2)),
    E[selu²] = λ² (1/2 + α² (e² Φ(−2) − 2 e^{1/2} Φ(−1) + 1/2)).
    """
    def phi_neg(t: float) -> float:
        return 0.5 * torch.special.erfc(torch.tensor(t / math.sqrt(2), dtype=torch.float64)).item()

    m1 = LAMBDA * (1 / math.sqrt(2 * math.pi) + ALPHA * (math.exp(0.5) * phi_neg(1.0) - 0.5))
    m2 = LAMBDA**2 * (
        0.5 + ALPHA**2 * (math.exp(2.0) * phi_neg(2.0) - 2 * math.exp(0.5) * phi_neg(1.0) + 0.5)
    )
    return {"mean": m1, "var": m2 - m1**2}


def _activation_stats(kind: str, depth: int, width: int, seed: int) -> dict[str, list[float]]:
    x = torch.cat(digits_flat()[::2])
    g = torch.Generator().manual_seed(seed)
    means, variances = [], []
    with one_thread(), torch.no_grad():
        fan_in = x.shape[1]
        for _ in range(depth):
            layer = nn.Linear(fan_in, width)
            if kind == "relu_he":
                layer.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=g)
                layer.bias.zero_()
            else:
                normlab.selu_init_(layer, generator=g)
            x = layer(x)
            x = nn.functional.selu(x) if kind == "selu" else torch.relu(x)
            means.append(_sig(x.mean().item()))
            variances.append(_sig(x.var().item()))
            fan_in = width
    return {"mean": means, "var": variances}


def measure_c16(size: Size) -> Numbers:
    cfg = C16_SIZES[size]
    z = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    formula = LAMBDA * torch.where(z > 0, z, ALPHA * torch.expm1(z))
    moments = selu_moments()
    out: Numbers = {
        "depth": cfg["depth"], "width": cfg["width"],
        "exact": {
            "selu_mean_minus_0": abs(moments["mean"]),
            "selu_var_minus_1": abs(moments["var"] - 1.0),
            "torch_selu_minus_formula": (nn.functional.selu(z) - formula).abs().max().item(),
            "control_relu_mean_minus_0": 1 / math.sqrt(2 * math.pi),
        },
    }
    for kind in ("selu", "relu_lecun", "relu_he"):
        out[kind] = [
            _activation_stats(kind, cfg["depth"], cfg["width"], seed)
            for seed in range(cfg["seeds"])
        ]
    return out


def _in_band(mu: float, var: float, mean_band: float, var_band: tuple[float, float]) -> bool:
    return abs(mu) <= mean_band and var_band[0] <= var <= var_band[1]


def _seed_mean(runs: list[dict[str, list[float]]], key: str) -> list[float]:
    return [mean(v) for v in zip(*(r[key] for r in runs), strict=True)]


def _outside_band(n: Mapping[str, Any], kind: str) -> bool:
    mus, variances = _seed_mean(n[kind], "mean"), _seed_mean(n[kind], "var")
    return not all(_in_band(m, v, MEAN_BAND, VAR_BAND) for m, v in zip(mus, variances, strict=True))


def decide_c16(n: Mapping[str, Any]) -> str:
    e = n["exact"]
    holds = {k: v for k, v in e.items() if not k.startswith("control")}
    controls = {k: v for k, v in e.items() if k.startswith("control")}
    exact = exact_verdict(holds, 1e-9, 1e-4, controls, 1e-3)
    mus, variances = _seed_mean(n["selu"], "mean"), _seed_mean(n["selu"], "var")
    far = not all(_in_band(m, v, MEAN_FAR, VAR_FAR) for m, v in zip(mus, variances, strict=True))
    if exact == CONTRADICTED or far:
        return CONTRADICTED
    every = all(
        _in_band(m, v, MEAN_BAND, VAR_BAND)
        for run in n["selu"] for m, v in zip(run["mean"], run["var"], strict=True)
    )
    controls_leave = _outside_band(n, "relu_lecun") and _outside_band(n, "relu_he")
    if exact == REPRODUCED and every and controls_leave:
        return REPRODUCED
    return NOT_REPRODUCED


def figure_c16(n: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4))
    ax_mean, ax_var = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    labels = {"selu": "SELU (LeCun init)", "relu_lecun": "ReLU (LeCun)", "relu_he": "ReLU (He)"}
    for kind, label in labels.items():
        layers = range(1, n["depth"] + 1)
        ax_mean.plot(layers, _seed_mean(n[kind], "mean"), label=label)
        ax_var.plot(layers, _seed_mean(n[kind], "var"), label=label)
    ax_mean.axhspan(-MEAN_BAND, MEAN_BAND, color="grey", alpha=0.2)
    ax_var.axhspan(*VAR_BAND, color="grey", alpha=0.2)
    ax_var.set_yscale("log")
    ax_mean.set_ylabel("activation mean")
    ax_var.set_ylabel("activation variance")
    for ax in (ax_mean, ax_var):
        ax.set_xlabel("layer")
    ax_mean.legend(fontsize=7)
    fig.suptitle(f"C16: {n['depth']}-layer MLP of width {n['width']} on digits", fontsize=9)
    fig.tight_layout()
    return fig


def summarize_c16(n: Mapping[str, Any]) -> str:
    mus, variances = _seed_mean(n["selu"], "mean"), _seed_mean(n["selu"], "var")
    worst = max(v for k, v in n["exact"].items() if not k.startswith("control"))
    return (
        f"SELU layers: mean in [{min(mus):.3f}, {max(mus):.3f}], var in "
        f"[{min(variances):.3f}, {max(variances):.3f}]; last-layer var ReLU-LeCun "
        f"{_seed_mean(n['relu_lecun'], 'var')[-1]:.3g}, mean ReLU-He "
        f"{_seed_mean(n['relu_he'], 'mean')[-1]:.3g}; fixed-point deviation {worst:.2g}"
    )


C16 = Claim(
    id="C16",
    claim="SELU networks self-normalize: activations stay near mean 0 / variance 1 through many "
    "layers",
    source="Klambauer et al. 2017",
    kind="E/X",
    rule="Exact (float64): for z ~ N(0,1), |E[selu(z)]| and |Var[selu(z)] − 1| (closed form) "
    "and torch's selu vs λ·(z or α(e^z − 1)) must be <= 1e-9, with ReLU's mean 1/√(2π) as the "
    "control (> 1e-3). Empirical: 64 Linear+SELU layers of width 256, LeCun-normal init "
    "(selu_init_), per-feature standardized digits (train+test), 3 weight seeds; per layer the "
    f"activation mean and variance over all examples and units. Reproduced if the exact part "
    f"holds and every layer of every seed has |mean| <= {MEAN_BAND:g} and variance in "
    f"[{VAR_BAND[0]:g}, {VAR_BAND[1]:g}] (Theorem 1's domain), while ReLU with LeCun init and "
    "ReLU with He init each leave that band at some layer (seed means: the control). "
    f"Contradicted if an exact deviation exceeds 1e-4 or a SELU layer's seed-mean leaves "
    f"|mean| <= {MEAN_FAR:g}, variance in [{VAR_FAR[0]:g}, {VAR_FAR[1]:g}]. Otherwise not "
    "reproduced.",
    measure=measure_c16,
    decide=decide_c16,
    figure=figure_c16,
    summarize=summarize_c16,
)
