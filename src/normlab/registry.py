"""Names for every layer: ``create("gn:32", 64)``, ``factory("bn")``, ``available()``.

A spec is a registered name or alias, optionally followed by ``:value`` for the method's main
argument (``"gn:32"`` is GroupNorm with ``num_groups=32``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from normlab import errors
from normlab.norms.batch_norm import BatchNorm
from normlab.norms.group_norm import GroupNorm
from normlab.norms.instance_norm import InstanceNorm
from normlab.norms.layer_norm import LayerNorm
from normlab.norms.rms_norm import RMSNorm


@dataclass(frozen=True)
class Entry:
    """One registered method."""

    name: str
    cls: type[nn.Module]
    summary: str
    paper: str
    aliases: tuple[str, ...] = ()
    spec_arg: str | None = None  # the keyword that "name:value" sets
    defaults: dict[str, Any] = field(default_factory=dict)


_ENTRIES: dict[str, Entry] = {}
_ALIASES: dict[str, str] = {}


def register(entry: Entry) -> Entry:
    """Add a method to the registry (its name and aliases must be new)."""
    for key in (entry.name, *entry.aliases):
        if key in _ALIASES:
            raise ValueError(f"norm name {key!r} is already registered to {_ALIASES[key]!r}")
    _ENTRIES[entry.name] = entry
    for key in (entry.name, *entry.aliases):
        _ALIASES[key] = entry.name
    return entry


def available() -> list[str]:
    """Canonical names of every registered method, sorted."""
    return sorted(_ENTRIES)


def entries() -> list[Entry]:
    return [_ENTRIES[name] for name in available()]


def lookup(name: str) -> Entry:
    """The entry for a canonical name or alias (case-insensitive, '-' read as '_')."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise errors.unknown_name(name, _ALIASES)
    return _ENTRIES[_ALIASES[key]]


def _parse(spec: str) -> tuple[Entry, dict[str, Any]]:
    if not spec.strip():
        raise errors.bad_spec(spec, "expected a non-empty string")
    name, sep, value = spec.partition(":")
    entry = lookup(name)
    if not sep:
        return entry, {}
    if entry.spec_arg is None:
        raise errors.bad_spec(spec, f"{entry.name!r} takes no ':value' argument")
    try:
        parsed = int(value)
    except ValueError:
        raise errors.bad_spec(spec, f"{entry.spec_arg} must be an int, got {value!r}") from None
    return entry, {entry.spec_arg: parsed}


Spec = str | type[nn.Module] | Callable[..., nn.Module]


def create(spec: Spec, num_features: int, **kwargs: Any) -> nn.Module:
    """Build a layer: ``create("gn:32", 64)`` is ``GroupNorm(64, num_groups=32)``.

    ``spec`` may also be a layer class or a callable such as ``functools.partial(GroupNorm,
    num_groups=8)``, called as ``spec(num_features, **kwargs)`` (timm's re-binding idiom).
    """
    if not isinstance(spec, str):
        if not callable(spec):
            raise errors.bad_spec(repr(spec), "expected a name, a layer class or a callable")
        return spec(num_features, **kwargs)
    entry, spec_kwargs = _parse(spec)
    return entry.cls(num_features, **{**entry.defaults, **spec_kwargs, **kwargs})


def factory(spec: Spec, **kwargs: Any) -> Callable[..., nn.Module]:
    """A ``norm_layer=`` callable for torchvision / timm constructors: ``f(num_features)``."""
    if isinstance(spec, str):
        _parse(spec)  # fail now, not inside the model constructor
    elif not callable(spec):
        raise errors.bad_spec(repr(spec), "expected a name, a layer class or a callable")

    @functools.wraps(create)
    def make(num_features: int, **more: Any) -> nn.Module:
        return create(spec, num_features, **{**kwargs, **more})

    make.__name__ = make.__qualname__ = f"factory({getattr(spec, '__name__', spec)!r})"
    return make


register(Entry(
    "batch_norm", BatchNorm, "statistics over the batch and positions, per channel",
    "Ioffe & Szegedy 2015, arXiv:1502.03167", aliases=("bn", "batchnorm"),
))
register(Entry(
    "layer_norm", LayerNorm, "statistics over channels and positions, per sample",
    "Ba, Kiros & Hinton 2016, arXiv:1607.06450", aliases=("ln", "layernorm"),
))
register(Entry(
    "instance_norm", InstanceNorm, "statistics over positions, per sample and channel",
    "Ulyanov, Vedaldi & Lempitsky 2016, arXiv:1607.08022", aliases=("in", "instancenorm"),
))
register(Entry(
    "group_norm", GroupNorm, "statistics over groups of channels and positions, per sample",
    "Wu & He 2018, arXiv:1803.08494", aliases=("gn", "groupnorm"), spec_arg="num_groups",
))
register(Entry(
    "rms_norm", RMSNorm, "root mean square over channels, per sample and position",
    "Zhang & Sennrich 2019, arXiv:1910.07467", aliases=("rms", "rmsnorm"),
))
