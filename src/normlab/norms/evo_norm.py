"""PLACEHOLDER — being implemented (issue 3). The owner replaces this whole file."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from normlab.norms._base import Norm


class EvoNormB0(Norm):
    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(num_features, eps=1e-5, affine=False, channel_dim=1)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError("EvoNormB0 is being implemented")


class EvoNormS0(Norm):
    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(num_features, eps=1e-5, affine=False, channel_dim=1)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError("EvoNormS0 is being implemented")


def evo_norm_b0(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    raise NotImplementedError("evo_norm_b0 is being implemented")


def evo_norm_s0(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    raise NotImplementedError("evo_norm_s0 is being implemented")
