"""Weight-side normalization: methods that normalize a layer's weight instead of its activations.

Every method that is a function of a weight is a `torch.nn.utils.parametrize` parametrization
registered through `normlab.reparam._base.register_once`; the layers that also normalize their
input (cosine normalization, normalization propagation) are modules. One file per method, ending
with ``ENTRIES = (WeightEntry(...), ...)``; `entries` discovers them (this package never imports
the registry or `normlab.norms`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from normlab.core import discovery
from normlab.reparam._base import WeightParametrization as WeightParametrization
from normlab.reparam._entry import WeightEntry as WeightEntry


def discover(package: ModuleType) -> tuple[WeightEntry, ...]:
    """The `WeightEntry` blocks of every public module of ``package``."""
    return discovery.discover(package, WeightEntry)


_ENTRIES = discover(importlib.import_module(__name__))


def entries() -> tuple[WeightEntry, ...]:
    """Every weight-side method of this package, in module-name order."""
    return _ENTRIES


_PUBLISHED = {
    **{e.apply.__name__: e.apply for e in _ENTRIES if e.apply is not None},
    **{getattr(x, "__name__", ""): x for e in _ENTRIES for x in e.exports},
}
globals().update(_PUBLISHED)

__all__ = sorted({"WeightEntry", "WeightParametrization", "discover", "entries", *_PUBLISHED})
