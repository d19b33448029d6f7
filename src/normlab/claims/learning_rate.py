"""C01 (Ioffe & Szegedy 2015): Batch Normalization permits much higher learning rates.

A learning-rate sweep of the lab's MLP on the scikit-learn digits, through the lab's protocol
(`normlab.lab.runner`: SGD with momentum 0.9, one-cycle schedule to the peak rate, equal
epochs), with no normalization, BatchNorm and LayerNorm at batch size 32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import mean, mean_std
from normlab.claims.training import final_errors

__all__ = ["C01"]

DATA, MODEL, BATCH = "digits", "mlp", 32
NORMS = ("none", "batch_norm", "layer_norm")
RATES = (0.05, 0.2, 0.8, 3.2, 12.8)
TRAINS_WITHIN = 5.0  # points above the norm's best mean error on the grid
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"seeds": 1, "max_train": 160, "epochs": 1, "rates": (0.2, 12.8)},
    "quick": {"seeds": 3, "max_train": None, "epochs": 4, "rates": RATES},
    "full": {"seeds": 5, "max_train": None, "epochs": 10, "rates": RATES},
}


def measure_c01(size: Size) -> Numbers:
    s = SIZES[size]
    errors: dict[str, dict[str, list]] = {norm: {} for norm in NORMS}
    for lr in s["rates"]:
        found = final_errors(DATA, MODEL, NORMS, (BATCH,), s["seeds"], lr=lr,
                             max_train=s["max_train"], epochs=s["epochs"])
        for norm in NORMS:
            errors[norm][f"{lr:g}"] = found[norm][str(BATCH)]
    return {"setting": {"data": DATA, "model": MODEL, "batch_size": BATCH, "seeds": s["seeds"],
                        "max_train": s["max_train"], "epochs": s["epochs"],
                        "rates": list(s["rates"])},
            "test_error_percent": errors}


def largest_training_rate(by_rate: Mapping[str, list]) -> float:
    """The largest rate whose runs all finish with a mean error within `TRAINS_WITHIN` points
    of the best mean on the grid (0 when none does)."""
    means = {float(lr): mean(errs) for lr, errs in by_rate.items()}
    best = min(means.values())
    ok = [lr for lr, m in means.items() if math.isfinite(m) and m <= best + TRAINS_WITHIN]
    return max(ok, default=0.0)


def decide_c01(n: Mapping[str, Any]) -> str:
    e = n["test_error_percent"]
    plain, bn = largest_training_rate(e["none"]), largest_training_rate(e["batch_norm"])
    if bn > plain:
        return REPRODUCED
    if plain > bn:
        return CONTRADICTED
    return NOT_REPRODUCED


def _summary(n: Mapping[str, Any]) -> str:
    e = n["test_error_percent"]
    parts = [f"largest rate that trains: none {largest_training_rate(e['none']):g}, "
             f"BN {largest_training_rate(e['batch_norm']):g}, "
             f"LN {largest_training_rate(e['layer_norm']):g}"]
    top = max(e["none"], key=float)
    parts.append(f"at lr {top}: none {mean_std(e['none'][top])} %, "
                 f"BN {mean_std(e['batch_norm'][top])} %")
    return "; ".join(parts)


def _figure(n: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for norm, by_rate in n["test_error_percent"].items():
        rates = [float(r) for r in by_rate]
        means = [min(mean(v), 100.0) for v in by_rate.values()]  # diverged: drawn at 100 %
        ax.plot(rates, means, marker="o", label=norm)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("test error (%), diverged = 100")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


C01 = Claim(
    id="C01",
    claim="BN permits much higher learning rates: at learning rates where the unnormalized net "
    "diverges, the BN net trains",
    source="Ioffe & Szegedy 2015",
    kind="X",
    rule=f"3-layer MLP (width 256) on digits, batch {BATCH}, the lab's protocol, peak learning "
    f"rates {', '.join(f'{r:g}' for r in RATES)}, 3 seeds (quick). A net trains at a rate when "
    f"no seed diverges and its mean test error is within {TRAINS_WITHIN:g} points of its best "
    f"mean on the grid. Reproduced if the largest rate at which the BN net trains is above the "
    f"largest at which the unnormalized net trains; contradicted if it is below; otherwise "
    f"(equal) not reproduced.",
    measure=measure_c01,
    decide=decide_c01,
    summarize=_summary,
    figure=_figure,
)
