"""What the surgery tools need to know about a normalization layer.

One place answers, for torch.nn and normlab layers alike: is this module a normalization layer,
how many channels does it normalize and at which dim, does it keep running statistics and of
which kind. Subclasses are recognised with ``isinstance`` (a user class deriving from
``torch.nn.BatchNorm2d`` is a BatchNorm), never by type equality.

Kinds of running statistics (a normlab layer states its own in ``Norm.running_stats``; torch
layers are recognised by their base classes):

* ``"batch"``: per-channel statistics over (N, *S) of the layer's input (torch BatchNorm*d /
  SyncBatchNorm and their lazy forms; normlab layers whose ``running_stats`` is ``"batch"``
  or ``"batch_biased"``: BatchNorm, GhostBatchNorm, BatchRenorm, FrozenBatchNorm,
  SwitchableNorm's BN branch, BatchInstanceNorm's BN term, EvoNormB0's variance). Any other
  module holding a ``running_mean`` or ``running_var`` buffer is taken to be of this kind too.
* ``"instance"``: torch.nn's InstanceNorm rule (a running average over samples of the
  per-(sample, channel) mean and unbiased variance): torch InstanceNorm*d and normlab
  InstanceNorm with ``track_running_stats=True``.

timm's norm + activation layers (``timm.layers.norm_act``: BatchNormAct2d, SyncBatchNormAct,
FrozenBatchNormAct2d, GroupNormAct, GroupNorm1Act, LayerNormAct, LayerNormAct2d and their Fp32
forms) compute their norm, then ``self.drop`` (a dropout / DropBlock, Identity by default), then
``self.act``. `is_norm_act` recognises them (the class that defines ``forward`` is one of those
timm classes and the only children are ``drop`` and ``act``); they count as norm layers, and
the surgery tools keep the drop and the activation (`norm_act_tail`).

`running_stats` gives the finer meaning (``"batch_biased"``: the biased variance under the
method's own update law), `frozen_stats` whether the layer keeps its statistics on purpose.
"""

from __future__ import annotations

import functools
from typing import Literal

from torch import Tensor, nn

from normlab import registry
from normlab.norms._base import Norm
from normlab.reparam._base import WeightParametrization

StatsKind = Literal["batch", "instance"]

# _NormBase: BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm1d/2d/3d and their lazy forms
TORCH_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm,
)
TORCH_BATCH = nn.modules.batchnorm._BatchNorm
TORCH_INSTANCE = nn.modules.instancenorm._InstanceNorm
_LIBRARY_MODULES = ("torch.nn.modules.", "normlab.norms.")

#: timm's norm + activation classes (timm/layers/norm_act.py; forward = norm, drop, act) and
#: where their channels are: LayerNormAct normalizes the last dim of (N, *, C), the 2d forms
#: permute (N, C, H, W) and normalize each position's C channels.
TIMM_NORM_ACT: dict[str, int] = {
    "BatchNormAct2d": 1, "SyncBatchNormAct": 1, "FrozenBatchNormAct2d": 1, "GroupNormAct": 1,
    "GroupNorm1Act": 1, "LayerNormAct": -1, "LayerNormActFp32": -1, "LayerNormAct2d": 1,
    "LayerNormAct2dFp32": 1,
}
_NORM_ACT_CHILDREN = frozenset({"drop", "act"})


def _forward_owner(module: nn.Module) -> type:
    return next(k for k in type(module).__mro__ if "forward" in vars(k))


def _timm_norm_act_name(module: nn.Module) -> str | None:
    owner = _forward_owner(module)
    timm_class = owner.__module__.startswith("timm.") and owner.__name__ in TIMM_NORM_ACT
    return owner.__name__ if timm_class and set(module._modules) <= _NORM_ACT_CHILDREN else None


def is_norm_act(module: nn.Module) -> bool:
    """One of timm's norm + activation layers (module docstring): norm, ``drop``, ``act``."""
    return _timm_norm_act_name(module) is not None


def norm_act_tail(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """What a timm norm + activation layer applies after its norm: ``[("drop", ...), ("act",
    ...)]`` (the children it has, in that order); ``[]`` for any other module."""
    if not is_norm_act(module):
        return []
    return [(k, module._modules[k]) for k in ("drop", "act") if module._modules.get(k) is not None]


def is_norm(module: nn.Module) -> bool:
    """A torch.nn normalization layer (BN, SyncBN, IN, GN, LN, RMSNorm) or a normlab `Norm`."""
    return isinstance(module, (Norm, *TORCH_NORMS)) or is_norm_act(module)


def is_lazy_uninitialized(module: nn.Module) -> bool:
    """A LazyBatchNorm / LazyInstanceNorm that has not seen input yet."""
    return isinstance(module, nn.modules.lazy.LazyModuleMixin) and bool(
        module.has_uninitialized_params()
    )


def has_custom_forward(module: nn.Module) -> bool:
    """True when a user subclass overrides ``forward`` or holds child modules.

    Such a layer may do more than normalize (timm's ``BatchNormAct2d`` adds an activation and
    a dropout: pytorch#187298 turned its logits into -1.4e17 by converting it to a bare
    SyncBatchNorm), so the surgery tools refuse to convert it rather than drop that silently.
    """
    if module._modules:
        return True
    owner = next(k for k in type(module).__mro__ if "forward" in vars(k))
    if owner.__module__.startswith(_LIBRARY_MODULES):
        return False
    return not any(owner is entry.cls for entry in registry.entries())  # e.g. a plugin's


def channels(module: nn.Module) -> int | None:
    """The number of channels a norm layer normalizes, or None when it is not per-channel
    (a torch LayerNorm / RMSNorm over more than one trailing dim)."""
    if isinstance(module, nn.GroupNorm):
        return int(module.num_channels)
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        shape = tuple(module.normalized_shape)
        return int(shape[0]) if len(shape) == 1 else None
    count = getattr(module, "num_features", None)
    if not isinstance(count, int) and is_norm_act(module):  # timm's FrozenBatchNormAct2d
        mean = _own_buffer(module, "running_mean")
        count = None if mean is None else int(mean.shape[0])
    return int(count) if isinstance(count, int) else None


def channel_dim(module: nn.Module) -> int:
    """Where the channels are: torch LayerNorm / RMSNorm normalize the last dim (-1), timm's
    LayerNormAct2d the channels of (N, C, H, W) (1)."""
    name = _timm_norm_act_name(module)
    if name is not None:
        return TIMM_NORM_ACT[name]
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return -1
    return int(getattr(module, "channel_dim", 1))


def is_affine(module: nn.Module) -> bool:
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return bool(module.elementwise_affine)
    return bool(getattr(module, "affine", getattr(module, "weight", None) is not None))


def _own_buffer(module: nn.Module, name: str) -> Tensor | None:
    value = module._buffers.get(name)
    return value if isinstance(value, Tensor) else None


def has_running_stats(module: nn.Module) -> bool:
    """The module itself holds a ``running_mean`` or ``running_var`` buffer (not None)."""
    return any(_own_buffer(module, k) is not None for k in ("running_mean", "running_var"))


def has_weight_state(module: nn.Module) -> bool:
    """A weight-side parametrization whose training forwards update buffers (spectral norm's
    power-iteration vectors): `freeze` stops those updates as it stops running statistics."""
    return isinstance(module, WeightParametrization) and module.has_state


def class_running_stats(target: object) -> str | None:
    """What a layer class (or ``functools.partial`` of one) keeps in its running buffers when
    it tracks them (see `Norm.running_stats`); None for classes without running statistics or
    unknown callables."""
    while isinstance(target, functools.partial):
        target = target.func
    if not isinstance(target, type):
        return None
    if issubclass(target, Norm):
        return target.running_stats
    if issubclass(target, TORCH_INSTANCE):
        return "instance"
    if issubclass(target, TORCH_BATCH):
        return "batch"
    return None


def _kind(meaning: str | None) -> StatsKind | None:
    if meaning is None:
        return None
    return "instance" if meaning == "instance" else "batch"


def running_stats(module: nn.Module) -> str | None:
    """What the module's running buffers hold now, or None when it keeps none (any module
    holding a ``running_mean`` / ``running_var`` buffer counts as ``"batch"``)."""
    if not has_running_stats(module):
        return None
    return class_running_stats(type(module)) or "batch"


def frozen_stats(module: nn.Module) -> bool:
    """The layer keeps fixed statistics on purpose (FrozenBatchNorm, timm's
    FrozenBatchNormAct2d)."""
    if _timm_norm_act_name(module) == "FrozenBatchNormAct2d":
        return True
    return bool(getattr(type(module), "frozen_stats", False))


def stats_kind(module: nn.Module) -> StatsKind | None:
    """The kind of running statistics the module keeps now, or None when it keeps none."""
    return _kind(running_stats(module))


def class_stats_kind(target: object) -> StatsKind | None:
    """The kind of running statistics a layer class (or ``functools.partial`` of one) keeps
    when it tracks them; None for classes without running statistics or unknown callables."""
    return _kind(class_running_stats(target))


def per_position(module: nn.Module) -> bool | None:
    """Whether a layer normalizes each position over its channels alone (torch LayerNorm /
    RMSNorm over the last dim, normlab LayerNorm(per_position=True)); None for other layers."""
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        return True
    value = getattr(module, "per_position", None) if isinstance(module, Norm) else None
    return None if value is None else bool(value)


def first_tensor(module: nn.Module) -> Tensor | None:
    """The module's first floating parameter or buffer (where its device and dtype are read)."""
    for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
        if t.is_floating_point():
            return t
    return None


def describe(path: str, module: nn.Module) -> str:
    """``"features.3 (BatchNorm2d with 30 channels)"``: how errors and reports name a layer
    (no count for a lazy layer that has not seen input: its ``num_features`` 0 is a
    placeholder)."""
    where = path or "<the model itself>"
    count = None if is_lazy_uninitialized(module) else channels(module)
    detail = f" with {count} channels" if count is not None else ""
    return f"{where} ({type(module).__name__}{detail})"
