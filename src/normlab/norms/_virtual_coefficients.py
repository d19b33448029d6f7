"""Virtual BN's coefficient function, with a hand-written vector-Jacobian product.

An example x is normalized with the statistics of R ∪ {x} (`normlab.norms.virtual_batch_norm`);
on the per-(n, c) moments (μ_x, σ²_x) and the reference's (μ_R, σ²_R), w = 1/(N_R + 1):

    d = μ_x − μ_R,   μ = μ_R + w·d,   σ² = w·σ²_x + (1 − w)·σ²_R + w(1 − w)·d²,
    r = (σ² + ε)^(-1/2),   A = γ·r,   B = β − μ·A,

and y = x·A + B (`normlab.norms._instance_affine`). The reference batch itself (``mixed=False``)
uses μ = μ_R, σ² = σ²_R. Given ∂L/∂A and ∂L/∂B (the per-(n, c) sums Σ dy·x, Σ dy), with
g = ∂L/∂A − μ·∂L/∂B (∂L/∂A through B as well):

    ∂L/∂μ = −A·∂L/∂B,   ∂L/∂σ² = −½ γ r³ g = −½ (g r)·A·r,   ∂L/∂γ = Σ_n g r,   ∂L/∂β = Σ_n ∂L/∂B,
    ∂L/∂μ_x = w ∂L/∂μ + 2w(1 − w)·d·∂L/∂σ²,   ∂L/∂σ²_x = w ∂L/∂σ²,
    ∂L/∂μ_R = Σ_n (∂L/∂μ − ∂L/∂μ_x),   ∂L/∂σ²_R = (1 − w) Σ_n ∂L/∂σ².

Autograd through the dozen tiny operations (what `instance_affine` does for a plain function)
costs a nested ``torch.autograd.grad`` call and about thirty more ATen calls per step; this VJP
is a dozen. Called with gradient tracking (double backward, graph capture) the function is
plain differentiable operations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab.core.tracing import eager_lru_cache


def _as(t: Tensor, like: Tensor) -> Tensor:
    """``t`` in the statistics' dtype (float32 for fp16/bf16 parameters)."""
    return t if t.dtype == like.dtype else t.to(like.dtype)


class MixedCoefficients:
    """(μ_x, σ²_x, μ_R, σ²_R, [γ], [β]) -> (A, B) of the module docstring, and its ``vjp``."""

    __slots__ = ("eps", "has_bias", "has_weight", "mixed", "w")

    def __init__(
        self, eps: float, has_weight: bool, has_bias: bool, mixed: bool, w: float = 0.0
    ) -> None:
        self.eps, self.has_weight, self.has_bias = eps, has_weight, has_bias
        self.mixed, self.w = mixed, w

    def at(self, w: float) -> MixedCoefficients:
        """These coefficients for an example merged with weight ``w`` = 1/(N_R + 1)."""
        return MixedCoefficients(self.eps, self.has_weight, self.has_bias, self.mixed, w)

    def _parts(
        self, mean: Tensor, var: Tensor, params: tuple[Tensor, ...], w: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """(A, B, μ, r, d): d is None for the reference batch itself."""
        mu, sigma2 = _as(params[0], mean), _as(params[1], mean)
        d = None
        if self.mixed:
            d = mean - mu
            # w·m2_x + (1−w)·m2_R − μ(x)² = w·σ²_x + (1−w)·σ²_R + w(1−w)·d², no cancellation
            sigma2 = torch.addcmul(torch.add(sigma2 * (1 - w), var, alpha=w), d, d,
                                   value=w * (1 - w))
            mu = torch.add(mu, d, alpha=w)
        r = torch.rsqrt(sigma2 + self.eps)
        scale = r * _as(params[2], mean) if self.has_weight else r
        shift = (torch.addcmul(_as(params[-1], mean), mu, scale, value=-1.0) if self.has_bias
                 else -(mu * scale))
        return scale, shift, mu, r, d

    def __call__(
        self, mean: Tensor, var: Tensor, *params: Tensor, w: float | None = None
    ) -> tuple[Tensor, Tensor]:
        scale, shift, *_ = self._parts(mean, var, params, self.w if w is None else w)
        return (scale, shift) if self.mixed else (scale.expand_as(mean), shift.expand_as(mean))

    def vjp(
        self, mean: Tensor, var: Tensor, params: tuple[Tensor, ...], g_scale: Tensor,
        g_shift: Tensor,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """A, and (∂L/∂μ_x, ∂L/∂σ²_x, ∂L/∂μ_R, ∂L/∂σ²_R, [∂L/∂γ], [∂L/∂β]) for ∂L/∂A =
        ``g_scale``, ∂L/∂B = ``g_shift`` (all (N, C)); the `instance_affine` protocol."""
        w = self.w
        scale, _, mu, r, d = self._parts(mean, var, params, w)
        g_r = torch.addcmul(g_scale, mu, g_shift, value=-1.0).mul_(r)  # g·r
        g_mu = torch.mul(scale, g_shift).neg_()
        g_sigma2 = torch.mul(g_r, scale * r).mul_(-0.5)
        grads: list[Tensor | None]
        if d is None:  # the reference batch: only μ_R, σ²_R
            grads = [None, None, g_mu.sum(0), g_sigma2.sum(0)]
        else:
            g_mean = torch.addcmul(g_mu * w, d, g_sigma2, value=2 * w * (1 - w))
            grads = [g_mean, g_sigma2 * w, (g_mu - g_mean).sum(0),
                     g_sigma2.sum(0).mul_(1 - w)]
        if self.has_weight:
            grads.append(g_r.sum(0))
        if self.has_bias:
            grads.append(g_shift.sum(0))
        return scale if d is not None else scale.expand_as(mean), grads


@eager_lru_cache(maxsize=128)  # a plain call under graph capture
def mixed_coefficients(
    eps: float, has_weight: bool, has_bias: bool, mixed: bool = True
) -> MixedCoefficients:
    """(A, B) of y = x·A + B for an example normalized with the statistics of R ∪ {x} (bind
    w with ``.at(w)`` or pass ``w=``), or with ``mixed=False`` for the reference batch itself
    (its own statistics μ_R, σ²_R only)."""
    return MixedCoefficients(eps, has_weight, has_bias, mixed)


__all__ = ["MixedCoefficients", "mixed_coefficients"]
