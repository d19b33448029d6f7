"""Constructor arguments written in torch.nn's order get a normlab error that names the fix.

Every normlab layer takes the channel count as its only positional argument; everything else
is keyword-only (STYLE.md §10.1). Code written for torch.nn passes more positionally —
``GroupNorm(32, 64)`` is ``nn.GroupNorm(num_groups=32, num_channels=64)``, ``BatchNorm(64,
1e-3)`` passes eps — and torch.nn's keyword names differ (``elementwise_affine``,
``num_channels``). Python's own ``TypeError`` ("takes 2 positional arguments but 3 were
given") names neither the reading nor the fix; `guard_arguments`, applied to every `Norm`
subclass by ``Norm.__init_subclass__``, raises an `ArgumentError` instead, which says what the
arguments mean in torch.nn's order and which normlab call to write. The checks cost a length
test and a set lookup per construction; the error path builds the suggested layer to make
sure the suggestion works.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

from normlab.errors import ConfigError, did_you_mean

__all__ = ["ArgumentError", "guard_arguments"]


class ArgumentError(ConfigError, TypeError):
    """Constructor arguments a normlab layer does not take (a ValueError like every normlab
    error, and a TypeError like Python's own, so ``except TypeError`` keeps working)."""


_NORM_BASE = ("num_features", "eps", "momentum", "affine", "track_running_stats")

#: torch.nn's positional order (torch's names) for the layers with a torch.nn (or
#: torchvision) counterpart; `TORCH_NAMES` translates the names.
TORCH_ORDER: dict[str, tuple[str, tuple[str, ...]]] = {
    "BatchNorm": ("torch.nn.BatchNorm2d", _NORM_BASE),
    "InstanceNorm": ("torch.nn.InstanceNorm2d", _NORM_BASE),
    "GroupNorm": ("torch.nn.GroupNorm", ("num_groups", "num_channels", "eps", "affine")),
    "LayerNorm": ("torch.nn.LayerNorm", ("normalized_shape", "eps", "elementwise_affine", "bias")),
    "RMSNorm": ("torch.nn.RMSNorm", ("normalized_shape", "eps", "elementwise_affine")),
    "FrozenBatchNorm": ("torchvision.ops.FrozenBatchNorm2d", ("num_features", "eps")),
}

#: torch.nn keyword names and what normlab calls them.
TORCH_NAMES = {
    "num_channels": "num_features",
    "normalized_shape": "num_features",
    "elementwise_affine": "affine",
}


def _layer_name(cls: type) -> str:
    prefix = "normlab." if cls.__module__.startswith("normlab.") else ""
    return prefix + cls.__name__


def _call(cls: type, channels: object, keywords: dict[str, Any]) -> str:
    named = "".join(f", {k}={v!r}" for k, v in keywords.items())
    return f"{_layer_name(cls)}({channels!r}{named})"


def _builds(cls: type, channels: object, keywords: dict[str, Any]) -> bool:
    try:
        cls(channels, **keywords)
    except Exception:  # any failure: this reading of the arguments is not the fix
        return False
    return True


def _reading(
    cls: type, order: Sequence[str], args: tuple[Any, ...], accepted: set[str]
) -> tuple[object, dict[str, Any]] | None:
    """``args`` read in ``order``: (channels, keywords), or None when that reading fails."""
    order = [TORCH_NAMES.get(n, n) for n in order]
    if len(args) > len(order) or "num_features" not in order[: len(args)]:
        return None
    named = dict(zip(order, args, strict=False))
    if not set(named) - {"num_features"} <= accepted:
        return None
    channels = named.pop("num_features")
    return (channels, named) if _builds(cls, channels, named) else None


def too_many_positional(
    cls: type, args: tuple[Any, ...], kwargs: dict[str, Any], keywords: Sequence[str]
) -> ArgumentError:
    name = _layer_name(cls)
    torch_name, order = TORCH_ORDER.get(cls.__name__, ("", ()))
    accepted = set(keywords)
    fix = ""
    readings = ((torch_name, order), ("", ("num_features", *keywords)))
    for source, names in readings:
        if not names:
            continue
        reading = _reading(cls, names, args, accepted)
        if reading is not None:
            channels, named = reading
            call = _call(cls, channels, {**named, **kwargs})
            fix = (f" In {source}'s order ({', '.join(names)}) that is: write {call}."
                   if source else f" Pass them by name, e.g. {call}.")
            break
    if not fix:
        fix = f" Pass the channel count first and the rest by name, e.g. {name}(64, eps=1e-5)."
    shown_args = ", ".join(repr(a) for a in args)
    return ArgumentError(
        f"{name} takes one positional argument, the number of channels (num_features); "
        f"every other argument is keyword-only. Got {len(args)} positional arguments "
        f"({shown_args}).{fix} Its keyword arguments: {', '.join(keywords)}."
    )


def unexpected_keyword(
    cls: type, key: str, kwargs: dict[str, Any], keywords: Sequence[str]
) -> ArgumentError:
    name = _layer_name(cls)
    normlab_name = TORCH_NAMES.get(key)
    if normlab_name == "num_features":
        rest = {k: v for k, v in kwargs.items() if k != key}
        hint = (f" It is torch.nn's name for the channel count, normlab's only positional "
                f"argument: write {_call(cls, kwargs[key], rest)}.")
    elif normlab_name is not None and normlab_name in keywords:
        hint = f" It is torch.nn's name for normlab's {normlab_name}=."
    else:
        hint = did_you_mean(key, keywords)
    return ArgumentError(
        f"{name} got an unexpected keyword argument {key!r}.{hint} Its keyword arguments: "
        f"{', '.join(keywords)}."
    )


def guard_arguments(cls: type) -> None:
    """Wrap ``cls.__init__`` (when ``cls`` defines one with a fixed signature) so that extra
    positional arguments and unknown keywords raise `ArgumentError` (module docstring)."""
    init = cls.__dict__.get("__init__")
    if init is None or getattr(init, "_normlab_guarded", False):
        return
    params = list(inspect.signature(init).parameters.values())[1:]  # without self
    kinds = {p.kind for p in params}
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return
    positional = sum(
        p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in params
    )
    open_keywords = inspect.Parameter.VAR_KEYWORD in kinds
    names = frozenset(p.name for p in params if p.kind != inspect.Parameter.POSITIONAL_ONLY)
    keywords = tuple(p.name for p in params if p.kind == inspect.Parameter.KEYWORD_ONLY)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > positional:
            raise too_many_positional(cls, args, kwargs, keywords) from None
        if not open_keywords:
            for key in kwargs:
                if key not in names:
                    raise unexpected_keyword(cls, key, kwargs, keywords) from None
        init(self, *args, **kwargs)

    __init__._normlab_guarded = True  # type: ignore[attr-defined]  # marks the wrapper
    cls.__init__ = __init__  # type: ignore[misc]  # the same signature (functools.wraps)

