"""Adaptive Instance Normalization (Huang & Belongie 2017, arXiv:1703.06868).

The content's per-(sample, channel) statistics are replaced by the style's. As in the reference
(``xunhuang1995/AdaIN-style``, ``lib/AdaptiveInstanceNormalization.lua``) ε goes only into the
content's variance; the style's σ is the population std (divide by |S|) with no ε. The
unmasked path is one per-(n, c) affine map y = x·A + B (`normlab.norms._instance_affine`), with

    A = α·σ_s·r + (1 − α),   B = α·(μ_s − σ_s·r·μ),   r = 1/sqrt(σ² + ε);

masked statistics (partial style) are weighted moments by plain autograd operations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from normlab import errors
from normlab.core import axes as axes_lib
from normlab.core.moments import accumulation_dtype
from normlab.norms._base import (
    Norm,
    affine_params,
    check_set_size,
    from_channels_first,
    group_norm_kernel,
    to_channels_first,
)
from normlab.norms._instance_affine import (
    contiguous_channels_first,
    instance_moments_autograd,
    normalize_and_apply,
    restore_layout,
)
from normlab.norms._per_instance import broadcast

Statistics = tuple[Tensor, Tensor]


def _check_alpha(alpha: object) -> float:
    if not errors.is_finite_number(alpha) or not 0.0 <= alpha <= 1.0:  # type: ignore[operator]
        raise errors.ConfigError(
            f"alpha must be a number in [0, 1]; got {alpha!r}. It is the content-style "
            "trade-off t = alpha*AdaIN(c, s) + (1 - alpha)*c: 1 is full style, 0 the content."
        )
    return float(alpha)


def _check_mask(layer: str, name: str, mask: Tensor | None, like: Tensor) -> Tensor | None:
    """A bool mask of positions as a channels-first (N or 1, 1, *S) tensor, or None."""
    if mask is None:
        return None
    n, spatial = like.shape[0], tuple(like.shape[2:])
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise errors.InputError(
            f"{layer}: {name} must be a bool tensor of positions; got {got}. "
            f"Pass e.g. {name}=region > 0.5."
        )
    target = (n, 1, *spatial)
    try:
        shaped = torch.broadcast_to(mask, target)
    except RuntimeError:
        raise errors.InputError(
            f"{layer}: {name} of shape {tuple(mask.shape)} does not match positions "
            f"{spatial} of a batch of {n}; expected a shape broadcastable to (N, 1, *S) "
            f"(or (N, *S, 1) for channel_dim=-1), e.g. {(n, 1, *spatial)} or {spatial}."
        ) from None
    counts = shaped.flatten(1).sum(1)
    if like.numel() and spatial and bool((counts == 0).any()):
        raise errors.InputError(
            f"{layer}: {name} selects no position in sample(s) "
            f"{torch.nonzero(counts == 0).flatten().tolist()}; the statistics there would "
            "be undefined. Select at least one position per sample."
        )
    return shaped


def _masked_moments(xc: Tensor, mask: Tensor) -> Statistics:
    """Mean and biased variance over the selected positions of every (n, c) slice."""
    w = mask.to(xc.dtype).flatten(2)
    flat = xc.flatten(2)
    count = w.sum(-1)
    mean = (flat * w).sum(-1) / count
    var = ((flat - mean.unsqueeze(-1)).square() * w).sum(-1) / count
    return mean, var


def _style_statistics(
    layer: str, style: Tensor, mask: Tensor | None, channel_dim: int, channels: int, batch: int
) -> Statistics:
    """(μ_s, σ_s) of a style batch, shape (N_s, C), differentiable in ``style``; the style must
    have ``channels`` channels and a batch of 1 or ``batch``."""
    if isinstance(style, Tensor) and style.dim() >= 2 and style.shape[channel_dim] != channels:
        raise errors.InputError(
            f"{layer}: style has {style.shape[channel_dim]} channels (shape "
            f"{tuple(style.shape)}, channel_dim={channel_dim}) but the content has {channels}; "
            "AdaIN imposes each style channel on the same content channel, so both must "
            "come from the same layer (e.g. the same encoder stage)."
        )
    errors.check_input(f"{layer} style", style, channels, channel_dim)
    sc = to_channels_first(style, channel_dim)
    if sc.shape[0] not in (1, batch):
        raise errors.InputError(
            f"{layer}: style batch of {sc.shape[0]} for a content batch of {batch}; pass "
            "one style per content sample or a single style (batch of 1) for all of them."
        )
    check_set_size(f"{layer} style", axes_lib.INSTANCE, sc, 1)
    mask_c = _check_mask(layer, "style_mask", _to_first(mask, style.dim(), channel_dim), sc)
    mean, var = (
        instance_moments_autograd(sc)
        if mask_c is None
        else _masked_moments(sc.to(torch.promote_types(sc.dtype, torch.float32)), mask_c)
    )
    return mean, var.sqrt()


def _to_first(mask: Tensor | None, rank: int, channel_dim: int) -> Tensor | None:
    """A full-rank (N, *S, 1) mask of channels-last data as (N, 1, *S); others unchanged."""
    if channel_dim == 1 or not isinstance(mask, Tensor) or mask.dim() != rank:
        return mask
    return mask.movedim(-1, 1)


def _coefficients(eps: float, alpha: float, has_weight: bool, has_bias: bool) -> Any:
    """(μ, σ², μ_s, σ_s, [γ], [β]) -> (A, B) of t = x·A + B."""

    def coefficients(
        mean: Tensor, var: Tensor, s_mean: Tensor, s_std: Tensor, *affine: Tensor
    ) -> Statistics:
        a = s_std.to(mean.dtype) * (var + eps).rsqrt()
        shift = s_mean.to(mean.dtype) - a * mean
        if alpha != 1.0:
            a, shift = a * alpha + (1.0 - alpha), shift * alpha
        if has_weight:
            gamma = affine[0].to(mean.dtype)
            a, shift = a * gamma, shift * gamma
        if has_bias:
            shift = shift + affine[-1].to(mean.dtype)
        return a, shift

    return coefficients


def _native_adain(
    x: Tensor,
    s_mean: Tensor,
    s_std: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    channel_dim: int,
) -> Tensor:
    """α = 1, no mask: InstanceNorm whose affine is the style's (σ_s·γ, μ_s·γ + β), run as
    ATen's group norm of the (1, N·C, *S) view with one group per (n, c) slice, so that
    per-sample styles are per-"channel" weights (native forward, backward and double
    backward; gradients reach the style statistics through the weights)."""
    xc, layout = contiguous_channels_first(x, channel_dim)
    n, c = xc.shape[:2]
    scale, shift = s_std, s_mean
    if weight is not None:
        scale, shift = scale * weight, shift * weight
    if bias is not None:
        shift = shift + bias
    scale = scale.expand(n, c).reshape(n * c)
    shift = shift.expand(n, c).reshape(n * c)
    if scale.dtype != xc.dtype and accumulation_dtype(xc.dtype) == xc.dtype:
        scale, shift = scale.to(xc.dtype), shift.to(xc.dtype)
    flat = xc.reshape(1, n * c, *xc.shape[2:])
    y = group_norm_kernel(flat, n * c, scale, shift, eps)[0].view(xc.shape)
    return restore_layout(y, layout, channel_dim)


def _adain(
    x: Tensor,
    s_mean: Tensor,
    s_std: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    alpha: float,
    eps: float,
    mask: Tensor | None,
    channel_dim: int,
) -> Tensor:
    """AdaIN of ``x`` (any layout) given the style's (N or 1, C) or (C,) statistics."""
    if x.numel() == 0:
        return x.clone()
    if mask is None and alpha == 1.0:
        return _native_adain(x, s_mean, s_std, weight, bias, eps, channel_dim)
    coefficients = _coefficients(eps, alpha, weight is not None, bias is not None)
    params = (s_mean, s_std, *affine_params(weight, bias))
    if mask is None:
        xc, layout = contiguous_channels_first(x, channel_dim)
        y = normalize_and_apply(xc, coefficients, *params, eps=eps)
        return restore_layout(y, layout, channel_dim)
    xc = to_channels_first(x, channel_dim)
    acc = torch.promote_types(xc.dtype, torch.float32)
    xs = xc.to(acc)
    mean, var = _masked_moments(xs, mask)
    scale, shift = coefficients(mean, var, *params)
    y = xs * broadcast(scale.expand_as(mean), xs.dim()) + broadcast(shift.expand_as(mean), xs.dim())
    y = torch.where(mask, y, xs).to(xc.dtype)
    return from_channels_first(y, channel_dim)


def adain_from_stats(
    content: Tensor,
    style_mean: Tensor,
    style_std: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    alpha: float = 1.0,
    eps: float = 1e-5,
    content_mask: Tensor | None = None,
    channel_dim: int = 1,
) -> Tensor:
    r"""AdaIN with given style statistics; pure.

    $$ t = \alpha\Big(\sigma_s \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \mu_s\Big)
        + (1 - \alpha)\,x $$

    μ(x), σ²(x) over *S (or its ``content_mask`` positions), one per (sample, channel);
    ``style_mean`` / ``style_std`` (μ_s, σ_s) of shape (C,) or (N or 1, C); optional per-channel
    ``weight`` / ``bias`` give γ·t + β. Positions outside ``content_mask`` are returned
    unchanged. Useful to interpolate styles by mixing their
    statistics.

    Args:
        content: x, the input to restyle, (N, C, *S) with *S non-empty.
        style_mean: μ_s, shape (C,) or (N or 1, C).
        style_std: σ_s, shape (C,) or (N or 1, C).
        weight: optional per-channel γ applied to t (γ·t + β); None: none.
        bias: optional per-channel β applied to t; None: none.
        alpha: content-style trade-off α in [0, 1] (1: full style, 0: the content unchanged).
        eps: ε, added to the content's variance only.
        content_mask: bool, broadcastable to (N, 1, *S): the positions the content statistics
            come from and that are restyled; None: all.

    Example:
        >>> x = torch.tensor([[[1.0, 3.0]]])
        >>> adain_from_stats(x, torch.tensor([10.0]), torch.tensor([2.0]), eps=1e-12)
        tensor([[[ 8., 12.]]])
    """
    layer = "adain_from_stats"
    channel_dim = errors.check_channel_dim(channel_dim)
    eps, alpha = errors.check_eps(eps), _check_alpha(alpha)
    errors.check_input(layer, content, None, channel_dim)
    xc = to_channels_first(content, channel_dim)
    c = xc.shape[1]
    for name, t in (("style_mean", style_mean), ("style_std", style_std)):
        if (
            not isinstance(t, Tensor)
            or t.dim() not in (1, 2)
            or t.shape[-1] != c
            or (t.dim() == 2 and t.shape[0] not in (1, xc.shape[0]))
        ):
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise errors.InputError(
                f"{layer}: {name} must have shape ({c},) or (N or 1, {c}) for content with "
                f"{c} channels; got {got}. Compute it per channel of the style, e.g. "
                "style.mean((2, 3))."
            )
    check_set_size(layer, axes_lib.INSTANCE, xc, 1)
    content_mask = _to_first(content_mask, content.dim(), channel_dim)
    mask = _check_mask(layer, "content_mask", content_mask, xc)
    return _adain(content, style_mean, style_std, weight, bias, alpha, eps, mask, channel_dim)


def adain(
    content: Tensor,
    style: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    alpha: float = 1.0,
    eps: float = 1e-5,
    content_mask: Tensor | None = None,
    style_mask: Tensor | None = None,
    channel_dim: int = 1,
) -> Tensor:
    r"""Adaptive instance normalization of ``content`` to ``style``; pure.

    $$ t = \alpha\Big(\sigma(y) \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \mu(y)\Big)
        + (1 - \alpha)\,x $$

    x = content (N, C, *S), y = style (N or 1, C, *S'), spatial sizes may differ. μ, σ over
    *S, one per (sample, channel); σ(y) is the population std, without ε (the reference's).
    ``style_mask`` / ``content_mask`` (bool, broadcastable to (N, 1, *S)) restrict the
    positions each statistic comes from; the content outside ``content_mask`` is unchanged
    (partial style). Differentiable in both inputs.

    Args:
        content: x, the input to restyle, (N, C, *S) with *S non-empty.
        style: y, whose per-(sample, channel) statistics are imposed: (N or 1, C, *S').
        weight: optional per-channel γ applied to t (γ·t + β); None: none.
        bias: optional per-channel β applied to t; None: none.
        alpha: content-style trade-off α in [0, 1] (1: full style, 0: the content unchanged).
        eps: ε, added to the content's variance only.
        content_mask: bool, broadcastable to (N, 1, *S): the content positions the content
            statistics come from and that are restyled; None: all.
        style_mask: bool, broadcastable to (N, 1, *S'): the style positions the style statistics
            come from; None: all.

    Example:
        >>> adain(torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[8.0, 12.0]]]), eps=1e-12)
        tensor([[[ 8., 12.]]])
    """
    layer = "adain"
    channel_dim = errors.check_channel_dim(channel_dim)
    eps, alpha = errors.check_eps(eps), _check_alpha(alpha)
    errors.check_input(layer, content, None, channel_dim)
    xc = to_channels_first(content, channel_dim)
    check_set_size(layer, axes_lib.INSTANCE, xc, 1)
    content_mask = _to_first(content_mask, content.dim(), channel_dim)
    mask = _check_mask(layer, "content_mask", content_mask, xc)
    s_mean, s_std = _style_statistics(
        layer, style, style_mask, channel_dim, xc.shape[1], xc.shape[0]
    )
    return _adain(content, s_mean, s_std, weight, bias, alpha, eps, mask, channel_dim)


class AdaIN(Norm):
    r"""Adaptive Instance Normalization: impose a style's per-channel mean and std.

    $$ t = \alpha\Big(\sigma_s \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \mu_s\Big)
        + (1 - \alpha)\,x $$

    μ(x), σ²(x) over *S, one per (sample, channel). The style comes either per call,
    ``layer(content, style)`` (μ_s, σ_s of each style sample), or stored:
    ``layer.set_style(style)`` writes the buffers ``style_mean`` and ``style_var`` (σ_s²,
    population variance), which ``layer(content)`` uses. A fresh layer stores μ_s = 0,
    σ_s² = 1, so ``create("adain", C)`` is a drop-in InstanceNorm without affine until a style
    is set. No learnable parameters; the same in training and eval.

    Args:
        num_features: C, the number of channels of content and style.
        alpha: content-style trade-off α in [0, 1] (1: full style).
        eps: added to the content's variance only.
        affine: a learned per-channel γ, β applied to t (γ·t + β; not in the paper, off by
            default): what a converted BatchNorm's affine becomes.

    Shape:
        Content (N, C, *S) with *S non-empty, style (N or 1, C, *S'); with ``channel_dim=-1``
        (N, *S, C). Output: the content's shape.

    Example:
        >>> layer = AdaIN(1, eps=1e-12)
        >>> layer.set_style(torch.tensor([[[8.0, 12.0, 8.0, 12.0]]]))
        >>> layer(torch.tensor([[[1.0, 3.0]]]))
        tensor([[[ 8., 12.]]])

    References:
        Huang & Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
        Normalization", ICCV 2017, arXiv:1703.06868.
    """

    _repr_keys = ("alpha", "eps", "affine")
    axes = axes_lib.INSTANCE
    style_mean: Tensor
    style_var: Tensor

    def __init__(
        self,
        num_features: int,
        *,
        alpha: float = 1.0,
        eps: float = 1e-5,
        affine: bool = False,
        channel_dim: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            num_features,
            eps=errors.check_eps(eps),
            affine=affine,
            channel_dim=channel_dim,
            device=device,
            dtype=dtype,
        )
        self.alpha = _check_alpha(alpha)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.register_buffer("style_mean", torch.zeros(num_features, **factory))
        self.register_buffer("style_var", torch.ones(num_features, **factory))
        self.reset_parameters()

    @torch.no_grad()
    def set_style(self, style: Tensor, *, mask: Tensor | None = None) -> None:
        """Store the per-channel μ and population σ² of one style sample (1, C, *S) (or the
        positions ``mask`` selects) for calls without a style."""
        name = self._name()
        if isinstance(style, Tensor) and style.dim() >= 2 and style.shape[0] != 1:
            raise errors.InputError(
                f"{name}.set_style stores one style; got a batch of {style.shape[0]}. Pass "
                "style[:1], or per-sample styles per call: layer(content, style)."
            )
        mean, std = _style_statistics(
            f"{name}.set_style", style, mask, self.channel_dim, self.num_features, 1
        )
        self.style_mean.copy_(mean[0])
        self.style_var.copy_(std[0].square())

    def forward(
        self,
        content: Tensor,
        style: Tensor | None = None,
        *,
        content_mask: Tensor | None = None,
        style_mask: Tensor | None = None,
    ) -> Tensor:
        self._check_input(content)
        xc = to_channels_first(content, self.channel_dim)
        self._check_set_size(content)
        mask = _check_mask(
            self._name(),
            "content_mask",
            _to_first(content_mask, content.dim(), self.channel_dim),
            xc,
        )
        if style is None:
            if style_mask is not None:
                raise errors.InputError(
                    f"{self._name()}: style_mask given without a style; pass the style too, "
                    "or use set_style(style, mask=...) to store masked statistics."
                )
            s_mean, s_std = self.style_mean, self.style_var.sqrt()
        else:
            s_mean, s_std = _style_statistics(
                self._name(), style, style_mask, self.channel_dim, self.num_features, xc.shape[0]
            )
        return _adain(
            content,
            s_mean,
            s_std,
            self.weight,
            self.bias,
            self.alpha,
            self.eps,
            mask,
            self.channel_dim,
        )

    def _validate_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        super()._validate_state(state_dict, prefix)
        self._validate_moments(state_dict, prefix, "style", errors.invalid_state)


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "adain",
        AdaIN,
        "Huang & Belongie 2017, arXiv:1703.06868",
        aliases=("adaptive_instance_norm",),
        functional=(adain, adain_from_stats),
    ),
)
