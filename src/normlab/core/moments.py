"""Moments: mean, biased variance and count of a set of values, merged exactly.

Two sets with moments (μ_a, σ²_a, n_a) and (μ_b, σ²_b, n_b) merge into (Chan, Golub & LeVeque
1979)

$$ n = n_a + n_b,\\quad δ = μ_b - μ_a,\\quad μ = μ_a + δ\\,n_b/n,\\quad
   σ^2 = (n_a σ^2_a + n_b σ^2_b + δ^2 n_a n_b / n)/n. $$

The merge is exact (no E[x²] − E[x]² cancellation), which is what lets instance moments become
layer or batch moments (Switchable Norm), batches become population moments (precise BN) and
workers become global moments (sync). Statistics of fp16/bf16 inputs are kept in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: float32 for fp16/bf16 inputs, else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def merge_equal_counts(
    mean: Tensor, var: Tensor, dim: int, *, keepdim: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact merge along ``dim`` of sets that all hold the same number of values.

    With equal counts the merge above becomes
    $$ μ = \\frac{1}{n}\\sum_i μ_i,\\quad σ^2 = \\frac{1}{n}\\sum_i (σ^2_i + (μ_i − μ)^2). $$
    Returns (μ, σ², μ_i − μ); the deviations (with ``dim`` kept) serve backward passes.
    Differentiable; four ATen calls, since on small tensors ``torch.var_mean`` costs ~15x the
    time of these operations on CPU (and every call counts there). This is how per-(sample,
    channel) moments become layer, batch, ghost-batch or reference-batch moments.
    """
    mu = mean.mean(dim, keepdim=True)
    dev = mean - mu
    var = torch.addcmul(var, dev, dev).mean(dim, keepdim=keepdim)
    return (mu if keepdim else mu.squeeze(dim)), var, dev


@dataclass(frozen=True)
class Moments:
    """Mean, biased variance and element count of one or many sets of values.

    ``mean`` and ``var`` have one entry per set; ``count`` is the number of values per set,
    either a Python int (all sets equal) or a tensor broadcastable to ``mean``.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
        >>> m = Moments.from_tensor(x[:, :1], dims=(1,)).merge(Moments.from_tensor(x[:, 1:], (1,)))
        >>> m.mean.item(), m.var.item(), int(m.count)
        (2.5, 1.25, 4)
    """

    mean: Tensor
    var: Tensor
    count: Tensor | int

    @classmethod
    def from_tensor(cls, x: Tensor, dims: Sequence[int]) -> Moments:
        """Moments over ``dims`` of ``x`` (two-pass, accumulated in float32 for fp16/bf16)."""
        dims = tuple(dims)
        xs = x.to(accumulation_dtype(x.dtype))
        count = 1
        for d in dims:
            count *= x.shape[d]
        if count == 0:
            shape = [s for i, s in enumerate(x.shape) if i not in {d % x.dim() for d in dims}]
            zeros = xs.new_zeros(shape)
            return cls(zeros, zeros.clone(), 0)
        var, mean = torch.var_mean(xs, dim=dims, correction=0)
        return cls(mean, var, count)

    @classmethod
    def of_batch(cls, x: Tensor, dims: Sequence[int]) -> Moments:
        """`from_tensor` whose statistics stay attached to ``x``'s graph when the set is empty.

        A replica with no samples still takes part in a cross-replica merge, forward and
        backward: its zero statistics are ``Σx`` over the empty set, so that autograd reaches
        the merge's backward collective on that replica too (an unreached collective hangs the
        others).
        """
        dims = tuple(dims)
        if all(x.shape[d] for d in dims):
            return cls.from_tensor(x, dims)
        zeros = x.to(accumulation_dtype(x.dtype)).sum(dims)  # a sum over no values: zeros
        return cls(zeros, zeros.clone(), 0)

    @property
    def unbiased_var(self) -> Tensor:
        """σ² · n / (n − 1), the estimate PyTorch stores in ``running_var``."""
        n = self.count
        if isinstance(n, int):
            return self.var * (n / (n - 1)) if n > 1 else self.var
        n = n.to(self.var.dtype)
        return torch.where(n > 1, self.var * n / (n - 1).clamp(min=1), self.var)

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of the two sets (exact)."""
        na, nb = self.count, other.count
        total: Tensor | int
        if isinstance(na, int) and isinstance(nb, int):
            if na == 0:
                return other
            if nb == 0:
                return self
            total = na + nb
            wa, wb = na / total, nb / total
        else:
            total = torch.as_tensor(na + nb, dtype=self.mean.dtype, device=self.mean.device)
            size = total.clamp(min=1)  # two empty sets: weights 0, not 0/0
            wa, wb = na / size, nb / size
        delta = other.mean - self.mean
        mean = self.mean + delta * wb
        var = self.var * wa + other.var * wb + delta.square() * (wa * wb)
        return Moments(mean, var, total)

    def reduce(self, dim: int) -> Moments:
        """Merge the sets along ``dim`` of the statistic tensors into one set each."""
        if isinstance(self.count, int):
            mean, var, _ = merge_equal_counts(self.mean, self.var, dim, keepdim=False)
            return Moments(mean, var, self.count * self.mean.shape[dim])
        count = torch.broadcast_to(self.count.to(self.mean.dtype), self.mean.shape)
        total = count.sum(dim)
        weight = count / total.clamp(min=1).unsqueeze(dim)
        mean = (weight * self.mean).sum(dim)
        spread = (weight * (self.mean - mean.unsqueeze(dim)).square()).sum(dim)
        return Moments(mean, (weight * self.var).sum(dim) + spread, total)

    def is_finite(self) -> Tensor:
        """A 0-dim bool tensor: every mean and variance is finite."""
        return torch.isfinite(self.mean).all() & torch.isfinite(self.var).all()
