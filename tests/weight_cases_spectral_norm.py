"""Contract cases of spectral normalization (normlab.reparam.spectral_norm).

The oracles are Miyato et al. 2018 eq. 12 in float64: W_SN = L·W/σ̂ with σ̂ = uᵀAv, A the
(units, fan-in) matrix of W, or, in exact-conv mode, the layer's convolution applied to v
(written with torch.nn.functional directly, from the layer's own stride/padding/...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
from weight_catalogue import WeightCase


def _parts(module: nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    chain = module.parametrizations.weight
    return chain.original.double(), chain[0]._u.double(), chain[0]._v.double()


def matrix_oracle(dim: int, lipschitz: float = 1.0) -> Callable[[nn.Module], Tensor]:
    def oracle(module: nn.Module) -> Tensor:
        w, u, v = _parts(module)
        matrix = w.movedim(dim, 0).reshape(w.shape[dim], -1)
        return lipschitz * w / (u @ matrix @ v)

    return oracle


def conv_operator(module: nn.Module, w: Tensor, x: Tensor) -> Tensor:
    """The layer's bias-free convolution of ``x``, from torch.nn.functional."""
    n = w.ndim - 2
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
        return fn(
            x, w, None, module.stride, module.padding, module.output_padding, module.groups,
            module.dilation,
        )  # fmt: skip
    fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    return fn(x, w, None, module.stride, module.padding, module.dilation, module.groups)


def exact_oracle(module: nn.Module) -> Tensor:
    w, u, v = _parts(module)
    return w / (u * conv_operator(module, w, v)).sum()


def _build(layer: Callable[[], nn.Module], **kwargs: Any) -> Callable[..., nn.Module]:
    def build(dtype: torch.dtype = torch.float32) -> nn.Module:
        return normlab.spectral_norm(layer().to(dtype), **kwargs)

    return build


CASES = (
    WeightCase(
        "spectral_norm",
        _build(lambda: nn.Linear(48, 32)),
        (8, 48),
        matrix_oracle(0),
        variant="linear",
        has_state=True,
    ),
    WeightCase(
        "spectral_norm",
        _build(lambda: nn.Linear(40, 24), lipschitz=2.0, n_power_iterations=2),
        (8, 40),
        matrix_oracle(0, lipschitz=2.0),
        variant="linear-lipschitz2",
        has_state=True,
    ),
    WeightCase(
        "spectral_norm",
        _build(lambda: nn.Conv2d(4, 6, 3, padding=1)),
        (2, 4, 8, 8),
        matrix_oracle(0),
        variant="conv2d",
        has_state=True,
    ),
    WeightCase(
        "spectral_norm",
        _build(lambda: nn.ConvTranspose2d(6, 4, 3, stride=2)),
        (2, 6, 5, 5),
        matrix_oracle(1),
        variant="conv_transpose2d",
        has_state=True,
    ),
    WeightCase(
        "spectral_norm",
        _build(lambda: nn.Conv2d(3, 5, 3, stride=2, padding=1), exact_conv=True, input_size=(8, 8)),
        (2, 3, 8, 8),
        exact_oracle,
        variant="exact-conv2d",
        has_state=True,
    ),
    WeightCase(
        "spectral_norm",
        _build(
            lambda: nn.Conv1d(4, 6, 3, dilation=2, groups=2, padding=2),
            exact_conv=True,
            input_size=12,
        ),
        (2, 4, 12),
        exact_oracle,
        variant="exact-conv1d-groups",
        has_state=True,
    ),
    WeightCase(
        "spectral_norm",
        _build(
            lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
            exact_conv=True,
            input_size=(5, 5),
        ),
        (2, 4, 5, 5),
        exact_oracle,
        variant="exact-conv_transpose2d",
        has_state=True,
    ),
)
