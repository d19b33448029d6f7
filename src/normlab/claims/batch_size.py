"""Claims about batch size: C03 and C25 (Group Norm vs BN, Wu & He 2018) and C17 (Switchable
Norm, Luo et al. 2018), read from one batch-size sweep; C22 (streaming normalization at batch
size 1, Liao et al. 2016).

The sweep trains the lab's 1-D CNN on MNIST-1D through the lab's protocol (`normlab.lab.runner`:
equal epochs, linear learning-rate scaling, SGD with momentum, one-cycle schedule) with each
norm at a small and a large batch size, several seeds. Width 64, so that Group Norm's 32 groups
hold 2 channels each (at width 32 it would be Instance Norm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import clearly_below, mean, mean_std, spread
from normlab.claims.training import final_errors, run_records, trained
from normlab.lab.config import RunConfig

__all__ = ["C03", "C17", "C22", "C25"]

NORMS = ("batch_norm", "group_norm", "layer_norm", "instance_norm", "switchable_norm")
SMALL, LARGE = 2, 32
SWEEP: dict[str, dict[str, Any]] = {
    "smoke": {"seeds": 1, "max_train": 160, "epochs": 1},
    "quick": {"seeds": 3, "max_train": 2000, "epochs": 2},
    "full": {"seeds": 5, "max_train": None, "epochs": 8},
}
DATA, MODEL, WIDTH = "mnist1d", "cnn1d", 64


def _sweep(size: Size) -> dict[str, Any]:
    s = SWEEP[size]
    errors = final_errors(
        DATA, MODEL, NORMS, (SMALL, LARGE), s["seeds"], width=WIDTH,
        max_train=s["max_train"], epochs=s["epochs"],
    )
    return {"setting": {"data": DATA, "model": MODEL, "width": WIDTH, **s,
                        "batch_sizes": [SMALL, LARGE]},
            "test_error_percent": errors}


def _e(n: Mapping[str, Any], norm: str, bs: int) -> list[float | None]:
    return n["test_error_percent"][norm][str(bs)]


def _rise(n: Mapping[str, Any], norm: str) -> float:
    """Mean error at the small batch minus mean error at the large one (points)."""
    return mean(_e(n, norm, SMALL)) - mean(_e(n, norm, LARGE))


def _table(n: Mapping[str, Any], norms: tuple[str, ...]) -> str:
    return "; ".join(
        f"{norm} B={SMALL}: {mean_std(_e(n, norm, SMALL))}, B={LARGE}: "
        f"{mean_std(_e(n, norm, LARGE))}" for norm in norms
    )


def _figure(n: Mapping[str, Any], norms: tuple[str, ...]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for norm in norms:
        ms = [mean(_e(n, norm, b)) for b in (SMALL, LARGE)]
        ss = [spread(_e(n, norm, b)) for b in (SMALL, LARGE)]
        ax.errorbar([SMALL, LARGE], ms, yerr=ss, marker="o", capsize=3, label=norm)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- C03


def decide_c03(n: Mapping[str, Any]) -> str:
    bn_rises = clearly_below(_e(n, "batch_norm", LARGE), _e(n, "batch_norm", SMALL), margin=2.0)
    gn_flat = abs(_rise(n, "group_norm")) <= 1.0
    bn_large_ok = mean(_e(n, "batch_norm", LARGE)) <= mean(_e(n, "group_norm", LARGE)) + max(
        spread(_e(n, "batch_norm", LARGE)), spread(_e(n, "group_norm", LARGE))
    )
    if bn_rises and gn_flat and bn_large_ok:
        return REPRODUCED
    if _rise(n, "group_norm") - _rise(n, "batch_norm") > 2.0:
        return CONTRADICTED
    return NOT_REPRODUCED


C03 = Claim(
    id="C03",
    claim="BN's error rises at small batch sizes (2–4), GN's stays flat; at large batch BN is as "
    "good or better",
    source="Wu & He 2018",
    kind="X",
    rule=f"1-D CNN (width {WIDTH}) on MNIST-1D, the lab's protocol, batch {SMALL} vs {LARGE}, "
    f"3 seeds (quick): reproduced if BN's mean test error at batch {SMALL} exceeds its error at "
    f"{LARGE} by more than 2 points and by more than either spread, GN's two means are within "
    f"1 point of each other, and BN's mean at {LARGE} is at most GN's plus the larger spread; "
    f"contradicted if GN's rise from batch {LARGE} to {SMALL} exceeds BN's by more than 2 "
    f"points; otherwise not reproduced.",
    measure=_sweep,
    decide=decide_c03,
    summarize=lambda n: _table(n, ("batch_norm", "group_norm")),
    figure=lambda n: _figure(n, ("batch_norm", "group_norm")),
)


# ---------------------------------------------------------------- C25


def decide_c25(n: Mapping[str, Any]) -> str:
    gn_near_bn = mean(_e(n, "group_norm", LARGE)) - mean(_e(n, "batch_norm", LARGE)) <= 2.0
    gn_beats_bn_small = clearly_below(_e(n, "group_norm", SMALL), _e(n, "batch_norm", SMALL))
    gn_large = mean(_e(n, "group_norm", LARGE))
    others_behind = all(
        mean(_e(n, norm, LARGE)) > gn_large for norm in ("layer_norm", "instance_norm")
    )
    if gn_near_bn and gn_beats_bn_small and others_behind:
        return REPRODUCED
    if clearly_below(_e(n, "batch_norm", SMALL), _e(n, "group_norm", SMALL)):
        return CONTRADICTED
    return NOT_REPRODUCED


C25 = Claim(
    id="C25",
    claim="Group Norm approaches BN at batch 32 and beats it at small batch on image "
    "classification, with LN and IN behind",
    source="Wu & He 2018",
    kind="X",
    rule=f"the sweep of C03 (1-D CNN on MNIST-1D, a sequence task standing in for images): "
    f"reproduced if GN's mean test error at batch {LARGE} is at most 2 points above BN's, GN's "
    f"error at batch {SMALL} is below BN's by more than either spread, and LN's and IN's mean "
    f"errors at batch {LARGE} are above GN's; contradicted if BN's error at batch {SMALL} is "
    f"below GN's by more than either spread; otherwise not reproduced.",
    measure=_sweep,
    decide=decide_c25,
    summarize=lambda n: _table(n, ("batch_norm", "group_norm", "layer_norm", "instance_norm")),
    figure=lambda n: _figure(n, ("batch_norm", "group_norm", "layer_norm", "instance_norm")),
)


# ---------------------------------------------------------------- C17


def _mixture_distances(size: Size) -> list[float]:
    """Per seed: the largest total-variation distance between two layers' learned mean-mixture
    weights softmax(mean_weight) over (IN, LN, BN), at the large batch size."""
    s = SWEEP[size]
    distances = []
    for seed in range(s["seeds"]):
        config = RunConfig(DATA, MODEL, "switchable_norm", LARGE, seed, width=WIDTH,
                           max_train=s["max_train"], epochs=s["epochs"])
        _, model = trained(config)
        mixtures = [
            torch.softmax(m.mean_weight.detach().double(), 0)
            for m in model.modules() if hasattr(m, "mean_weight")
        ]
        distances.append(max(
            0.5 * (a - b).abs().sum().item() for i, a in enumerate(mixtures)
            for b in mixtures[i + 1:]
        ))
    return distances


def measure_c17(size: Size) -> Numbers:
    numbers = _sweep(size)
    numbers["largest_mixture_distance_between_layers"] = _mixture_distances(size)
    return numbers


def decide_c17(n: Mapping[str, Any]) -> str:
    robust = _rise(n, "switchable_norm") <= 2.0 and clearly_below(
        _e(n, "switchable_norm", SMALL), _e(n, "batch_norm", SMALL)
    )
    differ = mean(n["largest_mixture_distance_between_layers"]) >= 0.2
    if robust and differ:
        return REPRODUCED
    if _rise(n, "switchable_norm") - _rise(n, "batch_norm") > 2.0:
        return CONTRADICTED
    return NOT_REPRODUCED


C17 = Claim(
    id="C17",
    claim="Switchable Norm learns different mixtures per layer and is robust across batch sizes",
    source="Luo et al. 2018",
    kind="X",
    rule=f"the sweep of C03 with SwitchableNorm (IN, LN, BN branches): reproduced if SN's mean "
    f"test error rises by at most 2 points from batch {LARGE} to {SMALL}, is below BN's at "
    f"batch {SMALL} by more than either spread, and the largest total-variation distance "
    f"between two layers' learned mean-mixture weights averages >= 0.2 over seeds (all "
    f"layers start uniform: 0); contradicted if SN's rise exceeds BN's by more than 2 points; "
    f"otherwise not reproduced.",
    measure=measure_c17,
    decide=decide_c17,
    summarize=lambda n: _table(n, ("switchable_norm", "batch_norm")) + "; mixture distance "
    + mean_std(n["largest_mixture_distance_between_layers"]),
    figure=lambda n: _figure(n, ("switchable_norm", "batch_norm")),
)


# ---------------------------------------------------------------- C22

STREAM: dict[str, dict[str, Any]] = {
    "smoke": {"seeds": 1, "max_train": 32, "epochs": 1},
    "quick": {"seeds": 3, "max_train": 500, "epochs": 2},
    "full": {"seeds": 5, "max_train": 2000, "epochs": 4},
}
CHANCE = 90.0  # MNIST-1D has 10 balanced classes


def measure_c22(size: Size) -> Numbers:
    s = STREAM[size]
    settings = {"width": 64, "max_train": s["max_train"], "epochs": s["epochs"]}
    errors = final_errors(DATA, "mlp", ("streaming_norm", "layer_norm"), (1,), s["seeds"],
                          **settings)
    try:
        run_records(DATA, "mlp", ("batch_norm",), (1,), 1, **settings)
        batch_norm_refuses = False
    except ValueError:
        batch_norm_refuses = True
    return {"setting": {"data": DATA, "model": "mlp", "batch_size": 1, **settings,
                        "seeds": s["seeds"]},
            "test_error_percent": errors, "batch_norm_refuses_batch_size_1": batch_norm_refuses}


def decide_c22(n: Mapping[str, Any]) -> str:
    stream = n["test_error_percent"]["streaming_norm"]["1"]
    layer = n["test_error_percent"]["layer_norm"]["1"]
    learns = mean(stream) <= CHANCE - 20.0
    if not math.isfinite(mean(stream)) or mean(stream) >= CHANCE - 5.0:
        return CONTRADICTED
    if n["batch_norm_refuses_batch_size_1"] and learns and mean(stream) <= mean(layer) + 2.0:
        return REPRODUCED
    return NOT_REPRODUCED


C22 = Claim(
    id="C22",
    claim="Streaming / Lp normalization works online at batch size 1",
    source="Liao et al. 2016",
    kind="X",
    rule=f"3-layer MLP (width 64, one value per channel per sample) on MNIST-1D trained at "
    f"batch size 1 (the lab's protocol): "
    f"reproduced if BatchNorm refuses batch size 1 in training, StreamingNorm's mean test "
    f"error is at least 20 points below chance ({CHANCE:g} %) and at most 2 points above "
    f"LayerNorm's at batch size 1; contradicted if StreamingNorm diverges or stays within 5 "
    f"points of chance; otherwise not reproduced.",
    measure=measure_c22,
    decide=decide_c22,
    summarize=lambda n: (
        f"StreamingNorm {mean_std(n['test_error_percent']['streaming_norm']['1'])} %, "
        f"LayerNorm {mean_std(n['test_error_percent']['layer_norm']['1'])} % at batch 1; "
        f"BatchNorm refuses: {n['batch_norm_refuses_batch_size_1']}"
    ),
)
