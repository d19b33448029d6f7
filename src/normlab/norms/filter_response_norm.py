"""Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan 2020,
arXiv:1911.09737).

Per (sample, channel), over the positions *S, with no centering:

* ν² = mean over *S of x²,  x̂ = x / sqrt(ν² + |ε|),  y = γ x̂ + β,
* TLU: z = max(y, τ) with a learned per-channel threshold τ (``tlu=False``: FRN alone),
* optionally a learned ε = eps + |ε_l| (the paper's choice when H·W = 1, e.g. after global
  pooling or a fully connected layer, where x̂ ≈ sign(x) for a fixed tiny ε).

No reference repository: the specification is the paper's TensorFlow snippet. The layer is an
`Epilogue` of `normlab.norms._norm_activation` (the FRN + TLU toy of
tests/test_norm_activation.py, promoted): ν² from one read of x, the output written by
``mul``, ``add_`` and ``clamp_`` passes over cache-sized chunks, and a backward that saves x and
the (N, C) factor 1/sqrt(ν² + ε) only and rebuilds the TLU's mask from them. Memory with
channels innermost (channels_last, ``channel_dim=-1``) runs the same math on its (N, L, C)
tensor without layout copies (`normlab.norms._frn_last_dim`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.norms import _frn_last_dim
from normlab.norms._base import (
    Norm,
    channel_scale_shift,
    from_channels_first,
    to_channels_first,
)
from normlab.norms._chunked import Sums, per_row
from normlab.norms._norm_activation import (
    Epilogue,
    Rows,
    affine_only,
    check_functional,
    norm_activation,
)
from normlab.norms._per_instance import broadcast

__all__ = ["FilterResponseNorm", "filter_response_norm"]


def _total_eps(eps: float, eps_l: Tensor | None) -> Tensor | float:
    """ε = eps + |ε_l| (learned), or eps."""
    return eps if eps_l is None else eps_l.abs() + eps


class _FRN(Epilogue):
    """FRN (+ TLU) of a contiguous channels-first x with the analytic backward.

    With r = (ν² + ε)^(-1/2) per (n, c), s = γ r, z = s x + β, the mask m = [z > τ] (ties send
    the gradient to τ; m = 1 without the TLU), dz = m·dy and K = Σ_S dz·x per (n, c):

    $$ ∂x = s\\,dz − \\frac{s r^2 K}{|S|} x,\\quad ∂γ = Σ_n r K,\\quad ∂β = Σ dz,
       \\quad ∂τ = Σ dy − Σ dz,
       \\quad ∂ε_l = −\\tfrac12 \\operatorname{sign}(ε_l) Σ_{n,c} γ r^3 K, $$

    since ∂r/∂x = −r³x/|S| and ∂r/∂ε = −r³/2. Passes: forward 1 read for ν², then on CPU in
    float32/64 one BN-inference pass for s x + β over the whole tensor (each (n, c) row a
    "channel") and 1 clamp (elsewhere 3 chunked passes: mul, add, clamp); backward 2 for the
    mask (x·s > τ − β), 1 for dz, one fused Σ dz, Σ dz·x read, 1 for Σ dy (TLU only) and 2 for
    ∂x (mul, then ``addcmul_`` of the per-row x term); with the TLU, dz is built in ∂x's own
    chunk (one chunk-sized buffer fewer in cache). Saved: x and r.
    """

    __slots__ = ("eps",)

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple, tuple]:
        weight, bias, tau, eps_l = params
        rows = Rows(x)
        acc = rows.acc
        # Σ x² in one read (no output written); ν² + ε in the accumulation dtype
        nu2 = torch.linalg.vector_norm(rows.x3, dim=2, dtype=acc).square_().div_(rows.length)
        r = (nu2 + _total_eps(self.eps, rows.cast(eps_l))).rsqrt_()
        scale = r if weight is None else r * weight.to(acc)
        beta, floor = rows.cast(bias), rows.cast(tau)
        if not rows.low and x.device.type == "cpu":  # whole tensor: two native passes
            shift = rows.new(rows.c, zero=True) if beta is None else beta
            y = channel_scale_shift(
                rows.x3.view(1, rows.n * rows.c, rows.length), scale.reshape(-1),
                shift.repeat(rows.n),
            )
            if floor is not None:
                y.view_as(rows.x3).clamp_(min=per_row(floor))
            return y.view_as(x), (), (r,)
        y = torch.empty_like(x)
        for a, b, yc, (xc,), _ in rows.sweep(y.view_as(rows.x3), (rows.x3,)):
            torch.mul(xc, per_row(scale[a:b]), out=yc)
            if beta is not None:
                yc.add_(per_row(beta))
            if floor is not None:
                yc.clamp_(min=per_row(floor))
        return y, (), (r,)

    def backward(
        self, rows: Rows, params: list[Any], saved: list[Any], grad: Tensor, wanted: list[bool]
    ) -> list[Tensor | None]:
        weight, bias, tau, eps_l = params
        (r,) = saved
        n, c, length, acc = rows.n, rows.c, rows.length, rows.acc
        gamma = None if weight is None else weight.to(acc)
        scale = r if gamma is None else r * gamma
        coef = -scale * r * r / length  # times K: the share of ∂r/∂x
        threshold = None
        if tau is not None:  # z > τ  ⟺  s x > τ − β
            threshold = per_row(tau.to(acc) if bias is None else tau.to(acc) - bias.to(acc))
        sums = Sums.for_chunks(rows.chunks)
        sum_dz, sum_dzx = rows.new(n, c), rows.new(n, c)
        sum_g = rows.new(c, zero=True) if tau is not None and wanted[3] else None
        dx = torch.empty_like(rows.x3) if wanted[0] else None
        sources = (rows.x3, grad.view_as(rows.x3))
        in_dx = dx is not None and threshold is not None  # dz built in ∂x's own chunk
        scratch = int(dx is None and threshold is not None)
        for a, b, dxc, (xc, gc), bufs in rows.sweep(dx, sources, scratch):
            row_scale = per_row(scale[a:b])
            dz = gc
            if threshold is not None:  # dz = dy·[s x > τ − β]
                dz = torch.mul(xc, row_scale, out=dxc if in_dx else bufs[0])
                dz.gt_(threshold).mul_(gc)
                if sum_g is not None:
                    sum_g += gc.sum((0, 2))
            sum_dz[a:b], sum_dzx[a:b] = sums(dz, xc)
            if dxc is None:
                continue
            if in_dx:
                dxc.mul_(row_scale)
            else:
                torch.mul(dz, row_scale, out=dxc)
            dxc.addcmul_(xc, per_row(coef[a:b] * sum_dzx[a:b]))
        d_beta = sum_dz.sum(0)
        d_eps = None
        if eps_l is not None and wanted[4]:
            k = sum_dzx * r.pow(3)
            total = (k.sum(0) * gamma).sum() if gamma is not None else k.sum()
            d_eps = (-0.5 * total * torch.sign(eps_l.to(acc))).reshape(eps_l.shape)
        return [
            dx,
            (r * sum_dzx).sum(0) if wanted[1] else None,
            d_beta if wanted[2] else None,
            sum_g - d_beta if sum_g is not None else None,
            d_eps,
        ]

    def eager(self, saved: list[Any], x: Tensor, *params: Tensor | None) -> Tensor:
        """Differentiable FRN (+ TLU) of a channels-first x (float32 or wider): double backward
        only."""
        weight, bias, tau, eps_l = params
        return frn_composed(x, weight, bias, tau, _total_eps(self.eps, eps_l))


def frn_composed(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    tau: Tensor | None,
    eps: Tensor | float,
) -> Tensor:
    """FRN (+ TLU when ``tau`` is given) of a channels-first x in plain autograd ops."""
    squares = x.square()
    nu2 = squares.mean(tuple(range(2, x.dim())), keepdim=True) if x.dim() > 2 else squares
    z = affine_only(x * (nu2 + eps).rsqrt(), weight, bias)
    if tau is None:
        return z
    floor = broadcast(tau, x.dim()).to(z.dtype)
    return torch.where(z > floor, z, floor)  # ties: the gradient goes to τ


def _frn(
    xc: Tensor, eps: float, weight: Tensor | None, bias: Tensor | None, tau: Tensor | None,
    eps_l: Tensor | None,
) -> Tensor:
    """FRN (+ TLU) of a channels-first x: on its memory's (N, L, C) tensor when channels are
    innermost (`normlab.norms._frn_last_dim`, no layout copies), else the `_FRN` epilogue."""
    if _frn_last_dim.applies(xc, weight, bias, tau, eps_l):

        def composed(x: Tensor, *params: Tensor | None) -> Tensor:
            w, b, t, e = params
            return frn_composed(x, w, b, t, _total_eps(eps, e))

        return _frn_last_dim.frn_rows(xc, weight, bias, tau, eps_l, eps, composed)
    return norm_activation(xc, _FRN(eps), weight, bias, tau, eps_l)[0]


def _check_eps_l(layer: str, eps_l: Tensor | None) -> None:
    if eps_l is not None and (not isinstance(eps_l, Tensor) or eps_l.numel() != 1):
        shape = tuple(eps_l.shape) if isinstance(eps_l, Tensor) else type(eps_l).__name__
        raise errors.InputError(
            f"{layer}: eps_l, the learned part of ε = eps + |eps_l|, must be a tensor with one "
            f"element; got {shape}. Pass a scalar tensor, e.g. torch.zeros(1), or None for a "
            "fixed ε."
        )


def filter_response_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    tau: Tensor | None = None,
    eps_l: Tensor | None = None,
    *,
    eps: float = 1e-6,
    channel_dim: int = 1,
) -> Tensor:
    r"""Filter Response Normalization, with a TLU when ``tau`` is given; pure.

    $$ z = \max\left(\gamma \frac{x}{\sqrt{\nu^2 + \epsilon}} + \beta,\ \tau\right),
       \qquad \nu^2 = \frac{1}{|S|}\sum_{S} x^2 $$

    ν² over *S, one per (sample, channel), not centered. ``tau=None``: no TLU (FRN alone);
    ``tau=torch.zeros(C)`` with γ = 1, β = 0 is ReLU(x̂). ε = ``eps`` + |``eps_l``| when the
    learned scalar ``eps_l`` is given, else ``eps``.

    Args:
        tau: the TLU's per-channel threshold τ, shape (C,); None: no TLU (FRN alone).
        eps_l: a learned scalar tensor; ε = eps + |eps_l| when given.
        eps: the fixed ε, added to the mean square ν².

    Example:
        >>> x = torch.tensor([[[3.0, -4.0]]])  # ν² = 12.5
        >>> filter_response_norm(x, eps=1e-12).round(decimals=4)
        tensor([[[ 0.8485, -1.1314]]])
        >>> filter_response_norm(x, tau=torch.zeros(1), eps=1e-12).round(decimals=4)
        tensor([[[0.8485, 0.0000]]])
    """
    layer = "filter_response_norm"
    xc, _, channel_dim, eps = check_functional(
        layer, x, channel_dim, eps, weight=weight, bias=bias, tau=tau
    )
    _check_eps_l(layer, eps_l)
    return from_channels_first(_frn(xc, eps, weight, bias, tau, eps_l), channel_dim)


class FilterResponseNorm(Norm):
    r"""Filter Response Normalization: x over the RMS of its (sample, channel) slice, then a TLU.

    $$ z = \max\left(\gamma \frac{x}{\sqrt{\nu^2 + \epsilon}} + \beta,\ \tau\right),
       \qquad \nu^2 = \frac{1}{|S|}\sum_{S} x^2 $$

    ν² over *S, one per (sample, channel), with no mean subtracted; γ, β, τ per channel
    (initialized to 1, 0, 0, so at init z = ReLU(x̂)). Per sample, so training and eval agree
    and any batch size works. For rank-2 input (N, C) or H·W = 1, ν² = x² and x̂ ≈ sign(x)
    unless ε is learned (``learn_eps=True``).

    Args:
        num_features: C, the number of channels.
        eps: the fixed ε, 1e-6 by default (the paper's).
        tlu: False gives FRN alone, y = γx̂ + β (no ``tau``).
        learn_eps: True adds a learned scalar ``eps_l`` and uses ε = eps + |eps_l|, the
            paper's recommendation when H·W = 1. ``eps_l`` starts at ``eps`` (|·| has no
            gradient at 0, so a zero start would never move).

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> norm = FilterResponseNorm(1, eps=1e-12)
        >>> norm(torch.tensor([[[3.0, -4.0]]])).detach().round(decimals=4)
        tensor([[[0.8485, 0.0000]]])

    References:
        Singh & Krishnan, "Filter Response Normalization Layer: Eliminating Batch Dependence
        in the Training of Deep Neural Networks", CVPR 2020, arXiv:1911.09737.
    """

    _repr_keys = ("eps", "affine", "tlu", "learn_eps")
    axes = axes_lib.INSTANCE
    tau: nn.Parameter | None
    eps_l: nn.Parameter | None

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-6,
        affine: bool = True,
        tlu: bool = True,
        learn_eps: bool = False,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=errors.check_eps(eps), affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.tlu, self.learn_eps = bool(tlu), bool(learn_eps)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        tau = nn.Parameter(torch.empty(num_features, **factory)) if self.tlu else None
        self.register_parameter("tau", tau)
        eps_l = nn.Parameter(torch.empty(1, **factory)) if self.learn_eps else None
        self.register_parameter("eps_l", eps_l)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ = 1, β = 0, τ = 0 (the paper's), ε_l = eps."""
        super().reset_parameters()
        if getattr(self, "tau", None) is not None:
            nn.init.zeros_(self.tau)  # type: ignore[arg-type]  # checked just above
        if getattr(self, "eps_l", None) is not None:
            nn.init.constant_(self.eps_l, self.eps)  # type: ignore[arg-type]  # checked above

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        y = _frn(xc, self.eps, self.weight, self.bias, self.tau, self.eps_l)
        return from_channels_first(y, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "filter_response_norm",
        FilterResponseNorm,
        "Singh & Krishnan 2020, arXiv:1911.09737",
        aliases=("frn", "frn_tlu"),
        functional=(filter_response_norm,),
    ),
)
