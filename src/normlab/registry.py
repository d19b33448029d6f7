"""Names for every layer: ``create("gn:32", 64)``, ``factory("bn")``, ``available()``.

The names are the `normlab.norms.Entry` blocks that close each method file, discovered by
`normlab.norms.entries`; `register` adds a method defined elsewhere (a plugin, a test's toy).

A spec is a registered name or alias, optionally followed by ``:value`` for the method's main
argument (``"gn:32"`` is GroupNorm with ``num_groups=32``) or one of its other forms
(`Entry.spec_forms`, `Entry.spec_flags`): ``"gn:max32"`` (``max_groups=32``: the largest
divisor of C up to 32, which fits every layer of a model), ``"gn:size16"`` (``group_size=16``),
``"ln:per_position"`` (LN over C at each position, ConvNeXt's). ``normlab describe NAME`` lists
a method's forms.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from normlab import errors, norms, reparam
from normlab.norms import Entry as Entry
from normlab.reparam import WeightEntry as WeightEntry

_ENTRIES: dict[str, Entry] = {}
_ALIASES: dict[str, str] = {}
_WEIGHT_ENTRIES: dict[str, WeightEntry] = {}
_WEIGHT_ALIASES: dict[str, str] = {}


def register(entry: Entry) -> Entry:
    """Add a method to the registry (its name and aliases must be new); returns ``entry``."""
    for key in (entry.name, *entry.aliases):
        if key in _ALIASES:
            raise ValueError(f"norm name {key!r} is already registered to {_ALIASES[key]!r}")
    _ENTRIES[entry.name] = entry
    for key in (entry.name, *entry.aliases):
        _ALIASES[key] = entry.name
    return entry


def register_weight(entry: WeightEntry) -> WeightEntry:
    """Add a weight-side method (its name and aliases must be new); returns ``entry``."""
    for key in (entry.name, *entry.aliases):
        if key in _WEIGHT_ALIASES or key in _ALIASES:
            raise ValueError(f"name {key!r} is already registered")
    _WEIGHT_ENTRIES[entry.name] = entry
    for key in (entry.name, *entry.aliases):
        _WEIGHT_ALIASES[key] = entry.name
    return entry


def available(kind: str = "layer") -> list[str]:
    """Canonical names, sorted: of the norm layers (``kind="layer"``, the default), of the
    weight-side methods (``"weight"``), or of both (``"all"``).

    Args:
        kind: ``"layer"`` (norm layers), ``"weight"`` (weight-side methods) or ``"all"``.
    """
    if kind == "layer":
        return sorted(_ENTRIES)
    if kind == "weight":
        return sorted(_WEIGHT_ENTRIES)
    if kind == "all":
        return sorted({*_ENTRIES, *_WEIGHT_ENTRIES})
    raise errors.unknown_choice("kind", kind, ["layer", "weight", "all"])


def entries() -> list[Entry]:
    """Every registered entry, sorted by name."""
    return [_ENTRIES[name] for name in available()]


def lookup(name: str) -> Entry:
    """The entry for a canonical name or alias (case-insensitive, '-' read as '_')."""
    key = name.strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise errors.unknown_name(name, _ALIASES)
    return _ENTRIES[_ALIASES[key]]


def known_names() -> frozenset[str]:
    """Every name and alias of the norm layers (normalized: lower case, '_' for '-')."""
    return frozenset(_ALIASES)


def known_weight_names() -> frozenset[str]:
    """Every name and alias of the weight-side methods (normalized like `known_names`)."""
    return frozenset(_WEIGHT_ALIASES)


def weight_entries() -> list[WeightEntry]:
    """Every registered weight-side method, sorted by name."""
    return [_WEIGHT_ENTRIES[name] for name in sorted(_WEIGHT_ENTRIES)]


def lookup_weight(name: str) -> WeightEntry:
    """The weight-side entry for a canonical name or alias (``"wn"``, ``"spectral-norm"``)."""
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in _WEIGHT_ALIASES:
        raise errors.unknown_choice("weight-side method", str(name), sorted(_WEIGHT_ALIASES))
    return _WEIGHT_ENTRIES[_WEIGHT_ALIASES[key]]


def _parse(spec: str) -> tuple[Entry, dict[str, Any]]:
    if not spec.strip():
        raise errors.bad_spec(spec, "expected a non-empty string")
    name, sep, value = spec.partition(":")
    entry = lookup(name)
    if not sep:
        return entry, {}
    value = value.strip()
    key = value.lower().replace("-", "_")
    if key in entry.spec_flags:
        return entry, {key: True}
    for prefix, (keyword, *_) in entry.spec_forms.items():
        number = value[len(prefix):]
        if key.startswith(prefix) and number.strip().lstrip("+-").isdigit():
            return entry, {keyword: int(number)}
    forms = entry.spec_help()
    if not forms:
        raise errors.bad_spec(spec, f"{entry.name!r} takes no ':value' argument")
    not_a_form = errors.bad_spec(
        spec, f"{value!r} is none of {entry.name!r}'s forms: {'; '.join(forms)}"
    )
    if entry.spec_arg is None:
        raise not_a_form
    try:
        return entry, {entry.spec_arg: int(value)}
    except ValueError:
        raise not_a_form from None


Spec = str | type[nn.Module] | Callable[..., nn.Module]


def create(spec: Spec, num_features: int, **kwargs: Any) -> nn.Module:
    """Build a layer: ``create("gn:32", 64)`` is ``GroupNorm(64, num_groups=32)``.

    ``spec`` may also be a layer class or a callable such as ``functools.partial(GroupNorm,
    num_groups=8)``, called as ``spec(num_features, **kwargs)`` (timm's re-binding idiom).

    Args:
        spec: a registry spec: a name or alias (``"bn"``), optionally with the value of its main
            argument (``"gn:32"``); or a layer class or callable, called as ``spec(num_features,
            **kwargs)``.
        num_features: C, the number of channels.
        **kwargs: keyword arguments of the layer's constructor; they override the spec's.
    """
    if not isinstance(spec, str):
        if not callable(spec):
            raise errors.bad_spec(repr(spec), "expected a name, a layer class or a callable")
        return spec(num_features, **kwargs)
    entry, spec_kwargs = _parse(spec)
    return entry.cls(num_features, **{**entry.defaults, **spec_kwargs, **kwargs})


def factory(spec: Spec, **kwargs: Any) -> Callable[..., nn.Module]:
    """A ``norm_layer=`` callable for torchvision / timm constructors: ``f(num_features)``.

    Args:
        spec: a registry spec, layer class or callable, as for `create`.
        **kwargs: keyword arguments bound into every layer the callable builds.
    """
    if isinstance(spec, str):
        _parse(spec)  # fail now, not inside the model constructor
    elif not callable(spec):
        raise errors.bad_spec(repr(spec), "expected a name, a layer class or a callable")

    @functools.wraps(create)
    def make(num_features: int, **more: Any) -> nn.Module:
        return create(spec, num_features, **{**kwargs, **more})

    make.__name__ = make.__qualname__ = f"factory({getattr(spec, '__name__', spec)!r})"
    return make


for _entry in norms.entries():  # every method file's ENTRIES block
    register(_entry)
for _weight_entry in reparam.entries():
    register_weight(_weight_entry)
