"""RMSNorm on memory whose channels are innermost: an autograd Function on the (M, C) matrix.

A Transformer's (N, L, C) tokens (``channel_dim=-1``) and channels_last images keep C
contiguous, so each row of the (M, C) matrix of the memory is one position's channels:

$$ r_m = (\\tfrac1C \\textstyle\\sum_c x_{mc}^2 + ε)^{-1/2},\\qquad y = γ_c\\, x\\, r_m . $$

Backward, with g = ∂L/∂y, q = g ⊙ x and s_m = Σ_c γ_c q_{mc} (a GEMV of q against γ):

$$ ∂x = γ_c\\, r\\, g − x\\, \\frac{r^3 s}{C},\\qquad ∂γ = q^\\top r \\ \\text{(a second GEMV)}. $$

Forward: one reduction pass (``vector_norm`` along the contiguous rows), the output pass and
an in-place γ pass; backward: the product pass, two GEMVs, and ∂x built in the product's buffer
(three passes, two in place); all over chunks of rows that stay in cache
(`normlab.norms._chunked`). Saves x and r (1/C of x). No layout copies: the general path
(`normlab.norms.rms_norm`) broadcasts over strided channels and reduces over the other dims,
several times slower here. For ``create_graph=True`` the backward differentiates a
recomputation (`normlab.norms._double_backward`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab.core.tracing import compiling
from normlab.norms._chunked import CHUNK_ELEMENTS
from normlab.norms._double_backward import recomputed_grads


def _rows(x: Tensor, dim: int) -> Tensor | None:
    """The (M, C) matrix of x's memory when ``dim`` (the channels) is innermost, else None."""
    if x.dim() < 2:
        return None
    moved = x.movedim(dim, -1)
    return moved.view(-1, x.shape[dim]) if moved.is_contiguous() else None


def applies(x: Tensor, weight: Tensor | None, dim: int) -> bool:
    """Whether `rms_rows` serves this call: float32/float64 x (γ of its dtype) whose channels
    are innermost in memory, eager mode."""
    return (x.dtype in (torch.float32, torch.float64) and x.numel() > 0 and not compiling()
            and (weight is None or weight.dtype == x.dtype) and _rows(x, dim) is not None)


def _differentiable(x2: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    y = x2 * (x2.square().mean(1, keepdim=True) + eps).rsqrt()
    return y if weight is None else y * weight


class _RMSRows(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x2: Tensor, weight: Tensor | None, eps: float
    ) -> Tensor:
        m, c = x2.shape
        y = torch.empty_like(x2)
        r = x2.new_empty(m, 1)
        k = max(1, CHUNK_ELEMENTS // c)
        for a in range(0, m, k):
            xc, yc = x2[a:a + k], y[a:a + k]
            rc = torch.linalg.vector_norm(xc, dim=1, keepdim=True, out=r[a:a + k])
            rc.square_().div_(c).add_(eps).rsqrt_()
            torch.mul(xc, rc, out=yc)
            if weight is not None:
                yc.mul_(weight)
        ctx.save_for_backward(x2, weight, r)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(  # type: ignore[override]  # see forward
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x2, weight, r = ctx.saved_tensors
        if torch.is_grad_enabled():  # double backward: differentiate a recomputation
            gx, gw = recomputed_grads(lambda a, w: _differentiable(a, w, ctx.eps), [x2, weight],
                                      list(ctx.needs_input_grad[:2]), grad)
            return gx, gw, None
        m, c = x2.shape
        g2 = grad.contiguous()
        want_w = weight is not None and ctx.needs_input_grad[1]
        grad_weight = x2.new_zeros(c) if want_w else None
        grad_x = torch.empty_like(x2)
        k = max(1, CHUNK_ELEMENTS // c)
        for a in range(0, m, k):
            xc, gc, rc, dxc = x2[a:a + k], g2[a:a + k], r[a:a + k], grad_x[a:a + k]
            q = torch.mul(gc, xc, out=dxc)  # q = g·x in ∂x's own chunk
            s = q.sum(1, keepdim=True) if weight is None else torch.mv(q, weight).unsqueeze(1)
            coef = s.mul_(rc.square().mul_(rc)).div_(-c)  # −r³ s / C
            if grad_weight is not None:
                grad_weight += torch.mv(q.t(), rc.view(-1))  # Σ_m q r
            dxc = torch.mul(gc, rc, out=q)  # q is spent: ∂x = γ r g − x r³ s / C
            if weight is not None:
                dxc.mul_(weight)
            dxc.addcmul_(xc, coef)
        return (grad_x if ctx.needs_input_grad[0] else None, grad_weight, None)


def rms_rows(x: Tensor, weight: Tensor | None, eps: float, dim: int) -> Tensor:
    """RMSNorm along ``dim`` of an x that `applies` takes, returned with x's strides."""
    rows = _rows(x, dim)
    assert rows is not None  # `applies` checked it
    y = _RMSRows.apply(rows, weight, eps)
    return y.view(x.movedim(dim, -1).shape).movedim(-1, dim)


__all__ = ["applies", "rms_rows"]
