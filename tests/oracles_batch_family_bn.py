"""Float64 references for Ghost Batch Normalization and Frozen Batch Normalization.

Independent of normlab: explicit loops over ghost batches and channels, two-pass moments
(``oracles.mean_var``).

Ghost BN (Hoffer, Hubara & Soudry 2017, arXiv:1705.08741; reference code eladhoffer/bigBatch,
main_gbn.py, which runs every piece of ``input.chunk(batch_size // mini_batch_size)`` through
the model one by one):

    chunks: split="size": x[0:g], x[g:2g], ..., the last one possibly smaller;
            split="count": x.chunk(N // g) (the reference code's rule: 10 by 4 gives 5, 5);
            normlab's documented policy merges a last chunk holding one value per statistic
            into the previous one
    training: every chunk normalized with its own per-channel mean / biased variance over
              (chunk, *S); eval: running statistics (BN eval), or the whole batch's statistics
              without running statistics
    running stats: one PyTorch-convention EMA step per chunk, in order (what BN does when the
                   reference code feeds it chunk by chunk); momentum=None: each step's chunk
                   average enters a cumulative average over steps; num_batches_tracked += 1.

Frozen BN: BN's inference function y = (x − μ̂)/sqrt(σ̂² + ε)·γ + β with the given statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from oracles import batch_norm_ref, mean_var


def _cf(x: Tensor, channel_dim: int) -> Tensor:
    return x.to(torch.float64).movedim(channel_dim, 1).clone()


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(torch.float64)


def ghost_chunks_ref(
    batch: int, ghost_batch_size: int, positions: int, split: str = "size"
) -> list[tuple[int, int]]:
    """(start, stop) of every ghost batch, the last merged into its predecessor if 1 value.

    ``split="size"``: slices of ``ghost_batch_size`` samples. ``split="count"``: the reference
    code's ``x.chunk(N // ghost_batch_size)`` (one chunk when N < ghost_batch_size), applied
    literally to the sample indices.
    """
    if split == "size":
        bounds = [(i, min(i + ghost_batch_size, batch))
                  for i in range(0, batch, ghost_batch_size)]
    else:
        pieces = torch.arange(batch).chunk(max(batch // ghost_batch_size, 1))
        bounds = [(int(p[0]), int(p[-1]) + 1) for p in pieces]
    if len(bounds) > 1:
        start, stop = bounds[-1]
        if (stop - start) * positions == 1:
            bounds = [*bounds[:-2], (bounds[-2][0], stop)]
    return bounds


def ghost_batch_norm_ref(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    *,
    training: bool,
    ghost_batch_size: int,
    eps: float = 1e-5,
    channel_dim: int = 1,
    split: str = "size",
) -> Tensor:
    """GBN output: per-chunk BN in training, BN eval (or whole-batch BN) otherwise."""
    if not training:
        return batch_norm_ref(
            x, weight, bias, running_mean, running_var, training=False, eps=eps,
            channel_dim=channel_dim,
        )
    xc = _cf(x, channel_dim)
    n, c = xc.shape[:2]
    positions = xc[0, 0].numel()
    y = torch.empty_like(xc)
    for start, stop in ghost_chunks_ref(n, ghost_batch_size, positions, split):
        for ch in range(c):
            values = xc[start:stop, ch]
            mean, var = mean_var(values.reshape(-1))
            out = (values - mean) / torch.sqrt(var + eps)
            if weight is not None:
                out = out * _f64(weight)[ch]
            if bias is not None:
                out = out + _f64(bias)[ch]
            y[start:stop, ch] = out
    return y.movedim(1, channel_dim)


def ghost_chunk_stats_ref(
    x: Tensor, ghost_batch_size: int, channel_dim: int = 1, split: str = "size"
) -> list[tuple[Tensor, Tensor]]:
    """Per chunk: (per-channel mean, per-channel unbiased variance), in batch order."""
    xc = _cf(x, channel_dim)
    n, c = xc.shape[:2]
    positions = xc[0, 0].numel()
    stats = []
    for start, stop in ghost_chunks_ref(n, ghost_batch_size, positions, split):
        count = (stop - start) * positions
        means, uvars = torch.empty(c, dtype=torch.float64), torch.empty(c, dtype=torch.float64)
        for ch in range(c):
            mean, var = mean_var(xc[start:stop, ch].reshape(-1))
            means[ch], uvars[ch] = mean, var * count / (count - 1)
        stats.append((means, uvars))
    return stats


def ghost_running_step_ref(
    buffers: Mapping[str, Tensor],
    x: Tensor,
    momentum: Any,
    *,
    ghost_batch_size: int,
    channel_dim: int = 1,
    split: str = "size",
) -> dict[str, Tensor]:
    """Buffers after one training step on ``x``: a literal loop over the ghost batches."""
    rm = _f64(buffers["running_mean"])
    rv = _f64(buffers["running_var"])
    tracked = int(buffers["num_batches_tracked"]) + 1
    stats = ghost_chunk_stats_ref(x, ghost_batch_size, channel_dim, split)
    if momentum is None:
        factor = 1.0 / tracked
        mean = sum(m for m, _ in stats) / len(stats)
        uvar = sum(v for _, v in stats) / len(stats)
        rm = (1 - factor) * rm + factor * mean
        rv = (1 - factor) * rv + factor * uvar
    else:
        for mean, uvar in stats:  # one EMA step per ghost batch, in order
            rm = (1 - momentum) * rm + momentum * mean
            rv = (1 - momentum) * rv + momentum * uvar
    return {
        "running_mean": rm,
        "running_var": rv,
        "num_batches_tracked": torch.tensor(tracked, dtype=torch.long),
    }


def frozen_batch_norm_ref(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    *,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """y = (x − μ̂)/sqrt(σ̂² + ε)·γ + β per channel, written out (not via batch_norm_ref)."""
    xc = _cf(x, channel_dim)
    y = torch.empty_like(xc)
    rm, rv = _f64(running_mean), _f64(running_var)
    for ch in range(xc.shape[1]):
        out = (xc[:, ch] - rm[ch]) / torch.sqrt(rv[ch] + eps)
        if weight is not None:
            out = out * _f64(weight)[ch]
        if bias is not None:
            out = out + _f64(bias)[ch]
        y[:, ch] = out
    return y.movedim(1, channel_dim)
