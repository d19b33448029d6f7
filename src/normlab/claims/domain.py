"""Batch statistics across domains: AdaBN (C13) and fine-tuning with frozen statistics (C12).

Both start from one pretrained network per seed: the lab's BN MLP (3 x 128 units,
linear → BN → ReLU) trained on the ``synthetic`` data (the source domain) with Adam
(`normlab.claims.fit`).

* C13 (AdaBN, Li et al. 2016): the test images of ``synthetic-shift`` are the source test images
  moved to a target domain (contrast x1.5, brightness +1 source standard deviation). Error on
  the source test set, on the target before, and on the target after `normlab.recalibrate`
  (``mode="adabn"``) re-estimates every BN layer's statistics from the target inputs (no
  labels; transductive, as in the paper: the unlabeled target images are the test images).
* C12 (fine-tuning): the pretrained network (new linear head) is fine-tuned on a small labeled
  set of another task (``digits``, 200 training images, same 1x8x8 shape) at batch size 2, once
  with BN live (batch-of-2 statistics in training, running statistics updated) and once with
  the source statistics frozen (`normlab.freeze`: the running statistics of the pretraining are
  used in training and eval; γ, β still learn). Test error on the digits test set.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

import normlab
from normlab.claims.fit import deterministic, error, fit
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import clearly_below, mean, mean_std
from normlab.claims.training import cached_data
from normlab.lab.models import build_model

__all__ = ["C12", "C13"]

WIDTH = 128
PRETRAIN_BATCH = 64
PRETRAIN_LR = 0.003
FINETUNE_BATCH = 2
FINETUNE_LR = 0.001
FINETUNE_TRAIN = 200
RECALIBRATE_BATCH = 64
MIN_RECOVERY = 0.5  # C13: AdaBN must win back at least half of the error the shift added
# size: (seeds, pretraining steps, fine-tuning steps)
_SIZES: dict[str, tuple[int, int, int]] = {
    "smoke": (2, 10, 10),
    "quick": (3, 400, 400),
    "full": (5, 1500, 1500),
}


def _pretrained(size: Size, seed: int) -> nn.Module:
    """The BN MLP trained on the source domain (``synthetic``), in eval mode (a fresh copy of
    the one trained once per process for C12 and C13)."""
    return copy.deepcopy(_train_source(size, seed))


@functools.lru_cache(maxsize=16)
def _train_source(size: Size, seed: int) -> nn.Module:
    _, steps, _ = _SIZES[size]
    data = cached_data("synthetic", None)
    with deterministic(seed):
        model = build_model("mlp", "bn", data.input_shape, data.num_classes, width=WIDTH)
        fit(model, data.x_train, data.y_train, steps=steps, batch_size=PRETRAIN_BATCH,
            lr=PRETRAIN_LR, seed=seed)  # fmt: skip
    return model.eval()


def _figure(n: Mapping[str, Any], keys: tuple[str, ...], title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    for i, key in enumerate(keys):
        vals = [v for v in n[key] if v is not None]
        ax.scatter([i] * len(vals), vals)
        ax.plot([i - 0.2, i + 0.2], [mean(vals)] * 2, color="k")
    ax.set_xticks(range(len(keys)), keys)
    ax.set(ylabel="test error (%)", title=title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- C13: AdaBN


def measure_c13(size: Size) -> Numbers:
    seeds = _SIZES[size][0]
    source = cached_data("synthetic", None)
    target = cached_data("synthetic-shift", None)
    out: dict[str, Any] = {"seeds": seeds, "source": [], "target_before": [], "target_after": []}
    for seed in range(seeds):
        model = _pretrained(size, seed)
        out["source"].append(error(model, source.x_test, source.y_test))
        out["target_before"].append(error(model, target.x_test, target.y_test))
        with deterministic(seed):
            normlab.recalibrate(model, torch.split(target.x_test, RECALIBRATE_BATCH), mode="adabn")
        out["target_after"].append(error(model, target.x_test, target.y_test))
    return out


def recovery(n: Mapping[str, Any]) -> float:
    """(before − after) / (before − source) of the mean errors: the share of the error added by
    the shift that AdaBN wins back (0 when the shift added none)."""
    lost = mean(n["target_before"]) - mean(n["source"])
    return (mean(n["target_before"]) - mean(n["target_after"])) / lost if lost > 0 else 0.0


def decide_c13(n: Mapping[str, Any]) -> str:
    if clearly_below(n["target_before"], n["target_after"]):
        return CONTRADICTED
    shift_hurts = clearly_below(n["source"], n["target_before"])
    if shift_hurts and clearly_below(n["target_after"], n["target_before"]) and (
        recovery(n) >= MIN_RECOVERY
    ):
        return REPRODUCED
    return NOT_REPRODUCED


C13 = Claim(
    id="C13",
    claim="AdaBN: re-estimating BN statistics on the target domain recovers accuracy under "
    "domain shift, with no labels",
    source="Li et al. 2016",
    kind="X",
    rule="BN MLP trained on 'synthetic'; target = its test images with contrast x1.5 and "
    "brightness +1 ('synthetic-shift'). Test error on source, on target before and after "
    "normlab.recalibrate(mode='adabn') on the unlabeled target images. Reproduced if the shift "
    "clearly hurts (source error clearly below target-before: gap larger than both spreads), "
    "target-after is clearly below target-before, and AdaBN wins back at least "
    f"{MIN_RECOVERY:.0%} of the added error ((before - after) / (before - source) of the "
    "means); contradicted if target-before is clearly below target-after (AdaBN hurts); "
    "otherwise not reproduced.",
    measure=measure_c13,
    decide=decide_c13,
    figure=lambda n: _figure(n, ("source", "target_before", "target_after"), "C13: AdaBN"),
    summarize=lambda n: f"error %: source {mean_std(n['source'])}, target before "
    f"{mean_std(n['target_before'])}, after AdaBN {mean_std(n['target_after'])}; recovery "
    f"{recovery(n):.0%} ({n['seeds']} seeds)",
)


# ---------------------------------------------------------------- C12: fine-tuning, frozen stats


def _finetune(size: Size, seed: int, frozen: bool) -> float | None:
    _, _, steps = _SIZES[size]
    task = cached_data("digits", FINETUNE_TRAIN)
    model = _pretrained(size, seed)
    with deterministic(1000 + seed):
        model[-1] = nn.Linear(model[-1].in_features, task.num_classes)  # a new head
        if frozen:
            normlab.freeze(model)
        losses = fit(model, task.x_train, task.y_train, steps=steps,
                     batch_size=FINETUNE_BATCH, lr=FINETUNE_LR, seed=seed)  # fmt: skip
    if len(losses) < steps or losses[-1] != losses[-1]:
        return None
    return error(model, task.x_test, task.y_test)


def measure_c12(size: Size) -> Numbers:
    seeds = _SIZES[size][0]
    return {
        "seeds": seeds,
        "live": [_finetune(size, s, frozen=False) for s in range(seeds)],
        "frozen": [_finetune(size, s, frozen=True) for s in range(seeds)],
    }


def decide_c12(n: Mapping[str, Any]) -> str:
    if clearly_below(n["frozen"], n["live"]):
        return REPRODUCED
    if clearly_below(n["live"], n["frozen"]):
        return CONTRADICTED
    return NOT_REPRODUCED


C12 = Claim(
    id="C12",
    claim="Fine-tuning with small batches is better with the source data's (frozen) statistics",
    source="seed note on fine-tuning",
    kind="X",
    rule="BN MLP pretrained on 'synthetic', new head, fine-tuned on 200 'digits' images at "
    "batch size 2 (same seeds, steps, Adam lr), BN live (batch statistics, running statistics "
    "updated) vs frozen (normlab.freeze: the pretraining's running statistics; gamma, beta "
    "learn). Digits test error in eval mode. Reproduced if frozen's mean error is clearly below "
    "live's (gap larger than both spreads); contradicted if live's is clearly below frozen's; "
    "otherwise not reproduced.",
    measure=measure_c12,
    decide=decide_c12,
    figure=lambda n: _figure(n, ("live", "frozen"), "C12: fine-tuning at batch 2"),
    summarize=lambda n: f"digits test error %: BN live {mean_std(n['live'])}, frozen "
    f"{mean_std(n['frozen'])} ({n['seeds']} seeds)",
)
