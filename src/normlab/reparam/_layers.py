"""What the input-normalizing weight-side layers share (cosine normalization, normalization
propagation): their input check and their conv geometry, with the errors these raise."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.common_types import _size_2_t

from normlab import errors
from normlab.errors import ConfigError, InputError

#: torch.nn's layer arguments, described once for the layers and functional forms of
#: `normlab.reparam` that take them (`WeightEntry` adds them to their ``Args:``).
TORCH_ARGS: dict[str, str] = {
    "in_channels": "C_in, channels of the input (as ``nn.Conv2d``).",
    "out_channels": "C_out, channels of the output: the number of filters.",
    "kernel_size": "the filters' spatial size: an int or a pair (kh, kw).",
    "stride": "the convolution's stride: an int or a pair.",
    "padding": "padding added to both sides of the input: an int, a pair, or ``\"valid\"`` / "
    "``\"same\"`` (as ``nn.Conv2d``).",
    "dilation": "spacing between the kernel's elements: an int or a pair.",
    "groups": "blocked connections: the input and output channels are split into this "
    "many groups, each filter seeing its group's input channels; must divide both.",
    "bias": "learn an additive bias (as torch.nn).",
    "padding_mode": "how the input is padded: ``\"zeros\"``, ``\"reflect\"``, "
    "``\"replicate\"`` or ``\"circular\"`` (as ``nn.Conv2d``).",
    "in_features": "features of the input (its last dimension).",
    "out_features": "features of the output.",
    "device": "device of the parameters (torch.nn's factory argument).",
    "dtype": "floating-point dtype of the parameters (torch.nn's factory argument); None: "
    "torch's default dtype.",
}

# -- errors raised here ----------------------------------------------------------------------------


def bad_input(layer: str, x: object, expected: str) -> InputError:
    got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
    return InputError(
        f"{layer} expected a floating-point input of shape {expected}; got {got}"
        + (f" of dtype {x.dtype}" if isinstance(x, Tensor) else "")
        + ". Reshape or convert it (x.float()) first."
    )


def _bad_padding_mode(layer: str, padding_mode: object) -> ConfigError:
    return ConfigError(
        f"{layer}: padding_mode={padding_mode!r} is not supported; only 'zeros' is (the "
        "patch norm counts padded positions as zeros). Pad the input yourself with F.pad and "
        "pass padding=0 for another mode."
    )


def _not_divisible(layer: str, in_channels: int, out_channels: int, groups: object) -> ConfigError:
    return ConfigError(
        f"{layer}: in_channels ({in_channels}) and out_channels ({out_channels}) must be "
        f"divisible by groups ({groups!r}); pass a positive int groups that divides both."
    )


def check_input(layer: str, x: object, ndim: int | None, channels: int, expected: str) -> None:
    """``x`` is a float tensor with ``channels`` at dim 1 (``ndim`` given) or last (None)."""
    if (
        not isinstance(x, Tensor)
        or not x.is_floating_point()
        or x.dim() != (ndim or max(x.dim(), 1))
        or x.shape[1 if ndim else -1] != channels
    ):
        raise bad_input(layer, x, expected)


def conv_geometry(
    layer: str,
    in_channels: int,
    out_channels: int,
    kernel_size: _size_2_t,
    stride: _size_2_t,
    padding: _size_2_t | str,
    dilation: _size_2_t,
    groups: int,
    padding_mode: str = "zeros",
) -> nn.Conv2d:
    """A weightless nn.Conv2d (on the meta device) holding the checked, normalized geometry
    (kernel_size, stride, padding, dilation as tuples) of ``layer``."""
    errors.check_num_features(in_channels, "in_channels")
    errors.check_num_features(out_channels, "out_channels")
    if padding_mode != "zeros":
        raise _bad_padding_mode(layer, padding_mode)
    if (
        isinstance(groups, bool)
        or not isinstance(groups, int)
        or groups <= 0
        or in_channels % groups
        or out_channels % groups
    ):
        raise _not_divisible(layer, in_channels, out_channels, groups)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                     bias=False, device="meta")  # fmt: skip
