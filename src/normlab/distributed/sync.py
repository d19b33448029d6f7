"""`sync` / `unsync`: cross-replica batch statistics for a whole model, through the one walker.

``model = normlab.sync(model)`` (before wrapping it in DDP) makes every batch-dependent norm
layer compute its training statistics over the concatenated batch of all replicas of
``process_group`` (`normlab.core.cross_replica`): normlab layers whose class declares
``supports_sync`` get a ``moments_reducer``; torch.nn BatchNorm1d/2d/3d and SyncBatchNorm
become normlab `BatchNorm` layers (their parameters, buffers, momentum and, for SyncBatchNorm,
process group carried) — so CPU / gloo works, which torch's SyncBatchNorm refuses.

Eval runs no collective and needs no process group (the running statistics are already
identical on every replica). `unsync` removes the reducers; with ``to_torch=True`` it turns
the synchronized BatchNorm layers into torch.nn.SyncBatchNorm (for a CUDA / NCCL deployment
that expects torch's class).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from normlab.core.cross_replica import CrossReplicaMoments, ProcessGroup
from normlab.errors import ConfigError
from normlab.norms import BatchNorm, Norm
from normlab.surgery.convert import convert_layer
from normlab.surgery.layers import TORCH_BATCH, is_norm_act
from normlab.surgery.walker import (
    Selector,
    check_selectors,
    not_a_model,
    replace_modules,
    selected,
)

__all__ = ["Synced", "sync", "sync_with_report", "unsync"]


def cannot_sync(path: str, module: nn.Module) -> ConfigError:
    return ConfigError(
        f"sync: {path or '<root>'} ({type(module).__name__}) computes batch statistics but "
        "has no cross-replica mode yet, so its replicas would normalize with different "
        "statistics. Pass skip="
        f"{path!r} to keep it per-replica, or convert it to a "
        "synchronizable norm (e.g. normlab.convert(model, 'bn'))."
    )


def cannot_convert_for_sync(path: str, exc: ConfigError) -> ConfigError:
    """`convert_layer`'s refusal of a torch BN layer, with the layer's place in the model."""
    reason = str(exc).removeprefix("convert_layer: ")
    return ConfigError(
        f"sync: {path or '<root>'}: syncing converts this torch BatchNorm to normlab's, which "
        f"failed: {reason} Or pass skip={path!r} to keep it per-replica."
    )


@dataclass(frozen=True)
class Synced:
    """One layer `sync` acted on: its type before and after.

    Attributes:
        path: the layer's dotted path.
        old_type: its class before.
        new_type: its class after: normlab's `BatchNorm` for a torch.nn batch norm, the
            same class for a normlab layer (synchronized in place).
    """

    path: str
    old_type: type
    new_type: type

    def __str__(self) -> str:
        change = (
            self.new_type.__name__
            if self.old_type is self.new_type
            else f"{self.old_type.__name__} -> {self.new_type.__name__}"
        )
        return f"{self.path or '<root>'}: {change} (cross-replica statistics)"


def _batch_dependent(module: nn.Module) -> bool:
    """Training statistics include other samples of the batch (what sync must share); a
    class declaring ``supports_sync`` shares some without running buffers (Virtual BN: R's)."""
    if isinstance(module, TORCH_BATCH):
        return True
    return (
        isinstance(module, Norm)
        and (module.running_stats in ("batch", "batch_biased") or module.supports_sync)
        and (not module.frozen_stats)
    )


def sync_with_report(
    model: nn.Module,
    process_group: ProcessGroup = None,
    *,
    skip: Selector = None,
    only: Selector = None,
    inplace: bool = False,
) -> tuple[nn.Module, list[Synced]]:
    """`sync`, also returning one `Synced` per layer acted on."""
    if not isinstance(model, nn.Module):
        raise not_a_model("sync", model)
    skip_items, only_items = check_selectors("sync", model, skip=skip, only=only)
    report: list[Synced] = []

    def visit(path: str, module: nn.Module) -> nn.Module | None:
        if not _batch_dependent(module) or not selected(path, module, skip_items, only_items):
            return None
        group = process_group
        if isinstance(module, TORCH_BATCH) and not isinstance(module, Norm):  # normlab's BN
            # is a torch BatchNorm by type (normlab.norms._torch_types) and syncs as it is
            if isinstance(module, nn.SyncBatchNorm) and group is None:
                group = module.process_group
            try:
                new = convert_layer(module, BatchNorm)
            except ConfigError as exc:
                raise cannot_convert_for_sync(path, exc) from None
        elif module.supports_sync:
            new = module
        else:
            raise cannot_sync(path, module)
        # timm's BatchNormAct2d converts to Sequential(norm, drop, act): sync its norm
        norm = new.norm if is_norm_act(module) else new
        norm.moments_reducer = CrossReplicaMoments(group)
        report.append(Synced(path, type(module), type(new)))
        return new

    if not inplace:  # a process group cannot be deep-copied: the copy shares the handle
        shared = {
            id(m.process_group): m.process_group
            for m in model.modules()
            if isinstance(m, nn.SyncBatchNorm) and m.process_group is not None
        }
        model = copy.deepcopy(model, memo=shared)
    new_model, _ = replace_modules(model, visit, inplace=True)
    return new_model, report


def sync(
    model: nn.Module,
    process_group: ProcessGroup = None,
    *,
    skip: Selector = None,
    only: Selector = None,
    inplace: bool = False,
) -> nn.Module:
    """Cross-replica batch statistics for every batch-dependent norm layer of ``model``.

    Returns a new model unless ``inplace=True``. See the module docstring.

    Raises:
        ConfigError: a selected layer computes batch statistics but has no cross-replica
            mode (skip it, or convert it).
    """
    return sync_with_report(model, process_group, skip=skip, only=only, inplace=inplace)[0]


def unsync(model: nn.Module, *, to_torch: bool = False, inplace: bool = False) -> nn.Module:
    """Undo `sync`: every layer computes its statistics from its own replica's batch again.

    ``to_torch=True`` turns each synchronized `BatchNorm` into ``torch.nn.SyncBatchNorm``
    (same parameters, buffers, momentum and process group): torch's class, for code that
    expects it (it runs on CUDA only).

    Args:
        to_torch: replace synchronized `BatchNorm` layers by ``torch.nn.SyncBatchNorm``.
    """

    def visit(path: str, module: nn.Module) -> nn.Module | None:
        reducer = module.__dict__.get("moments_reducer")
        if not isinstance(module, Norm) or reducer is None:
            return None
        del module.moments_reducer
        if to_torch and type(module) is BatchNorm:
            new = convert_layer(module, nn.SyncBatchNorm)
            new.process_group = reducer.process_group
            return new
        return module

    return replace_modules(model, visit, inplace=inplace)[0]
