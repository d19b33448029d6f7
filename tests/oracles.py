"""Float64 reference implementations, written from the papers' equations.

Deliberately independent of normlab and of ``torch.nn.functional``'s normalization ops: every
statistic is a two-pass mean / biased variance over an explicitly selected 1-D set of values,
found with plain loops and reshapes. Inputs are upcast to float64 first; channels may sit at any
``channel_dim`` (they are moved to dim 1, normalized, and moved back). Nothing is detached:
the references are differentiable in every tensor argument, so their float64 gradients (and
gradients of gradients, tests/test_double_backward.py) are oracles too.

    y = (x - μ) / sqrt(σ² + ε) · γ + β      (μ, σ² over the normalization set, σ² biased)

- BatchNorm (Ioffe & Szegedy, 2015): set = (N, *S) for one channel.
- LayerNorm (Ba et al., 2016): set = (C, *S) for one sample; per_position: C for one (n, s).
- InstanceNorm (Ulyanov et al., 2016): set = *S for one (n, c).
- GroupNorm (Wu & He, 2018): set = (C/G, *S) for one (n, g), contiguous channel groups.
- RMSNorm (Zhang & Sennrich, 2019): y = x / sqrt(mean_C(x²) + ε) · γ per (n, s), no centering.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _cf(x: Tensor, channel_dim: int) -> Tensor:
    """Float64 copy of ``x`` with channels at dim 1."""
    return x.to(torch.float64).movedim(channel_dim, 1).clone()


def _vec(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(torch.float64)


def mean_var(values: Tensor) -> tuple[Tensor, Tensor]:
    """Two-pass mean and *biased* variance of a 1-D float64 tensor."""
    n = values.numel()
    mean = values.sum() / n
    var = ((values - mean) ** 2).sum() / n
    return mean, var


def _normalize(values: Tensor, mean: Tensor, var: Tensor, eps: float) -> Tensor:
    return (values - mean) / torch.sqrt(var + eps)


def _affine_channelwise(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """Per-channel γ, β on a channels-first (N, C, *S) tensor."""
    view = (1, y.shape[1]) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * _vec(weight).reshape(view)
    if bias is not None:
        y = y + _vec(bias).reshape(view)
    return y


def batch_norm_ref(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    *,
    training: bool,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """BN: batch statistics (biased variance) when training or without running stats."""
    xc = _cf(x, channel_dim)
    y = torch.empty_like(xc)
    use_batch = training or running_mean is None
    for c in range(xc.shape[1]):
        values = xc[:, c]
        if use_batch:
            mean, var = mean_var(values.reshape(-1))
        else:
            mean, var = _vec(running_mean)[c], _vec(running_var)[c]
        y[:, c] = _normalize(values, mean, var, eps)
    return _affine_channelwise(y, weight, bias).movedim(1, channel_dim)


def layer_norm_ref(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    per_position: bool = False,
    channel_dim: int = 1,
) -> Tensor:
    """LN over (C, *S) per sample (per-channel affine), or over C per (sample, position)."""
    xc = _cf(x, channel_dim)
    n_samples, channels = xc.shape[:2]
    y = torch.empty_like(xc)
    if not per_position:
        for n in range(n_samples):
            mean, var = mean_var(xc[n].reshape(-1))
            y[n] = _normalize(xc[n], mean, var, eps)
        return _affine_channelwise(y, weight, bias).movedim(1, channel_dim)
    flat = xc.reshape(n_samples, channels, -1)
    out = y.reshape(n_samples, channels, -1)
    for n in range(n_samples):
        for p in range(flat.shape[2]):
            mean, var = mean_var(flat[n, :, p])
            out[n, :, p] = _normalize(flat[n, :, p], mean, var, eps)
    y = out.reshape(xc.shape)
    return _affine_channelwise(y, weight, bias).movedim(1, channel_dim)


def instance_norm_ref(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    *,
    use_input_stats: bool = True,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """IN: statistics over *S per (sample, channel); running stats per channel in eval."""
    xc = _cf(x, channel_dim)
    y = torch.empty_like(xc)
    for n in range(xc.shape[0]):
        for c in range(xc.shape[1]):
            values = xc[n, c]
            if use_input_stats:
                mean, var = mean_var(values.reshape(-1))
            else:
                mean, var = _vec(running_mean)[c], _vec(running_var)[c]
            y[n, c] = _normalize(values, mean, var, eps)
    return _affine_channelwise(y, weight, bias).movedim(1, channel_dim)


def group_norm_ref(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """GN: contiguous channel groups, statistics over (C/G, *S) per (sample, group)."""
    xc = _cf(x, channel_dim)
    n_samples, channels = xc.shape[:2]
    grouped = xc.reshape(n_samples, num_groups, channels // num_groups, *xc.shape[2:])
    y = torch.empty_like(grouped)
    for n in range(n_samples):
        for g in range(num_groups):
            mean, var = mean_var(grouped[n, g].reshape(-1))
            y[n, g] = _normalize(grouped[n, g], mean, var, eps)
    y = y.reshape(xc.shape)
    return _affine_channelwise(y, weight, bias).movedim(1, channel_dim)


def rms_norm_ref(
    x: Tensor,
    weight: Tensor | None = None,
    *,
    eps: float | None = None,
    channel_dim: int = 1,
) -> Tensor:
    """RMSNorm over C per (sample, position); eps=None means the *input* dtype's epsilon."""
    eps_value = torch.finfo(x.dtype).eps if eps is None else eps
    xc = _cf(x, channel_dim)
    n_samples, channels = xc.shape[:2]
    flat = xc.reshape(n_samples, channels, -1)
    out = torch.empty_like(flat)
    for n in range(n_samples):
        for p in range(flat.shape[2]):
            values = flat[n, :, p]
            mean_square = (values * values).sum() / channels
            out[n, :, p] = values / torch.sqrt(mean_square + eps_value)
    y = out.reshape(xc.shape)
    return _affine_channelwise(y, weight, None).movedim(1, channel_dim)


def batch_moments_ref(
    x: Tensor, *, per_instance: bool = False, channel_dim: int = 1
) -> tuple[Tensor, Tensor, int]:
    """Per-channel (mean, unbiased variance, n) of one batch, as running stats consume them.

    BatchNorm: over (N, *S), n = N·prod(S). InstanceNorm (``per_instance``): the mean over the
    batch of each instance's mean and unbiased variance over *S, n = prod(S).
    """
    xc = _cf(x, channel_dim)
    n_samples, channels = xc.shape[:2]
    means = torch.empty(channels, dtype=torch.float64)
    uvars = torch.empty(channels, dtype=torch.float64)
    count = xc[:, 0].numel() if not per_instance else xc[0, 0].numel()
    for c in range(channels):
        if not per_instance:
            mean, var = mean_var(xc[:, c].reshape(-1))
            means[c], uvars[c] = mean, var * count / (count - 1)
            continue
        inst_means, inst_uvars = [], []
        for n in range(n_samples):
            mean, var = mean_var(xc[n, c].reshape(-1))
            inst_means.append(mean)
            inst_uvars.append(var * count / (count - 1))
        means[c] = torch.stack(inst_means).sum() / n_samples
        uvars[c] = torch.stack(inst_uvars).sum() / n_samples
    return means, uvars, count


def running_stats_step_ref(
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: int,
    x: Tensor,
    momentum: float | None,
    *,
    per_instance: bool = False,
    channel_dim: int = 1,
) -> tuple[Tensor, Tensor, int]:
    """One PyTorch-convention update: r ← (1 − f)·r + f·stat, f = momentum or 1/t (cumulative)."""
    mean, uvar, _ = batch_moments_ref(x, per_instance=per_instance, channel_dim=channel_dim)
    tracked = num_batches_tracked + 1
    factor = 1.0 / tracked if momentum is None else momentum
    new_mean = (1 - factor) * _vec(running_mean) + factor * mean
    new_var = (1 - factor) * _vec(running_var) + factor * uvar
    return new_mean, new_var, tracked


def running_stats_ref(
    batches: Sequence[Tensor],
    momentum: float | None,
    *,
    per_instance: bool = False,
    channel_dim: int = 1,
) -> tuple[Tensor, Tensor, int]:
    """Running (mean, var, num_batches_tracked) after ``batches``, starting from (0, 1, 0)."""
    channels = batches[0].shape[channel_dim]
    running_mean = torch.zeros(channels, dtype=torch.float64)
    running_var = torch.ones(channels, dtype=torch.float64)
    tracked = 0
    for x in batches:
        running_mean, running_var, tracked = running_stats_step_ref(
            running_mean,
            running_var,
            tracked,
            x,
            momentum,
            per_instance=per_instance,
            channel_dim=channel_dim,
        )
    return running_mean, running_var, tracked
