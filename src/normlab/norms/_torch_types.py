"""torch.nn base classes of the normlab layers that mean the same as a torch.nn layer.

Tools outside normlab find norm layers by type: ``torch.optim.swa_utils.update_bn`` and
``SyncBatchNorm.convert_sync_batchnorm`` look for ``_BatchNorm``; timm's ``freeze`` and
detectron2's ``convert_frozen_batchnorm`` for ``BatchNorm2d``; detectron2's optimizer parameter
groups for ``BatchNorm1d/2d/3d``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``; mmengine's ``is_norm``
for ``_BatchNorm``, ``_InstanceNorm``, ``GroupNorm``. A normlab layer whose math, arguments,
parameters and buffers are those of a torch.nn layer therefore derives from that class too
(after `Norm`, so normlab's code comes first):

=================================  ==================================================
normlab                            torch.nn bases
=================================  ==================================================
BatchNorm (and BoundedBatchNorm)   BatchNorm1d, BatchNorm2d, BatchNorm3d — one class
                                   for every rank, like the three together
InstanceNorm                       InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
GroupNorm                          GroupNorm (``num_channels`` reads ``num_features``)
=================================  ==================================================

Not the others. LayerNorm normalizes over (C, *S) with a per-channel affine (torch's
GroupNorm(1, C)) or, with ``per_position``, over C at ``channel_dim``; the ``normalized_shape``
and ``elementwise_affine`` that tools read from a ``torch.nn.LayerNorm`` describe neither in
general. FrozenBatchNorm matches torchvision's FrozenBatchNorm2d, which is not a torch.nn class,
and as a ``_BatchNorm`` it would have its fixed statistics reset by ``update_bn``. Ghost BN,
Batch Renorm and the other methods compute something else in training.

The torch base contributes its type and nothing else: its ``__init__`` does not run (`Norm`
builds the same parameters and buffers under the same names), normlab's ``forward``, repr,
resets and state checks come first in the method order, state loading skips torch's own
version migrations (`Norm._load_from_state_dict` does them), and ``_check_input_dim`` is
normlab's input check. Tools that rebuild the layer as a torch class assume channels at dim
1 and, for the 2-d ones (timm's ``freeze``), 4-D input: a layer with ``channel_dim=-1`` is
converted by normlab's own `normlab.sync` / `normlab.freeze`, not by them.

``torch.ao.quantization.fuse_modules`` looks fuser methods up by exact type: subclasses of
`TorchBatchNorm` defined in normlab register theirs (conv / linear / conv-transpose + BN
[+ ReLU]) in torch's default table when they are defined; the BN joins the fusion as the
``torch.nn.BatchNorm1d/2d/3d`` holding its parameters and buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.ao.quantization import fuser_method_mappings as _fusers

from normlab import errors


class _TypeOnly(nn.Module):
    """Base of the torch.nn stand-ins below: `Norm.__init__` calls ``super().__init__()``,
    which lands here and initializes ``nn.Module`` alone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.Module.__init__(self)

    def _check_input_dim(self, input: Any) -> None:
        self._check_input(input)  # type: ignore[attr-defined]  # Norm's, which comes first

    def _load_from_state_dict(self, *args: Any) -> None:
        nn.Module._load_from_state_dict(self, *args)


class TorchBatchNorm(_TypeOnly, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    """torch.nn's BatchNorm types for a normlab layer computing BatchNorm (see the module)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__.startswith("normlab."):  # a user subclass may change forward
            _register_fusers(cls)


class TorchInstanceNorm(_TypeOnly, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
    """torch.nn's InstanceNorm types for normlab's InstanceNorm (see the module)."""


class TorchGroupNorm(_TypeOnly, nn.GroupNorm):
    """torch.nn's GroupNorm type for normlab's GroupNorm (see the module)."""

    @property
    def num_channels(self) -> int:  # torch.nn.GroupNorm's name for C
        return int(self.num_features)  # type: ignore[attr-defined]


# -- fuse_modules ------------------------------------------------------------------------------
_BN_OF_RANK = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def as_torch_batch_norm(bn: nn.Module, rank: int) -> nn.modules.batchnorm._BatchNorm:
    """A ``torch.nn.BatchNorm{rank}d`` sharing ``bn``'s parameters and buffers (a normlab BN
    with channels at dim 1), in ``bn``'s mode."""
    if bn.channel_dim != 1:
        raise errors.ConfigError(
            f"{bn._name()} with channel_dim=-1 cannot be fused by torch.ao.quantization, "
            "whose fused layers put channels at dim 1; use normlab.fold, or channel_dim=1."
        )
    torch_bn = _BN_OF_RANK[rank](
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
        bias=bn.bias is not None, device="meta",
    )
    for name in ("weight", "bias"):
        torch_bn._parameters[name] = bn._parameters[name]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch_bn._buffers[name] = bn._buffers.get(name)
    return torch_bn.train(bn.training)


def _with_torch_bn(fuser: Callable[..., nn.Module], rank: int) -> Callable[..., nn.Module]:
    def fuse(is_qat: bool, first: nn.Module, bn: nn.Module, *rest: nn.Module) -> nn.Module:
        return fuser(is_qat, first, as_torch_batch_norm(bn, rank), *rest)
    return fuse


def _register_fusers(cls: type[nn.Module]) -> None:
    table = getattr(_fusers, "_DEFAULT_OP_LIST_TO_FUSER_METHOD", None)
    if not isinstance(table, dict):  # a torch without the table: nothing to extend
        return
    for rank, (conv, conv_t) in enumerate(
        ((nn.Conv1d, nn.ConvTranspose1d), (nn.Conv2d, nn.ConvTranspose2d),
         (nn.Conv3d, nn.ConvTranspose3d)), start=1,
    ):
        table[(conv, cls)] = _with_torch_bn(_fusers.fuse_conv_bn, rank)
        table[(conv, cls, nn.ReLU)] = _with_torch_bn(_fusers.fuse_conv_bn_relu, rank)
        table[(conv_t, cls)] = _with_torch_bn(_fusers.fuse_convtranspose_bn, rank)
    table[(nn.Linear, cls)] = _with_torch_bn(_fusers.fuse_linear_bn, 1)
