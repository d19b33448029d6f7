"""Dynamic Tanh's kernels: the fused sigmoid, and the layer on channels-last memory.

DyT is elementwise with per-channel γ and β, so it needs no layout of its own: on memory whose
channels are the innermost dim — channels_last images, and a Transformer's (N, L, C) tokens,
the layer's main use — it runs on the (M, C) matrix of that memory, with no copy to NCHW and
back (which cost more than the layer on NCHW). Per-channel sums over M (for ∂γ, ∂β and ∂α) are
column sums: ATen's batch-norm backward kernel on the (k, C) rows of a chunk, with mean 0 and
1/σ = 1, returns Σ g and Σ g·x per column in one fused read (as in `_divisive_fast`). The
passes are those of the channels-first layer (`normlab.norms.dynamic_tanh._DyT`), over chunks
of rows that stay in cache (`normlab.norms._chunked`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab.core.tracing import compiling
from normlab.norms._chunked import CHUNK_ELEMENTS
from normlab.norms._double_backward import recomputed_grads

# softplus_backward(g, x, β, θ) = g·e^{βx}/(e^{βx} + 1) = g·sigmoid(βx), or g where βx > θ.
# Float32 only: θ = 30 lies where float32's sigmoid already rounds to 1 (from 16.64) and e^θ is
# finite (to 88.7); float64's sigmoid(30) = 1 − 9e-14 is not 1, so float64 keeps ``sigmoid_``
_SATURATED = 30.0


def sigmoid_(x: Tensor, two_alpha: Tensor, out: Tensor) -> Tensor:
    """out ← sigmoid(2α·x). On CPU one fused pass, the product 2α·x inside the sigmoid kernel
    of ATen's ``softplus_backward`` (grad 1); elsewhere a multiply then ``sigmoid_``."""
    if x.device.type != "cpu" or out.dtype != torch.float32:
        return torch.mul(x, two_alpha, out=out).sigmoid_()
    one = torch.ones((), dtype=x.dtype).expand_as(x)
    return torch.ops.aten.softplus_backward.grad_input(
        one, x, float(two_alpha), _SATURATED, grad_input=out)


def _column_sums(g: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """(Σ_rows g, Σ_rows g·x) per column of two (k, C) matrices, in one fused read."""
    c = x.shape[1]
    zero, one = x.new_zeros(c), x.new_ones(c)
    _, sum_gx, sum_g = torch.ops.aten.native_batch_norm_backward(
        g, x, None, None, None, zero, one, True, 0.0, [False, True, True])
    return sum_g, sum_gx


def _memory_rows(x: Tensor) -> Tensor | None:
    """The (M, C) matrix of a channels-first x whose memory has channels innermost
    (channels_last, or the channels-first view of contiguous (N, *S, C)); None otherwise."""
    if x.dim() < 3 or x.is_contiguous():
        return None
    moved = x.movedim(1, -1)
    return moved.view(-1, x.shape[1]) if moved.is_contiguous() else None


def applies(x: Tensor, *params: Tensor | None) -> bool:
    """Whether `dyt_last_dim` serves this call: float32/float64 x with channels innermost in
    memory, every parameter of x's dtype, eager mode."""
    return (x.dtype in (torch.float32, torch.float64) and x.numel() > 0 and not compiling()
            and all(p is None or p.dtype == x.dtype for p in params)
            and _memory_rows(x) is not None)


def _rows_per_chunk(c: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(c, 1))


def _eager(x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    y = torch.tanh(alpha * x)
    y = y if weight is None else y * weight
    return y if bias is None else y + bias


class _DyTRows(torch.autograd.Function):
    """y = 2γ·sigmoid(2αx) + (β − γ) on an (M, C) matrix; the backward of
    `normlab.norms.dynamic_tanh._DyT` with column sums (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x2: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None
    ) -> Tensor:
        c = x2.shape[1]
        gamma = x2.new_ones(c) if weight is None else weight
        scale, shift = 2 * gamma, -gamma if bias is None else bias - gamma
        two_alpha = 2 * alpha
        y = torch.empty_like(x2)
        k = _rows_per_chunk(c)
        for a in range(0, x2.shape[0], k):
            sigmoid_(x2[a:a + k], two_alpha, y[a:a + k]).mul_(scale).add_(shift)
        ctx.save_for_backward(x2, alpha, weight, bias)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x2, alpha, weight, bias = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: differentiate a recomputation
            return tuple(recomputed_grads(_eager, (x2, alpha, weight, bias), wanted, grad))
        g2 = grad.contiguous()
        c = x2.shape[1]
        gamma = x2.new_ones(c) if weight is None else weight
        two_alpha, dx_scale = 2 * alpha, 4 * alpha * gamma
        sum_g, sum_gs, sum_hx = x2.new_zeros(c), x2.new_zeros(c), x2.new_zeros(c)
        dx = torch.empty_like(x2)
        k = _rows_per_chunk(c)
        for a in range(0, x2.shape[0], k):
            xc, gc, dxc = x2[a:a + k], g2[a:a + k], dx[a:a + k]
            s = sigmoid_(xc, two_alpha, dxc)  # s, then h, then ∂x in ∂x's own chunk
            if wanted[2] or wanted[3]:
                g_part, gs_part = _column_sums(gc, s)
                sum_g += g_part
                sum_gs += gs_part
            h = torch.ops.aten.sigmoid_backward.grad_input(gc, s, grad_input=s)  # g·s(1 − s)
            if wanted[1]:
                sum_hx += _column_sums(h, xc)[1]
            h.mul_(dx_scale)
        return (
            dx if wanted[0] else None,
            (4 * (sum_hx * gamma).sum()).reshape(alpha.shape) if wanted[1] else None,
            2 * sum_gs - sum_g if wanted[2] and weight is not None else None,
            sum_g if wanted[3] and bias is not None else None,
        )


def dyt_last_dim(
    x: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None
) -> Tensor:
    """DyT of a channels-first x that `applies` takes, returned with x's strides."""
    rows = _memory_rows(x)
    assert rows is not None  # `applies` checked it
    y = _DyTRows.apply(rows, alpha, weight, bias)
    return y.view(x.movedim(1, -1).shape).movedim(-1, 1)


__all__ = ["applies", "dyt_last_dim", "sigmoid_"]
