"""Layer Normalization (Ba, Kiros & Hinton 2016, arXiv:1607.06450).

Two readings of "the layer": the paper's, over (C, *S) per sample with a per-channel affine
(== GroupNorm with one group; fast path: the native group-norm kernel), and the per-position
reading of transformers and ConvNeXt, over C at each (sample, position) (``per_position=True``;
fast path: the native layer-norm kernel over the last dimension).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.norms._base import (
    Norm,
    check_set_size,
    from_channels_first,
    group_norm_kernel,
    kernel_params,
    to_channels_first,
)


def _layer_norm(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    per_position: bool,
    channel_dim: int,
) -> Tensor:
    """LN of ``x`` laid out as given by ``channel_dim``; returns the same layout."""
    if x.numel() == 0:
        return x.clone()
    if per_position:
        weight, bias = kernel_params(x, weight, bias, x.shape[channel_dim])
        xl = x if channel_dim == -1 else x.movedim(1, -1)
        y = F.layer_norm(xl, (x.shape[channel_dim],), weight, bias, eps)
        return y if channel_dim == -1 else y.movedim(-1, 1)
    y = group_norm_kernel(to_channels_first(x, channel_dim), 1, weight, bias, eps)[0]
    return from_channels_first(y, channel_dim)


def layer_norm(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    eps: float = 1e-5,
    per_position: bool = False,
    channel_dim: int = 1,
) -> Tensor:
    r"""Layer normalization; pure.

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (C, *S), one per sample; with ``per_position=True`` over C, one per (sample,
    position). γ, β per channel.

    Args:
        per_position: normalize over C alone, one statistic per (sample, position) (the
            Transformer / ConvNeXt LayerNorm); False: over (C, *S), one per sample.

    Example:
        >>> layer_norm(torch.tensor([[1.0, 3.0]]), eps=1e-12)
        tensor([[-1.,  1.]])
    """
    channel_dim = errors.check_channel_dim(channel_dim)
    errors.check_input("layer_norm", x, errors.channels_of(weight, bias), channel_dim)
    axes = axes_lib.POSITION if per_position else axes_lib.LAYER
    check_set_size("layer_norm", axes, x, channel_dim)
    return _layer_norm(x, weight, bias, eps, per_position, channel_dim)


class LayerNorm(Norm):
    r"""Layer Normalization with a per-channel affine, for inputs of any rank.

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    μ, σ² over (C, *S), one per sample (the paper's LN; equal to GroupNorm with one group), or
    with ``per_position=True`` over C, one per (sample, position) (transformer / ConvNeXt LN;
    equal to ``torch.nn.LayerNorm(C)`` on channels-last data). Same in training and eval.

    Not a ``torch.nn.LayerNorm`` by type: that class's ``normalized_shape`` and
    ``elementwise_affine``, which tools read, describe neither form (see
    :mod:`normlab.norms._torch_types`).

    Args:
        num_features: C, the number of channels.
        per_position: normalize each position's channel vector separately.

    Specs: ``"ln"`` is the paper's LN over (C, *S); ``"ln:per_position"`` the per-position
    one (``per_position=True``), e.g. ``factory("ln:per_position")`` for ConvNeXt-style models.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C) — e.g. (N, L, C) tokens with
        ``per_position=True, channel_dim=-1``; output: same shape.

    Example:
        >>> ln = LayerNorm(2, per_position=True, channel_dim=-1, eps=1e-12)
        >>> ln(torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])).detach()
        tensor([[[-1.,  1.],
                 [-1.,  1.]]])

    References:
        Ba, Kiros & Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
    """

    _repr_keys = ("eps", "affine", "per_position")

    def __init__(
        self,
        num_features: int,
        *,
        eps: float = 1e-5,
        affine: bool = True,
        per_position: bool = False,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features, eps=eps, affine=affine, channel_dim=channel_dim,
            device=device, dtype=dtype,
        )
        self.per_position = bool(per_position)
        self.axes = axes_lib.POSITION if self.per_position else axes_lib.LAYER
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        self._check_set_size(x)
        return _layer_norm(
            x, self.weight, self.bias, self.eps, self.per_position, self.channel_dim
        )


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "layer_norm",
        LayerNorm,
        "Ba, Kiros & Hinton 2016, arXiv:1607.06450",
        aliases=("ln", "layernorm"),
        functional=(layer_norm,),
        spec_flags={
            "per_position": "LN over C alone at each (sample, position): transformers, "
            "ConvNeXt, timm's LayerNorm2d, torch.nn.LayerNorm(C) on (N, *, C)",
        },
        spec_note="LN over (C, *S), one statistic per sample: the paper's LN, = GroupNorm(1)",
    ),
)
