"""Freeze normalization statistics (and optionally the affine) so that they survive ``.train()``.

Fine-tuning a pre-trained network with small batches, or on another task, usually wants the
norm layers to keep the source data's statistics while everything else trains (Keras'
``trainable=False`` mixed the two up: keras-team/keras#6570; freezing utilities that missed
BatchNorm1d or subclasses kept updating statistics: tianweiy/CenterPoint#168, timm PR #1633).

How a layer is frozen (the module object, its type, its flags and its state are kept):

* **statistics**: every layer that keeps running statistics — torch.nn BatchNorm*d /
  SyncBatchNorm / InstanceNorm*d(track_running_stats=True) and their subclasses, normlab
  BatchNorm, GhostBatchNorm, BatchRenorm, FrozenBatchNorm, SwitchableNorm, BatchInstanceNorm,
  EvoNormB0, InstanceNorm(track_running_stats=True), and any other module holding a
  ``running_mean`` / ``running_var`` buffer — gets a forward pre-hook that runs its forward in
  eval mode (``training = False`` during the call, restored by an always-called forward hook,
  even when the forward raises). The layer therefore normalizes with its running statistics
  and never writes them, whatever ``.train()`` / ``.eval()`` set; its ``training`` flag keeps
  following ``model.train()`` as usual, and the output equals the eval output bitwise.
  timm's norm + activation layers (BatchNormAct2d, SyncBatchNormAct) freeze like the BN they
  subclass: only the layer itself runs in eval mode, its ``drop`` and ``act`` children keep
  their own mode (a DropBlock still drops in training), and ``affine=True`` freezes its γ, β
  but not the parameters of its activation (PReLU's slope).
* **weight-side state**: a weight parametrization that updates buffers in training forwards
  (spectral norm's power-iteration vectors u, v) is frozen the same way: its forward runs in
  eval mode, so the effective weight keeps using the stored u, v and nothing is written. It
  appears in the report at its own path (``"conv.parametrizations.weight.0"``).
* **affine** (``affine=True``): every parameter of the layer itself stops requiring grad —
  γ and β, and also the learned gate of BatchInstanceNorm, the importance logits of
  SwitchableNorm and EvoNorm's v. Layers without running statistics (GroupNorm, LayerNorm,
  RMSNorm, InstanceNorm without tracking, VirtualBatchNorm, EvoNormS0, BN with
  ``track_running_stats=False``) have nothing to freeze but this; the report says
  ``statistics=False`` for them.

Why hooks and not a swap to FrozenBatchNorm: `unfreeze` must restore the prior state exactly
(same module objects and types, momentum, buffers, ``requires_grad``), and freezing must also
cover layers FrozenBatchNorm cannot represent (SwitchableNorm, EvoNormB0, instance
statistics). What freezing changed is recorded on the layer (attribute ``_normlab_frozen``:
the hook ids and the prior ``requires_grad`` of each parameter it turned off), so a
``copy.deepcopy`` or a pickled model stays frozen and can be unfrozen; the ``state_dict`` has
no extra key (a frozen model's checkpoint loads into an unfrozen one and back). A forward that
bypasses ``__call__`` (``layer.forward(x)``) bypasses the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from normlab.surgery.layers import has_running_stats, has_weight_state, is_norm
from normlab.surgery.walker import Selector, check_selectors, not_a_model, selected

_STATE = "_normlab_frozen"


@dataclass
class _FreezeState:
    pre_hook: int | None = None  # ids in the layer's hook dicts (None: statistics not frozen)
    post_hook: int | None = None
    requires_grad: dict[str, bool] = field(default_factory=dict)  # before freeze turned it off
    training: list[bool] = field(default_factory=list)  # flags of the calls in progress


@dataclass(frozen=True)
class FrozenLayer:
    """One layer `freeze` acted on (or `unfreeze` restored): whether its statistics are frozen
    and which of its parameters no longer require grad.

    Attributes:
        path: the layer's dotted path in the model.
        layer_type: the layer's class.
        statistics: its statistics are frozen (False: it keeps none to freeze).
        parameters: the names of the parameters whose ``requires_grad`` was turned off.
    """

    path: str
    layer_type: type
    statistics: bool
    parameters: tuple[str, ...] = ()

    def __str__(self) -> str:
        stats = "statistics frozen" if self.statistics else "no running statistics"
        params = f"; frozen parameters: {', '.join(self.parameters)}" if self.parameters else ""
        return f"{self.path or '<root>'} ({self.layer_type.__name__}): {stats}{params}"


def _run_in_eval(module: nn.Module, args: Any) -> None:
    getattr(module, _STATE).training.append(module.training)
    module.training = False


def _restore_mode(module: nn.Module, args: Any, output: Any) -> None:
    module.training = getattr(module, _STATE).training.pop()


def is_frozen(module: nn.Module) -> bool:
    """`freeze` froze this layer's statistics (FrozenBatchNorm without `freeze` is not listed).

    Args:
        module: any module.
    """
    state = getattr(module, _STATE, None)
    return isinstance(state, _FreezeState) and state.pre_hook is not None


def freeze_state_of(module: nn.Module) -> _FreezeState | None:
    state = getattr(module, _STATE, None)
    return state if isinstance(state, _FreezeState) else None


def _layers(model: nn.Module, function: str, skip: Selector, only: Selector):  # type: ignore[no-untyped-def]
    if not isinstance(model, nn.Module):
        raise not_a_model(function, model)
    skip_items, only_items = check_selectors(function, model, skip=skip, only=only)
    for path, module in model.named_modules():
        if (is_norm(module) or _has_state(module)) and selected(
            path, module, skip_items, only_items
        ):
            yield path, module


def _has_state(module: nn.Module) -> bool:
    return has_running_stats(module) or has_weight_state(module)


def freeze(
    model: nn.Module,
    *,
    affine: bool = False,
    skip: Selector = None,
    only: Selector = None,
) -> list[FrozenLayer]:
    """Freeze the statistics of every norm layer in ``model`` in place (and, with
    ``affine=True``, its parameters); returns one `FrozenLayer` per norm layer seen.

    Freezing a frozen layer again keeps its first record, so `unfreeze` restores the state
    from before the first `freeze`.

    Args:
        model: modified in place.
        affine: also freeze the layers' parameters (``requires_grad=False``); False: only
            the statistics.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> [str(r) for r in freeze(net)]
        ['1 (BatchNorm2d): statistics frozen']
        >>> before = net[1].running_mean.clone()
        >>> _ = net.train()(torch.randn(2, 3, 5, 5))
        >>> torch.equal(net[1].running_mean, before)
        True
    """
    report = []
    for path, module in list(_layers(model, "freeze", skip, only)):
        state = freeze_state_of(module) or _FreezeState()
        stats = _has_state(module)
        if stats and state.pre_hook is None:
            state.pre_hook = module.register_forward_pre_hook(_run_in_eval).id
            state.post_hook = module.register_forward_hook(_restore_mode, always_call=True).id
        if affine:
            for name, param in module.named_parameters(recurse=False):
                if param.requires_grad:
                    state.requires_grad.setdefault(name, True)
                    param.requires_grad_(False)
        if state.pre_hook is not None or state.requires_grad:
            setattr(module, _STATE, state)
        report.append(FrozenLayer(path, type(module), stats, tuple(state.requires_grad)))
    return report


def unfreeze(
    model: nn.Module, *, skip: Selector = None, only: Selector = None
) -> list[FrozenLayer]:
    """Undo `freeze` in place: remove the hooks and give back each parameter's prior
    ``requires_grad``; returns one `FrozenLayer` per layer restored (what had been frozen).
    Layers that were not frozen are left alone; an unfrozen model gives an empty report.

    Args:
        model: modified in place.
    """
    report = []
    for path, module in list(_layers(model, "unfreeze", skip, only)):
        state = freeze_state_of(module)
        if state is None:
            continue
        if state.pre_hook is not None:
            module._forward_pre_hooks.pop(state.pre_hook, None)
            module._forward_hooks.pop(state.post_hook, None)
            module._forward_hooks_always_called.pop(state.post_hook, None)
        params = dict(module.named_parameters(recurse=False))
        for name, flag in state.requires_grad.items():
            if name in params:
                params[name].requires_grad_(flag)
        delattr(module, _STATE)
        report.append(
            FrozenLayer(path, type(module), state.pre_hook is not None, tuple(state.requires_grad))
        )
    return report
