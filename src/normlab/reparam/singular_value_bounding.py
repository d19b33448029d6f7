"""Singular Value Bounding (Jia, Tao, Gao & Xu, CVPR 2017, arXiv:1611.06013).

SVB is a projection step, not a layer: every T_svb SGD iterations (reference ``svBIter`` = 391,
about one CIFAR epoch at batch 128) each Linear and conv weight, seen as a (units, fan-in)
matrix W = UΣVᵀ, has its singular values clipped to [1/(1+ε), 1+ε] and is written back. The
paper starts from orthogonal weights: call ``torch.nn.init.orthogonal_`` on each weight first
(it orthogonalizes the same (units, fan-in) view for Linear and Conv). The companion projection
of BatchNorm scales (Bounded BN) is `normlab.bound_batch_norm_scales_`, which the reference
code runs right after each SVB step.

The SVD runs in float64 on the CPU (as in the reference, whose SVD is on the CPU too).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normlab import errors
from normlab.errors import ConfigError, InputError
from normlab.reparam._base import as_matrix, check_dim, from_matrix, not_a_module, output_dim
from normlab.reparam._entry import DEFAULT_TARGETS

# -- errors raised here ----------------------------------------------------------------------------


def _check_bound_eps(function: str, eps: object) -> float:
    if not errors.is_finite_number(eps) or eps <= 0:  # type: ignore[operator]
        raise ConfigError(
            f"{function}: eps must be a positive finite number (singular values are clipped to "
            f"[1/(1+eps), 1+eps]); got eps={eps!r}. The reference code uses 0.5 (svBFactor "
            "1.5); its README fixes 0.05 for the ConvNet studies."
        )
    return float(eps)


def _check_weight(weight: object, groups: object) -> Tensor:
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() < 2:
        got = (
            f"a {weight.dim()}-D {weight.dtype} tensor"
            if isinstance(weight, Tensor)
            else type(weight).__name__
        )
        raise InputError(
            "bounded_singular_values: weight must be a floating-point tensor with at least 2 "
            f"dimensions (a Linear or conv weight); got {got}. Pass layer.weight."
        )
    if (
        isinstance(groups, bool)
        or not isinstance(groups, int)
        or groups < 1
        or (weight.shape[0] % groups)
    ):
        raise ConfigError(
            f"bounded_singular_values: groups must be a positive int dividing weight.shape[0] "
            f"= {weight.shape[0]}; got groups={groups!r}. Pass the layer's groups (1 for Linear)."
        )
    if not bool(torch.isfinite(weight).all()):
        raise InputError(
            "bounded_singular_values: weight has NaN or Inf entries, which have no SVD; "
            "restore the layer from a checkpoint or re-initialize it (e.g. orthogonal_)."
        )
    return weight


def _parametrized(path: str, module: nn.Module) -> ConfigError:
    kinds = ", ".join(type(p).__name__ for p in module.parametrizations["weight"])
    return ConfigError(
        f"bound_singular_values_: layer {path!r} ({type(module).__name__}) has a parametrized "
        f"weight ({kinds}); bounding its stored original would not bound the weight the layer "
        "uses (weight norm rescales it, spectral norm divides it by σ). Bake it first with "
        "normlab.unparametrize(model), or pass the other layers as an explicit list."
    )


def _not_a_target(path: str, module: object) -> ConfigError:
    return ConfigError(
        f"bound_singular_values_: modules[{path}] is a {type(module).__name__}; SVB bounds "
        "nn.Linear, nn.Conv*d and nn.ConvTranspose*d weights. Pass only those layers, or the "
        "whole model to find them."
    )


def _uninitialized(path: str, module: nn.Module) -> ConfigError:
    return ConfigError(
        f"bound_singular_values_: layer {path!r} ({type(module).__name__}) is lazy and has no "
        "weight yet; run one forward pass first."
    )


def _nothing_to_bound(model: object) -> ConfigError:
    return ConfigError(
        f"bound_singular_values_: found no nn.Linear / nn.Conv*d / nn.ConvTranspose*d layer in "
        f"{type(model).__name__}; SVB has nothing to bound. Pass the model that holds them."
    )


# -- the projection --------------------------------------------------------------------------------


def _groups(module: nn.Module) -> int:
    return int(getattr(module, "groups", 1))


def bounded_singular_values(weight: Tensor, eps: float, dim: int = 0, *, groups: int = 1) -> Tensor:
    r"""The weight with every singular value clipped to [1/(1+ε), 1+ε] (pure; no gradient).

    $$ W = U \Sigma V^\top, \quad W' = U \,\mathrm{clip}(\Sigma, \tfrac{1}{1+\epsilon},
       1+\epsilon)\, V^\top $$

    W is ``weight`` as a (units, fan-in) matrix, with the output units at ``dim`` (0 for
    Linear and Conv, 1 for ConvTranspose: `normlab.reparam._base.output_dim`). With
    ``groups`` > 1 each group's block (the grouped layer's own linear map) is bounded.

    The SVD is computed in float64; the result is cast back to the weight's dtype and device.
    The clip interval is narrowed by the rounding bound of that cast (Weyl: a perturbation E
    moves a singular value by at most ‖E‖₂ ≤ u·‖W'‖_F), so a float32 weight's singular values
    lie in [1/(1+ε), 1+ε] exactly, a float64 weight's up to float64 round-off (~1e-15); for
    float16 / bfloat16 that bound can exceed the interval and is not guaranteed.

    Args:
        eps: ε > 0; the reference code uses 0.5, its README sweeps {0.01, 0.05, 0.2, 0.5, 1}.
        dim: the dimension of the output units.
        groups: the layer's ``groups`` (the blocks split ``weight``'s dimension 0).
        weight: W, the weight to bound (not modified).

    Shape:
        weight: (units, fan-in) or a conv filter bank; output: same shape and dtype.

    Example:
        >>> bounded_singular_values(torch.diag(torch.tensor([3.0, 1.0, 0.1])), eps=0.5).diag()
        tensor([1.5000, 1.0000, 0.6667])

    References:
        Jia, Tao, Gao & Xu, "Improving Training of Deep Neural Networks via Singular Value
        Bounding", CVPR 2017, arXiv:1611.06013.
    """
    eps = _check_bound_eps("bounded_singular_values", eps)
    weight = _check_weight(weight, groups)
    dim = check_dim("bounded_singular_values", dim, weight.dim())
    if dim is None:  # check_dim allows None (one norm over the whole weight); SVB needs a matrix
        raise errors.ConfigError(
            "bounded_singular_values: dim=None has no (units, fan-in) matrix; pass the output "
            "units' dimension (0 for Linear and Conv, 1 for ConvTranspose)."
        )
    with torch.no_grad():
        chunks = weight.detach().to(device="cpu", dtype=torch.float64).chunk(groups, 0)
        matrices = torch.stack([as_matrix(c, dim) for c in chunks])
        u, s, vh = torch.linalg.svd(matrices, full_matrices=False)
        high, low = 1.0 + eps, 1.0 / (1.0 + eps)
        margin = min(
            torch.finfo(weight.dtype).eps * math.sqrt(max(s.shape[-1], 1)) * high,
            (high - low) / 4,
        )
        s = s.clamp(low + margin, high - margin)
        bounded = (u * s.unsqueeze(-2)) @ vh
        out = torch.cat([from_matrix(m, c, dim) for m, c in zip(bounded, chunks, strict=True)])
    return out.to(device=weight.device, dtype=weight.dtype)


# -- whole models ------------------------------------------------------------------------------


class SingularValueRange(NamedTuple):
    """A layer's largest and smallest singular value before and after `bound_singular_values_`
    (after: measured on the stored weight, in float64; over every group of a grouped layer)."""

    largest_before: float
    smallest_before: float
    largest_after: float
    smallest_after: float


def _layers(model_or_modules: object) -> list[tuple[str, nn.Module]]:
    if isinstance(model_or_modules, nn.Module):
        found = [
            (path or type(m).__name__, m)
            for path, m in model_or_modules.named_modules()
            if isinstance(m, DEFAULT_TARGETS)
        ]
    elif isinstance(model_or_modules, Iterable) and not isinstance(model_or_modules, str):
        found = []
        for i, m in enumerate(model_or_modules):
            if not isinstance(m, nn.Module):
                raise not_a_module(f"bound_singular_values_ (modules[{i}])", m)
            if not isinstance(m, DEFAULT_TARGETS):
                raise _not_a_target(str(i), m)
            found.append((f"modules[{i}]", m))
    else:
        raise not_a_module("bound_singular_values_", model_or_modules)
    if not found:
        raise _nothing_to_bound(model_or_modules)
    for path, m in found:  # every check before any write: a refused call changes nothing
        if parametrize.is_parametrized(m, "weight"):
            raise _parametrized(path, m)
        if isinstance(m.weight, nn.parameter.UninitializedParameter):
            raise _uninitialized(path, m)
    return found


def _extremes(weight: Tensor, dim: int, groups: int) -> tuple[float, float]:
    chunks = weight.detach().to(device="cpu", dtype=torch.float64).chunk(groups, 0)
    s = torch.linalg.svdvals(torch.stack([as_matrix(c, dim) for c in chunks]))
    return float(s.max()), float(s.min())


@torch.no_grad()
def bound_singular_values_(
    model_or_modules: nn.Module | Iterable[nn.Module], eps: float = 0.05
) -> dict[str, SingularValueRange]:
    r"""Singular Value Bounding, in place, on every Linear / Conv / ConvTranspose weight.

    $$ W \leftarrow U \,\mathrm{clip}(\Sigma, \tfrac{1}{1+\epsilon}, 1+\epsilon)\, V^\top $$

    Call it every T_svb optimizer steps (the reference: every 391 iterations, not in the last
    epoch), after ``optimizer.step()``, then `normlab.bound_batch_norm_scales_` for Bounded BN.
    Initialize the weights with ``torch.nn.init.orthogonal_`` as the paper does.

    A layer whose weight is parametrized (weight norm, spectral norm, ...) is refused with a
    ConfigError naming it, before any weight is written: SVB on the stored ``original`` would
    not bound the weight the layer computes with. Zero-size weights are skipped.

    Args:
        model_or_modules: a model (every Linear / Conv*d / ConvTranspose*d in it) or an
            iterable of such layers.
        eps: ε > 0, singular values end in [1/(1+ε), 1+ε]; 0.05 as in the README's ConvNet
            studies (the reference's default is 0.5).

    Returns:
        {layer path: `SingularValueRange`} for every bounded layer.

    Example:
        >>> layer = nn.Linear(4, 4)
        >>> report = bound_singular_values_(layer, eps=0.05)
        >>> 1 / 1.05 <= report["Linear"].smallest_after <= report["Linear"].largest_after <= 1.05
        True

    References:
        Jia, Tao, Gao & Xu, CVPR 2017, arXiv:1611.06013 (reference code: kui-jia/svb).
    """
    eps = _check_bound_eps("bound_singular_values_", eps)
    report: dict[str, SingularValueRange] = {}
    for path, layer in _layers(model_or_modules):
        weight, dim, groups = layer.weight, output_dim(layer), _groups(layer)
        if weight.numel() == 0:
            continue
        before = _extremes(weight, dim, groups)
        weight.copy_(bounded_singular_values(weight, eps, dim, groups=groups))
        report[path] = SingularValueRange(*before, *_extremes(weight, dim, groups))
    return report


# -- registry entries (discovered by normlab.reparam; the registry and normlab.* derive from them)
from normlab.reparam._entry import WeightEntry  # noqa: E402  (this block closes the file)

ENTRIES = (
    WeightEntry(
        "singular_value_bounding",
        None,
        "Jia et al. 2017, arXiv:1611.06013",
        aliases=("svb",),
        exports=(bound_singular_values_,),
        functional=(bounded_singular_values,),
    ),
)
