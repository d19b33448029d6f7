"""PLACEHOLDER — being implemented (issue 3). The owner replaces this whole file."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from normlab.norms._base import Norm


class VirtualBatchNorm(Norm):
    def __init__(self, num_features: int, **kwargs: Any) -> None:
        super().__init__(num_features, eps=1e-5, affine=False, channel_dim=1)

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError("VirtualBatchNorm is being implemented")


def virtual_batch_norm(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    raise NotImplementedError("virtual_batch_norm is being implemented")
