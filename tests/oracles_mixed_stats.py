"""Float64 references for the mixed-statistics norms, written from the papers' equations.

Independent of normlab: every statistic is a two-pass mean / biased variance over an explicitly
selected set of raw input values (never a merge of other statistics), so comparing normlab's
merged statistics with these checks the shared-computation identities too. The references are
differentiable in every tensor argument (no detach), so their autograd gradients serve as
float64 gradient references.

- Switchable Norm (Luo et al. 2019, arXiv:1806.10779):
  y = γ (x − Σ_k w_k μ_k) / sqrt(Σ_k w'_k σ²_k + ε) + β, w = softmax(λ), w' = softmax(λ'),
  k over the branches among IN (set *S per (n, c)), LN (set (C, *S) per n), BN (set (N, *S)
  per c; running statistics in eval when given).
- Batch-Instance Norm (Nam & Kim 2018, arXiv:1805.07925):
  y = (ρ x̂_B + (1 − ρ) x̂_I) γ + β, x̂_B over (N, *S) per c (running statistics in eval when
  given), x̂_I over *S per (n, c), always the input's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

F64 = torch.float64



def _moments(values: Tensor) -> tuple[Tensor, Tensor]:
    """Two-pass mean and biased variance of all the values of ``values``."""
    flat = values.reshape(-1)
    mean = flat.sum() / flat.numel()
    return mean, ((flat - mean) ** 2).sum() / flat.numel()


def _softmax(logits: Tensor) -> Tensor:
    e = torch.exp(logits - logits.max())
    return e / e.sum()


def _per_channel(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def instance_stats(xc: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C) means and biased variances over *S of a channels-first float64 tensor."""
    n, c = xc.shape[:2]
    means = [[_moments(xc[i, j])[0] for j in range(c)] for i in range(n)]
    variances = [[_moments(xc[i, j])[1] for j in range(c)] for i in range(n)]
    return torch.stack([torch.stack(r) for r in means]), torch.stack(
        [torch.stack(r) for r in variances]
    )


def layer_stats(xc: Tensor) -> tuple[Tensor, Tensor]:
    """(N, 1) means and biased variances over (C, *S) of each sample."""
    stats = [_moments(xc[i]) for i in range(xc.shape[0])]
    return (
        torch.stack([m for m, _ in stats]).reshape(-1, 1),
        torch.stack([v for _, v in stats]).reshape(-1, 1),
    )


def batch_stats(xc: Tensor) -> tuple[Tensor, Tensor]:
    """(1, C) means and biased variances over (N, *S) of each channel."""
    stats = [_moments(xc[:, j]) for j in range(xc.shape[1])]
    return (
        torch.stack([m for m, _ in stats]).reshape(1, -1),
        torch.stack([v for _, v in stats]).reshape(1, -1),
    )


def switchable_norm_ref(
    x: Tensor,
    mean_weight: Tensor,
    var_weight: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    *,
    branches: Sequence[str] = ("in", "ln", "bn"),
    training: bool,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """Switchable Norm; the BN branch uses running statistics when not training and given."""
    xc = x.to(F64).movedim(channel_dim, 1)
    n, c = xc.shape[:2]
    ordered = [b for b in ("in", "ln", "bn") if b in branches]
    w_mean, w_var = _softmax(mean_weight.to(F64)), _softmax(var_weight.to(F64))
    mu = torch.zeros(n, c, dtype=F64)
    sigma2 = torch.zeros(n, c, dtype=F64)
    for k, branch in enumerate(ordered):
        if branch == "in":
            m, v = instance_stats(xc)
        elif branch == "ln":
            m, v = layer_stats(xc)
        elif training or running_mean is None:
            m, v = batch_stats(xc)
        else:
            m, v = running_mean.to(F64).reshape(1, -1), running_var.to(F64).reshape(1, -1)
        mu = mu + w_mean[k] * m
        sigma2 = sigma2 + w_var[k] * v
    shape = (n, c) + (1,) * (xc.dim() - 2)
    y = (xc - mu.reshape(shape)) / torch.sqrt(sigma2.reshape(shape) + eps)
    if weight is not None:
        y = y * _per_channel(weight.to(F64), y.dim())
    if bias is not None:
        y = y + _per_channel(bias.to(F64), y.dim())
    return y.movedim(1, channel_dim)


def batch_instance_norm_ref(
    x: Tensor,
    gate: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    *,
    training: bool,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    """Batch-Instance Norm; x̂_B uses running statistics when not training and given."""
    xc = x.to(F64).movedim(channel_dim, 1)
    n, c = xc.shape[:2]
    shape = (n, c) + (1,) * (xc.dim() - 2)
    if training or running_mean is None:
        mu_b, var_b = batch_stats(xc)
    else:
        mu_b, var_b = running_mean.to(F64).reshape(1, -1), running_var.to(F64).reshape(1, -1)
    mu_b, var_b = mu_b.reshape(1, c, *shape[2:]), var_b.reshape(1, c, *shape[2:])
    mu_i, var_i = instance_stats(xc)
    x_b = (xc - mu_b) / torch.sqrt(var_b + eps)
    x_i = (xc - mu_i.reshape(shape)) / torch.sqrt(var_i.reshape(shape) + eps)
    rho = _per_channel(gate.to(F64), xc.dim())
    y = rho * x_b + (1 - rho) * x_i
    if weight is not None:
        y = y * _per_channel(weight.to(F64), y.dim())
    if bias is not None:
        y = y + _per_channel(bias.to(F64), y.dim())
    return y.movedim(1, channel_dim)


# -- structure of the fast path --------------------------------------------------------------------

_VIEWS = ("view", "reshape", "as_strided", "alias", "expand", "permute", "transpose", "squeeze",
          "unsqueeze", "slice", "select", "detach", "unbind", "t.default", "_unsafe_view")


def full_size_ops(run: object, numel: int) -> list[str]:
    """Names of the non-view ATen operations that ``run()`` applies to a tensor of ``numel``
    elements (reads or writes of a full input-sized tensor), in order."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    found: list[str] = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            name = str(func)
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, Tensor)]
            if any(t.numel() == numel for t in tensors) and not any(v in name for v in _VIEWS):
                found.append(name)
            return out

    with Count():
        run()  # type: ignore[operator]
    return found
