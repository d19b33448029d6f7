"""Normalization Propagation (Arpit, Zhou, Kota & Govindaraju 2016, arXiv:1603.01431).

No batch statistics: the network's input is standardized once with data-set statistics, and
every layer keeps its outputs near zero mean and unit variance *analytically*. Pre-activation
unit i divides by its weight norm (for white input, Var(W_i·x) = ‖W_i‖²), and a ReLU output
is re-standardized with the closed-form moments of a rectified standard Gaussian:

$$ u_i = \\gamma_i \\frac{W_i \\cdot x}{\\lVert W_i\\rVert_2} + \\beta_i, \\qquad
   o_i = \\frac{\\mathrm{ReLU}(u_i) - \\sqrt{1/(2\\pi)}}{\\sqrt{\\tfrac12 (1 - 1/\\pi)}}. $$

E[ReLU(z)] = 1/sqrt(2π) and Var[ReLU(z)] = ½(1 − 1/π) for z ~ N(0, 1). The constants are
fixed (derived for γ = 1, β = 0) and not re-derived as γ, β learn; the forward is the same in
training and eval and works at batch size 1. The approximation is exact when the layer's
input is white and the rows of W orthogonal; it degrades with the rows' coherence, so
orthogonal initialization (``nn.init.orthogonal_``) is the natural choice. Max-pooling and
residual sums break the propagated moments; the constants are ReLU's only.

METHODS.md §9 marks the forward formula as recalled, not checked against the paper's
algorithm box; the constants are closed-form and tested against a numerical integral.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from normlab import errors
from normlab.errors import ConfigError
from normlab.reparam._entry import WeightEntry
from normlab.reparam._layers import bad_input, check_input, conv_geometry

__all__ = [
    "RELU_MEAN",
    "RELU_STD",
    "NormPropConv2d",
    "NormPropLinear",
    "norm_prop_conv2d",
    "norm_prop_linear",
]

RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)  # E[ReLU(z)], z ~ N(0, 1)
RELU_STD = math.sqrt(0.5 * (1.0 - 1.0 / math.pi))  # sqrt(Var[ReLU(z)])
ACTIVATIONS = ("relu", None)
# A zero weight row gives u = β instead of 0/0; far below any trained row's norm.
DEFAULT_EPS = 1e-12

# -- errors raised here ----------------------------------------------------------------------------


def _bad_activation(layer: str, activation: object) -> ConfigError:
    return ConfigError(
        f"{layer}: activation={activation!r} is not supported; pass 'relu' (the paper's "
        "re-standardized ReLU) or None (the normalized pre-activation u, e.g. for the last "
        "layer). Other nonlinearities need their own Gaussian moments."
    )


def _check_activation(layer: str, activation: object) -> str | None:
    if activation not in ACTIVATIONS:
        raise _bad_activation(layer, activation)
    return activation  # type: ignore[return-value]  # checked against ACTIVATIONS above


# -- the math --------------------------------------------------------------------------------------


def _effective(
    weight: Tensor, gain: Tensor, bias: Tensor, relu: bool, eps: float
) -> tuple[Tensor, Tensor]:
    """W·γ/‖W‖ and β, both divided by RELU_STD for ReLU (ReLU(u)/s = ReLU(u/s) for s > 0),
    so the layer's output is one conv/matmul, a ReLU and a shift."""
    norm = torch.linalg.vector_norm(weight.flatten(1), dim=1).clamp_min(eps)
    scale = gain / norm
    if relu:
        scale, bias = scale / RELU_STD, bias / RELU_STD
    return weight * scale.view(-1, *[1] * (weight.dim() - 1)), bias


def _epilogue(u: Tensor, relu: bool) -> Tensor:
    # clamp_min saves its input, not its output, so the in-place shift is autograd-safe.
    return u.clamp_min(0.0).sub_(RELU_MEAN / RELU_STD) if relu else u


def norm_prop_linear(
    x: Tensor,
    weight: Tensor,
    gain: Tensor,
    bias: Tensor,
    *,
    activation: str | None = "relu",
    eps: float = DEFAULT_EPS,
) -> Tensor:
    r"""A Normalization Propagation linear layer; pure.

    $$ o_i = \frac{\mathrm{ReLU}(\gamma_i W_i\cdot x/\lVert W_i\rVert + \beta_i)
       - \sqrt{1/(2\pi)}}{\sqrt{\tfrac12(1 - 1/\pi)}} $$

    (``activation=None``: the pre-activation $u_i = \gamma_i W_i\cdot x/\lVert W_i\rVert +
    \beta_i$), over the last dimension of ``x``; ``gain`` is γ, ``bias`` is β.

    Args:
        x: the input, (*, in_features), standardized.
        weight: W, shape (out_features, in_features).
        gain: γ, shape (out_features,).
        bias: β, shape (out_features,).
        activation: ``"relu"``, or None for the pre-activation u.
        eps: a weight-row norm below it counts as ``eps``.

    Example:
        >>> w, one, zero = torch.eye(2), torch.ones(2), torch.zeros(2)
        >>> norm_prop_linear(torch.tensor([[0.0, 1.0]]), w, one, zero)
        tensor([[-0.6833,  1.0295]])
    """
    relu = _check_activation("norm_prop_linear", activation) == "relu"
    eps = errors.check_eps(eps)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise bad_input("norm_prop_linear(weight=...)", weight, "(out_features, in_features)")
    check_input("norm_prop_linear", x, None, weight.shape[1], f"(*, {weight.shape[1]})")
    w, b = _effective(weight, gain, bias, relu, eps)
    return _epilogue(F.linear(x, w, b), relu)


def norm_prop_conv2d(
    x: Tensor,
    weight: Tensor,
    gain: Tensor,
    bias: Tensor,
    *,
    stride: _size_2_t = 1,
    padding: _size_2_t | str = 0,
    dilation: _size_2_t = 1,
    groups: int = 1,
    activation: str | None = "relu",
    eps: float = DEFAULT_EPS,
) -> Tensor:
    r"""A Normalization Propagation 2-d convolution; pure.

    $$ o_{i,p} = \frac{\mathrm{ReLU}(\gamma_i W_i\cdot x_p/\lVert W_i\rVert + \beta_i)
       - \sqrt{1/(2\pi)}}{\sqrt{\tfrac12(1 - 1/\pi)}} $$

    with W_i the flattened filter i and x_p the patch at output position p; ``stride``,
    ``padding``, ``dilation``, ``groups`` as in ``F.conv2d``.

    Args:
        x: the input, (N, C_in, H, W).
        weight: the filters W, (C_out, C_in/groups, kh, kw).
        gain: γ, shape (C_out,).
        bias: β, shape (C_out,).
        activation: ``"relu"``, or None for the pre-activation u.
        eps: a filter norm below it counts as ``eps``.

    Example:
        >>> w = torch.full((1, 1, 1, 1), 3.0)
        >>> norm_prop_conv2d(torch.ones(1, 1, 1, 1), w, torch.ones(1), torch.zeros(1))
        tensor([[[[1.0295]]]])
    """
    relu = _check_activation("norm_prop_conv2d", activation) == "relu"
    eps = errors.check_eps(eps)
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise bad_input("norm_prop_conv2d(weight=...)", weight, "(C_out, C_in/groups, kh, kw)")
    channels = weight.shape[1] * groups
    check_input("norm_prop_conv2d", x, 4, channels, f"(N, {channels}, H, W)")
    w, b = _effective(weight, gain, bias, relu, eps)
    return _epilogue(F.conv2d(x, w, b, stride, padding, dilation, groups), relu)


class _NormProp(nn.Module):
    """What both layers share: γ (``gain``, init 1), β (``bias``, init 0), the activation."""

    weight: nn.Parameter

    def _init(self, shape: tuple[int, ...], activation: object, eps: object, **kw: Any) -> None:
        self.activation = _check_activation(type(self).__name__, activation)
        self.eps = errors.check_eps(eps)
        self.weight = nn.Parameter(torch.empty(shape, **kw))
        self.gain = nn.Parameter(torch.ones(shape[0], **kw))
        self.bias = nn.Parameter(torch.zeros(shape[0], **kw))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's; scale is moot

    def _effective(self) -> tuple[Tensor, Tensor]:
        relu = self.activation == "relu"
        return _effective(self.weight, self.gain, self.bias, relu, self.eps)


class NormPropLinear(_NormProp):
    r"""A linear layer with Normalization Propagation (and, by default, its ReLU).

    $$ o_i = \frac{\mathrm{ReLU}(\gamma_i W_i\cdot x/\lVert W_i\rVert + \beta_i)
       - \sqrt{1/(2\pi)}}{\sqrt{\tfrac12(1 - 1/\pi)}} $$

    Feed it standardized inputs (data-set mean and std per feature); no batch statistics,
    no buffers, same in training and eval.

    Args:
        activation: ``"relu"`` (default) or None for the pre-activation u (a last layer).
        eps: a weight row norm below it counts as ``eps``.

    Shape:
        Input (*, in_features); output (*, out_features).

    Example:
        >>> layer = NormPropLinear(64, 64)
        >>> _ = nn.init.orthogonal_(layer.weight)
        >>> y = layer(torch.randn(4096, 64))
        >>> bool(y.mean().abs() < 0.05), bool((y.var() - 1).abs() < 0.1)
        (True, True)

    References:
        Arpit, Zhou, Kota & Govindaraju, "Normalization Propagation: A Parametric Technique
        for Removing Internal Covariate Shift in Deep Networks", ICML 2016, arXiv:1603.01431.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str | None = "relu",
        eps: float = DEFAULT_EPS,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = errors.check_num_features(in_features, "in_features")
        self.out_features = errors.check_num_features(out_features, "out_features")
        self._init((out_features, in_features), activation, eps, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_input("NormPropLinear", x, None, self.in_features, f"(*, {self.in_features})")
        w, b = self._effective()
        return _epilogue(F.linear(x, w, b), self.activation == "relu")

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, activation={self.activation!r}"


class NormPropConv2d(_NormProp):
    r"""A 2-d convolution with Normalization Propagation (and, by default, its ReLU).

    $$ o_{i,p} = \frac{\mathrm{ReLU}(\gamma_i W_i\cdot x_p/\lVert W_i\rVert + \beta_i)
       - \sqrt{1/(2\pi)}}{\sqrt{\tfrac12(1 - 1/\pi)}} $$

    W_i is filter i flattened over (C_in/groups, kh, kw); the standardization assumes the
    patch entries are white, which neighbouring pixels only approximate.

    Args:
        activation: ``"relu"`` (default) or None.
        eps: a filter norm below it counts as ``eps``.

    Shape:
        Input (N, in_channels, H, W); output (N, out_channels, H', W') as nn.Conv2d.

    Example:
        >>> NormPropConv2d(3, 8, 3, padding=1)(torch.randn(2, 3, 5, 5)).shape
        torch.Size([2, 8, 5, 5])

    References:
        Arpit, Zhou, Kota & Govindaraju, ICML 2016, arXiv:1603.01431.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _size_2_t,
        stride: _size_2_t = 1,
        padding: _size_2_t | str = 0,
        dilation: _size_2_t = 1,
        groups: int = 1,
        *,
        activation: str | None = "relu",
        eps: float = DEFAULT_EPS,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        geometry = conv_geometry("NormPropConv2d", in_channels, out_channels, kernel_size,
                                 stride, padding, dilation, groups)  # fmt: skip
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = geometry.kernel_size, geometry.stride
        self.padding, self.dilation = geometry.padding, geometry.dilation
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init(shape, activation, eps, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        expected = f"(N, {self.in_channels}, H, W)"
        check_input("NormPropConv2d", x, 4, self.in_channels, expected)
        w, b = self._effective()
        y = F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return _epilogue(y, self.activation == "relu")

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, activation={self.activation!r}"
        )


ENTRIES = (
    WeightEntry(
        name="norm_prop",
        apply=None,
        paper="Arpit et al. 2016, arXiv:1603.01431",
        aliases=("normprop",),
        functional=(norm_prop_linear, norm_prop_conv2d),
        exports=(NormPropLinear, NormPropConv2d),
    ),
)
