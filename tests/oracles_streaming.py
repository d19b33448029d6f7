"""Float64 oracles of Liao, Kawaguchi & Poggio 2016 (arXiv:1610.06160): Lp normalization and
streaming normalization, written from the paper's equations with loops over the normalization
sets (not normlab's code path).

Lp: x̂ = (x − μ)/(E|x − μ|^p + ε)^{1/p} over each set (p = ∞: max|x − μ| + ε).
Streaming: NormStats s = (mean, mean of squares) per channel; the short-term NormStats are the
average of the per-step NormStats since the window opened, the long-term ones an EMA of the
closed windows' statistics; the layer normalizes with α·long + (1 − α)·short (raw moments, so
the mixture's variance is E[x²] − E[x]²).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor

F64 = torch.float64


def _channels_first(x: Tensor, channel_dim: int) -> Tensor:
    return x if channel_dim == 1 else x.movedim(-1, 1)


def _sets(shape: tuple[int, ...], reduce: tuple[str, ...], groups: int) -> list[list[tuple]]:
    """Index tuples of every normalization set of a channels-first shape (loops, no reshape)."""
    n, c, spatial = shape[0], shape[1], shape[2:]
    positions = [list(q) for q in itertools.product(*[range(s) for s in spatial])]
    size = c // groups if "channel" in reduce else 1
    channel_sets = [list(range(g * size, (g + 1) * size)) for g in range(c // size)]
    sets = []
    for i in range(n):
        for chans in channel_sets:
            pos_sets = [positions] if "spatial" in reduce else [[q] for q in positions]
            for ps in pos_sets:
                sets.append([(i, ch, *q) for ch in chans for q in ps])
    return sets


def lp_norm_ref(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    p: float,
    reduce: tuple[str, ...],
    groups: int,
    center: bool,
    eps: float,
    channel_dim: int = 1,
) -> Tensor:
    xc = _channels_first(x.to(F64), channel_dim)
    y = torch.empty_like(xc)
    for members in _sets(tuple(xc.shape), reduce, groups):
        values = torch.stack([xc[idx] for idx in members])
        mu = values.mean() if center else torch.zeros((), dtype=F64)
        dev = (values - mu).abs()
        d = dev.max() + eps if math.isinf(p) else ((dev**p).mean() + eps) ** (1 / p)
        for idx in members:
            y[idx] = (xc[idx] - mu) / d
    if weight is not None:
        y = y * weight.to(F64).view(1, -1, *([1] * (y.dim() - 2)))
    if bias is not None:
        y = y + bias.to(F64).view(1, -1, *([1] * (y.dim() - 2)))
    return y if channel_dim == 1 else y.movedim(1, -1)


# -- streaming normalization ----------------------------------------------------------------------


def _batch_raw_moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per channel over (N, *S): mean and mean of squares, by a loop over channels."""
    xc = x.to(F64)
    c = xc.shape[1]
    mean = torch.stack([xc[:, k].reshape(-1).sum() / xc[:, k].numel() for k in range(c)])
    sq = torch.stack([(xc[:, k].reshape(-1) ** 2).sum() / xc[:, k].numel() for k in range(c)])
    return mean, sq


def streaming_step_ref(
    state: dict[str, Any], x: Tensor, *, alpha: float, window: int, momentum: float | None
) -> dict[str, Any]:
    """One training step's buffers: the long-term EMA takes the batch's (mean, biased var)
    with weight m (1/t for None); the batch joins the window as one more equal-weight step
    (a full window restarts with it)."""
    new = {k: v.clone() for k, v in state.items()}
    counted = int(state["short_steps"])  # steps so far; the window restarts every `window`
    steps = counted % window
    bm, bq = _batch_raw_moments(x)
    old_mean = state["short_mean"].to(F64)
    old_sq = state["short_var"].to(F64) + old_mean**2
    sm = (old_mean * steps + bm) / (steps + 1)
    sq = (old_sq * steps + bq) / (steps + 1)
    new["short_mean"], new["short_var"] = sm, sq - sm**2
    new["short_steps"] = torch.tensor(counted + 1)
    t = int(state["num_batches_tracked"]) + 1
    f = 1.0 / t if momentum is None else momentum
    lm, lv = state["running_mean"].to(F64), state["running_var"].to(F64)
    new["running_mean"] = (1 - f) * lm + f * bm
    new["running_var"] = (1 - f) * lv + f * (bq - bm**2)
    new["num_batches_tracked"] = torch.tensor(t)
    return new


def streaming_stats_ref(
    state: dict[str, Any],
    x: Tensor | None,
    *,
    alpha: float,
    window: int,
    momentum: float | None,
) -> tuple[Tensor, Tensor]:
    """The (mean, variance) the layer normalizes with: the mixture α·long + (1 − α)·short of
    the buffers after the training step on ``x`` (or as they are: eval, x None; before any
    step, long alone). Raw moments: E[x] and E[x²] mix linearly."""
    if x is not None:
        state = streaming_step_ref(state, x, alpha=alpha, window=window, momentum=momentum)
    lm, lv = state["running_mean"].to(F64), state["running_var"].to(F64)
    if int(state["short_steps"]) == 0:
        return lm, lv
    sm = state["short_mean"].to(F64)
    sq = state["short_var"].to(F64) + sm**2
    mean = alpha * lm + (1 - alpha) * sm
    meansq = alpha * (lv + lm**2) + (1 - alpha) * sq
    return mean, meansq - mean**2


def streaming_norm_ref(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    state: dict[str, Any],
    *,
    training: bool,
    alpha: float,
    window: int,
    momentum: float | None,
    eps: float,
    channel_dim: int = 1,
) -> Tensor:
    xc = _channels_first(x.to(F64), channel_dim)
    mean, var = streaming_stats_ref(
        state, xc if training else None, alpha=alpha, window=window, momentum=momentum
    )
    channels = []
    for k in range(xc.shape[1]):
        yk = (xc[:, k] - mean[k]) / torch.sqrt(var[k] + eps)
        if weight is not None:
            yk = yk * weight[k].to(F64)
        if bias is not None:
            yk = yk + bias[k].to(F64)
        channels.append(yk)
    y = torch.stack(channels, 1)
    return y if channel_dim == 1 else y.movedim(1, -1)
