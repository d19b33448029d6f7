"""Convert the normalization layers of a model to another registered norm.

``convert(model, "gn:32")`` replaces every norm layer (torch.nn BatchNorm*d, SyncBatchNorm,
LazyBatchNorm* once materialized, InstanceNorm*d, GroupNorm, LayerNorm / RMSNorm over the last
dim, every normlab norm, and their subclasses) by ``normlab.create(to, C, **kw)`` and carries
over what is meaningful:

=========================  ==============================================================
carried                    when
=========================  ==============================================================
``eps``                    always (unless ``eps=`` is passed, or the source's is None)
``affine``                 when the target takes it (BN(affine=False) → GN(affine=False))
``channel_dim``            normlab sources; -1 for torch LayerNorm / RMSNorm, which
                           normalize the last dim of (N, *, C)
``per_position``           to a normlab LayerNorm: True from a torch LayerNorm / RMSNorm
                           (normlab ``LayerNorm(C, per_position=True, channel_dim=-1)`` is
                           the same function), the source's value from a normlab LayerNorm
``track_running_stats``,   when source and target keep the same kind of running statistics
``momentum``               ("batch" family, or torch.nn's instance rule); momentum only
                           between layers whose statistics follow the same law (equal
                           ``running_stats``: not from FrozenBatchNorm, which has none, nor
                           to or from BatchRenorm, whose paper default 0.01 and update of σ
                           instead of σ² stay)
``weight``, ``bias``       when both layers have them with the same shape (BN's β is dropped
                           on the way to RMSNorm, which has none); buffers of FrozenBatchNorm
                           become parameters and back
``running_mean``,          when both layers keep running statistics of the same kind; values
``running_var``,           are copied as they are (BatchRenorm and EvoNormB0 store the biased
``num_batches_tracked``    variance, the others the unbiased one: n/(n − 1) apart)
device, dtype              from the source's tensors (constructor or ``.to``)
training flag              ``new.train(old.training)``
``requires_grad``          per parameter, from the source parameter of the same name
forward / backward hooks   copied (a RemovableHandle the caller holds still points at the old
                           layer's hook dict)
=========================  ==============================================================

BN → FrozenBatchNorm copies ε and every value bitwise, so the result equals the source's eval
output bitwise (FrozenBatchNorm calls the same native inference kernel).

Refused with a `ConfigError` that names the layer's path, type and channel count and says how
to fix it (or to leave the layer out with ``skip=``):

* the target cannot be built for the layer (GroupNorm groups not dividing the channels,
  ghost_batch_size / eps invalid, an unknown keyword);
* FrozenBatchNorm from a layer without BN running statistics (GN, LN, IN, RMSNorm, VBN, S0:
  the frozen layer would normalize with mean 0 and variance 1 forever; EvoNormB0 has no
  running mean; InstanceNorm's running statistics are averages of per-sample statistics);
* a lazy layer that has not seen input (its channel count is unknown);
* a layer frozen by `normlab.freeze` (unfreeze, convert, freeze again);
* a subclass that overrides ``forward`` or holds child modules (a fused activation would be
  silently dropped, pytorch#187298), except timm's norm + activation layers below;
* a torch LayerNorm / RMSNorm over more than one dim (not a per-channel norm);
* channels at dim -1 for a target callable that takes no ``channel_dim``.

timm's norm + activation layers (BatchNormAct2d, SyncBatchNormAct, FrozenBatchNormAct2d,
GroupNormAct, GroupNorm1Act, LayerNormAct, LayerNormAct2d: norm, then ``drop``, then ``act``)
convert as their norm does, and keep the rest: each becomes ``nn.Sequential(norm=<the new
norm>, drop=<its drop>, act=<its act>)`` (the report lists ``drop`` and ``act`` as carried;
state_dict keys gain ``.norm``). LayerNormAct2d is LN over the C channels of each position of
(N, C, H, W): ``channel_dim=1`` and ``per_position=True`` are carried.

Modules that are not norm layers are never touched. A converted VirtualBatchNorm has no
reference batch yet: run a ``normlab.reference_pass`` before its first forward.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from normlab import errors, registry
from normlab.errors import ConfigError
from normlab.surgery import layers
from normlab.surgery.freeze import freeze_state_of
from normlab.surgery.walker import (
    Replacement,
    Selector,
    check_selectors,
    not_a_model,
    replace_modules,
    selected,
)

# -- errors raised here ----------------------------------------------------------------------------


def cannot_convert(layer: str, path: str | None, problem: str, fix: str) -> ConfigError:
    """``convert: <path (type with C channels)>: <problem>. <fix> Or skip='<path>'.``

    ``path=None``: the layer is `convert_layer`'s ``module`` argument, which has no skip=."""
    if path is None:
        return ConfigError(f"convert_layer: {layer}: {problem}. {fix}")
    return ConfigError(
        f"convert: {layer}: {problem}. {fix} Or leave this layer as it is with skip={path!r}."
    )


def _describe(path: str | None, module: nn.Module) -> str:
    """How errors name the layer; ``path=None``: `convert_layer`'s ``module`` argument."""
    return layers.describe("module" if path is None else path, module)


_HOOK_DICTS = (
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
    "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_pre_hooks",
    "_backward_hooks",
)


def _target_callable(to: registry.Spec) -> Any:
    """The class (or callable) the spec builds, for signature and kind checks."""
    if isinstance(to, str):
        return registry.lookup(to.partition(":")[0]).cls
    return to


def _accepted(target: Any) -> set[str]:
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return set()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in named}


def _frozen_target(target: Any) -> bool:
    """The target class keeps fixed statistics (``frozen_stats``, e.g. FrozenBatchNorm)."""
    while isinstance(target, functools.partial):
        target = target.func
    return isinstance(target, type) and bool(getattr(target, "frozen_stats", False))


def _spec_name(to: registry.Spec) -> str:
    return repr(to) if isinstance(to, str) else getattr(to, "__name__", repr(to))


def _carried_arguments(module: nn.Module, target: Any, accepted: set[str]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    eps = getattr(module, "eps", None)
    if "eps" in accepted and isinstance(eps, (int, float)):
        kw["eps"] = eps
    if "affine" in accepted:
        kw["affine"] = layers.is_affine(module)
    if "channel_dim" in accepted:
        kw["channel_dim"] = layers.channel_dim(module)
    position = layers.per_position(module)
    if "per_position" in accepted and position is not None:
        kw["per_position"] = position
    kind = layers.class_stats_kind(type(module))
    if kind is not None and kind == layers.class_stats_kind(target):
        tracking = getattr(module, "track_running_stats", None)
        if "track_running_stats" in accepted and isinstance(tracking, bool):
            kw["track_running_stats"] = tracking
        same_law = layers.class_running_stats(type(module)) == layers.class_running_stats(target)
        # hasattr: a missing momentum is not None (None: a cumulative average)
        carry = hasattr(module, "momentum") and not layers.frozen_stats(module) and same_law
        if "momentum" in accepted and carry:
            kw["momentum"] = module.momentum
    source = layers.first_tensor(module)
    if source is not None:
        for key, value in (("device", source.device), ("dtype", source.dtype)):
            if key in accepted:
                kw[key] = value
    return kw


def _check_source(
    path: str | None, module: nn.Module, to: registry.Spec, target: Any
) -> None:
    name = _describe(path, module)

    def refuse(problem: str, fix: str) -> errors.ConfigError:
        return cannot_convert(name, path, problem, fix)

    if layers.is_lazy_uninitialized(module):
        raise refuse(
            "it is a lazy layer that has not seen input, so its number of channels is unknown",
            "Run one forward pass first (it materializes the layer).",
        )
    if freeze_state_of(module) is not None:
        raise refuse(
            "it is frozen by normlab.freeze",
            "Call normlab.unfreeze(model) first, convert, then freeze the converted model.",
        )
    if layers.has_custom_forward(module) and not layers.is_norm_act(module):
        raise refuse(
            "its class overrides forward or holds child modules (e.g. a fused activation), "
            "which a plain norm layer would silently drop",
            "Replace it with normlab.surgery.replace_modules and a callback that keeps the "
            "extra behaviour.",
        )
    if layers.channels(module) is None:
        shape = tuple(getattr(module, "normalized_shape", ()))
        raise refuse(
            f"it normalizes over normalized_shape={shape}, more than one dim, so it is not a "
            "per-channel norm",
            "Only LayerNorm / RMSNorm over the last dim (the channels of (N, *, C)) convert.",
        )
    if _frozen_target(target):
        kind = layers.stats_kind(module)
        if kind != "batch" or not isinstance(module._buffers.get("running_mean"), Tensor):
            keeps = {
                None: "keeps none, so the frozen layer would normalize with mean 0 and "
                "variance 1 forever",
                "instance": "keeps averages of per-sample statistics instead",
                "batch": "keeps no running mean",
            }[kind]
            raise refuse(
                f"{_spec_name(to)} needs BatchNorm running statistics (mean and variance over "
                f"(N, *S)) and this layer {keeps}",
                "Convert to a norm that learns its statistics (e.g. 'bn'), train or "
                "normlab.recalibrate it, then convert that to 'frozen_bn'.",
            )
    if layers.channel_dim(module) != 1 and "channel_dim" not in _accepted(target):
        raise refuse(
            f"its channels are at dim -1 and {_spec_name(to)} takes no channel_dim argument",
            "Use a registered normlab norm (they take channel_dim=-1).",
        )


def _build(
    path: str | None, module: nn.Module, to: registry.Spec, kwargs: dict[str, Any]
) -> tuple[nn.Module, tuple[str, ...]]:
    target = _target_callable(to)
    _check_source(path, module, to, target)
    accepted = _accepted(target)
    carried_kw = _carried_arguments(module, target, accepted)
    count = layers.channels(module)
    assert count is not None  # checked above
    try:
        new = registry.create(to, count, **{**carried_kw, **kwargs})
    except (errors.NormlabError, TypeError) as exc:
        fix = (
            f"Use a spec and keyword arguments that fit this layer (e.g. 'gn:G' with G dividing "
            f"{count})."
            if path is None
            else f"Use a spec and keyword arguments that fit every converted layer (e.g. "
            f"'gn:max32', the largest divisor of each layer's channel count up to 32, or 'gn:G' "
            f"with G dividing {count}), or convert this layer separately with only=."
        )
        raise cannot_convert(
            _describe(path, module), path,
            f"cannot build {_spec_name(to)} for it: {str(exc).rstrip('.')}", fix,
        ) from None
    source = layers.first_tensor(module)
    if source is not None:  # what the target's constructor was not given, .to() moves
        given = accepted | set(kwargs)
        move = {k: getattr(source, k) for k in ("device", "dtype") if k not in given}
        if move:
            new = new.to(**move)
    carried = [k for k in carried_kw if k not in kwargs and k not in ("device", "dtype")]
    with torch.no_grad():
        for name in ("weight", "bias"):
            src, dst = getattr(module, name, None), getattr(new, name, None)
            if isinstance(src, Tensor) and isinstance(dst, Tensor) and src.shape == dst.shape:
                dst.copy_(src)
                carried.append(name)
                if isinstance(src, nn.Parameter) and isinstance(dst, nn.Parameter):
                    dst.requires_grad_(src.requires_grad)
        kind = layers.stats_kind(module)
        if kind is not None and kind == layers.stats_kind(new):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                src, dst = module._buffers.get(name), new._buffers.get(name)
                if isinstance(src, Tensor) and isinstance(dst, Tensor) and src.shape == dst.shape:
                    dst.copy_(src)
                    carried.append(name)
    tail = layers.norm_act_tail(module)
    if tail:  # timm's norm + activation: the new norm, then the same drop and act
        new = nn.Sequential(OrderedDict([("norm", new), *tail]))
        carried.extend(name for name, _ in tail)
    for attr in _HOOK_DICTS:
        hooks = getattr(module, attr, None)
        if hooks:
            getattr(new, attr).update(hooks)
            if "hooks" not in carried:
                carried.append("hooks")
    if module._backward_hooks:  # torch runs them only with the flag their registration set
        new._is_full_backward_hook = module._is_full_backward_hook
    new.train(module.training)
    return new, tuple(carried)


def convert_layer(module: nn.Module, to: registry.Spec, **kwargs: Any) -> nn.Module:
    """One norm layer converted to ``to`` (a registry spec, class or callable), carrying what
    `convert` carries; ``module`` itself is not modified.

    Args:
        module: the norm layer to convert (a torch.nn or normlab norm).
        to: the target norm: a registry spec, a layer class or a callable
            ``f(num_features, **kw)``.
        **kwargs: keyword arguments of the target's constructor, overriding what is carried.
    """
    registry.factory(to)  # an invalid spec fails here, with the registry's message
    if not layers.is_norm(module):
        raise cannot_convert(
            _describe(None, module), None, "it is not a normalization layer",
            "Pass a torch.nn or normlab norm layer, or use convert(model, ...) on a model.",
        )
    if layers.is_norm_act(module):  # the drop and act of the result are copies
        module = copy.copy(module)
        module._modules = {k: copy.deepcopy(m) for k, m in module._modules.items()}
    return _build(None, module, to, kwargs)[0]


def convert(
    model: nn.Module,
    to: registry.Spec,
    *,
    skip: Selector = None,
    only: Selector = None,
    inplace: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Replace every norm layer of ``model`` by ``to``; returns the new model.

    ``model = convert(model, "gn:32")``; `convert_with_report` also returns what was replaced
    and carried.

    Args:
        to: the target norm: a registry spec (``"gn:32"``, ``"frozen_bn"``), a layer class
            or a callable ``f(num_features, **kw)`` (see `convert_with_report`).
        **kwargs: keyword arguments of the target's constructor; they override what is
            carried from each converted layer.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        >>> convert(net, "gn:4")[1]
        GroupNorm(8, num_groups=4, eps=1e-05, affine=True)
    """
    return convert_with_report(model, to, skip=skip, only=only, inplace=inplace, **kwargs)[0]


def convert_with_report(
    model: nn.Module,
    to: registry.Spec,
    *,
    skip: Selector = None,
    only: Selector = None,
    inplace: bool = False,
    **kwargs: Any,
) -> tuple[nn.Module, list[Replacement]]:
    """`convert`, returning ``(new_model, report)``.

    The report has one `Replacement` per converted path, with what was carried.

    Args:
        to: the target norm: a registry spec (``"gn:32"``, ``"frozen_bn"``), a layer class
            or a callable ``f(num_features, **kw)``.
        **kwargs: keyword arguments of the target's constructor; they override what is
            carried from each converted layer (see the module docstring).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        >>> new, report = convert_with_report(net, "gn:4")
        >>> print(report[0])
        1: BatchNorm2d -> GroupNorm (carried: eps, affine, channel_dim, weight, bias)
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("convert", model)
    registry.factory(to)
    skip_items, only_items = check_selectors("convert", model, skip=skip, only=only)
    carried: dict[int, tuple[str, ...]] = {}

    def swap(path: str, module: nn.Module) -> nn.Module | None:
        if not layers.is_norm(module) or not selected(path, module, skip_items, only_items):
            return None
        new, what = _build(path, module, to, kwargs)
        carried[id(new)] = what
        return new

    new_model, report = replace_modules(model, swap, inplace=inplace)
    return new_model, [
        Replacement(r.path, r.old_type, r.new_type, carried[id(new_model.get_submodule(r.path))])
        for r in report
    ]

