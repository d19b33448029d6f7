"""Lp Normalization (Liao, Kawaguchi & Poggio 2016, arXiv:1610.06160, CBMM Memo 057).

The std of a normalization set is replaced by an Lp moment of its (centered) values,
d = (E|x − μ|^p + ε)^{1/p}; p = 2 is the usual std, p = 1 (the mean absolute deviation) is the
paper's "well-performing, simple to implement, fast to compute" choice. The set is any
per-sample set of the `normlab.core.axes` vocabulary; a set spanning the batch needs statistics
accumulated over time, which is `normlab.norms.streaming_norm`.

Centered float32/float64 input over GroupNorm's sets (layer, group, instance) takes a fast
path: p = 2 is GroupNorm itself (d = sqrt(σ² + ε); ATen's kernel, forward and backward), p = 1
is `normlab.norms._l1_norm` (chunked passes, analytic backward). Otherwise the forward reads x
three times (μ, the Lp norm of x − μ, one per-(n, c) affine pass) and saves only x; the
backward recomputes the forward from differentiable operations and lets autograd
differentiate it (`normlab.norms._double_backward`), so double backward is exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.axes import Axes
from normlab.core.moments import accumulation_dtype
from normlab.core.tracing import compiling
from normlab.norms._base import (
    Norm,
    check_set_size,
    dense,
    from_channels_first,
    in_layout,
    to_channels_first,
)
from normlab.norms._double_backward import recomputed_grads
from normlab.norms._l1_norm import l1_norm
from normlab.norms._per_instance import broadcast, channel_affine

_NAMED = {"layer": axes_lib.LAYER, "instance": axes_lib.INSTANCE, "position": axes_lib.POSITION}


def check_p(p: object) -> float:
    """p > 0, finite or ``math.inf``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) or p <= 0:
        raise errors.ConfigError(
            f"p must be a positive number or math.inf; got {p!r}. Lp normalization divides "
            "by (E|x - mu|^p)^(1/p): p = 2 is the std, p = 1 the mean absolute deviation "
            "(the paper's choice), p = inf the largest |x - mu|."
        )
    return float(p)


def resolve_over(over: object, num_groups: int | None, num_features: int | None) -> Axes:
    """The normalization set: a name (``"layer"``, ``"instance"``, ``"position"``, ``"group"``
    with ``num_groups``) or an `Axes` without the batch role."""
    if over == "group":
        if num_groups is None:
            raise errors.ConfigError(
                "over='group' needs num_groups; got None. Pass e.g. num_groups=32 (it must "
                "divide the number of channels)."
            )
        if num_features is not None:
            errors.check_groups(num_features, num_groups, None)
        return axes_lib.group(num_groups)
    axes = _NAMED.get(over) if isinstance(over, str) else over
    if not isinstance(axes, Axes) or "batch" in axes.reduce or not axes.reduce:
        raise errors.ConfigError(
            f"over must be one of {[*_NAMED, 'group']} or a per-sample Axes; got {over!r}. "
            "A set spanning the batch needs statistics accumulated over time: use "
            "StreamingNorm (registry 'streaming_norm')."
        )
    if num_features is not None and axes.groups > 1:
        errors.check_groups(num_features, axes.groups, None)
    return axes


def _grouped(x: Tensor, axes: Axes) -> tuple[Tensor, tuple[int, ...]]:
    """A channels-first x viewed as (N, G, C/G, *S) and the dims its sets reduce over."""
    n, c = x.shape[:2]
    g = axes.groups if "channel" in axes.reduce else c
    xg = x.reshape(n, g, c // g, *x.shape[2:])
    dims = [2] if "channel" in axes.reduce else []
    if "spatial" in axes.reduce:
        dims.extend(range(3, xg.dim()))
    return xg, tuple(dims)


def _lp_reference_forward(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    p: float,
    eps: float,
    axes: Axes,
    center: bool,
) -> Tensor:
    """The layer as differentiable eager operations (the backward differentiates this)."""
    acc = accumulation_dtype(x.dtype)
    xg, dims = _grouped(x.to(acc), axes)
    xc = xg - xg.mean(dims, keepdim=True) if center and dims else xg
    if math.isinf(p):
        d = xc.abs().amax(dims, keepdim=True) + eps
    else:
        moment = (xc.square() if p == 2 else xc.abs().pow(p)).mean(dims, keepdim=True)
        d = (moment + eps).pow(1 / p)
    y = (xc / d).reshape(x.shape)
    if weight is not None:
        y = y * broadcast(weight.to(acc), x.dim())
    if bias is not None:
        y = y + broadcast(bias.to(acc), x.dim())
    return y.to(x.dtype)


def _scale_shift(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    p: float,
    eps: float,
    axes: Axes,
    center: bool,
) -> tuple[Tensor, Tensor]:
    """y = x·A[n, c] + B[n, c]: A = γ/d, B = β − μγ/d, from μ and the Lp norm of x − μ."""
    acc = accumulation_dtype(x.dtype)
    n, c = x.shape[:2]
    xg, dims = _grouped(x, axes)
    count = math.prod(xg.shape[d] for d in dims)
    if center:
        mean = xg.mean(dims, keepdim=True, dtype=acc)
        xc = xg.to(acc) - mean
    else:
        mean = torch.zeros((), dtype=acc, device=x.device)
        xc = xg.to(acc) if xg.dtype != acc else xg
    norm = torch.linalg.vector_norm(xc, ord=p, dim=dims, keepdim=True)
    inv = (norm + eps).reciprocal() if math.isinf(p) else (norm.pow(p) / count + eps).pow(-1 / p)
    per_set = (*xg.shape[:2], 1)
    scale = inv.reshape(per_set).expand(xg.shape[:3]).reshape(n, c)
    shift = -(mean * inv).reshape(per_set).expand(xg.shape[:3]).reshape(n, c)
    if weight is not None:
        scale = scale * weight.to(acc)
        shift = shift * weight.to(acc)
    if bias is not None:
        shift = shift + bias.to(acc)
    return scale, shift


class _LpNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        p: float,
        eps: float,
        axes: Axes,
        center: bool,
    ) -> Tensor:
        ctx.save_for_backward(x, weight, bias)
        ctx.config = (p, eps, axes, center)
        if "spatial" not in axes.reduce:  # one statistic per position: no per-(n, c) affine
            return _lp_reference_forward(x, weight, bias, p, eps, axes, center)
        xd, layout = dense(x)
        scale, shift = _scale_shift(xd, weight, bias, p, eps, axes, center)
        if x.dim() == 2:  # (N, C): no positions to batch the affine pass over
            y = torch.addcmul(shift, xd.to(scale.dtype), scale).to(x.dtype)
        else:
            y = channel_affine(xd, scale.to(x.dtype), shift.to(x.dtype))
        return in_layout(y, layout)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        p, eps, axes, center = ctx.config

        def forward(x_: Tensor, w_: Tensor | None, b_: Tensor | None) -> Tensor:
            return _lp_reference_forward(x_, w_, b_, p, eps, axes, center)

        grads = recomputed_grads(forward, (x, weight, bias), ctx.needs_input_grad[:3], dy)
        return (*grads, None, None, None, None)


def _lp_norm(
    xc: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    p: float,
    eps: float,
    axes: Axes,
    center: bool,
) -> Tensor:
    if xc.numel() == 0:
        return xc.clone()
    if p == 2 and center and _is_group_norm(xc, weight, bias, axes):
        # d = sqrt(E(x − μ)² + ε) is GroupNorm's σ: ATen's kernel, forward and backward
        groups = axes.groups if "channel" in axes.reduce else xc.shape[1]
        xd, layout = dense(xc)
        return in_layout(torch.nn.functional.group_norm(xd, groups, weight, bias, eps), layout)
    if p == 1 and center and _is_group_norm(xc, weight, bias, axes):
        def reference(x_: Tensor, w_: Tensor | None, b_: Tensor | None) -> Tensor:
            return _lp_reference_forward(x_, w_, b_, p, eps, axes, center)

        groups = axes.groups if "channel" in axes.reduce else xc.shape[1]
        return l1_norm(xc, weight, bias, eps, groups, reference)
    if compiling():  # graph capture differentiates the eager forward (normlab.core.tracing)
        return _lp_reference_forward(xc, weight, bias, p, eps, axes, center)
    return _LpNormFunction.apply(xc, weight, bias, p, eps, axes, center)


def _is_group_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, axes: Axes) -> bool:
    """Whether x's sets are GroupNorm's (all of *S, whole channel groups) and x's dtype the
    accumulation dtype of every operand (float32 or float64, no mixed precision)."""
    if "spatial" not in axes.reduce or x.dim() < 3 or x.dtype not in (torch.float32, torch.float64):
        return False
    return all(t is None or t.dtype == x.dtype for t in (weight, bias))


def lp_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    p: float = 1.0,
    over: str | Axes = "layer",
    num_groups: int | None = None,
    center: bool = True,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Lp normalization; pure.

    $$ y = \gamma \frac{x - \mu}{\left(\tfrac{1}{M}\sum_{j} |x_j - \mu|^p + \epsilon
       \right)^{1/p}} + \beta $$

    μ and the sum over the M values of one normalization set (``over``; default ``"layer"``,
    (C, *S) per sample). p = ∞ divides by max_j |x_j − μ| + ε. Without ``center``, μ = 0.

    Args:
        p: the order, > 0, or ``math.inf``.
        over: the normalization set: ``"layer"`` (C, *S) per sample, ``"instance"``,
            ``"position"``, ``"group"`` or any per-sample `normlab.core.axes.Axes` (see
            `LpNorm`).
        num_groups: G for ``over="group"``; None otherwise.
        center: subtract μ first; False: μ = 0.
        eps: ε, added to the Lp mean before the 1/p power (to the maximum for p = ∞).

    Example:
        >>> lp_norm(torch.tensor([[1.0, 3.0, 5.0, 7.0]]), p=1, eps=1e-12)
        tensor([[-1.5000, -0.5000,  0.5000,  1.5000]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    p, eps = check_p(p), errors.check_eps(eps)
    errors.check_input(
        "lp_norm", x, errors.channels_of(weight, bias), channel_dim
    )
    axes = resolve_over(over, num_groups, x.shape[channel_dim])
    xc = to_channels_first(x, channel_dim)
    check_set_size("lp_norm", axes, xc, 1)
    y = _lp_norm(xc, weight, bias, p, eps, axes, bool(center))
    return from_channels_first(y, channel_dim)


class LpNorm(Norm):
    r"""Lp Normalization: divide by the Lp average of the centered values of each set.

    $$ y = \gamma \frac{x - \mu}{\left(\tfrac{1}{M}\sum_{j} |x_j - \mu|^p + \epsilon
       \right)^{1/p}} + \beta $$

    μ and the sum over the M values of one set: by default (``over="layer"``) the sample's
    (C, *S), the paper's Sample Normalization; ``"instance"`` (*S, per (sample, channel)),
    ``"position"`` (C, per (sample, position)), ``"group"`` (C/G, *S with ``num_groups``) or
    any per-sample `Axes`. p = 2 is the std (LayerNorm / InstanceNorm / GroupNorm); p = 1 is
    the mean absolute deviation, whose output on Gaussian data has std sqrt(π/2) ≈ 1.2533.
    p = ∞ divides by max_j |x_j − μ| + ε. Same in training and eval.

    Args:
        num_features: C, the number of channels.
        p: the order, > 0 (default 1, the paper's L1 normalization), or ``math.inf``.
        over: the normalization set (see above).
        num_groups: G for ``over="group"`` (None for the other sets).
        center: subtract μ first (default True); False divides x by its Lp average.
        eps: ε, added to the Lp mean before the 1/p power (to the maximum for p = ∞).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> LpNorm(4, p=1, eps=1e-12)(torch.tensor([[1.0, 3.0, 5.0, 7.0]])).detach()
        tensor([[-1.5000, -0.5000,  0.5000,  1.5000]])

    References:
        Liao, Kawaguchi & Poggio, "Streaming Normalization: Towards Simpler and More
        Biologically-plausible Normalizations for Online and Recurrent Learning", CBMM Memo
        057, 2016, arXiv:1610.06160.
    """

    _repr_keys = ("p", "over", "center", "eps", "affine")

    def __init__(
        self,
        num_features: int,
        *,
        p: float = 1.0,
        over: str | Axes = "layer",
        num_groups: int | None = None,
        center: bool = True,
        eps: float = 1e-5,
        affine: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=errors.check_eps(eps), affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.p = check_p(p)
        self.axes = resolve_over(over, num_groups, num_features)
        self.over = over if isinstance(over, str) else self.axes.describe()
        self.center = bool(center)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        check_set_size(self._name(), self.axes, xc, 1)
        y = _lp_norm(xc, self.weight, self.bias, self.p, self.eps, self.axes, self.center)
        return from_channels_first(y, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "lp_norm",
        LpNorm,
        "Liao, Kawaguchi & Poggio 2016, arXiv:1610.06160",
        aliases=("lp", "lpnorm", "l1_norm"),
        functional=(lp_norm,),
        spec_arg="p",
    ),
)
