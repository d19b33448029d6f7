"""One file per method: its functional form, its module and, at its end, its registry entries.

Every public module of this package (a name without a leading underscore) that ends with
``ENTRIES = (Entry(...), ...)`` is a method; `discover` imports them, and this package's names
(``normlab.norms.BatchNorm``, ...) and ``__all__`` are the entries' classes. The registry builds
on `entries` (this package never imports the registry).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from normlab.core import discovery
from normlab.norms._base import Norm as Norm
from normlab.norms._entry import Entry as Entry

if TYPE_CHECKING:  # the same names as discovery gives, spelled out for static type checkers
    from normlab.norms.adain import AdaIN as AdaIN
    from normlab.norms.batch_instance_norm import BatchInstanceNorm as BatchInstanceNorm
    from normlab.norms.batch_norm import BatchNorm as BatchNorm
    from normlab.norms.batch_renorm import BatchRenorm as BatchRenorm
    from normlab.norms.bounded_batch_norm import BoundedBatchNorm as BoundedBatchNorm
    from normlab.norms.divisive_norm import DivisiveNorm as DivisiveNorm
    from normlab.norms.dynamic_tanh import DynamicTanh as DynamicTanh
    from normlab.norms.evo_norm import EvoNormB0 as EvoNormB0
    from normlab.norms.evo_norm import EvoNormS0 as EvoNormS0
    from normlab.norms.filter_response_norm import FilterResponseNorm as FilterResponseNorm
    from normlab.norms.frozen_batch_norm import FrozenBatchNorm as FrozenBatchNorm
    from normlab.norms.ghost_batch_norm import GhostBatchNorm as GhostBatchNorm
    from normlab.norms.group_norm import GroupNorm as GroupNorm
    from normlab.norms.instance_norm import InstanceNorm as InstanceNorm
    from normlab.norms.layer_norm import LayerNorm as LayerNorm
    from normlab.norms.lp_norm import LpNorm as LpNorm
    from normlab.norms.mean_only_batch_norm import MeanOnlyBatchNorm as MeanOnlyBatchNorm
    from normlab.norms.rms_norm import RMSNorm as RMSNorm
    from normlab.norms.streaming_norm import StreamingNorm as StreamingNorm
    from normlab.norms.switchable_norm import SwitchableNorm as SwitchableNorm
    from normlab.norms.virtual_batch_norm import VirtualBatchNorm as VirtualBatchNorm


def discover(package: ModuleType) -> tuple[Entry, ...]:
    """The `Entry` blocks of every public module of ``package`` (see `normlab.core.discovery`)."""
    return discovery.discover(package, Entry)


_ENTRIES = discover(importlib.import_module(__name__))


def entries() -> tuple[Entry, ...]:
    """Every method of this package, in module-name order (the registry sorts by name)."""
    return _ENTRIES


globals().update({e.cls.__name__: e.cls for e in _ENTRIES})

__all__ = sorted({"Entry", "Norm", "discover", "entries", *(e.cls.__name__ for e in _ENTRIES)})
