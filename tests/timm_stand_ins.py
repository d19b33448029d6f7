"""Stand-ins for timm's norm + activation layers (timm/layers/norm_act.py), for the surgery tests
when timm is not installed (tests/test_timm_norm_act.py runs the real ones when it is).

The surgery tools recognise these layers by where ``forward`` is defined (a class of a
``timm.`` module with one of timm's names) and by their children (``drop`` and ``act``), so
each stand-in is a class of that name whose ``__module__`` is timm's and whose structure is
timm's: a BatchNorm2d / GroupNorm / LayerNorm subclass (FrozenBatchNormAct2d: a plain module
with the four BN tensors as buffers and no ``num_features``) that applies its norm, then
``self.drop``, then ``self.act``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_TIMM = "timm.layers.norm_act"
Factory = Callable[[], nn.Module]


def _tail(module: nn.Module, act: Factory | None, drop: Factory | None) -> None:
    module.drop = nn.Identity() if drop is None else drop()
    module.act = nn.ReLU() if act is None else act()


class BatchNormAct2d(nn.BatchNorm2d):
    def __init__(self, num_features: int, *, act: Factory | None = None,
                 drop: Factory | None = None, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]  # BN's keywords
        _tail(self, act, drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))


class FrozenBatchNormAct2d(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, *,
                 act: Factory | None = None, drop: Factory | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        _tail(self, act, drop)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return self.act(self.drop(x * scale[:, None, None] + shift[:, None, None]))


class GroupNormAct(nn.GroupNorm):
    def __init__(self, num_channels: int, num_groups: int = 32, *,
                 act: Factory | None = None, drop: Factory | None = None) -> None:
        super().__init__(num_groups, num_channels)
        _tail(self, act, drop)

    def forward(self, x: Tensor) -> Tensor:
        out = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self.act(self.drop(out))


class LayerNormAct(nn.LayerNorm):
    def __init__(self, num_channels: int, *, act: Factory | None = None,
                 drop: Factory | None = None) -> None:
        super().__init__(num_channels)
        _tail(self, act, drop)

    def forward(self, x: Tensor) -> Tensor:
        out = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(self.drop(out))


class LayerNormAct2d(nn.LayerNorm):
    """LN over the C channels of each position of (N, C, H, W)."""

    def __init__(self, num_channels: int, *, act: Factory | None = None,
                 drop: Factory | None = None) -> None:
        super().__init__(num_channels)
        _tail(self, act, drop)

    def forward(self, x: Tensor) -> Tensor:
        out = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
                           self.bias, self.eps).permute(0, 3, 1, 2)
        return self.act(self.drop(out))


for _cls in (BatchNormAct2d, FrozenBatchNormAct2d, GroupNormAct, LayerNormAct, LayerNormAct2d):
    _cls.__module__ = _TIMM
