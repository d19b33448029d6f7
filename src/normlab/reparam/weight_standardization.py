r"""Weight Standardization (Qiao, Wang, Liu, Shen & Yuille 2019, arXiv:1903.10520).

Each output unit's weights are standardized over their fan-in before the layer uses them:

$$ \hat W_o = \frac{W_o - \mu_o}{\sqrt{\sigma_o^2 + \epsilon}}, \quad
   \mu_o = \tfrac{1}{I}\textstyle\sum_i W_{o,i}, \quad
   \sigma_o^2 = \tfrac{1}{I}\textstyle\sum_i (W_{o,i} - \mu_o)^2 $$

with I the fan-in (C_in/groups · kh · kw for a conv). Three std conventions circulate and
give slightly different weights (METHODS.md §22a, Appendix B):

- the paper's text, σ = sqrt(var + ε) with the biased variance — normlab's default
  (``unbiased=False, eps_in_sqrt=True``). It is also timm's ``StdConv2d`` (ε = 1e-6) and
  BiT's (ε = 1e-10), so their checkpoints load with ``eps=`` alone; it is a LayerNorm of each
  filter, one fused kernel forward and backward (the ≤ 1.3x cost target on a Linear 1024²
  is out of reach with the five element-wise passes of the other forms);
- the authors' PyTorch code (``joe-siyuan-qiao/WeightStandardization``): torch's default
  *unbiased* std with ε = 1e-5 added to the std (``unbiased=True, eps_in_sqrt=False``). It
  differs from the default by the factor sqrt((I − 1)/I) per filter and the ε placement,
  which the norm layer that follows a WS conv absorbs; choose it to match that code exactly;
- the authors' TF code: biased std + ε (``unbiased=False, eps_in_sqrt=False``).

Identical in training and eval; no buffers. A filter whose weights are all equal (zero
variance) becomes zeros (up to its rounding error times 1/sqrt(ε)): W − μ vanishes and the
denominator is at least sqrt(ε) (or ε); never NaN, and its gradient is finite.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab import errors
from normlab.errors import ConfigError
from normlab.reparam._base import (
    WeightParametrization,
    _tensor,
    as_matrix,
    effective_weight,
    from_matrix,
    output_dim,
    register_once,
)
from normlab.reparam._entry import WeightEntry

__all__ = ["WSConv2d", "WeightStandardization", "standardized_weight", "weight_standardization"]

# -- errors raised here ----------------------------------------------------------------------------


def _bad_dim(function: str, dim: object, ndim: int) -> ConfigError:
    return ConfigError(
        f"{function}: dim={dim!r} is out of range for a weight with {ndim} dimensions; pass an "
        f"int in [{-ndim}, {ndim - 1}], the dimension of the output units (0 for Linear and "
        "Conv, 1 for ConvTranspose), or leave dim=None to take it from the module."
    )


def _fan_in_too_small(function: str, shape: tuple[int, ...], dim: int) -> ConfigError:
    return ConfigError(
        f"{function}: a weight of shape {shape} has a fan-in of "
        f"{_fan_in(shape, dim)} per output unit (dim={dim}); standardizing fewer than 2 weights "
        "sets them all to 0. Weight standardization needs a fan-in of at least 2 (skip= this "
        "layer in normlab.parametrize)."
    )


def _not_a_flag(function: str, name: str, value: object) -> ConfigError:
    return ConfigError(f"{function}: {name} must be True or False; got {value!r}.")


# -- the math --------------------------------------------------------------------------------------


def _fan_in(shape: tuple[int, ...], dim: int) -> int:
    return int(torch.Size(shape).numel() // shape[dim]) if shape[dim] else 0


def _check(
    function: str, weight: Tensor, dim: object, eps: object, unbiased: object, eps_in_sqrt: object
) -> tuple[int, float]:
    ndim = weight.dim()
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise _bad_dim(function, dim, ndim)
    dim %= ndim
    if _fan_in(tuple(weight.shape), dim) < 2:
        raise _fan_in_too_small(function, tuple(weight.shape), dim)
    for name, flag in (("unbiased", unbiased), ("eps_in_sqrt", eps_in_sqrt)):
        if not isinstance(flag, bool):
            raise _not_a_flag(function, name, flag)
    return dim, errors.check_eps(eps)


def _standardize(weight: Tensor, dim: int, eps: float, unbiased: bool, eps_in_sqrt: bool) -> Tensor:
    if eps_in_sqrt:
        # One fused layer_norm (forward and backward) over each unit's fan-in. The unbiased
        # form is the same up to a constant: (W − μ)/sqrt(n/(n−1)·σ_b² + ε) =
        # sqrt((n−1)/n)·(W − μ)/sqrt(σ_b² + ε(n−1)/n).
        rows = as_matrix(weight, dim)
        n = rows.shape[1]
        shrink = (n - 1) / n if unbiased else 1.0
        out = F.layer_norm(rows, (n,), eps=eps * shrink)
        return from_matrix(out * math.sqrt(shrink) if unbiased else out, weight, dim)
    others = [d for d in range(weight.dim()) if d != dim]
    var, mean = torch.var_mean(weight, dim=others, correction=int(unbiased), keepdim=True)
    # clamp_min keeps sqrt's backward finite for a zero-variance filter (its mask zeroes the
    # gradient there); tiny is far below any eps, so it never changes a value.
    std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
    return (weight - mean) / (std + eps)


def standardized_weight(
    weight: Tensor,
    eps: float = 1e-5,
    dim: int = 0,
    *,
    unbiased: bool = False,
    eps_in_sqrt: bool = True,
) -> Tensor:
    r"""The weight-standardized weight: each output unit standardized over its fan-in; pure.

    $$ \hat W_o = \frac{W_o - \mu_o}{\sqrt{\sigma_o^2 + \epsilon}} $$

    (``eps_in_sqrt=False``: $(W_o - \mu_o)/(\sigma_o + \epsilon)$), with μ_o and σ_o over
    every dimension except ``dim`` (the output units), σ biased unless ``unbiased=True``.

    Args:
        weight: W, with the output units along ``dim``.
        eps: ε, added to σ² (or, with ``eps_in_sqrt=False``, to σ).
        dim: the dimension of the output units (0 for Linear and Conv).
        unbiased: σ² with Bessel's correction (n − 1); False: the biased variance.
        eps_in_sqrt: ε inside the square root, sqrt(σ² + ε); False: σ + ε.

    Example:
        >>> w = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
        >>> standardized_weight(w, unbiased=True, eps_in_sqrt=False)
        tensor([[-1.0000,  0.0000,  1.0000],
                [ 0.0000,  0.0000,  0.0000]])
    """
    dim, eps = _check("standardized_weight", weight, dim, eps, unbiased, eps_in_sqrt)
    return _standardize(weight, dim, eps, unbiased, eps_in_sqrt)


class WeightStandardization(WeightParametrization):
    """The parametrization `weight_standardization` registers: ``forward(W) = Ŵ``."""

    method = "weight_standardization"
    has_state = False

    def __init__(
        self, dim: int = 0, eps: float = 1e-5, unbiased: bool = False, eps_in_sqrt: bool = True
    ) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.unbiased, self.eps_in_sqrt = unbiased, eps_in_sqrt

    def forward(self, weight: Tensor) -> Tensor:
        return _standardize(weight, self.dim, self.eps, self.unbiased, self.eps_in_sqrt)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, eps={self.eps}, unbiased={self.unbiased}, "
            f"eps_in_sqrt={self.eps_in_sqrt}"
        )


def weight_standardization(
    module: nn.Module,
    name: str = "weight",
    *,
    dim: int | None = None,
    eps: float = 1e-5,
    unbiased: bool = False,
    eps_in_sqrt: bool = True,
) -> nn.Module:
    r"""Weight Standardization: standardize each output unit's weights over its fan-in.

    $$ \hat W_o = \frac{W_o - \mu_o}{\sqrt{\sigma_o^2 + \epsilon}} $$

    μ_o, σ_o² (biased) over the fan-in of output unit o (all dimensions but ``dim``); the
    layer then uses Ŵ. The default is the paper's equation and timm's ``StdConv2d`` (there
    with ``eps=1e-6``); ``unbiased=True, eps_in_sqrt=False`` is the authors' PyTorch code,
    σ_unbiased + ε (the module docstring compares them). Use it on conv layers followed by
    GroupNorm or BatchNorm, as the paper does; a bias is usually left off.

    Args:
        module: the layer (nn.Conv*d, nn.Linear, ...); changed in place and returned.
        name: the parameter to standardize.
        dim: the output units' dimension; None (default) takes it from the module (1 for
            ConvTranspose, else 0).
        eps: added to the variance (or to σ with ``eps_in_sqrt=False``).
        unbiased: divide the variance by I − 1 (True, the authors' code) or by I (False).
        eps_in_sqrt: put ε inside the square root (True: the paper's text, timm) or add it
            to σ (False: the authors' code).

    Example:
        >>> conv = weight_standardization(nn.Conv2d(3, 8, 3))
        >>> w = conv.weight.flatten(1)
        >>> var = w.var(1, correction=0)
        >>> bool(w.mean(1).abs().max() < 1e-6), bool((var - 1).abs().max() < 1e-2)
        (True, True)

    References:
        Qiao, Wang, Liu, Shen & Yuille, "Micro-Batch Training with Batch-Channel Normalization
        and Weight Standardization", 2019, arXiv:1903.10520.
    """
    function = "weight_standardization"
    weight = (
        _tensor(module, name) if isinstance(module, nn.Module) and isinstance(name, str) else None
    )
    if isinstance(weight, Tensor):  # else register_once names what is wrong
        weight = effective_weight(module, name)  # after the methods already on it
        dim, eps = _check(
            function, weight, output_dim(module) if dim is None else dim, eps, unbiased,
            eps_in_sqrt,
        )  # fmt: skip
    parametrization = WeightStandardization(dim or 0, eps, unbiased, eps_in_sqrt)
    return register_once(function, module, name, parametrization)


class WSConv2d(nn.Conv2d):
    """nn.Conv2d with `weight_standardization` registered on its weight.

    Takes nn.Conv2d's arguments (``bias`` defaults to False, as WS convs are followed by a
    norm layer) plus the keyword-only ``eps``, ``unbiased`` and ``eps_in_sqrt`` of
    `weight_standardization`. Its state dict is that of ``weight_standardization(
    nn.Conv2d(...))`` (``parametrizations.weight.original``, ``bias``).

    Args:
        bias: learn an additive bias; False by default, as a norm layer follows WS convs.
        eps: ε of `weight_standardization`, added to σ² (or σ).
        unbiased: standardize with the unbiased variance; False: the biased one.
        eps_in_sqrt: sqrt(σ² + ε); False: σ + ε.

    Example:
        >>> WSConv2d(3, 8, 3, padding=1)(torch.randn(2, 3, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        eps: float = 1e-5,
        unbiased: bool = False,
        eps_in_sqrt: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip
        weight_standardization(self, eps=eps, unbiased=unbiased, eps_in_sqrt=eps_in_sqrt)


ENTRIES = (
    WeightEntry(
        name="weight_standardization",
        apply=weight_standardization,
        paper="Qiao et al. 2019, arXiv:1903.10520",
        parametrization=WeightStandardization,
        aliases=("ws",),
        functional=(standardized_weight,),
        exports=(WSConv2d,),
    ),
)
