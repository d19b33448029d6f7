"""Claims about what a batch holds: C08 (Batch Renorm with small or non-i.i.d. batches, Ioffe
2017) and C14 (Ghost BN and the large-batch generalization gap, Hoffer et al. 2017).

Both train the lab's 1-D CNN (width 32) on MNIST-1D through the lab's protocol
(`normlab.lab.runner`: equal epochs, linear learning-rate scaling, one-cycle schedule; Batch
Renorm's r_max/d_max schedule scaled to the run's length).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import clearly_below, mean, mean_std
from normlab.claims.training import final_errors

__all__ = ["C08", "C14"]

DATA, MODEL, WIDTH = "mnist1d", "cnn1d", 32
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"seeds": 1, "max_train": 320, "epochs": 1},
    "quick": {"seeds": 3, "max_train": 2000, "epochs": 2},
    "full": {"seeds": 5, "max_train": None, "epochs": 8},
}

# ---------------------------------------------------------------- C08

SETTINGS_C08 = {  # name: (batch size, batch order)
    "small_iid": (4, "iid"),
    "non_iid": (32, "fewclass:2"),
    "large_iid": (32, "iid"),
}


def measure_c08(size: Size) -> Numbers:
    s = SIZES[size]
    errors = {}
    for name, (bs, order) in SETTINGS_C08.items():
        found = final_errors(DATA, MODEL, ("batch_norm", "batch_renorm"), (bs,), s["seeds"],
                             width=WIDTH, max_train=s["max_train"], epochs=s["epochs"],
                             order=order)
        errors[name] = {norm: by_bs[str(bs)] for norm, by_bs in found.items()}
    return {"setting": {"data": DATA, "model": MODEL, "width": WIDTH, **s,
                        "cases": {k: {"batch_size": b, "order": o}
                                  for k, (b, o) in SETTINGS_C08.items()}},
            "test_error_percent": errors}


def decide_c08(n: Mapping[str, Any]) -> str:
    e = n["test_error_percent"]
    beats = [clearly_below(e[c]["batch_renorm"], e[c]["batch_norm"])
             for c in ("small_iid", "non_iid")]
    loses = [clearly_below(e[c]["batch_norm"], e[c]["batch_renorm"])
             for c in ("small_iid", "non_iid")]
    equal_large = abs(mean(e["large_iid"]["batch_renorm"]) - mean(e["large_iid"]["batch_norm"]))
    if any(loses):
        return CONTRADICTED
    if any(beats) and equal_large <= 1.0:
        return REPRODUCED
    return NOT_REPRODUCED


def _summary_c08(n: Mapping[str, Any]) -> str:
    e = n["test_error_percent"]
    return "; ".join(
        f"{case}: BRN {mean_std(e[case]['batch_renorm'])}, BN {mean_std(e[case]['batch_norm'])}"
        for case in SETTINGS_C08
    )


def _bars(groups: Mapping[str, Mapping[str, list]], ylabel: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.5))
    ax = fig.add_subplot()
    names = list(groups)
    variants = list(next(iter(groups.values())))
    width = 0.8 / len(variants)
    for k, variant in enumerate(variants):
        xs = [i + k * width for i in range(len(names))]
        ax.bar(xs, [mean(groups[g][variant]) for g in names], width, label=variant)
        for x, g in zip(xs, names, strict=True):
            ax.plot([x] * len(groups[g][variant]), groups[g][variant], "k.", markersize=3)
    ax.set_xticks([i + width * (len(variants) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


C08 = Claim(
    id="C08",
    claim="Batch Renorm beats BN with small or non-i.i.d. minibatches, and equals BN with large "
    "i.i.d. ones",
    source="Ioffe 2017",
    kind="X",
    rule="1-D CNN (width 32) on MNIST-1D, the lab's protocol, 3 seeds (quick), three cases: "
    "batch 4 i.i.d., batch 32 with 2 classes per batch (fewclass:2), batch 32 i.i.d.: "
    "reproduced if Batch Renorm's mean test error is below BN's by more than either spread in "
    "at least one of the first two cases and within 1 point of BN's in the third; "
    "contradicted if BN's is below Batch Renorm's by more than either spread in either of the "
    "first two cases; otherwise not reproduced.",
    measure=measure_c08,
    decide=decide_c08,
    summarize=_summary_c08,
    figure=lambda n: _bars(n["test_error_percent"], "test error (%)"),
)

# ---------------------------------------------------------------- C14

SMALL_BATCH, LARGE_BATCH, GHOST = 16, 256, 16
SIZES_C14: dict[str, dict[str, Any]] = {
    "smoke": {"seeds": 1, "max_train": 512, "epochs": 3},
    "quick": {"seeds": 3, "max_train": 2000, "epochs": 8},
    "full": {"seeds": 5, "max_train": None, "epochs": 16},
}


def measure_c14(size: Size) -> Numbers:
    s = SIZES_C14[size]
    settings = {"width": WIDTH, "max_train": s["max_train"], "epochs": s["epochs"]}
    large = final_errors(DATA, MODEL, ("batch_norm", f"ghost_batch_norm:{GHOST}"),
                         (LARGE_BATCH,), s["seeds"], **settings)
    small = final_errors(DATA, MODEL, ("batch_norm",), (SMALL_BATCH,), s["seeds"], **settings)
    return {
        "setting": {"data": DATA, "model": MODEL, **settings, "seeds": s["seeds"],
                    "small_batch": SMALL_BATCH, "large_batch": LARGE_BATCH, "ghost": GHOST},
        "test_error_percent": {
            "bn_small_batch": small["batch_norm"][str(SMALL_BATCH)],
            "bn_large_batch": large["batch_norm"][str(LARGE_BATCH)],
            "ghost_bn_large_batch": large[f"ghost_batch_norm:{GHOST}"][str(LARGE_BATCH)],
        },
    }


def decide_c14(n: Mapping[str, Any]) -> str:
    e = n["test_error_percent"]
    if clearly_below(e["ghost_bn_large_batch"], e["bn_large_batch"]):
        return REPRODUCED
    if clearly_below(e["bn_large_batch"], e["ghost_bn_large_batch"]):
        return CONTRADICTED
    return NOT_REPRODUCED


C14 = Claim(
    id="C14",
    claim="Ghost BN reduces the generalization gap of large-batch training",
    source="Hoffer et al. 2017",
    kind="X",
    rule=f"1-D CNN (width 32) on MNIST-1D, the lab's protocol (equal epochs, linear learning-"
    f"rate scaling), 3 seeds (quick): the gap is the large batch's ({LARGE_BATCH}) test error "
    f"minus the small batch's ({SMALL_BATCH}, BN); reproduced if Ghost BN (ghost batches of "
    f"{GHOST}) at batch {LARGE_BATCH} has a mean test error below BN's at batch {LARGE_BATCH} "
    f"by more than either spread (a smaller gap); contradicted if BN's is below Ghost BN's by "
    f"more than either spread; otherwise not reproduced.",
    measure=measure_c14,
    decide=decide_c14,
    summarize=lambda n: "; ".join(
        f"{k}: {mean_std(v)} %" for k, v in n["test_error_percent"].items()
    ),
    figure=lambda n: _bars({"test error": n["test_error_percent"]}, "test error (%)"),
)
