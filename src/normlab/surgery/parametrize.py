"""Apply a weight-side method to every layer of a model, and take it off again.

``normlab.parametrize(model, "weight_norm")`` registers the method's parametrization on the
``weight`` of every module of the method's target types (by default nn.Linear and every
nn.Conv*d / nn.ConvTranspose*d, through the entry's ``targets``), each module once even when
it is shared. ``only=`` / ``skip=`` select as in every surgery tool (paths, fnmatch patterns,
classes); a module selected by ``only=`` that is not of a target type is parametrized too when
it has the named parameter (an nn.Embedding for spectral norm, say).

`unparametrize` is the inverse: it removes normlab's weight-side parametrizations, leaving
the effective weight (computed in eval mode, so spectral norm runs no power iteration) as a
plain parameter (``bake=True``, the default: what `fold` does for deployment), or the
unnormalized original (``bake=False``, where the method has a single original tensor).
Parametrizations that are not normlab's (torch's orthogonal, a user's) are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.utils import parametrize as torch_parametrize

from normlab import registry
from normlab.errors import ConfigError
from normlab.reparam._base import WeightParametrization, bake_weight
from normlab.surgery.walker import (
    Selector,
    check_selectors,
    copy_model,
    matches,
    not_a_model,
    selected,
)

__all__ = ["Parametrized", "parametrize", "parametrize_with_report", "unparametrize"]


# -- errors raised here ----------------------------------------------------------------------------


def nothing_selected(method: str, only: object, skip: object) -> ConfigError:
    return ConfigError(
        f"parametrize: no module of the model was selected for {method!r} (only={only!r}, "
        f"skip={skip!r}); it applies to nn.Linear and nn.Conv*d / nn.ConvTranspose*d by default. "
        "Check the paths or classes in only= / skip=."
    )


def mixed_parametrizations(path: str, name: str, others: list[str]) -> ConfigError:
    return ConfigError(
        f"unparametrize: {path or '<root>'}.{name} also has parametrizations that are not "
        f"normlab's ({', '.join(others)}); torch can only remove all of a tensor's "
        "parametrizations at once. Remove them with torch.nn.utils.parametrize."
        "remove_parametrizations, or skip= this module."
    )


def cannot_restore(path: str, name: str, method: str) -> ConfigError:
    return ConfigError(
        f"unparametrize(bake=False): {path or '<root>'}.{name} ({method}) keeps several original "
        "tensors (e.g. weight norm's g and v), so there is no single unnormalized weight to "
        "restore. Use bake=True (the effective weight) instead."
    )


# -- the tools -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parametrized:
    """One module whose ``name`` tensor `parametrize` / `unparametrize` acted on.

    Attributes:
        path: the module's dotted path.
        module_type: the module's class.
        name: the reparametrized tensor's name (``"weight"``).
        method: the weight-side method's registry name.
    """

    path: str
    module_type: type
    name: str
    method: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}.{self.name}: {self.method} ({self.module_type.__name__})"


def only_normlab_parametrizations(module: nn.Module) -> bool:
    """Every parametrization on ``module`` (on any tensor) is a normlab weight-side method."""
    return all(
        isinstance(p, WeightParametrization)
        for chain in module.parametrizations.values()
        for p in chain
    )


def _has_tensor(module: nn.Module, name: str) -> bool:
    return name in module._parameters or torch_parametrize.is_parametrized(module, name)


def parametrize_with_report(
    model: nn.Module,
    method: str,
    *,
    name: str = "weight",
    only: Selector = None,
    skip: Selector = None,
    inplace: bool = False,
    **kwargs: Any,
) -> tuple[nn.Module, list[Parametrized]]:
    """`parametrize`, also returning one `Parametrized` per module acted on.

    Args:
        method: the weight-side method's registry name.
        name: the parameter of each layer to reparametrize.
        **kwargs: keyword arguments of the method.
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("parametrize", model)
    entry = registry.lookup_weight(method)
    if entry.apply is None:
        raise ConfigError(
            f"parametrize: {entry.name!r} is not a parametrization; use "
            f"{', '.join('normlab.' + getattr(x, '__name__', '?') for x in entry.exports)}."
        )
    skip_items, only_items = check_selectors("parametrize", model, skip=skip, only=only)
    root = model if inplace else copy_model(model)
    report: list[Parametrized] = []
    for path, module in root.named_modules():
        if not _has_tensor(module, name) or not selected(path, module, skip_items, only_items):
            continue
        if not isinstance(module, entry.targets) and not (
            only_items and matches(path, module, only_items)
        ):
            continue
        module_type = _original_type(module)
        entry.apply(module, name=name, **kwargs)
        report.append(Parametrized(path, module_type, name, entry.name))
    if not report:
        raise nothing_selected(entry.name, only, skip)
    return root, report


def _original_type(module: nn.Module) -> type:
    """The module's class before torch swapped it for a generated ``Parametrized<Class>``."""
    if torch_parametrize.is_parametrized(module):
        return type(module).__bases__[0]
    return type(module)


def parametrize(
    model: nn.Module,
    method: str,
    *,
    name: str = "weight",
    only: Selector = None,
    skip: Selector = None,
    inplace: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Apply a weight-side method to every target layer of ``model``.

    ``parametrize(model, "spectral_norm", skip="head")`` is ``spectral_norm(m)`` for every
    nn.Linear / nn.Conv*d / nn.ConvTranspose*d ``m`` outside ``head``; ``kwargs`` go to the
    method (``n_power_iterations=2``). Returns a new model unless ``inplace=True``.

    Args:
        method: the weight-side method's registry name (``"spectral_norm"``,
            ``"weight_norm"``, ...).
        name: the parameter of each layer to reparametrize.
        **kwargs: keyword arguments of the method.

    Raises:
        UnknownNameError: ``method`` names no weight-side method.
        ConfigError: nothing was selected, or a selected layer already has the method.
    """
    return parametrize_with_report(
        model, method, name=name, only=only, skip=skip, inplace=inplace, **kwargs
    )[0]


def unparametrize(
    model: nn.Module,
    method: str | None = None,
    *,
    bake: bool = True,
    only: Selector = None,
    skip: Selector = None,
    inplace: bool = False,
) -> nn.Module:
    """Remove normlab's weight-side parametrizations (of ``method``, or all) from ``model``.

    ``bake=True`` leaves the effective weight (eval mode: no power iteration) as a plain
    parameter, so the model computes the same function; ``bake=False`` restores the
    unnormalized original. Returns a new model unless ``inplace=True``. A model (or module)
    without any is returned unchanged.

    Args:
        method: remove only this method's parametrizations (a registry name); None: all.
        bake: keep the effective (normalized) weight (True) or the unnormalized original.
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("unparametrize", model)
    wanted = None if method is None else registry.lookup_weight(method).name
    skip_items, only_items = check_selectors("unparametrize", model, skip=skip, only=only)
    root = model if inplace else copy_model(model)
    for path, module in list(root.named_modules()):
        if not torch_parametrize.is_parametrized(module):
            continue
        if not selected(path, module, skip_items, only_items):
            continue
        for name in list(module.parametrizations.keys()):
            chain = list(module.parametrizations[name])
            ours = [p for p in chain if isinstance(p, WeightParametrization)]
            if not ours or (wanted is not None and all(p.method != wanted for p in ours)):
                continue
            if len(ours) != len(chain):
                others = [type(p).__name__ for p in chain if p not in ours]
                raise mixed_parametrizations(path, name, others)
            _remove(module, name, path, ours[0].method, bake=bake)
    return root


def _remove(module: nn.Module, name: str, path: str, method: str, *, bake: bool) -> None:
    if bake:
        bake_weight(module, name)
        return
    if not hasattr(module.parametrizations[name], "original"):
        raise cannot_restore(path, name, method)
    torch_parametrize.remove_parametrizations(module, name, leave_parametrized=False)
