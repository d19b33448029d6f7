"""Sample RMS norm: a toy method (not in normlab) that rescales each sample by its RMS.

Written as a method file of ``normlab/norms/`` is, to show what a new method needs: this file,
its catalogue case (tests/cases_sample_rms_norm.py) and its unique tests
(tests/test_sample_rms_norm.py). It is LayerNorm without centering, or RMSNorm over (C, *S).
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import accumulation_dtype
from normlab.norms._base import Norm, from_channels_first, to_channels_first


def sample_rms_norm(
    x: Tensor, weight: Tensor | None = None, *, eps: float = 1e-5, channel_dim: int = 1
) -> Tensor:
    r"""Each sample divided by its root mean square over (C, *S); pure.

    $$ y = \gamma \frac{x}{\sqrt{\tfrac{1}{C|S|}\sum_{c, s} x_{c,s}^2 + \epsilon}} $$
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("sample_rms_norm", x, errors.channels_of(weight), channel_dim)
    first = to_channels_first(x, channel_dim)
    acc = first.to(accumulation_dtype(x.dtype))
    mean_square = acc.square().mean(tuple(range(1, x.dim())), keepdim=True)
    scale = torch.rsqrt(mean_square + eps)  # (N, 1, ...): γ joins it, so only x is saved
    if weight is not None:
        scale = scale * weight.to(acc.dtype).view(-1, *([1] * (x.dim() - 2)))
    return from_channels_first((acc * scale).to(x.dtype), channel_dim)


class SampleRMSNorm(Norm):
    r"""Sample RMS Norm: rescale each sample by the root mean square of all its values.

    $$ y = \gamma \frac{x}{\sqrt{\tfrac{1}{C|S|}\sum_{c, s} x_{c,s}^2 + \epsilon}} $$

    over (C, *S), one statistic per sample; no centering and no bias.
    """

    axes = axes_lib.LAYER

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
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
        return sample_rms_norm(x, self.weight, eps=self.eps, channel_dim=self.channel_dim)


# -- registry entries (discovered by toy_norms, as normlab.norms discovers its own) ---------------
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "sample_rms_norm",
        SampleRMSNorm,
        "a test-suite toy: LayerNorm without centering",
        aliases=("srms",),
        functional=(sample_rms_norm,),
    ),
)
