"""Float64 references of EvoNorm-B0 / S0, written from the paper and the official TF code.

Liu, Brock, Simonyan & Le 2020 (arXiv:2004.02967); tensorflow/tpu,
models/official/resnet/resnet_model.py, ``evonorm``, ``_batch_std``, ``_instance_std``,
``_group_std``. Independent of normlab: every statistic is a two-pass mean / biased variance
over an explicitly selected 1-D set of values, found with loops and slicing.

    B0: y = x / max(sqrt(s²_b + ε), v·x + sqrt(s²_i + ε)) · γ + β
        s²_b over (N, *S) per channel (training; moving variance at eval), s²_i over *S per (n, c)
    S0: y = x · sigmoid(v·x) / sqrt(s²_g + ε) · γ + β,  s²_g over (C/G, *S) per (n, g)
    moving variance: r ← r − (r − s²_b)·(1 − decay), r₀ = 1, decay = 1 − momentum
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def _f64(t: Tensor | None) -> Tensor | None:
    # not detached: the references are differentiable, so their float64 gradients can be
    # compared with the layers' analytic backward
    return None if t is None else t.to(torch.float64)


def mean_var(values: Tensor) -> tuple[Tensor, Tensor]:
    """Two-pass mean and biased variance of a 1-D float64 tensor."""
    n = values.numel()
    mean = values.sum() / n
    return mean, ((values - mean) ** 2).sum() / n


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    view = (1, y.shape[1]) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * _f64(weight).reshape(view)
    if bias is not None:
        y = y + _f64(bias).reshape(view)
    return y


def batch_var_ref(x: Tensor, channel_dim: int = 1) -> Tensor:
    """Biased variance over (N, *S) of each channel (the reference's ``tf.nn.moments``)."""
    xc = x.to(torch.float64).movedim(channel_dim, 1)
    return torch.stack([mean_var(xc[:, c].reshape(-1))[1] for c in range(xc.shape[1])])


def evo_norm_b0_ref(
    x: Tensor,
    v: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_var: Tensor | None,
    *,
    training: bool,
    eps: float,
    channel_dim: int = 1,
) -> Tensor:
    """B0; ``v=None`` is the affine-only layer (``nonlinearity=False``).

    Ties of the max go to the batch side (``torch.where(right > left, right, left)``), as
    ``tf.maximum``'s gradient sends them to its first argument in the reference.
    """
    xc = x.to(torch.float64).movedim(channel_dim, 1)
    if v is None:
        return _affine(xc, weight, bias).movedim(1, channel_dim)
    n_samples, channels = xc.shape[:2]
    use_batch = training or running_var is None
    batch_var = batch_var_ref(xc) if use_batch else _f64(running_var)
    y = torch.empty_like(xc)
    for c in range(channels):
        left = torch.sqrt(batch_var[c] + eps)
        for n in range(n_samples):
            values = xc[n, c]
            _, inst_var = mean_var(values.reshape(-1))
            right = _f64(v)[c] * values + torch.sqrt(inst_var + eps)
            y[n, c] = values / torch.where(right > left, right, left)
    return _affine(y, weight, bias).movedim(1, channel_dim)


def reference_groups(channels: int, num_groups: int) -> int:
    """The reference's rule: decrement G until it divides C (``_group_std``)."""
    while num_groups > 1:
        if channels % num_groups == 0:
            break
        num_groups -= 1
    return num_groups


def evo_norm_s0_ref(
    x: Tensor,
    v: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    num_groups: int,
    eps: float,
    channel_dim: int = 1,
) -> Tensor:
    """S0 with the *requested* ``num_groups`` (the reference's decrement rule applied here)."""
    xc = x.to(torch.float64).movedim(channel_dim, 1)
    if v is None:
        return _affine(xc, weight, bias).movedim(1, channel_dim)
    n_samples, channels = xc.shape[:2]
    groups = reference_groups(channels, num_groups)
    size = channels // groups
    vc = _f64(v)
    y = torch.empty_like(xc)
    for n in range(n_samples):
        for g in range(groups):
            block = xc[n, g * size:(g + 1) * size]
            _, var = mean_var(block.reshape(-1))
            for j in range(size):
                c = g * size + j
                values = block[j]
                swish = values / (1 + torch.exp(-vc[c] * values))  # x · sigmoid(v x)
                y[n, c] = swish / torch.sqrt(var + eps)
    return _affine(y, weight, bias).movedim(1, channel_dim)


def running_step_ref(
    buffers: Mapping[str, Tensor], x: Tensor, momentum: float | None
) -> dict[str, Tensor]:
    """One training step of B0's moving variance (biased batch variance, as the reference).

    r ← r − (r − s²_b)·f with f = momentum (= 1 − decay), or 1/t (t = updates so far,
    this one included) for ``momentum=None``; a non-finite s²_b changes nothing.
    """
    batch_var = batch_var_ref(x.detach())
    if not torch.isfinite(batch_var).all():
        return dict(buffers)
    tracked = buffers["num_batches_tracked"] + 1
    factor = 1.0 / float(tracked) if momentum is None else momentum
    running = buffers["running_var"].to(torch.float64)
    return {"running_var": running - (running - batch_var) * factor,
            "num_batches_tracked": tracked}
