"""Cosine Normalization (Luo, Zhan, Wang & Yang 2017, arXiv:1702.05870).

The dot product of a layer is replaced by the cosine of the angle between the weight vector
and the input vector:

$$ \\mathrm{net} = \\cos\\theta = \\frac{w \\cdot x}{\\lVert w\\rVert\\,\\lVert x\\rVert}
   \\in [-1, 1], $$

and with a bias, the cosine of the augmented vectors [w; b] and [x; 1]:
(w·x + b)/(sqrt(|w|² + b²)·sqrt(|x|² + 1)). For a convolution x is the receptive-field patch
at each output position: its norm is the square root of a convolution of x² (summed over the
group's channels) with an all-ones kernel of the filter's size, stride, padding and dilation.
``centered=True`` is the paper's centered variant (Pearson correlation): w and the patch
have their means subtracted first.

Pitfall: the output is bounded by 1, so a cosine-normalized *output* layer cannot make
softmax confident: with K classes the cross-entropy cannot go below log(1 + (K − 1)e^{−2})
(0.13 for K = 2, 0.80 for K = 10). Leave the last layer plain, or multiply its output by a
fixed scale (which the paper does not have).

Not subclasses of nn.Linear / nn.Conv2d on purpose: tools that find layers by ``isinstance``
(BN folding, weight-side methods, quantization fusion) would treat them as dot-product layers,
and a cosine layer is invariant to the weight scale they change. Their parameters have
nn.Linear's / nn.Conv2d's names and shapes, so a state dict loads in either direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from normlab import errors
from normlab.reparam._entry import WeightEntry
from normlab.reparam._layers import bad_input, check_input, conv_geometry

__all__ = ["CosineConv2d", "CosineLinear", "cosine_conv2d", "cosine_linear"]

# ε keeps a zero input (or weight) at 0 instead of 0/0; it only acts on norms below it, so
# the output is exactly scale invariant for every other input.
DEFAULT_EPS = 1e-8

# -- the math --------------------------------------------------------------------------------------


def _unit_weight(weight: Tensor, bias: Tensor | None, eps: float, centered: bool) -> Any:
    """w/|[w; b]| and b/|[w; b]| per output unit (w centered over its fan-in if asked)."""
    rows = weight.flatten(1)
    if centered:
        rows = rows - rows.mean(1, keepdim=True)
    norm = torch.linalg.vector_norm(rows, dim=1)
    if bias is not None:
        norm = torch.hypot(norm, bias)
    inverse = norm.clamp_min(eps).reciprocal()
    unit_bias = None if bias is None else bias * inverse
    return (rows * inverse[:, None]).view(weight.shape), unit_bias


def _cosine_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, eps: float, centered: bool
) -> Tensor:
    if centered:
        x = x - x.mean(-1, keepdim=True)
    unit_w, unit_b = _unit_weight(weight, bias, eps, centered)
    x_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    x_norm = torch.hypot(x_norm, x_norm.new_ones(())) if bias is not None else x_norm
    return F.linear(x, unit_w, unit_b) / x_norm.clamp_min(eps)


def cosine_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    eps: float = DEFAULT_EPS,
    centered: bool = False,
) -> Tensor:
    r"""Cosine-normalized linear map; pure.

    $$ y_o = \frac{w_o \cdot x + b_o}{\sqrt{\lVert w_o\rVert^2 + b_o^2}\,
       \sqrt{\lVert x\rVert^2 + 1}} $$

    (without bias: $w_o\cdot x/(\lVert w_o\rVert\lVert x\rVert)$), over the last dimension of
    ``x``; a norm below ``eps`` is taken as ``eps``, so a zero input gives 0.

    Args:
        x: the input, (*, in_features).
        weight: w, shape (out_features, in_features).
        bias: b, shape (out_features,); None: no bias (plain cosine similarity).
        eps: norms below it are taken as ``eps``, so a zero input gives 0.
        centered: subtract the mean of x and of each weight row first (Pearson correlation).

    Example:
        >>> cosine_linear(torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0], [4.0, -3.0]]))
        tensor([[1., 0.]])
    """
    eps = errors.check_eps(eps)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise bad_input("cosine_linear(weight=...)", weight, "(out_features, in_features)")
    check_input("cosine_linear", x, None, weight.shape[1], f"(*, {weight.shape[1]})")
    return _cosine_linear(x, weight, bias, eps, centered)


def _centered_patch_sq_norm(x: Tensor, kernel: Sequence[int], conv: dict[str, Any]) -> Tensor:
    """|p − mean(p)|² of every receptive-field patch p of each group, (N, groups, H', W').

    Two-pass (the patches are unfolded, centered, then squared): the one-pass
    Σp² − (Σp)²/n cancels catastrophically when the patch mean is large.
    """
    n, groups = x.shape[0], conv["groups"]
    padding = conv["padding"]
    if isinstance(padding, str):  # "valid" is 0; "same" pads dilation·(k − 1), more at the end
        total = (
            [0, 0]
            if padding == "valid"
            else [d * (k - 1) for d, k in zip(conv["dilation"], kernel, strict=True)]
        )
        x = F.pad(
            x, (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
        )
        padding = 0
    patches = F.unfold(
        x, tuple(kernel), dilation=conv["dilation"], padding=padding, stride=conv["stride"]
    )  # (N, C·kh·kw, L), channel-major
    patches = patches.view(n, groups, -1, patches.shape[-1])
    sq_norm = (patches - patches.mean(2, keepdim=True)).square().sum(2)
    out_h = _out_size(x.shape[2], kernel[0], conv, padding, 0)
    return sq_norm.view(n, groups, out_h, -1)


def _out_size(size: int, k: int, conv: dict[str, Any], padding: Any, axis: int) -> int:
    pad = padding if isinstance(padding, int) else padding[axis]
    d, st = conv["dilation"][axis], conv["stride"][axis]
    return (size + 2 * pad - d * (k - 1) - 1) // st + 1


def _cosine_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    conv: dict[str, Any],
    eps: float,
    centered: bool,
) -> Tensor:
    groups = conv["groups"]
    n, c, h, w = x.shape
    per_group = x.view(n, groups, c // groups, h, w)
    ones = x.new_ones(groups, 1, *weight.shape[2:])
    # |patch|² (and the patch sum for the centered form) per group: the channel sum first,
    # then a single-channel all-ones conv, far cheaper than the layer's own conv.
    if centered:
        sq_norm = _centered_patch_sq_norm(x, weight.shape[2:], conv)
    else:
        sq_norm = F.conv2d(per_group.square().sum(2), ones, None, **conv)
    if bias is not None:
        sq_norm = sq_norm + 1.0
    # for centered, w_c·(p − mean(p)) = w_c·p since w_c sums to 0: the layer's conv stays.
    unit_w, unit_b = _unit_weight(weight, bias, eps, centered)
    y = F.conv2d(x, unit_w, unit_b, **conv)
    inverse = sq_norm.clamp_min(eps * eps).rsqrt()
    if groups == 1:
        return y * inverse
    return (y.unflatten(1, (groups, -1)) * inverse.unsqueeze(2)).flatten(1, 2)


def cosine_conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: _size_2_t = 1,
    padding: _size_2_t | str = 0,
    dilation: _size_2_t = 1,
    groups: int = 1,
    eps: float = DEFAULT_EPS,
    centered: bool = False,
) -> Tensor:
    r"""Cosine-normalized 2-d convolution; pure.

    $$ y_{o,p} = \frac{w_o \cdot x_p + b_o}{\sqrt{\lVert w_o\rVert^2 + b_o^2}\,
       \sqrt{\lVert x_p\rVert^2 + 1}} $$

    with x_p the receptive-field patch of output position p (the group's input channels ×
    the kernel window, zero padding included); without bias the "+ b²" and "+ 1" go. Norms
    below ``eps`` are taken as ``eps``. ``stride``, ``padding``, ``dilation``, ``groups`` as
    in ``F.conv2d``.

    Args:
        x: the input, (N, C_in, H, W).
        weight: the filters, (C_out, C_in/groups, kh, kw).
        bias: b, shape (C_out,); None: no bias.
        eps: norms below it are taken as ``eps``, so a zero patch gives 0.
        centered: subtract the mean of each filter and of each patch first.

    Example:
        >>> x = torch.ones(1, 1, 3, 3)
        >>> cosine_conv2d(x, torch.full((1, 1, 2, 2), 5.0)).squeeze()
        tensor([[1., 1.],
                [1., 1.]])
    """
    eps = errors.check_eps(eps)
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise bad_input("cosine_conv2d(weight=...)", weight, "(C_out, C_in/groups, kh, kw)")
    channels = weight.shape[1] * groups
    check_input("cosine_conv2d", x, 4, channels, f"(N, {channels}, H, W)")
    conv = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    return _cosine_conv2d(x, weight, bias, conv, eps, centered)


def _reset(weight: Tensor, bias: Tensor | None) -> None:
    """nn.Linear's / nn.Conv2d's initialization (Kaiming-uniform with a = sqrt(5))."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(weight[0].numel())
        nn.init.uniform_(bias, -bound, bound)


class CosineLinear(nn.Module):
    r"""A linear layer whose output is the cosine of its weight row and its input.

    $$ y_o = \frac{w_o \cdot x + b_o}{\sqrt{\lVert w_o\rVert^2 + b_o^2}\,
       \sqrt{\lVert x\rVert^2 + 1}} \in [-1, 1] $$

    (without bias: $\cos(w_o, x)$). Same in training and eval; no buffers. Invariant to
    rescaling w (with b) and x by positive factors. Do not use it as the output layer of a
    classifier (see the module docstring: the loss is bounded below).

    Args:
        eps: norms below it count as ``eps``, so a zero input gives 0.
        centered: subtract the mean of x and of each weight row first (Pearson correlation).

    Shape:
        Input (*, in_features); output (*, out_features).

    Example:
        >>> layer = CosineLinear(4, 3)
        >>> bool(layer(torch.randn(5, 4)).abs().max() <= 1)
        True

    References:
        Luo, Zhan, Wang & Yang, "Cosine Normalization: Using Cosine Similarity Instead of
        Dot Product in Neural Networks", 2017, arXiv:1702.05870.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        eps: float = DEFAULT_EPS,
        centered: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.in_features = errors.check_num_features(in_features, "in_features")
        self.out_features = errors.check_num_features(out_features, "out_features")
        self.eps, self.centered = errors.check_eps(eps), bool(centered)
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(out_features, **kw)) if bias else None
        _reset(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        check_input("CosineLinear", x, None, self.in_features, f"(*, {self.in_features})")
        return _cosine_linear(x, self.weight, self.bias, self.eps, self.centered)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"eps={self.eps}, centered={self.centered}"
        )


class CosineConv2d(nn.Module):
    r"""A 2-d convolution whose output is the cosine of each filter and each input patch.

    $$ y_{o,p} = \frac{w_o \cdot x_p + b_o}{\sqrt{\lVert w_o\rVert^2 + b_o^2}\,
       \sqrt{\lVert x_p\rVert^2 + 1}} \in [-1, 1] $$

    with x_p the receptive-field patch (the group's channels × the kernel window, zero padding
    included). Same in training and eval; no buffers.

    Args:
        padding_mode: must be ``"zeros"`` (the patch norm counts padded positions as zeros).
        eps: norms below it count as ``eps``, so a zero patch gives 0.
        centered: subtract the mean of each filter and of each patch first.

    Shape:
        Input (N, in_channels, H, W); output (N, out_channels, H', W') as nn.Conv2d.

    Example:
        >>> conv = CosineConv2d(3, 4, 3, padding=1)
        >>> conv(torch.randn(2, 3, 5, 5)).shape
        torch.Size([2, 4, 5, 5])

    References:
        Luo, Zhan, Wang & Yang 2017, arXiv:1702.05870.
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
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        eps: float = DEFAULT_EPS,
        centered: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        geometry = conv_geometry("CosineConv2d", in_channels, out_channels, kernel_size, stride,
                                 padding, dilation, groups, padding_mode)  # fmt: skip
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = geometry.kernel_size, geometry.stride
        self.padding, self.dilation = geometry.padding, geometry.dilation
        self.eps, self.centered = errors.check_eps(eps), bool(centered)
        kw = {"device": device, "dtype": dtype}
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        _reset(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        expected = f"(N, {self.in_channels}, H, W)"
        check_input("CosineConv2d", x, 4, self.in_channels, expected)
        conv = {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}  # fmt: skip
        return _cosine_conv2d(x, self.weight, self.bias, conv, self.eps, self.centered)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}, eps={self.eps}, "
            f"centered={self.centered}"
        )


ENTRIES = (
    WeightEntry(
        name="cosine_norm",
        apply=None,
        paper="Luo et al. 2017, arXiv:1702.05870",
        aliases=("cosine",),
        functional=(cosine_linear, cosine_conv2d),
        exports=(CosineLinear, CosineConv2d),
    ),
)
