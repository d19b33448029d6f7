"""Bounded Batch Normalization (Jia, Tao, Gao & Xu, CVPR 2017, arXiv:1611.06013).

BBN is BatchNorm plus a projection of its scales, run right after each Singular Value Bounding
step (`normlab.bound_singular_values_`). In eval a BN layer is the diagonal map
x ↦ s_i·(x − μ_i) + β_i with s_i = γ_i/σ_i, σ_i = sqrt(running_var_i + eps); BBN keeps that
diagonal well conditioned by rewriting γ so that every s_i lies within a factor 1+ε̃ of the
mean scale ᾱ. The forward pass is BatchNorm's, unchanged; the projection is a method
(`BoundedBatchNorm.bound_scales_`) and, for every BN layer of a model, torch's included,
`bound_batch_norm_scales_`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normlab import errors
from normlab.errors import ConfigError
from normlab.norms._base import Norm
from normlab.norms.batch_norm import BatchNorm

Mode = Literal["bbn", "rel"]
MODES = ("bbn", "rel")

# -- errors raised here ----------------------------------------------------------------------------


def _check_factor_eps(function: str, eps: object) -> float:
    if not errors.is_finite_number(eps) or eps <= 0:  # type: ignore[operator]
        raise ConfigError(
            f"{function}: eps (ε̃; scales are bounded to [ᾱ/(1+ε̃), ᾱ(1+ε̃)]) must be a positive "
            f"finite number; got eps={eps!r}. The reference code uses 1.0 (bnsBFactor 2). "
            "This is not the layer's own eps inside sqrt(running_var + eps)."
        )
    return float(eps)


def _check_mode(function: str, mode: object) -> Mode:
    key = mode.lower() if isinstance(mode, str) else mode
    if key not in MODES:
        raise errors.unknown_choice(f"{function} mode", str(mode), MODES)
    return key  # type: ignore[return-value]  # one of MODES, checked above


def _unusable(name: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"Bounded BN: layer {name} {problem}. {fix}")


# -- the projection --------------------------------------------------------------------------------


class ScaleBound(NamedTuple):
    """What one Bounded-BN projection did: the reference scale ᾱ (mean of s_i = γ_i/σ_i in
    mode "bbn", of γ_i in mode "rel", before the projection) and how many γ_i it rewrote."""

    mean_scale: float
    clipped: int


def _bound(
    owner: str, gamma: Tensor, sigma: Tensor, eps: float, dtype: torch.dtype
) -> tuple[Tensor, ScaleBound]:
    """The projected γ in ``dtype`` from γ and σ in float64; ``owner`` names the layer."""
    s = gamma / sigma
    alpha = s.mean()
    if not (bool(torch.isfinite(s).all()) and float(alpha) != 0.0):
        raise errors.InputError(
            f"Bounded BN: {owner} has scales s = γ/σ that are non-finite or average to 0 (mean "
            f"{float(alpha)}). Check weight and running_var for NaN/Inf or negative variances; "
            "the bound is relative to the mean scale, which must be finite and non-zero."
        )
    ratio = s / alpha
    high, low = 1.0 + eps, 1.0 / (1.0 + eps)
    clipped = (ratio > high) | (ratio < low)
    # Clipped to an interval narrowed by one unit of ``dtype``: rounding the new γ_i into it
    # (relative error ≤ half a unit) cannot carry s_i back past the bound.
    unit = torch.finfo(dtype).eps
    if low * (1 + unit) > high * (1 - unit):
        raise ConfigError(
            f"Bounded BN: eps={eps!r} is below the resolution of {owner}'s {dtype} weight "
            f"(about {unit:.1e}), so no γ of that dtype satisfies the bound; pass eps >= "
            f"{unit:.0e}."
        )
    target = ratio.clamp(low * (1 + unit), high * (1 - unit)) * alpha * sigma
    new = torch.where(clipped, target, gamma).to(dtype)
    return new, ScaleBound(float(alpha), int(clipped.sum()))


def _projected(name: str, layer: nn.Module, eps: float, mode: Mode) -> tuple[Tensor, ScaleBound]:
    """The new γ of ``layer`` (in its dtype) and the report; checks everything, writes nothing."""
    weight = getattr(layer, "weight", None)
    if parametrize.is_parametrized(layer, "weight"):
        raise _unusable(name, "has a parametrized weight", "Remove the parametrization first.")
    if not isinstance(weight, Tensor):
        raise _unusable(name, "has no affine weight γ (affine=False)", "Build it with affine=True.")
    var = getattr(layer, "running_var", None)
    if mode == "bbn" and not isinstance(var, Tensor):
        raise _unusable(
            name,
            "has no running_var (track_running_stats=False), which mode='bbn' reads",
            "Track running statistics, or use mode='rel' (bounds γ relative to mean(γ)).",
        )
    return _projection(f"layer {name}", weight, var if mode == "bbn" else None, layer.eps, eps)


def _projection(
    owner: str, weight: Tensor, running_var: Tensor | None, bn_eps: float, eps: float
) -> tuple[Tensor, ScaleBound]:
    gamma = weight.detach().to(torch.float64)
    sigma = torch.ones_like(gamma)
    if running_var is not None:
        sigma = (running_var.detach().to(torch.float64) + float(bn_eps)).sqrt()
    return _bound(owner, gamma, sigma, eps, weight.dtype)


def bounded_bn_weight(
    weight: Tensor,
    running_var: Tensor | None = None,
    *,
    bn_eps: float = 1e-5,
    eps: float = 1.0,
) -> Tensor:
    r"""The Bounded-BN projection of a BatchNorm's γ (pure: returns the new γ).

    $$ s_i = \frac{\gamma_i}{\sqrt{v_i + \epsilon_{bn}}}, \quad
       \bar\alpha = \tfrac{1}{C}\textstyle\sum_i s_i, \quad
       \gamma_i' = \sqrt{v_i + \epsilon_{bn}}\;\mathrm{clip}\big(s_i,
       \tfrac{\bar\alpha}{1+\tilde\epsilon}, \bar\alpha(1+\tilde\epsilon)\big) $$

    with v = ``running_var``; without it (None) σ_i = 1, i.e. the reference's ``"rel"`` mode,
    γ_i bounded relative to mean(γ). Only the channels outside the interval change. Computed
    in float64 and returned in ``weight``'s dtype, clipped to the interval narrowed by one unit
    of that dtype so that the bound holds for the rounded result (to float64 round-off for a
    float64 weight).

    Args:
        weight: γ, the BatchNorm's weight to project, shape (C,) (not modified).
        running_var: the layer's running variance (mode "bbn"), or None (mode "rel").
        bn_eps: the layer's own ε inside sqrt(running_var + ε).
        eps: ε̃ > 0, the bound factor 1+ε̃ (reference: 1).

    Shape:
        weight, running_var: (C,); output: (C,).

    Example:
        >>> bounded_bn_weight(torch.tensor([1.0, 2.0, 9.0]), eps=1.0)  # γ/mean(γ) in [1/2, 2]
        tensor([2.0000, 2.0000, 8.0000])

    References:
        Jia, Tao, Gao & Xu, CVPR 2017, arXiv:1611.06013 (``BNScalingBounding`` in the
        reference code kui-jia/svb, cnnTrain.lua).
    """
    eps = _check_factor_eps("bounded_bn_weight", eps)
    bn_eps = errors.check_eps(bn_eps)
    for name, t in (("weight", weight), ("running_var", running_var)):
        if t is None and name == "running_var":
            continue
        if (
            not isinstance(t, Tensor)
            or not t.is_floating_point()
            or t.dim() != 1
            or (t.shape != weight.shape)
        ):
            raise errors.InputError(
                f"bounded_bn_weight: {name} must be a 1-D floating-point tensor of one entry per "
                f"channel{' like weight' if name == 'running_var' else ''}; got "
                f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}. Pass the "
                "BatchNorm layer's weight and running_var."
            )
    return _projection("bounded_bn_weight", weight, running_var, bn_eps, eps)[0]


def _bound_scales(
    function: str, layers: list[tuple[str, nn.Module]], eps: object, mode: object
) -> dict[str, ScaleBound]:
    eps, mode = _check_factor_eps(function, eps), _check_mode(function, mode)
    results = [(path, layer, *_projected(path, layer, eps, mode)) for path, layer in layers]
    with torch.no_grad():  # every layer checked before any is written
        for _, layer, new, _ in results:
            layer.weight.copy_(new)
    return {path: bound for path, _, _, bound in results}


def _is_batch_norm_layer(module: nn.Module) -> bool:
    """Duck typing: an affine weight γ and a running_var of one shape, and an eps, in a layer
    whose inference is BN's y = γ(x − μ)/sqrt(running_var + eps) + β. normlab layers say so
    (``eval_is_batch_norm``: not EvoNorm-B0, SwitchableNorm, ...); torch's InstanceNorm, whose
    running statistics are per-sample averages, is left out."""
    var, weight = getattr(module, "running_var", None), getattr(module, "weight", None)
    if not (
        isinstance(var, Tensor)
        and isinstance(weight, Tensor)
        and var.dim() == 1
        and var.shape == weight.shape
        and errors.is_finite_number(getattr(module, "eps", None))
    ):
        return False
    if isinstance(module, Norm):
        return module.eval_is_batch_norm
    return not isinstance(module, nn.modules.instancenorm._InstanceNorm)


def bound_batch_norm_scales_(
    model: nn.Module, eps: float = 1.0, mode: Mode = "bbn"
) -> dict[str, ScaleBound]:
    r"""Bounded BN, in place, on every BatchNorm layer of ``model`` with running_var and γ.

    $$ s_i = \frac{\gamma_i}{\sqrt{\mathrm{running\_var}_i + \epsilon}}, \quad
       \bar\alpha = \tfrac{1}{C}\textstyle\sum_i s_i, \quad
       s_i \leftarrow \mathrm{clip}\big(s_i, \tfrac{\bar\alpha}{1+\tilde\epsilon},
       \bar\alpha(1+\tilde\epsilon)\big) $$

    by rewriting γ_i = s_i·σ_i for the clipped channels only. ᾱ is computed once, before the
    projection, as in the reference code (``BNScalingBounding`` in kui-jia/svb cnnTrain.lua),
    so the bound holds relative to that ᾱ: the mean of the projected scales differs from it.
    The test is on s_i/ᾱ, as in the reference, so for ᾱ < 0 it reads s_i/ᾱ ∈ [1/(1+ε̃), 1+ε̃].
    Mode ``"rel"`` (the reference's other ``bnsBType``, "even better" in its README) bounds
    γ_i relative to mean(γ) instead, without the running variance.

    Layers are found by duck typing (`_is_batch_norm_layer`): torch BatchNorm*d / SyncBatchNorm
    and subclasses, normlab's BatchNorm family, foreign BN-like layers (torchvision's
    FrozenBatchNorm2d). BN layers without γ (affine=False) or without running_var are skipped.
    Run it right after `normlab.bound_singular_values_`.

    Args:
        model: the model (or a single BN layer).
        eps: ε̃ > 0 (reference: 1, i.e. a bound factor of 2); not the layers' own eps.
        mode: ``"bbn"`` (the paper's, with the running variance) or ``"rel"``.

    Returns:
        {layer path: `ScaleBound`} for every projected layer.

    Example:
        >>> bn = nn.BatchNorm1d(3)
        >>> with torch.no_grad():
        ...     _ = bn.weight.copy_(torch.tensor([1.0, 1.0, 7.0]))
        >>> bound_batch_norm_scales_(bn, eps=1.0)["BatchNorm1d"].clipped  # s/ᾱ = 1/3, 1/3, 7/3
        3
        >>> bn.weight.detach()  # s/ᾱ = 1/2, 1/2, 2
        tensor([1.5000, 1.5000, 6.0000])

    References:
        Jia, Tao, Gao & Xu, "Improving Training of Deep Neural Networks via Singular Value
        Bounding", CVPR 2017, arXiv:1611.06013.
    """
    function = "bound_batch_norm_scales_"
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{function}: model must be a torch.nn.Module; got {type(model).__name__}. Pass "
            "the model whose BatchNorm layers to bound."
        )
    layers = [
        (path or type(m).__name__, m)
        for path, m in model.named_modules()
        if _is_batch_norm_layer(m)
    ]
    if not layers:
        raise ConfigError(
            f"{function}: found no BatchNorm layer with an affine weight and running_var in "
            f"{type(model).__name__}; Bounded BN has nothing to bound. Use BN layers with "
            "affine=True and track_running_stats=True."
        )
    return _bound_scales(function, layers, eps, mode)


class BoundedBatchNorm(BatchNorm):
    r"""Batch Normalization whose scales can be bounded (Bounded BN, Jia et al. 2017).

    $$ y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta $$

    The forward pass is `normlab.BatchNorm`'s (μ, σ² over (N, *S), one per channel; running
    statistics as BN). `bound_scales_` applies the paper's projection of s_i = γ_i/σ_i, to be
    called after the optimizer step that follows each SVB step; it is also available for any
    model as `bound_batch_norm_scales_`, which treats torch's BatchNorm the same way.

    Args:
        num_features: C, the number of channels.

    Shape:
        Input (N, C, *S) or, with ``channel_dim=-1``, (N, *S, C); output: same shape.

    Example:
        >>> bbn = BoundedBatchNorm(2)
        >>> with torch.no_grad():
        ...     _ = bbn.weight.copy_(torch.tensor([1.0, 5.0]))
        >>> bbn.bound_scales_(eps=0.5).clipped  # s/ᾱ = 1/3, 5/3 against [2/3, 3/2]
        2
        >>> bbn.weight.detach()
        tensor([2.0000, 4.5000])

    References:
        Jia, Tao, Gao & Xu, "Improving Training of Deep Neural Networks via Singular Value
        Bounding", CVPR 2017, arXiv:1611.06013.
    """

    def bound_scales_(self, eps: float = 1.0, mode: Mode = "bbn") -> ScaleBound:
        r"""Rewrite γ so that every s_i = γ_i/sqrt(running_var_i + eps) lies in
        [ᾱ/(1+ε̃), ᾱ(1+ε̃)], ᾱ = mean_i s_i before the projection (``mode="bbn"``), or every
        γ_i in [m/(1+ε̃), m(1+ε̃)], m = mean_i γ_i (``mode="rel"``); see
        `bound_batch_norm_scales_`. ``eps`` is ε̃, not the layer's own eps."""
        name = self._name()
        return _bound_scales("bound_scales_", [(name, self)], eps, mode)[name]


# -- registry entries (discovered by normlab.norms; the registry and normlab.* derive from them) --
from normlab.norms._entry import Entry  # noqa: E402  (this block closes the file)

ENTRIES = (
    Entry(
        "bounded_batch_norm",
        BoundedBatchNorm,
        "Jia et al. 2017, arXiv:1611.06013",
        aliases=("bbn", "bounded_bn"),
        exports=(bound_batch_norm_scales_,),
        functional=(bounded_bn_weight,),
    ),
)
