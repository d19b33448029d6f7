"""Ghost BN's running statistics: one buffer write per training step for all of its ghost
batches (the closed form of one PyTorch-momentum EMA step per ghost batch, in batch order).
Used by `normlab.norms.ghost_batch_norm`; the guard and the factor are
`normlab.core.running`'s."""

from __future__ import annotations

import torch
from torch import Tensor

from normlab.core.running import Factor, update_running_, update_running_ema_
from normlab.core.tracing import eager_lru_cache


@torch.no_grad()
def ghost_terms(
    chunk_mean: Tensor, chunk_var: Tensor, counts: list[int], momentum: float | None
) -> Tensor:
    """(2, C): Σ_i w_i μ_i and Σ_i w_i s²_i over one batch's K ghost batches i = 1..K in batch
    order, s²_i = σ²_i·n_i/(n_i − 1) the unbiased variance (n_i = ``counts[i]`` values per
    statistic); w_i = m(1 − m)^(K−i) with momentum m, w_i = 1 with ``momentum=None``."""
    k = len(counts)
    uvar = chunk_var * chunk_var.new_tensor([n / (n - 1) for n in counts]).unsqueeze(1)
    if momentum is None:
        return torch.stack([chunk_mean.sum(0), uvar.sum(0)])
    w = chunk_mean.new_tensor([momentum * (1 - momentum) ** (k - 1 - i) for i in range(k)])
    return torch.stack([(w.unsqueeze(1) * chunk_mean).sum(0), (w.unsqueeze(1) * uvar).sum(0)])


@torch.no_grad()
def update_ghost_running_stats_(
    running_mean: Tensor, running_var: Tensor, num_batches_tracked: Tensor, ks: list[int],
    terms: Tensor, momentum: float | None,
) -> None:
    r"""One training step's update of the running buffers from its ghost batches, in place.

    ``terms`` (R, 2, C): the `ghost_terms` T_r of R batches of K_r = ``ks[r]`` ghost batches
    whose ghost batches follow each other in that order (R = 1 in one process; under
    `normlab.sync` one per replica, in rank order). With momentum m, the closed form of K = Σ K_r
    PyTorch-convention EMA steps, one per ghost batch in order (the reference code's per-chunk
    BN calls), for s = μ and the unbiased s², K_{>r} the ghost batches after batch r's:

    $$ \hat s ← (1 - m)^K\,\hat s + \sum_{i=1}^{K} m (1 - m)^{K-i}\, s_i
       = (1 - m)^K\,\hat s + \sum_r (1 - m)^{K_{>r}}\, T_r, $$

    written to each buffer once. With ``momentum=None``: ŝ ← (1 − 1/t)·ŝ + (1/t)·Σ_r T_r / K,
    t = ``num_batches_tracked`` after the increment, i.e. an equal-weight average over training
    steps of each step's ghost-batch average. ``num_batches_tracked`` counts training steps
    (forward calls), not ghost batches. Statistics that are not finite leave every buffer
    unchanged (the guard of `normlab.core.running.update_running_stats_`).
    """
    k = sum(ks)
    if k == 0:  # no replica had a sample
        return

    def law(factor: Factor) -> tuple[Tensor, Tensor]:
        if momentum is None:  # factor = 1/t: the step's ghost-batch average, weight 1/t
            keep, step = 1 - factor, terms.sum(0) * (factor / k)
        else:
            decay = terms.new_tensor([(1 - momentum) ** sum(ks[r + 1 :]) for r in range(len(ks))])
            keep, step = (1 - momentum) ** k, (terms * decay.view(-1, 1, 1)).sum(0)
        return (running_mean * keep + step[0].to(running_mean.dtype),
                running_var * keep + step[1].to(running_var.dtype))

    update_running_((running_mean, running_var), num_batches_tracked, momentum, law, watch=(terms,))


@eager_lru_cache(maxsize=32)  # a plain call under graph capture
def _ema_weights(
    counts: tuple[int, ...], momentum: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, float]:
    """((2, K, 1) weights, f) of `update_ghost_running_ema_`; made once, only ever read."""
    k = len(counts)
    f = 1 - (1 - momentum) ** k
    w = [momentum * (1 - momentum) ** (k - 1 - i) / f for i in range(k)]
    unbiased = [wi * n / (n - 1) for wi, n in zip(w, counts, strict=True)]
    with torch.inference_mode(False), torch.no_grad():
        return torch.tensor([w, unbiased], dtype=dtype, device=device).unsqueeze(2), f


def update_ghost_running_ema_(
    running_mean: Tensor, running_var: Tensor, num_batches_tracked: Tensor | None,
    chunk_mean: Tensor, chunk_var: Tensor, counts: list[int], momentum: float,
) -> None:
    r"""`update_ghost_running_stats_` for one process (R = 1) and a momentum m > 0, as ONE
    EMA step of `normlab.core.running.update_running_ema_` (its guard, counter and fused
    lerp): the closed form over the K ghost batches is

    $$ \hat s ← (1 - m)^K\,\hat s + \sum_i w_i s_i = (1 - f)\,\hat s + f\,T,\qquad
       f = 1 - (1 - m)^K,\quad T = \sum_i \frac{w_i}{f} s_i, $$

    w_i = m(1 − m)^(K−i), s = μ_k and the unbiased σ²_k (biased ``chunk_var`` times
    n_i/(n_i − 1)), both weighted sums in one multiply and one sum with weights made once
    per (counts, m). A few ATen calls instead of about thirty: what Ghost BN's running update
    costs on small maps (benchmarks/results/issue9_smallmaps.md).
    """
    weights, f = _ema_weights(tuple(counts), momentum, chunk_mean.dtype, chunk_mean.device)
    # mul + sum, not bmm: BLAS's thread pool costs tens of µs a call beside ATen's kernels
    targets = torch.stack((chunk_mean, chunk_var)).mul_(weights).sum(1)
    update_running_ema_(
        (running_mean, running_var), targets.unbind(0), num_batches_tracked, f,
        watch=targets.view(-1),
    )


__all__ = ["ghost_terms", "update_ghost_running_ema_", "update_ghost_running_stats_"]
