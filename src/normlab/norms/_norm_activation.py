"""Normalization with an elementwise epilogue: one autograd Function for every such layer.

Layers that fuse normalization and activation compute y = E(x; statistics, θ) with E an
elementwise function of x and a few per-(sample, channel) or per-(sample, group) statistics:

* EvoNorm-B0: y = x / max(σ_batch, v·x + σ_inst) · γ + β  (a max, saved as nothing but x);
* EvoNorm-S0: y = x·sigmoid(v·x) / σ_group · γ + β  (a swish, see `swish_`);
* Filter Response Norm + TLU: y = max(γ·x/sqrt(ν² + ε) + β, τ), ν² = σ² + μ² per (n, c).

They share one recipe, which this module implements once:

* statistics from one call of ATen's group-norm kernel (`group_statistics`), whose output
  buffer becomes the layer's output;
* the output written by a few in-place elementwise passes (``mul``, ``add_``, ``clamp_``,
  ``div``, ``silu_``; no broadcasting ternary op, those miss the vectorized path on CPU), run
  a few samples at a time over per-thread scratch (`Rows.sweep`, `normlab.norms._chunked`) so
  that the intermediates stay in cache and cost no page faults; fp16/bf16 chunks go through
  float32 staging buffers, so each pass is written once for every dtype;
* a backward that saves only x, the parameters and the small statistics, recomputes the
  elementwise intermediates (for a max: just its mask, ``gt_``) and takes every reduction from
  fused per-(n, c) sum passes (`Sums`: Σ dy and Σ dy·x in one read);
* double backward (``create_graph=True`` only) by recomputing the forward from differentiable
  eager operations (`normlab.norms._double_backward`).

A method supplies an `Epilogue` (its forward passes, analytic backward and eager forward); the
Function `_NormActivation` does the saving, the dispatch to the recomputation, the gradients'
dtypes, and `norm_activation` the layouts. FRN + TLU, for instance, is an Epilogue whose
forward runs ``mul_(γ r)``, ``add_(β)``, ``clamp_(min=τ)`` per chunk and whose backward
rebuilds the mask [z > τ] and reads Σ dy·m·x per (n, c) from one `Sums` pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core.moments import accumulation_dtype
from normlab.core.tracing import compiling
from normlab.norms._base import dense, in_layout, to_channels_first
from normlab.norms._chunked import Chunks, per_row
from normlab.norms._double_backward import recomputed_grads
from normlab.norms._per_instance import broadcast

Optional = Tensor | None


class Rows:
    """A contiguous channels-first x as (N, C, L), its accumulation dtype and chunks of samples."""

    __slots__ = ("acc", "c", "chunks", "length", "low", "n", "pool", "x3")

    def __init__(self, x: Tensor) -> None:
        self.n, self.c = x.shape[:2]
        self.x3 = x.view(self.n, self.c, -1)
        self.length = self.x3.shape[2]
        self.acc = accumulation_dtype(x.dtype)
        self.low = x.dtype != self.acc  # fp16/bf16: chunks go through float32 staging buffers
        self.chunks = Chunks(self.x3, self.acc)
        self.pool: list[Tensor] = []  # chunk buffers, shared by successive sweeps

    def new(self, *shape: int, zero: bool = False) -> Tensor:
        """A fresh accumulation-dtype tensor, e.g. for per-(n, c) sums."""
        make = torch.zeros if zero else torch.empty
        return make(*shape, dtype=self.acc, device=self.x3.device)

    def cast(self, t: Optional) -> Optional:
        """``t`` in the accumulation dtype (None stays None)."""
        return None if t is None else t.to(self.acc)

    def sweep(
        self, out3: Tensor | None, sources: tuple[Tensor, ...], scratch: int = 0
    ) -> Iterator[tuple[int, int, Any, list[Tensor], list[Tensor]]]:
        """One pass over the chunks: (a, b, out, loaded, buffers) for samples a:b.

        ``loaded`` holds each (N, C, L) source's chunk in the accumulation dtype; ``out`` is
        the chunk of ``out3`` to write (None without one), staged in the accumulation dtype and
        copied back after the body; ``buffers`` are ``scratch`` chunk-sized scratch tensors.
        """
        stage_out = out3 is not None and out3.dtype != self.acc
        staged = len(sources) if self.low else 0
        count = staged + stage_out + scratch
        if len(self.pool) < count:
            self.pool = self.chunks.buffers(count)
        bufs = self.pool
        out_stage = bufs[staged] if stage_out else None
        work = bufs[staged + stage_out:count]
        ranges = self.chunks.ranges
        if len(ranges) == 1 and not staged and not stage_out:  # all at once: nothing to slice
            yield 0, self.n, out3, list(sources), work
            return
        for a, b in ranges:
            k = b - a
            loaded = [s[a:b] for s in sources] if not staged else [
                bufs[i][:k].copy_(s[a:b]) for i, s in enumerate(sources)]
            out = None if out3 is None else out3[a:b] if out_stage is None else out_stage[:k]
            yield a, b, out, loaded, [w[:k] for w in work]
            if out_stage is not None:
                out3[a:b].copy_(out)  # type: ignore[index]


def channel_affine_(y: Tensor, scale: Optional, shift: Optional) -> Tensor:
    """y ← y·scale + shift in place; scale (C,) or (N, C), shift (C,); either may be None.

    Two passes on purpose: a broadcasting ``addcmul`` is 3-5x slower on CPU than ``mul_``
    followed by ``add_`` (its per-channel operands miss TensorIterator's vectorized path).
    """
    if scale is not None:
        y.mul_(broadcast(scale, y.dim()))
    return y if shift is None else y.add_(broadcast(shift, y.dim()))


def affine_only(x: Tensor, weight: Optional, bias: Optional) -> Tensor:
    """y = γ·x + β of a channels-first x (a fused layer with its nonlinearity switched off)."""
    y = x.clone() if weight is None else x * broadcast(weight, x.dim()).to(x.dtype)
    return y if bias is None else y + broadcast(bias, x.dim()).to(x.dtype)


def check_functional(
    layer: str, x: Tensor, channel_dim: int, eps: float, **params: Tensor | None
) -> tuple[Tensor, int, int, float]:
    """A functional's checks of x, ``channel_dim``, ``eps`` and per-channel ``params`` (C is
    the first given one's length, else x's): (channels-first x, C, channel_dim, eps)."""
    channel_dim = errors.check_channel_dim(channel_dim)
    eps = errors.check_eps(eps)
    known = next((t for t in params.values() if t is not None), None)
    errors.check_input(layer, x, errors.channels_of(known), channel_dim)
    c = x.shape[channel_dim]
    for name, t in params.items():
        if t is not None and tuple(t.shape) != (c,):
            raise errors.per_channel_shape(layer, name, tuple(t.shape), c)
    return to_channels_first(x, channel_dim), c, channel_dim, eps


def slope_without_nonlinearity(layer: str) -> errors.InputError:
    return errors.InputError(
        f"{layer}: v was given with nonlinearity=False, where the layer is the affine map "
        "y = weight·x + bias and has no v. Pass v=None, or nonlinearity=True to use it."
    )


def check_slope_functional(
    layer: str, x: Tensor, nonlinearity: bool, channel_dim: int, eps: float,
    **params: Tensor | None,
) -> tuple[Tensor, Tensor | None, int, int, float]:
    """`check_functional` of a layer whose nonlinearity has a per-channel slope ``v``
    (EvoNorm): (channels-first x, v (ones when None), C, channel_dim, eps)."""
    v = params["v"]
    x, c, channel_dim, eps = check_functional(layer, x, channel_dim, eps, **params)
    if not nonlinearity and v is not None:
        raise slope_without_nonlinearity(layer)
    if nonlinearity and v is None:
        v = torch.ones(c, dtype=accumulation_dtype(x.dtype), device=x.device)
    return x, v, c, channel_dim, eps


def add_rows_(out: Tensor, x: Tensor, p: Tensor, q: Tensor, scratch: Tensor) -> Tensor:
    """out ← out + x·P + Q with P, Q per (k, C) row, in binary passes (see `channel_affine_`)."""
    return out.add_(torch.mul(x, per_row(p), out=scratch).add_(per_row(q)))


# swish x·sigmoid(v x) is computed as silu(v' x)/v', v' = v with |v| raised to at least τ: the
# error, about |x|·τ relative, stays below half an ulp for |x| < 1e12 (float32) and τ·x cannot
# underflow before |x| < 1e-18, where the absolute error is below 1e-15 (float64: 1e-150)
_TINY_SLOPE = {torch.float32: 1e-20, torch.float64: 1e-150}


def safe_slope(v: Tensor) -> Tensor:
    """v' for `swish_`: v (float32 or wider) pushed away from 0 by at most τ."""
    return v.abs().clamp(min=_TINY_SLOPE[v.dtype]).copysign(v)


def swish_(x: Tensor, slope: Tensor, out: Tensor) -> Tensor:
    """out ← silu(v'·x) = v'·x·sigmoid(v' x), ``slope`` = per_row(v') of `safe_slope`'s v': one
    pass less than sigmoid then multiply; the caller folds 1/v' into its per-row scale."""
    return torch.nn.functional.silu(torch.mul(x, slope, out=out), inplace=True)


class Epilogue:
    """A method's part of `_NormActivation`; an instance per call carries its settings.

    ``forward(x, *params)`` → (y, extra non-differentiable outputs, tensors to save);
    ``backward(rows, params, saved, grad, wanted)`` → [∂x, ∂params…] (any float dtype, None
    where not wanted: ``wanted`` is needs_input_grad of (x, *params));
    ``eager(saved, x, *params)`` → y from differentiable ops on float32-or-wider inputs.
    """

    __slots__ = ()

    def forward(self, x: Tensor, *params: Optional) -> tuple[Tensor, tuple, tuple]:
        raise NotImplementedError

    def backward(
        self, rows: Rows, params: list[Any], saved: list[Any], grad: Tensor, wanted: list[bool]
    ) -> list[Optional]:
        raise NotImplementedError

    def eager(self, saved: list[Any], x: Tensor, *params: Optional) -> Tensor:
        raise NotImplementedError


class _NormActivation(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x: Tensor, epilogue: Epilogue, *params: Optional
    ) -> Tensor | tuple[Tensor, ...]:
        y, extras, saved = epilogue.forward(x, *params)
        ctx.epilogue, ctx.count = epilogue, len(params)
        ctx.save_for_backward(x, *params, *saved)
        if not extras:
            return y
        ctx.mark_non_differentiable(*extras)
        return (y, *extras)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Optional, ...]:
        tensors, count, needs = ctx.saved_tensors, ctx.count, ctx.needs_input_grad
        x, params, saved = tensors[0], tensors[1:count + 1], tensors[count + 1:]
        wanted = [needs[0], *needs[2:]]
        epilogue = ctx.epilogue
        if torch.is_grad_enabled():  # create_graph=True: differentiable recomputation
            acc = accumulation_dtype(x.dtype)

            def forward(*inputs: Optional) -> Tensor:
                return epilogue.eager(saved, *(None if t is None else t.to(acc) for t in inputs))

            grads = recomputed_grads(forward, (x, *params), wanted, grad)
        else:
            grads = epilogue.backward(Rows(x), params, saved, grad.contiguous(), wanted)
        dx = grads[0]
        out = [None if dx is None else dx.to(x.dtype).view(x.shape), None]
        for g, p in zip(grads[1:], params, strict=True):
            out.append(None if g is None or p is None else g.to(p.dtype))
        return tuple(out)


def norm_activation(
    x: Tensor, epilogue: Epilogue, *params: Optional
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """(y, extra outputs) of a channels-first x in any layout (none for an empty x)."""
    if x.numel() == 0:
        return x.clone(), ()
    xd, layout = dense(x)
    if compiling():
        return _composed(xd, epilogue, params)
    out = _NormActivation.apply(xd, epilogue, *params)
    y, extras = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
    return in_layout(y, layout), extras


def _composed(
    x: Tensor, epilogue: Epilogue, params: tuple[Optional, ...]
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """What torch.compile and torch.export trace instead of `_NormActivation`: the epilogue's
    differentiable ``eager`` form, fed by the statistics its forward saves (run without
    gradients: its in-place passes are no autograd's business; a compiler drops its unused y)."""
    with torch.no_grad():
        _, extras, saved = epilogue.forward(x, *params)
    acc = accumulation_dtype(x.dtype)
    y = epilogue.eager(list(saved), *(None if t is None else t.to(acc) for t in (x, *params)))
    return y.to(x.dtype), tuple(extras)


def norm_or_affine(
    x: Tensor, epilogue: Epilogue, v: Optional, weight: Optional, bias: Optional
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """`norm_activation` of a layer with a slope ``v``; y = γx + β without v (no
    nonlinearity, no statistics)."""
    if v is None:
        return affine_only(x, weight, bias), ()
    return norm_activation(x, epilogue, v, weight, bias)


__all__ = [
    "Epilogue",
    "Rows",
    "add_rows_",
    "affine_only",
    "channel_affine_",
    "check_functional",
    "check_slope_functional",
    "norm_activation",
    "norm_or_affine",
    "safe_slope",
    "swish_",
]
