"""Self-normalizing networks' initialization (Klambauer, Unterthiner, Mayr & Hochreiter 2017,
arXiv:1706.02515).

A SELU network keeps activations near mean 0 and variance 1 without any normalization layer:
(0, 1) is an attracting fixed point of the layer-to-layer moment map when the weights have
Σw ≈ 0 and Σw² ≈ 1 per unit, i.e. LeCun-normal initialization w ~ N(0, 1/fan_in), and the
inputs are standardized. The activation is ``torch.nn.SELU`` and the dropout that preserves
the fixed point is ``torch.nn.AlphaDropout``; this file provides the initialization, which
torch has no one-call form of (``nn.init.kaiming_normal_(w, nonlinearity="linear")`` is it for
Linear and Conv, but reads a ConvTranspose's fan-in from the wrong dimension).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normlab.errors import ConfigError
from normlab.reparam._base import as_matrix, not_a_module, output_dim
from normlab.reparam._entry import DEFAULT_TARGETS

# -- errors raised here ----------------------------------------------------------------------------


def _parametrized(path: str, module: nn.Module) -> ConfigError:
    kinds = ", ".join(type(p).__name__ for p in module.parametrizations["weight"])
    return ConfigError(
        f"selu_init_: layer {path!r} ({type(module).__name__}) has a parametrized weight "
        f"({kinds}); drawing its stored original from N(0, 1/fan_in) would not give the "
        "weight the layer uses that law. Initialize before parametrizing, or bake it first "
        "with normlab.unparametrize(model)."
    )


def _uninitialized(path: str, module: nn.Module) -> ConfigError:
    return ConfigError(
        f"selu_init_: layer {path!r} ({type(module).__name__}) is lazy and has no weight yet; "
        "run one forward pass first, then call selu_init_."
    )


def _nothing_to_init(model: nn.Module) -> ConfigError:
    return ConfigError(
        f"selu_init_: found no nn.Linear / nn.Conv*d / nn.ConvTranspose*d layer in "
        f"{type(model).__name__}; there is nothing to initialize. Pass the model that holds "
        "them."
    )


# -- the initialization ----------------------------------------------------------------------------


def fan_in(module: nn.Module) -> int:
    """The number of inputs one output unit of a Linear / Conv / ConvTranspose weighs.

    in_features for Linear; in_channels/groups · ∏kernel for Conv and ConvTranspose alike: the
    width of one group's (units, fan-in) matrix (`normlab.reparam._base.as_matrix` with the
    output units at `output_dim`). torch's ``_calculate_fan_in_and_fan_out`` reads weight.size(1)
    as the fan-in, which for a ConvTranspose (weight (C_in, C_out/groups, *k)) is its fan-out.
    For a ConvTranspose with stride s > 1 an output position receives only about ∏(k/s) of the
    ∏k taps per input channel, so its variance is correspondingly below 1.
    """
    weight = module.weight
    if weight.dim() < 2:
        return 1
    # one group's block: a ConvTranspose's weight (C_in, C_out/groups, *k) spans every group's
    # inputs along dim 0, a Conv's (C_out, C_in/groups, *k) already holds one group's
    block = weight.chunk(int(getattr(module, "groups", 1)), 0)[0]
    return int(as_matrix(block, output_dim(module)).shape[1])


@torch.no_grad()
def selu_init_(model: nn.Module, *, generator: torch.Generator | None = None) -> nn.Module:
    r"""LeCun-normal initialization of every Linear / Conv / ConvTranspose for a SELU network.

    $$ w \sim \mathcal{N}\!\left(0, \tfrac{1}{\mathrm{fan\_in}}\right), \qquad b = 0 $$

    fan_in as `fan_in` (in·kh·kw/groups for conv, ConvTranspose counted from its input
    channels). With ``torch.nn.SELU`` activations (λ ≈ 1.0507, α ≈ 1.6733) and standardized
    inputs this puts the network at the fixed point mean 0 / variance 1 of Klambauer et al.'s
    Theorem 1; use ``torch.nn.AlphaDropout`` (rate 0.05 or 0.1), never ordinary dropout or BN.

    A parametrized weight is refused with a ConfigError naming the layer (every layer is
    checked before any is written).

    Args:
        model: the model (or a single layer).
        generator: the random generator to draw from (default: torch's global one).

    Returns:
        ``model``, initialized in place.

    Example:
        >>> layer = selu_init_(nn.Linear(400, 300), generator=torch.Generator().manual_seed(0))
        >>> w, b = layer.weight.detach(), layer.bias.detach()
        >>> round(float(w.var() * 400), 1), float(b.abs().max())
        (1.0, 0.0)

    References:
        Klambauer, Unterthiner, Mayr & Hochreiter, "Self-Normalizing Neural Networks",
        NeurIPS 2017, arXiv:1706.02515.
    """
    if not isinstance(model, nn.Module):
        raise not_a_module("selu_init_", model)
    layers = [
        (path or type(m).__name__, m)
        for path, m in model.named_modules()
        if isinstance(m, DEFAULT_TARGETS)
    ]
    if not layers:
        raise _nothing_to_init(model)
    for path, m in layers:
        if parametrize.is_parametrized(m, "weight"):
            raise _parametrized(path, m)
        if isinstance(m.weight, nn.parameter.UninitializedParameter):
            raise _uninitialized(path, m)
    for _, m in layers:
        weight: Tensor = m.weight
        nn.init.normal_(weight, 0.0, 1.0 / math.sqrt(max(fan_in(m), 1)), generator=generator)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


# -- registry entries (discovered by normlab.reparam; the registry and normlab.* derive from them)
from normlab.reparam._entry import WeightEntry  # noqa: E402  (this block closes the file)

ENTRIES = (
    WeightEntry(
        "selu",
        None,
        "Klambauer et al. 2017, arXiv:1706.02515",
        aliases=("self_normalizing",),
        exports=(selu_init_,),
    ),
)
