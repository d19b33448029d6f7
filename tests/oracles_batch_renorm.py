"""Float64 references for Batch Renormalization, written from the paper (Ioffe 2017, Alg. 1).

Independent of normlab: per-channel loops over explicitly selected values, two-pass moments.

    μ_B = mean(x),  σ_B = sqrt(Var_b(x) + ε)                         over (N, *S), per channel
    r = stop_grad(clip(σ_B/σ, 1/r_max, r_max)),  d = stop_grad(clip((μ_B − μ)/σ, −d_max, d_max))
    y = γ·((x − μ_B)/σ_B·r + d) + β                                   (training)
    y = γ·(x − μ)/σ + β                                               (inference)
    μ ← μ + α(μ_B − μ),  σ ← σ + α(σ_B − σ)                           (moving averages)

μ and σ are the moving mean and the moving std *including ε*; normlab keeps σ in the buffer
``running_var`` as σ² − ε, so here σ = sqrt(running_var + ε). The clip schedule: r_max = 1,
d_max = 0 for the first ``warmup`` steps, then linear to the final value at the ramp's end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from oracles import mean_var


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(torch.float64)


def ramp_ref(step: int, warmup: int, end: int) -> float:
    """0 before ``warmup``, 1 from ``end`` on, linear in between (a step when end == warmup)."""
    if step < warmup:
        return 0.0
    if step >= end:
        return 1.0
    return (step - warmup) / (end - warmup)


def schedule_ref(
    step: int, rmax: float, dmax: float, warmup: int, rmax_end: int, dmax_end: int
) -> tuple[float, float]:
    """(r_max, d_max) used at 0-based training step ``step``."""
    return (
        1.0 + (rmax - 1.0) * ramp_ref(step, warmup, rmax_end),
        dmax * ramp_ref(step, warmup, dmax_end),
    )


def module_limits_ref(m: Any) -> tuple[float, float]:
    """The schedule's limits for the module's next training step (from its public attributes)."""
    return schedule_ref(
        int(m.num_batches_tracked), m.rmax, m.dmax, m.warmup_steps, m.rmax_ramp_end,
        m.dmax_ramp_end,
    )


def batch_renorm_ref(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    *,
    training: bool,
    rmax: float,
    dmax: float,
    eps: float,
    channel_dim: int = 1,
    stop_grad: bool = True,
) -> Tensor:
    """Batch Renorm in float64; differentiable in x, weight and bias (r, d detached).

    ``stop_grad=False`` lets gradients flow through r and d; it exists only so that a test can
    show the stop-gradient matters.
    """
    xc = _f64(x).movedim(channel_dim, 1)
    mu, var = _f64(running_mean), _f64(running_var)
    sigma = torch.sqrt(var + eps)
    channels = []
    for c in range(xc.shape[1]):
        values = xc[:, c]
        if training:
            mean_b, var_b = mean_var(values.reshape(-1))
            sigma_b = torch.sqrt(var_b + eps)
            r = torch.clamp(sigma_b / sigma[c], 1.0 / rmax, rmax)
            d = torch.clamp((mean_b - mu[c]) / sigma[c], -dmax, dmax)
            if stop_grad:
                r, d = r.detach(), d.detach()
            out = (values - mean_b) / sigma_b * r + d
        else:
            out = (values - mu[c]) / sigma[c]
        if weight is not None:
            out = out * _f64(weight)[c]
        if bias is not None:
            out = out + _f64(bias)[c]
        channels.append(out)
    return torch.stack(channels, dim=1).movedim(1, channel_dim)


def batch_stats_ref(x: Tensor, channel_dim: int = 1) -> tuple[Tensor, Tensor]:
    """Per-channel μ_B and σ_B = sqrt(Var_b + ε)'s ingredient Var_b (biased), float64."""
    xc = x.detach().to(torch.float64).movedim(channel_dim, 1)
    pairs = [mean_var(xc[:, c].reshape(-1)) for c in range(xc.shape[1])]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def moving_std_step_ref(
    mean: Tensor, std: Tensor, tracked: int, x: Tensor, momentum: float | None, eps: float
) -> tuple[Tensor, Tensor, int]:
    """One step of the paper's moving averages of μ and σ (α = momentum, or 1/t when None)."""
    mean_b, var_b = batch_stats_ref(x)
    tracked += 1
    alpha = 1.0 / tracked if momentum is None else momentum
    std_b = torch.sqrt(var_b + eps)
    return mean + alpha * (mean_b - mean), std + alpha * (std_b - std), tracked


def running_step_ref(
    buffers: Mapping[str, Tensor], x: Tensor, momentum: float | None, *, eps: float
) -> dict[str, Tensor]:
    """The catalogue's ``running_step``: buffers after one training step on ``x`` (float64).

    The moving std σ = sqrt(running_var + ε) follows the paper's law; running_var = σ² − ε.
    """
    std = torch.sqrt(_f64(buffers["running_var"]) + eps)
    mean, std, tracked = moving_std_step_ref(
        _f64(buffers["running_mean"]), std, int(buffers["num_batches_tracked"]), x, momentum, eps
    )
    return {
        "running_mean": mean,
        "running_var": std * std - eps,
        "num_batches_tracked": torch.tensor(tracked, dtype=torch.long),
    }
