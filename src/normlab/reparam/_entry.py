"""A weight-side method's registry entry, declared once at the end of the method's own file.

Each file of `normlab.reparam` ends with ``ENTRIES = (WeightEntry(...), ...)``: the function
that applies the method to one module (``weight_norm(module)``), its parametrization class,
its registry name and aliases, its functional forms, the layers and helpers it publishes, its
paper. `normlab.reparam` discovers those blocks; the registry (``normlab.registry.
lookup_weight``), `normlab.parametrize`, `normlab.functional` and ``normlab.<name>`` derive
from them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from normlab.core.docstrings import append_shared_args
from normlab.reparam._layers import TORCH_ARGS

# Modules whose ``weight`` a weight-side method applies to by default (model-wide tools).
DEFAULT_TARGETS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class WeightEntry:
    """One registered weight-side method.

    Args:
        name: the canonical registry name (``"weight_norm"``).
        apply: ``apply(module, name="weight", **kwargs) -> module`` registers the method's
            parametrization on one module (in place) and returns it; published as
            ``normlab.<apply.__name__>``. None for a method that is not a parametrization
            (a projection step such as SVB, an initializer): its helpers go in ``exports``.
        paper: the reference, e.g. ``"Salimans & Kingma 2016, arXiv:1602.07868"``.
        parametrization: the `WeightParametrization` subclass ``apply`` registers (None when
            ``apply`` is None).
        aliases: other names that resolve to this entry (``"wn"``).
        functional: pure functional forms (``normalized_weight(v, g)``), published in
            `normlab.functional` under their ``__name__``.
        exports: other public names of the method: layers (``CosineLinear``), initializers
            (``init_weight_norm_``), projections (``bound_singular_values_``).
        targets: the module types `normlab.parametrize` applies the method to by default.
    """

    name: str
    apply: Callable[..., nn.Module] | None
    paper: str
    parametrization: type[nn.Module] | None = None
    aliases: tuple[str, ...] = ()
    functional: tuple[Callable[..., Any], ...] = ()
    exports: tuple[Any, ...] = ()
    targets: tuple[type[nn.Module], ...] = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        """Document torch.nn's arguments (`TORCH_ARGS`) of the published layers and of the
        functional forms once."""
        for obj in (*self.functional, *(x for x in self.exports if inspect.isclass(x))):
            append_shared_args(obj, TORCH_ARGS)

    @property
    def summary(self) -> str:
        """The first line of ``apply``'s (or the first export's) docstring, without its period."""
        documented = self.apply if self.apply is not None else (self.exports or (None,))[0]
        doc = inspect.getdoc(documented) or ""
        return doc.splitlines()[0].rstrip(".") if doc else self.name
