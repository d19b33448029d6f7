"""RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467).

Statistics over C at each (sample, position), with no centering. ε goes inside the square
root, as in ``torch.nn.RMSNorm`` (the reference torch code adds it to the RMS instead).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import accumulation_dtype
from normlab.core.tracing import compiling
from normlab.norms import _rms_channels_first as channels_first
from normlab.norms import _rms_last_dim as last_dim
from normlab.norms._base import Norm, finfo_eps


def _inverse_rms(x: Tensor, dim: int, eps: float) -> Tensor:
    """1/sqrt(mean_C(x²) + ε) along ``dim`` (kept), accumulated in float32 for fp16/bf16."""
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=accumulation_dtype(x.dtype))
    return (norm.square() / x.shape[dim] + eps).rsqrt()


def _channel_view(w: Tensor, ndim: int, dim: int) -> Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return w.view(shape)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm along ``dim`` with the analytic backward

    $$ \\hat x = x\\,r,\\quad \\partial x = r\\,(g_w - \\hat x\\,\\overline{g_w \\hat x}),
       \\quad \\partial γ = Σ g\\,\\hat x, $$

    with r the inverse RMS, g_w = g·γ and the bar a mean over C. It reads x once for the
    statistic and once to scale it, in any layout (no channels-last copy), and saves only x.
    The backward recomputes r from x in differentiable ops, so double backward is exact.
    """

    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, x: Tensor, weight: Tensor | None, eps: float, dim: int
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.eps, ctx.dim = eps, dim
        return _composed(x, weight, eps, dim)

    @staticmethod
    def backward(  # type: ignore[override]  # see forward
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        dim = ctx.dim
        rstd = _inverse_rms(x, dim, ctx.eps)
        x_hat = x * rstd
        grad_w = grad if weight is None else grad * _channel_view(weight, x.dim(), dim)
        projection = (grad_w * x_hat).mean(dim, keepdim=True)
        grad_x = ((grad_w - x_hat * projection) * rstd).to(x.dtype)
        grad_weight = None
        if weight is not None and ctx.needs_input_grad[1]:
            others = [d for d in range(x.dim()) if d != dim % x.dim()]
            grad_weight = (grad * x_hat).sum(others).to(weight.dtype)
        return grad_x, grad_weight, None, None


def _composed(x: Tensor, weight: Tensor | None, eps: float, dim: int) -> Tensor:
    """The forward in differentiable operations (what graph capture traces)."""
    y = x * _inverse_rms(x, dim, eps)
    if weight is not None:
        y = y * _channel_view(weight, x.dim(), dim)
    return y.to(x.dtype)


def _rms_norm(x: Tensor, weight: Tensor | None, eps: float | None, channel_dim: int) -> Tensor:
    if x.numel() == 0:
        return x.clone()
    if compiling():  # normlab.core.tracing
        return _composed(x, weight, finfo_eps(eps, x), channel_dim)
    if x.dim() > 2 and channels_first.applies(x, channel_dim):  # (N, C, *S): GEMVs over C
        return channels_first.RMSChannelsFirst.apply(x, weight, finfo_eps(eps, x))
    if last_dim.applies(x, weight, channel_dim):  # channels innermost: tokens, channels_last
        return last_dim.rms_rows(x, weight, finfo_eps(eps, x), channel_dim)
    return _RMSNormFunction.apply(x, weight, finfo_eps(eps, x), channel_dim)


def rms_norm(
    x: Tensor,
    weight: Tensor | None = None,
    *,
    eps: float | None = None,
    channel_dim: int = 1,
) -> Tensor:
    r"""Root-mean-square normalization; pure.

    $$ y = \gamma \frac{x}{\sqrt{\tfrac{1}{C}\sum_c x_c^2 + \epsilon}} $$

    over C, one statistic per (sample, position); ``eps=None`` is the input dtype's machine
    epsilon (``torch.nn.RMSNorm``'s default).

    Args:
        eps: ε, added to the mean square; None: the input dtype's machine epsilon.

    Example:
        >>> rms_norm(torch.tensor([[3.0, -3.0, 3.0, -3.0]]), eps=1e-12).round(decimals=4)
        tensor([[ 1., -1.,  1., -1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    eps = errors.check_optional_eps(eps)
    errors.check_input("rms_norm", x, errors.channels_of(weight), channel_dim)
    return _rms_norm(x, weight, eps, channel_dim)


class RMSNorm(Norm):
    r"""RMSNorm: rescale each position's channel vector by its root mean square.

    $$ y = \gamma \frac{x}{\sqrt{\tfrac{1}{C}\sum_c x_c^2 + \epsilon}} $$

    over C, one statistic per (sample, position); no centering and no bias. Equal to
    ``torch.nn.RMSNorm(C)`` on channels-last data. Same in training and eval.

    Args:
        num_features: C, the number of channels.
        eps: added to the mean square; None (default) uses the input dtype's machine epsilon.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> norm = RMSNorm(2, channel_dim=-1, eps=1e-12)
        >>> norm(torch.tensor([[[3.0, -3.0], [0.5, 0.5]]])).detach().round(decimals=4)
        tensor([[[ 1., -1.],
                 [ 1.,  1.]]])

    References:
        Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019,
        arXiv:1910.07467.
    """

    _repr_keys = ("eps", "affine")
    axes = axes_lib.POSITION

    def __init__(
        self,
        num_features: int,
        *,
        eps: float | None = None,
        affine: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, affine=affine, channel_dim=channel_dim, bias=False,
            device=device, dtype=dtype,
        )
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return _rms_norm(x, self.weight, self.eps, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "rms_norm",
        RMSNorm,
        "Zhang & Sennrich 2019, arXiv:1910.07467",
        aliases=("rms", "rmsnorm"),
        functional=(rms_norm,),
    ),
)
