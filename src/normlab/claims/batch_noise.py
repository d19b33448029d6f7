"""C24: BN acts as a regularizer through the noise of its batch statistics.

Operationalization: *batch noise* is the sampling noise of the statistics a BN layer normalizes
with in training. Two networks differ only in that noise: the lab's MLP (3 x 128 units,
linear → norm → ReLU) on a small training set (300 ``digits`` images, so that it overfits),
trained at batch size 128 with the same seeds, steps, batches and Adam learning rate, with

* ``bn``: `normlab.BatchNorm`, statistics of the whole batch of 128 (little noise), and
* ``ghost4``: `normlab.GhostBatchNorm` with ghost batches of 4 (each group of 4 examples
  normalized with its own statistics: much more noise, the same population quantity).

Both evaluate with their running statistics. The generalization gap is test error minus
training error (the whole training set, eval mode), in points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normlab.claims.fit import deterministic, error, fit
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import clearly_below, mean, mean_std
from normlab.claims.training import cached_data
from normlab.lab.models import build_model

__all__ = ["C24"]

ARMS = {"bn": "batch_norm", "ghost4": "ghost_batch_norm:4"}
TRAIN_EXAMPLES = 300
WIDTH = 128
BATCH = 128
LR = 0.001
# size: (seeds, steps)
_SIZES: dict[str, tuple[int, int]] = {"smoke": (2, 6), "quick": (5, 500), "full": (10, 2000)}


def measure_c24(size: Size) -> Numbers:
    seeds, steps = _SIZES[size]
    data = cached_data("digits", TRAIN_EXAMPLES)
    out: dict[str, Any] = {"seeds": seeds, "steps": steps, "train": {}, "test": {}, "gap": {}}
    for arm, spec in ARMS.items():
        train, test = [], []
        for seed in range(seeds):
            with deterministic(seed):
                model = build_model("mlp", spec, data.input_shape, data.num_classes, width=WIDTH)
                losses = fit(model, data.x_train, data.y_train, steps=steps, batch_size=BATCH,
                             lr=LR, seed=seed)  # fmt: skip
            ok = len(losses) == steps and losses[-1] == losses[-1]
            train.append(error(model, data.x_train, data.y_train) if ok else None)
            test.append(error(model, data.x_test, data.y_test) if ok else None)
        out["train"][arm], out["test"][arm] = train, test
        out["gap"][arm] = [
            None if a is None or b is None else round(b - a, 4)
            for a, b in zip(train, test, strict=True)
        ]
    return out


def decide_c24(n: Mapping[str, Any]) -> str:
    gap, test = n["gap"], n["test"]
    if clearly_below(gap["bn"], gap["ghost4"]):
        return CONTRADICTED
    if clearly_below(gap["ghost4"], gap["bn"]) and not clearly_below(test["bn"], test["ghost4"]):
        return REPRODUCED
    return NOT_REPRODUCED


def _figure(n: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4))
    for ax, key in zip(fig.subplots(1, 3), ("train", "test", "gap"), strict=True):
        for i, arm in enumerate(ARMS):
            vals = [v for v in n[key][arm] if v is not None]
            ax.scatter([i] * len(vals), vals)
            ax.plot([i - 0.2, i + 0.2], [mean(vals)] * 2, color="k")
        ax.set_xticks(range(len(ARMS)), list(ARMS))
        ax.set(title=f"{key} error (points)" if key == "gap" else f"{key} error (%)")
    fig.suptitle("C24: batch noise (BN over 128 vs ghost batches of 4)")
    fig.tight_layout()
    return fig


C24 = Claim(
    id="C24",
    claim="BN acts as a regularizer through batch noise",
    source="seed note",
    kind="X",
    rule="Batch noise = the sampling noise of BN's training statistics. MLP (3 x 128) on 300 "
    "digits images, batch 128, same seeds / steps / batches / Adam lr: BN over the whole batch "
    "('bn') vs Ghost BN with ghost batches of 4 ('ghost4', much noisier statistics of the same "
    "population quantity). Gap = test error - training error (eval mode, points). Reproduced if "
    "ghost4's gap is clearly below bn's (difference of the means larger than both spreads) and "
    "bn's test error is not clearly below ghost4's (a smaller gap from underfitting does not "
    "count); contradicted if bn's gap is clearly below ghost4's; otherwise not reproduced.",
    measure=measure_c24,
    decide=decide_c24,
    figure=_figure,
    summarize=lambda n: "; ".join(
        f"{arm}: train {mean_std(n['train'][arm])}, test {mean_std(n['test'][arm])}, gap "
        f"{mean_std(n['gap'][arm])}" for arm in ARMS
    ) + f" ({n['seeds']} seeds, {n['steps']} steps)",
)
