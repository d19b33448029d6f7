"""RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467).

Statistics over C at each (sample, position), with no centering. ε goes inside the square
root, as in ``torch.nn.RMSNorm`` (the reference torch code adds it to the RMS instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.norms._base import Norm


def _rms_norm(x: Tensor, weight: Tensor | None, eps: float | None, channel_dim: int) -> Tensor:
    if x.numel() == 0:
        return x.clone()
    xl = x if channel_dim == -1 else x.movedim(1, -1)
    y = F.rms_norm(xl, (x.shape[channel_dim],), weight, eps)
    return y if channel_dim == -1 else y.movedim(-1, 1)


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

    Example:
        >>> rms_norm(torch.tensor([[3.0, -3.0]]), eps=1e-12)
        tensor([[ 1., -1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    eps = errors.check_optional_eps(eps)
    errors.check_input("rms_norm", x, x.shape[channel_dim] if weight is None
                       else weight.shape[0], channel_dim)
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
        >>> RMSNorm(2, channel_dim=-1, eps=1e-12)(torch.tensor([[[3.0, -3.0]]])).detach()
        tensor([[[ 1., -1.]]])

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
