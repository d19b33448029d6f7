"""C09: Batch-Instance Norm's learned gates ρ polarize toward 0 or 1, and BIN ≥ BN.

A small CNN (three 3x3 conv → norm → ReLU blocks of 16, 32, 32 channels, strides 1, 2, 2;
global average pooling; linear) on the lab's ``synthetic`` images (each image's amplitude varies
by a factor U(0.6, 1.4): a per-image contrast that instance normalization removes), with
`normlab.BatchNorm` or `normlab.BatchInstanceNorm` in every block. Both train with the same
seeds, steps, batches and SGD (momentum 0.9); BIN's gates follow the paper and its reference:
they start at ρ = 1 (pure BN), learn at 10x the learning rate without weight decay
(`normlab.gate_param_groups`) and are clipped to [0, 1] after every step.

Measured: the test error of both, and every learned gate ρ of BIN (per layer and seed).
A gate is *polarized* when ρ ≤ 0.1 or ρ ≥ 0.9, and has *drifted to IN* when ρ ≤ 0.1.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from torch import nn

import normlab
from normlab.claims.fit import deterministic, error, fit
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import clearly_below, mean_std
from normlab.claims.training import cached_data

__all__ = ["C09"]

WIDTHS = (16, 32, 32)
BATCH = 64
LR = 0.05
EDGE = 0.1  # polarized: rho <= EDGE or rho >= 1 - EDGE
MIN_POLARIZED = 0.8  # reproduced: at least this share of the gates is polarized ...
MIN_DRIFTED = 0.05  # ... and at least this share drifted from 1 to <= EDGE (left its init)
MAX_POLARIZED_CONTRA = 0.5  # contradicted: fewer than half the gates are polarized
# size: (seeds, steps)
_SIZES: dict[str, tuple[int, int]] = {"smoke": (2, 6), "quick": (3, 500), "full": (5, 2000)}


def small_cnn(norm: str, classes: int) -> nn.Sequential:
    """Three conv → norm → ReLU blocks (``norm`` "bn" or "bin"), pooling, linear."""
    layers: list[nn.Module] = []
    c_in = 1
    for width, stride in zip(WIDTHS, (1, 2, 2), strict=True):
        layers.append(nn.Conv2d(c_in, width, 3, stride=stride, padding=1, bias=False))
        layer = normlab.BatchNorm if norm == "bn" else normlab.BatchInstanceNorm
        layers.append(layer(width))
        layers.append(nn.ReLU())
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


def _gate_layers(model: nn.Module) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, normlab.BatchInstanceNorm)]


def measure_c09(size: Size) -> Numbers:
    seeds, steps = _SIZES[size]
    data = cached_data("synthetic", None)
    out: dict[str, Any] = {"seeds": seeds, "steps": steps, "error": {"bn": [], "bin": []},
                           "gates": []}  # fmt: skip
    for norm in ("bn", "bin"):
        for seed in range(seeds):
            with deterministic(seed):
                model = small_cnn(norm, data.num_classes)
                layers = _gate_layers(model)
                groups = normlab.gate_param_groups(model, LR) if layers else None

                def clip(layers: list[Any] = layers) -> None:
                    for layer in layers:
                        layer.clamp_gate_()

                losses = fit(model, data.x_train, data.y_train, steps=steps, batch_size=BATCH,
                             lr=LR, seed=seed, optimizer="sgd", param_groups=groups,
                             after_step=clip)  # fmt: skip
            ok = len(losses) == steps and losses[-1] == losses[-1]
            out["error"][norm].append(error(model, data.x_test, data.y_test) if ok else None)
            if layers:
                out["gates"].append(
                    [[round(float(v), 4) for v in layer.gate.detach()] for layer in layers]
                )
    return out


def gate_shares(n: Mapping[str, Any]) -> tuple[float, float]:
    """(polarized share, drifted-to-IN share) of the gates, each the mean over seeds."""
    polarized, drifted = [], []
    for seed_gates in n["gates"]:
        flat = [v for layer in seed_gates for v in layer]
        polarized.append(sum(v <= EDGE or v >= 1 - EDGE for v in flat) / len(flat))
        drifted.append(sum(v <= EDGE for v in flat) / len(flat))
    return statistics.fmean(polarized), statistics.fmean(drifted)


def decide_c09(n: Mapping[str, Any]) -> str:
    polarized, drifted = gate_shares(n)
    err = n["error"]
    if clearly_below(err["bn"], err["bin"]) or polarized < MAX_POLARIZED_CONTRA:
        return CONTRADICTED
    if polarized >= MIN_POLARIZED and drifted >= MIN_DRIFTED:
        return REPRODUCED
    return NOT_REPRODUCED


def _figure(n: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2))
    axes = fig.subplots(1, len(WIDTHS) + 1)
    for i, ax in enumerate(axes[:-1]):
        values = [v for seed_gates in n["gates"] for v in seed_gates[i]]
        ax.hist(values, bins=20, range=(0, 1))
        ax.set(title=f"BIN layer {i + 1}: rho", xlabel="rho")
    for i, norm in enumerate(("bn", "bin")):
        vals = [v for v in n["error"][norm] if v is not None]
        axes[-1].scatter([i] * len(vals), vals)
    axes[-1].set_xticks([0, 1], ["bn", "bin"])
    axes[-1].set(title="test error (%)")
    fig.tight_layout()
    return fig


def _summary(n: Mapping[str, Any]) -> str:
    polarized, drifted = gate_shares(n)
    return (f"test error % BN {mean_std(n['error']['bn'])}, BIN {mean_std(n['error']['bin'])}; "
            f"gates polarized {polarized:.0%}, drifted to <= {EDGE} {drifted:.0%} "
            f"({n['seeds']} seeds, {n['steps']} steps)")


C09 = Claim(
    id="C09",
    claim="Batch-Instance Norm: learned rho drift toward 0 or 1; BIN >= BN on image "
    "classification",
    source="Nam & Kim 2018",
    kind="X",
    rule="Small CNN (3 conv-norm-ReLU blocks) on 'synthetic' images, BN vs BIN (gates start at "
    "1, gate lr x10, no decay, clipped to [0, 1]), same seeds / steps / batches / SGD. Shares "
    "of BIN's gates (all layers, mean over seeds): polarized = rho <= 0.1 or >= 0.9; drifted = "
    f"rho <= 0.1. Reproduced if polarized >= {MIN_POLARIZED:.0%}, drifted >= "
    f"{MIN_DRIFTED:.0%} (the gates left their init, not just stayed at 1) and BN's test error "
    "is not clearly below BIN's (gap larger than both spreads); contradicted if BN's error is "
    f"clearly below BIN's or fewer than {MAX_POLARIZED_CONTRA:.0%} of the gates are polarized; "
    "otherwise not reproduced.",
    measure=measure_c09,
    decide=decide_c09,
    figure=_figure,
    summarize=_summary,
)
