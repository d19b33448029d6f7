"""Dynamic Tanh (Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization",
arXiv:2503.10622).

y = γ·tanh(α·x) + β elementwise, with one learned scalar α (0.5 at init by default) and
per-channel γ (1) and β (0): no statistics at all. It replaces a LayerNorm in a Transformer
(``normlab.convert(model, "dyt")``), where the paper finds the normalization layers' input-output
maps tanh-shaped. Not a normalization: it is registered with the norms so that model surgery,
the registry and the lab treat it as one.

Speed: torch's CPU ``tanh`` is several times slower than ``sigmoid`` (5.3 ms against 0.84 ms
on (32, 64, 32, 32) fp32, one thread, torch 2.13), so the layer evaluates the identical
tanh(u) = 2·sigmoid(2u) − 1 and folds the 2 and the −1 into the affine:
y = (2γ)·sigmoid(2αx) + (β − γ). The backward, ∂y/∂x = 4αγ·s(1 − s) with s = sigmoid(2αx),
is one ``sigmoid_backward`` pass. It runs on the norm-activation kernel
(`normlab.norms._norm_activation`): cache-sized chunks, x the only full-size tensor saved.
Memory with channels innermost (channels_last, a Transformer's (N, L, C)) runs the same passes
on its (M, C) matrix, without layout copies (`normlab.norms._dyt_kernels`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors
from normlab.norms import _dyt_kernels
from normlab.norms._base import Norm, from_channels_first, to_channels_first
from normlab.norms._chunked import Sums, per_row
from normlab.norms._dyt_kernels import sigmoid_
from normlab.norms._norm_activation import (
    Epilogue,
    Rows,
    affine_only,
    check_functional,
    norm_activation,
)

__all__ = ["DynamicTanh", "dynamic_tanh"]


class _DyT(Epilogue):
    """DyT of a contiguous channels-first x with the analytic backward.

    With s = sigmoid(2αx) (so tanh(αx) = 2s − 1), h = dy·s(1 − s) and sums over (N, *S):

    $$ ∂x = 4αγ\\,h,\\quad ∂α = 4 Σ_c γ_c Σ h x,\\quad ∂γ = Σ dy (2s − 1),\\quad ∂β = Σ dy. $$

    Passes: forward 1 (s, `sigmoid_`) + 2 (affine); backward 1 (s), one fused Σ dy, Σ dy·s read,
    1 (h, ``sigmoid_backward``), one fused Σ h·x read, 1 (∂x). Saved: x.
    """

    __slots__ = ()

    def forward(self, x: Tensor, *params: Tensor | None) -> tuple[Tensor, tuple, tuple]:
        alpha, weight, bias = params
        rows = Rows(x)
        acc = rows.acc
        two_alpha = 2 * alpha.to(acc)  # type: ignore[union-attr]  # α is always given
        gamma = torch.ones(rows.c, dtype=acc, device=x.device) if weight is None else weight.to(acc)
        scale = per_row(2 * gamma)
        shift = per_row(-gamma if bias is None else bias.to(acc) - gamma)
        y = torch.empty_like(x)
        for _, _, yc, (xc,), _ in rows.sweep(y.view_as(rows.x3), (rows.x3,)):
            sigmoid_(xc, two_alpha, yc).mul_(scale).add_(shift)
        return y, (), ()

    def backward(
        self, rows: Rows, params: list[Any], saved: list[Any], grad: Tensor, wanted: list[bool]
    ) -> list[Tensor | None]:
        alpha, weight, _ = params
        n, c, acc = rows.n, rows.c, rows.acc
        a = alpha.to(acc)
        gamma = torch.ones(c, dtype=acc, device=a.device) if weight is None else weight.to(acc)
        two_alpha, dx_scale = 2 * a, per_row(4 * a * gamma)
        affine_wanted = wanted[2] or wanted[3]
        sums = Sums.for_chunks(rows.chunks)
        sum_g, sum_gs, sum_hx = rows.new(n, c), rows.new(n, c), rows.new(n, c)
        dx = torch.empty_like(rows.x3) if wanted[0] else None
        sources = (rows.x3, grad.view_as(rows.x3))
        # s, then h, then ∂x live in ∂x's own chunk (a scratch chunk when ∂x is not wanted)
        for i, j, dxc, (xc, gc), bufs in rows.sweep(dx, sources, int(dx is None)):
            s = sigmoid_(xc, two_alpha, bufs[0] if dxc is None else dxc)
            if affine_wanted:
                sum_g[i:j], sum_gs[i:j] = sums(gc, s)
            h = torch.ops.aten.sigmoid_backward.grad_input(gc, s, grad_input=s)  # dy·s(1 − s)
            if wanted[1]:
                _, sum_hx[i:j] = sums(h, xc)
            if dxc is not None:
                h.mul_(dx_scale)
        d_alpha = (4 * (sum_hx.sum(0) * gamma).sum()).reshape(alpha.shape) if wanted[1] else None
        d_beta = sum_g.sum(0)
        return [
            dx,
            d_alpha,
            2 * sum_gs.sum(0) - d_beta if wanted[2] else None,
            d_beta if wanted[3] else None,
        ]

    def eager(self, saved: list[Any], x: Tensor, *params: Tensor | None) -> Tensor:
        """Differentiable DyT of a channels-first x (float32 or wider): double backward only."""
        alpha, weight, bias = params
        return affine_only(torch.tanh(alpha * x), weight, bias)  # type: ignore[operator]


def _dyt(xc: Tensor, alpha: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """DyT of a channels-first x: on its memory's (M, C) matrix when channels are innermost
    (channels_last, (N, *S, C) tokens; `normlab.norms._dyt_kernels`), else `_DyT`."""
    if _dyt_kernels.applies(xc, alpha, weight, bias):
        return _dyt_kernels.dyt_last_dim(xc, alpha, weight, bias)
    return norm_activation(xc, _DyT(), alpha, weight, bias)[0]


def _check_alpha(layer: str, alpha: object) -> None:
    if not isinstance(alpha, Tensor) or alpha.numel() != 1:
        shown = tuple(alpha.shape) if isinstance(alpha, Tensor) else repr(alpha)
        raise errors.InputError(
            f"{layer}: alpha, the learned scalar of tanh(alpha·x), must be a tensor with one "
            f"element; got {shown}. Pass e.g. torch.full((1,), 0.5)."
        )


def dynamic_tanh(
    x: Tensor,
    alpha: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    channel_dim: int = 1,
) -> Tensor:
    r"""Dynamic Tanh; pure.

    $$ y = \gamma \tanh(\alpha x) + \beta $$

    elementwise, α a one-element tensor, γ and β per channel (None: 1 and 0).

    Args:
        alpha: α, a one-element tensor (the learned scale).

    Example:
        >>> dynamic_tanh(torch.tensor([[0.0, 2.0]]), torch.tensor([0.5])).round(decimals=4)
        tensor([[0.0000, 0.7616]])
    """
    layer = "dynamic_tanh"
    xc, _, channel_dim, _ = check_functional(layer, x, channel_dim, 1.0, weight=weight, bias=bias)
    _check_alpha(layer, alpha)
    return from_channels_first(_dyt(xc, alpha, weight, bias), channel_dim)


class DynamicTanh(Norm):
    r"""Dynamic Tanh: a learned, statistics-free tanh where a LayerNorm stood.

    $$ y = \gamma \tanh(\alpha x) + \beta $$

    elementwise, with a learned scalar α and per-channel γ, β (initialized to
    ``alpha_init``, 1, 0). No statistics: training and eval agree, samples are independent.

    Args:
        num_features: C, the number of channels.
        alpha_init: α's initial value, 0.5 by default (the paper's for most models; it
            recommends smaller values for wider LLMs).
        eps: accepted so that a norm layer's configuration converts unchanged (``convert``
            carries it, ``partial(norm, eps=1e-6)`` factories pass it), and kept for the
            repr; DyT divides by nothing, so it has no effect.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C) (a Transformer's tokens);
        output: same shape.

    Example:
        >>> DynamicTanh(2)(torch.tensor([[0.0, 2.0]])).detach().round(decimals=4)
        tensor([[0.0000, 0.7616]])

    References:
        Zhu, Chen, He, LeCun & Liu, "Transformers without Normalization", CVPR 2025,
        arXiv:2503.10622.
    """

    _repr_keys = ("alpha_init", "eps", "affine")
    statistics = "none: y = γ·tanh(α·x) + β elementwise, with a learned scalar α"
    alpha: nn.Parameter

    def __init__(
        self,
        num_features: int,
        *,
        alpha_init: float = 0.5,
        eps: float | None = None,
        affine: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=eps,
            affine=affine,
            channel_dim=channel_dim,
            device=device,
            dtype=dtype,
        )
        if not errors.is_finite_number(alpha_init):
            raise errors.ConfigError(
                f"alpha_init must be a finite float; got {alpha_init!r}. The paper uses 0.5 "
                "(smaller, e.g. 0.2, for wide language models)."
            )
        self.alpha_init = float(alpha_init)
        self.alpha = nn.Parameter(torch.empty(1, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """α = ``alpha_init``, γ = 1, β = 0."""
        super().reset_parameters()
        if getattr(self, "alpha", None) is not None:
            nn.init.constant_(self.alpha, self.alpha_init)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        return from_channels_first(_dyt(xc, self.alpha, self.weight, self.bias), self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "dynamic_tanh",
        DynamicTanh,
        "Zhu et al. 2025, arXiv:2503.10622",
        aliases=("dyt", "dynamictanh"),
        functional=(dynamic_tanh,),
    ),
)
