r"""Divisive Normalization with all-channel fields: one autograd Function, analytic backward.

When both fields span every channel (the CNN reference's configuration and the default), every
field statistic lives on the (N, 1, *S) grid of positions, 1/C the size of the input:

$$ m = \mathrm{mean}_C\, z, \quad a = \mathrm{Box}_A(m), \quad v = z - a, \quad
   q = \mathrm{mean}_C\, v^2 = \mathrm{var}_C\, z + (m - a)^2, $$
$$ e = \mathrm{Box}_B(q), \quad r = (e + \sigma^2)^{-1/2}, \quad y = v \cdot r . $$

(q by the exact identity mean_C (z − a)² = var_C z + (m − a)², since mean_C (z − m) = 0.)
So the forward makes one fused read of z (``var_mean`` over C), small pooling ops on the
position grid, and the output pass y = (z − a)·r. Box means are ``avg_pool`` with
``count_include_pad=False``: clipped at the borders and divided by the number of units inside.

The backward, with g = ∂L/∂y, needs two per-position reductions over C, Σ g and Σ g·z:

$$ \bar r = \textstyle\sum_C g\,v = \sum_C g z - a \sum_C g, \quad
   \bar e = -\tfrac12 r^3 \bar r, \quad \bar q = \mathrm{Box}_B^\top \bar e, \quad
   \alpha = 2 \bar q / C, $$
$$ \bar a = -\big(r \textstyle\sum_C g + \alpha\, C (m - a)\big), \quad
   \beta = \mathrm{Box}_A^\top(\bar a) / C, \quad
   \partial L / \partial z = g\, r + z\, \alpha + (\beta - a\,\alpha), $$

where Box^T(t)_i = Σ_{p ∋ i} t_p / |field_p| (a zero-padded box sum of t / count). It saves
only z and three position-grid tensors (1 + 3/C times the input). Without centering, a = 0,
m stays only in q = var_C z + m². Double backward (``create_graph=True``) differentiates an
eager recomputation (`normlab.norms._double_backward`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from normlab.norms._base import from_channels_first, to_channels_first
from normlab.norms._chunked import scratch
from normlab.norms._double_backward import recomputed_grads

Sizes = tuple[int, ...] | None  # one window size per spatial dim, or None (all positions)

_POOLS = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)
_CHUNK = 1 << 18  # elements per chunk of the backward's product pass


def supported(x: Tensor, spatial: int) -> bool:
    """Whether the fast Function handles ``x`` (a float32/float64 input, at most 3 spatial
    dims: the ones ``avg_pool`` covers)."""
    return x.dtype in (torch.float32, torch.float64) and spatial <= 3


def _box(t: Tensor, sizes: Sizes) -> Tensor:
    """Clipped box mean of an (N, 1, *S) tensor."""
    if t.dim() == 2:
        return t
    if sizes is None:
        return t.mean(tuple(range(2, t.dim())), keepdim=True)
    if all(k == 1 for k in sizes):
        return t
    pool = _POOLS[t.dim() - 3]
    return pool(t, sizes, 1, [k // 2 for k in sizes], count_include_pad=False)  # type: ignore[operator]


def _box_t(g: Tensor, sizes: Sizes, like: Tensor) -> Tensor:
    """The adjoint of `_box` (shape of ``like``): Σ over the fields containing each position
    of g / |field|."""
    if g.dim() == 2:
        return g
    if sizes is None:
        return g.mean(tuple(range(2, g.dim())), keepdim=True).expand_as(like).contiguous()
    if all(k == 1 for k in sizes):
        return g
    pad = [k // 2 for k in sizes]
    pool = _POOLS[g.dim() - 3]
    # avg_pool counting the padding divides by K = Π k; ratio = |field| / K
    ratio = pool(torch.ones_like(g[:1]), sizes, 1, pad, count_include_pad=True)  # type: ignore[operator]
    return pool(g / ratio, sizes, 1, pad, count_include_pad=True)  # type: ignore[operator]


def _sum_c(g: Tensor, x: Tensor) -> Tensor:
    """Σ_C g·x per position, a few samples at a time through a scratch buffer."""
    n = g.shape[0]
    s1 = g[:, :1]
    s2 = torch.empty_like(s1)
    per = max(1, _CHUNK // max(g[:1].numel(), 1))
    buf = scratch(1, (min(per, n), *g.shape[1:]), g.dtype, g.device)[0]
    for a in range(0, n, per):
        b = min(a + per, n)
        prod = torch.mul(g[a:b], x[a:b], out=buf[: b - a])
        torch.sum(prod, 1, keepdim=True, out=s2[a:b])
    return s2


class _AllChannels(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, sigma2: float, sum_sizes: Sizes, sup_sizes: Sizes, center: bool,
        channel_dim: int, eager: Any,
    ) -> Tensor:
        xs = to_channels_first(x, channel_dim)
        c = xs.shape[1]
        if center:
            m = xs.sum(1, keepdim=True).div_(c)
            a = _box(m, sum_sizes)
            d = m - a  # (a may be m itself)
            y = xs - a
        else:
            a = d = None
            y = torch.empty_like(xs).copy_(xs)
        q = _sum_c(y, y).div_(c)
        r = _box(q, sup_sizes).add_(sigma2).rsqrt_()
        y.mul_(r)
        ctx.geometry = (sum_sizes, sup_sizes, center, channel_dim, eager)
        ctx.save_for_backward(x, r, a, d)
        return from_channels_first(y, channel_dim)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        nones = (None,) * 6
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        x, r, a, d = ctx.saved_tensors
        sum_sizes, sup_sizes, center, channel_dim, eager = ctx.geometry
        if torch.is_grad_enabled():  # create_graph: a differentiable recomputation
            (gx,) = recomputed_grads(eager, [x], [True], grad)
            return (gx, *nones)
        xs = to_channels_first(x, channel_dim)
        g = to_channels_first(grad, channel_dim)
        c = xs.shape[1]
        s1, s2 = g.sum(1, keepdim=True), _sum_c(g, xs)
        r_bar = s2 - a * s1 if center else s2
        e_bar = r_bar.mul_(r.pow(3)).mul_(-0.5)
        alpha = _box_t(e_bar, sup_sizes, r).mul_(2.0 / c)
        if center:
            a_bar = (s1.mul_(r)).addcmul_(alpha, d, value=float(c)).neg_()
            shift = _box_t(a_bar, sum_sizes, r).div_(c).sub_(a * alpha)
            gx = torch.addcmul(shift, xs, alpha)
        else:
            gx = xs * alpha
        gx.addcmul_(g, r)
        return (from_channels_first(gx, channel_dim), *nones)


def divisive_all_channels(
    x: Tensor, sigma2: float, sum_sizes: Sizes, sup_sizes: Sizes, center: bool,
    channel_dim: int, eager: Any,
) -> Tensor:
    """y of `_AllChannels`; ``eager(x)`` recomputes it differentiably (double backward)."""
    return _AllChannels.apply(  # type: ignore[no-any-return]
        x, sigma2, sum_sizes, sup_sizes, center, channel_dim, eager
    )


__all__ = ["divisive_all_channels", "supported"]
