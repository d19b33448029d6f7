"""Power iteration for the largest singular value of a linear operator, and the two operators
spectral normalization uses: a weight's (units, fan-in) matrix, and the convolution a conv
layer computes at one input size (Sedghi et al. 2019, arXiv:1805.10408; Gouk et al. 2021,
arXiv:1804.04368).

An operator is a pair ``A(x)`` / ``Aᵀ(y)`` of functions of the weight. For the matrix that is
``W_mat @ v`` / ``W_matᵀ @ u``; for a convolution it is ``F.conv{n}d`` and
``F.conv_transpose{n}d`` with the layer's stride, padding, dilation and groups: the transposed
convolution *is* the adjoint of the convolution, so no matrix is ever built.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.errors import ConfigError

_CONV = (None, F.conv1d, F.conv2d, F.conv3d)
_CONV_TRANSPOSE = (None, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)

# -- errors raised here ----------------------------------------------------------------------------


def not_a_conv(module: nn.Module) -> ConfigError:
    return ConfigError(
        f"spectral_norm: exact_conv=True needs a convolution (nn.Conv1d/2d/3d or "
        f"nn.ConvTranspose1d/2d/3d); got {type(module).__name__}. For nn.Linear the matrix norm "
        "is already the exact operator norm: drop exact_conv=True."
    )


def bad_padding_mode(module: nn.Module) -> ConfigError:
    return ConfigError(
        f"spectral_norm: exact_conv=True supports padding_mode='zeros' only; "
        f"{type(module).__name__} has padding_mode={module.padding_mode!r}, whose operator is "
        "not the zero-padded convolution this bound is computed for. Use padding_mode='zeros', "
        "or exact_conv=False (the reshaped-matrix surrogate)."
    )


def asymmetric_same(module: nn.Module) -> ConfigError:
    return ConfigError(
        f"spectral_norm: exact_conv=True with padding='same' needs an even dilation*(kernel-1) "
        f"in every dimension (symmetric padding); {type(module).__name__} has kernel_size="
        f"{module.kernel_size}, dilation={module.dilation}. Pass an explicit padding= instead."
    )


def bad_input_size(module: nn.Module, input_size: object, spatial: int) -> ConfigError:
    return ConfigError(
        f"spectral_norm: exact_conv=True needs input_size, the spatial size of the layer's "
        f"input (the operator norm of a convolution depends on it); got input_size="
        f"{input_size!r} for {type(module).__name__}. Pass {spatial} positive int(s), e.g. "
        f"input_size={(32,) * spatial}."
    )


def empty_output(module: nn.Module, input_size: tuple[int, ...], output: list[int]) -> ConfigError:
    return ConfigError(
        f"spectral_norm: input_size={input_size} is too small for {type(module).__name__}: "
        f"its output would have spatial size {tuple(output)}. Pass the size of the inputs the "
        "layer really sees."
    )


def no_adjoint(module: nn.Module, input_size: tuple[int, ...]) -> ConfigError:
    return ConfigError(
        f"spectral_norm: exact_conv=True cannot form the adjoint of {type(module).__name__} at "
        f"input_size={input_size} (output_padding >= stride with dilation > stride). Use "
        "exact_conv=False for this layer."
    )


# -- the convolution's geometry --------------------------------------------------------------------


class ConvGeometry(NamedTuple):
    """What the exact operator needs of a conv layer, as plain ints (so it pickles and
    compiles): ``transposed`` layers compute ``conv_transpose`` and have ``conv`` as adjoint."""

    transposed: bool
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    forward_output_padding: tuple[int, ...]  # of the forward op (ConvTranspose's own)
    adjoint_output_padding: tuple[int, ...]  # of the adjoint op (Conv's transpose)
    input_shape: tuple[int, ...]  # (1, C_in, *input_size): v's shape
    output_shape: tuple[int, ...]  # (1, C_out, *output_size): u's shape


def _padding(module: nn.Module) -> tuple[int, ...]:
    padding = module.padding
    if padding == "valid":
        return (0,) * len(module.kernel_size)
    if padding == "same":
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise asymmetric_same(module)
        return tuple(t // 2 for t in total)
    return tuple(padding)


def _input_size(module: nn.Module, input_size: object, spatial: int) -> tuple[int, ...]:
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size,) * spatial
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != spatial
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_size)
    ):
        raise bad_input_size(module, input_size, spatial)
    return tuple(input_size)


def conv_geometry(module: nn.Module, input_size: object) -> ConvGeometry:
    """The operator a zero-padded conv layer computes on inputs of spatial size ``input_size``.

    Raises ConfigError for a module that is not a convolution, a padding mode other than
    zeros, an asymmetric ``padding='same'``, or an ``input_size`` the layer cannot take.
    """
    if not isinstance(module, nn.modules.conv._ConvNd):
        raise not_a_conv(module)
    if module.padding_mode != "zeros":
        raise bad_padding_mode(module)
    spatial = len(module.kernel_size)
    size = _input_size(module, input_size, spatial)
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    padding = _padding(module)
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    extent = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
    if transposed:
        out_pad = tuple(module.output_padding)
        output = [
            (n - 1) * s - 2 * p + e + o
            for n, s, p, e, o in zip(size, stride, padding, extent, out_pad, strict=True)
        ]
        adjoint_pad = (0,) * spatial
        # the adjoint conv must give back exactly the input size (it does unless op >= stride)
        back = [
            (o + 2 * p - e) // s + 1
            for o, p, e, s in zip(output, padding, extent, stride, strict=True)
        ]
        if back != list(size):
            raise no_adjoint(module, size)
    else:
        out_pad = (0,) * spatial
        output = [
            (n + 2 * p - e) // s + 1
            for n, p, e, s in zip(size, padding, extent, stride, strict=True)
        ]
        # conv_transpose maps the output back to (o-1)s - 2p + e; the rows the conv's floor
        # dropped come back as output_padding (always < stride)
        adjoint_pad = tuple(
            n - ((o - 1) * s - 2 * p + e)
            for n, o, s, p, e in zip(size, output, stride, padding, extent, strict=True)
        )
    if any(o < 1 for o in output):
        raise empty_output(module, size, output)
    return ConvGeometry(
        transposed=transposed,
        stride=tuple(stride),
        padding=padding,
        dilation=tuple(dilation),
        groups=module.groups,
        forward_output_padding=out_pad,
        adjoint_output_padding=adjoint_pad,
        input_shape=(1, module.in_channels, *size),
        output_shape=(1, module.out_channels, *output),
    )


def _conv(x: Tensor, weight: Tensor, g: ConvGeometry) -> Tensor:
    return _CONV[len(g.stride)](x, weight, None, g.stride, g.padding, g.dilation, g.groups)


def _conv_transpose(
    x: Tensor, weight: Tensor, g: ConvGeometry, output_padding: tuple[int, ...]
) -> Tensor:
    return _CONV_TRANSPOSE[len(g.stride)](
        x, weight, None, g.stride, g.padding, output_padding, g.groups, g.dilation
    )


def conv_apply(weight: Tensor, v: Tensor, g: ConvGeometry) -> Tensor:
    """A v: the layer's (bias-free) map of one input ``v`` of shape ``g.input_shape``."""
    if g.transposed:
        return _conv_transpose(v, weight, g, g.forward_output_padding)
    return _conv(v, weight, g)


def conv_adjoint(weight: Tensor, u: Tensor, g: ConvGeometry) -> Tensor:
    """Aᵀ u: the adjoint of `conv_apply` (the gradient of ⟨u, A v⟩ with respect to v)."""
    if g.transposed:
        return _conv(u, weight, g)
    return _conv_transpose(u, weight, g, g.adjoint_output_padding)


# -- the power iteration ---------------------------------------------------------------------------


def _normalize_or_keep_(target: Tensor, x: Tensor, eps: float) -> None:
    # A zero (or ≤ eps) image keeps the previous vector: F.normalize would store 0 and the
    # iteration could never leave it again, so σ would stay 0 after one zero-weight step.
    norm = torch.linalg.vector_norm(x)
    target.copy_(torch.where(norm > eps, x / norm, target))


def power_iterate_(
    weight: Tensor, u: Tensor, v: Tensor, iterations: int, eps: float, geometry: ConvGeometry | None
) -> None:
    """``iterations`` steps of Miyato et al. 2018 Algorithm 1, in place, without autograd:

    $$ v \\leftarrow A^\\top u / \\lVert A^\\top u \\rVert_2, \\qquad
       u \\leftarrow A v / \\lVert A v \\rVert_2, $$

    with A the (units, fan-in) matrix ``weight`` (``geometry`` None) or the convolution of
    ``geometry``. In place so that DataParallel replicas update the module's own buffers.
    """
    with torch.no_grad():
        for _ in range(iterations):
            if geometry is None:
                _normalize_or_keep_(v, torch.mv(weight.t(), u), eps)
                _normalize_or_keep_(u, torch.mv(weight, v), eps)
            else:
                _normalize_or_keep_(v, conv_adjoint(weight, u, geometry), eps)
                _normalize_or_keep_(u, conv_apply(weight, v, geometry), eps)


def random_unit(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """A unit vector (in the Frobenius norm) of ``shape``, drawn from N(0, I), on ``like``."""
    x = torch.randn(shape, dtype=like.dtype, device=like.device)
    return x / torch.linalg.vector_norm(x).clamp_min(torch.finfo(x.dtype).tiny)
