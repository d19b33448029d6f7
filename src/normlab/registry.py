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
from normlab.norms.batch_instance_norm import BatchInstanceNorm
from normlab.norms.batch_norm import BatchNorm
from normlab.norms.batch_renorm import BatchRenorm
from normlab.norms.evo_norm import EvoNormB0, EvoNormS0
from normlab.norms.frozen_batch_norm import FrozenBatchNorm
from normlab.norms.ghost_batch_norm import GhostBatchNorm
from normlab.norms.group_norm import GroupNorm
from normlab.norms.instance_norm import InstanceNorm
from normlab.norms.layer_norm import LayerNorm
from normlab.norms.rms_norm import RMSNorm
from normlab.norms.switchable_norm import SwitchableNorm
from normlab.norms.virtual_batch_norm import VirtualBatchNorm


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
register(Entry(
    "ghost_batch_norm", GhostBatchNorm, "batch statistics per ghost batch (chunk of the batch)",
    "Hoffer, Hubara & Soudry 2017, arXiv:1705.08741", aliases=("gbn", "ghost_bn"),
    spec_arg="ghost_batch_size",
))
register(Entry(
    "batch_renorm", BatchRenorm, "batch statistics corrected toward the moving ones (r, d)",
    "Ioffe 2017, arXiv:1702.03275", aliases=("brn", "batchrenorm"),
))
register(Entry(
    "frozen_batch_norm", FrozenBatchNorm, "fixed statistics and affine, unaffected by .train()",
    "fine-tuning with the source data's statistics (torchvision / detectron2 FrozenBatchNorm2d)",
    aliases=("frozen_bn", "fbn"),
))
register(Entry(
    "virtual_batch_norm", VirtualBatchNorm, "each example with a fixed reference batch",
    "Salimans et al. 2016, arXiv:1606.03498", aliases=("vbn",),
))
register(Entry(
    "batch_instance_norm", BatchInstanceNorm, "learned per-channel gate between BN and IN",
    "Nam & Kim 2018, arXiv:1805.07925", aliases=("bin",),
))
register(Entry(
    "switchable_norm", SwitchableNorm, "softmax-weighted mix of IN, LN and BN statistics",
    "Luo et al. 2019, arXiv:1806.10779", aliases=("sn", "switchnorm"),
))
register(Entry(
    "evo_norm_b0", EvoNormB0, "batch-variance EvoNorm: x / max(batch σ, v·x + instance σ)",
    "Liu et al. 2020, arXiv:2004.02967", aliases=("evonorm_b0", "b0"),
))
register(Entry(
    "evo_norm_s0", EvoNormS0, "sample EvoNorm: x·sigmoid(v·x) / group σ",
    "Liu et al. 2020, arXiv:2004.02967", aliases=("evonorm_s0", "s0"), spec_arg="num_groups",
))
