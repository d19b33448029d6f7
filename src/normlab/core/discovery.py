"""Find the ``ENTRIES`` blocks that close the method files of a package.

A method file ends with ``ENTRIES = (Entry(...), ...)``; a package (`normlab.norms`,
`normlab.reparam`) imports its public modules (names without a leading underscore) and
collects those blocks, so a new method is its file, its catalogue case and its tests.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import TypeVar

E = TypeVar("E")


def discover(package: ModuleType, entry_type: type[E]) -> tuple[E, ...]:
    """The entries of every public module of ``package``, in module-name order.

    A module without ``ENTRIES`` (a shared helper) contributes none; ``ENTRIES`` must be a
    tuple of ``entry_type``.
    """
    found: list[E] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        declared = getattr(module, "ENTRIES", ())
        if not isinstance(declared, tuple) or not all(isinstance(e, entry_type) for e in declared):
            raise TypeError(
                f"{module.__name__}.ENTRIES must be a tuple of "
                f"{entry_type.__module__}.{entry_type.__qualname__}; got {declared!r}"
            )
        found.extend(declared)
    return tuple(found)
