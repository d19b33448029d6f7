"""Group Normalization (Wu & He 2018, arXiv:1803.08494).

Fast path: ATen's native group-norm kernel (channels_last aware).
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.norms._base import (
    Norm,
    check_set_size,
    from_channels_first,
    group_norm_kernel,
    to_channels_first,
)
from normlab.norms._torch_types import TorchGroupNorm


def group_norm(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    channel_dim: int = 1,
) -> Tensor:
    r"""Group normalization; pure.

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (C/G, *S), one per (sample, group of C/G contiguous channels).

    Args:
        num_groups: G, the number of groups of contiguous channels; must divide C.

    Example:
        >>> group_norm(torch.tensor([[1.0, 3.0, 5.0, 7.0]]), 2, eps=1e-12)
        tensor([[-1.,  1., -1.,  1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("group_norm", x, errors.channels_of(weight, bias), channel_dim)
    errors.check_groups(x.shape[channel_dim], num_groups, None)
    xc = to_channels_first(x, channel_dim)
    check_set_size("group_norm", axes_lib.group(num_groups), xc, 1)
    return from_channels_first(_group_norm(xc, num_groups, weight, bias, eps), channel_dim)


def _group_norm(
    x: Tensor, num_groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
) -> Tensor:
    if x.numel() == 0:
        return x.clone()
    return group_norm_kernel(x, num_groups, weight, bias, eps)[0]


class GroupNorm(Norm, TorchGroupNorm):
    r"""Group Normalization: statistics over groups of contiguous channels, per sample.

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (C/G, *S), one per (sample, group); γ, β per channel. G = 1 is LayerNorm with
    per-channel affine, G = C is InstanceNorm. Same in training and eval.

    A ``torch.nn.GroupNorm`` by type (``num_channels`` is C; see
    :mod:`normlab.norms._torch_types`), so tools that find norm layers by ``isinstance``
    (detectron2's and mmengine's norm parameter groups) treat it as one.

    Args:
        num_features: C, the number of channels.
        num_groups: G, which must divide C; 32 (the paper's default) when neither it nor
            ``group_size`` is given.
        group_size: channels per group instead of G (16 is the paper's best), G = C / size;
            must divide C; None: set by ``num_groups``.
        max_groups: instead of G, the largest divisor of C that is at most ``max_groups``
            (``max_groups=32``: 32 groups for C = 64 or 576, 16 for C = 16, 20 for C = 40),
            for one setting that fits every layer of a model whose channel counts vary.

    Specs: ``"gn:32"`` is ``num_groups=32`` (strict, like ``torch.nn.GroupNorm(32, C)``),
    ``"gn:max32"`` is ``max_groups=32``, ``"gn:size16"`` is ``group_size=16``.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> GroupNorm(4, num_groups=2, eps=1e-12)(torch.tensor([[1.0, 3.0, 5.0, 7.0]]))
        tensor([[-1.,  1., -1.,  1.]], grad_fn=<NativeGroupNormBackward0>)

    References:
        Wu & He, "Group Normalization", ECCV 2018, arXiv:1803.08494.
    """

    _repr_keys = ("num_groups", "eps", "affine")

    def __init__(
        self,
        num_features: int,
        *,
        num_groups: int | None = None,
        group_size: int | None = None,
        max_groups: int | None = None,
        eps: float = 1e-5,
        affine: bool = True,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.num_groups = errors.check_groups(
            self.num_features, num_groups, group_size, max_groups=max_groups
        )
        self.axes = axes_lib.group(self.num_groups)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        xc = to_channels_first(x, self.channel_dim)
        self._check_set_size(x)
        y = _group_norm(xc, self.num_groups, self.weight, self.bias, self.eps)
        return from_channels_first(y, self.channel_dim)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "group_norm",
        GroupNorm,
        "Wu & He 2018, arXiv:1803.08494",
        aliases=("gn", "groupnorm"),
        functional=(group_norm,),
        spec_arg="num_groups",
        spec_forms={
            "max": ("max_groups", "G", "the largest divisor of C that is at most G, so one "
                    "spec fits every layer of a model (gn:max32: 16 groups for C = 16, 20 "
                    "for 40, 32 for 576)"),
            "size": ("group_size", "S", "S channels per group, G = C / S (strict: C must be "
                     "divisible by S)"),
        },
        spec_note="strict: C must be divisible by G, as in torch.nn.GroupNorm(G, C); a model "
        "with other channel counts needs 'max<G>'",
        fitting="gn:4",
    ),
)
