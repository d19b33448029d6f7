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


def is_norm(module: nn.Module) -> bool:
    """A torch.nn normalization layer (BN, SyncBN, IN, GN, LN, RMSNorm) or a normlab `Norm`."""
    return isinstance(module, (Norm, *TORCH_NORMS))


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
    return int(count) if isinstance(count, int) else None


def channel_dim(module: nn.Module) -> int:
    """Where the channels are: torch LayerNorm / RMSNorm normalize the last dim (-1)."""
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
    """The layer keeps fixed statistics on purpose (FrozenBatchNorm)."""
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
    """``"features.3 (BatchNorm2d with 30 channels)"``: how errors and reports name a layer."""
    where = path or "<the model itself>"
    count = channels(module)
    detail = f" with {count} channels" if count is not None else ""
    return f"{where} ({type(module).__name__}{detail})"
