"""A method's registry entry, declared once at the end of the method's own file.

Each method file ends with ``ENTRIES = (Entry(...), ...)``: its class, its registry name and
aliases, its functional form(s), the helpers it publishes, its paper. `normlab.norms` discovers
those blocks (every public module of the package), and the registry, `normlab.functional`,
``normlab.<Class>``, ``__all__`` and ``dir(normlab)`` all derive from them, so a new method is
its file, its catalogue case and its unique tests.

What a layer normalizes over is not restated here: it is the class's ``axes`` (or, for a method
that mixes several statistics, its ``statistics``) attribute; the one-line summary is the first
line of the class docstring.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from normlab.core.docstrings import append_shared_args
from normlab.norms._base import FUNCTIONAL_ARGS


@dataclass(frozen=True)
class Entry:
    """One registered method.

    Args:
        name: the canonical registry name (``"group_norm"``).
        cls: the layer class; ``normlab.<cls.__name__>`` is derived from it.
        paper: the reference, e.g. ``"Wu & He 2018, arXiv:1803.08494"``.
        aliases: other names that resolve to this entry (``"gn"``, ``"groupnorm"``).
        functional: the pure functional forms, published in `normlab.functional` under their
            ``__name__``.
        exports: other public helpers of the method (published as ``normlab.<__name__>``).
        spec_arg: the keyword that ``"name:value"`` sets (``"gn:32"`` sets ``num_groups``).
        spec_forms: other ``"name:<prefix><int>"`` forms, prefix -> (keyword, placeholder,
            what it means): ``{"max": ("max_groups", "G", ...)}`` makes ``"gn:max32"`` set
            ``max_groups=32``.
        spec_flags: ``"name:<keyword>"`` forms that set the keyword to True, keyword -> what it
            means (``"ln:per_position"``).
        spec_note: what ``"name:<value>"`` (or, for a method with only flags, the bare name)
            means, shown by ``normlab describe``.
        defaults: keyword arguments `normlab.create` passes unless given.
        fitting: a spec that fits small models (8 to 32 channels, batches of 4), e.g.
            ``"gn:4"``; None when the name itself fits.
    """

    name: str
    cls: type[nn.Module]
    paper: str
    aliases: tuple[str, ...] = ()
    functional: tuple[Callable[..., Any], ...] = ()
    exports: tuple[Callable[..., Any], ...] = ()
    spec_arg: str | None = None
    spec_forms: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)
    spec_flags: Mapping[str, str] = field(default_factory=dict)
    spec_note: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    fitting: str | None = None

    def __post_init__(self) -> None:
        """Document the functional forms' shared arguments (`FUNCTIONAL_ARGS`) once."""
        for fn in self.functional:
            append_shared_args(fn, FUNCTIONAL_ARGS)

    @property
    def summary(self) -> str:
        """The first line of the class docstring, without its final period."""
        doc = inspect.getdoc(self.cls) or ""
        return doc.splitlines()[0].rstrip(".") if doc else self.cls.__name__

    def spec_help(self) -> list[str]:
        """One line per spec form, e.g. ``"'group_norm:max<G>' sets max_groups: ..."``."""
        lines = []
        note = f": {self.spec_note}" if self.spec_note else ""
        if self.spec_arg:
            lines.append(f"'{self.name}:<{self.spec_arg}>' sets {self.spec_arg}{note}")
        elif note and (self.spec_forms or self.spec_flags):
            lines.append(f"'{self.name}'{note}")
        for prefix, (keyword, placeholder, meaning) in self.spec_forms.items():
            lines.append(f"'{self.name}:{prefix}<{placeholder}>' sets {keyword}: {meaning}")
        for keyword, meaning in self.spec_flags.items():
            lines.append(f"'{self.name}:{keyword}' sets {keyword}=True: {meaning}")
        return lines

    @property
    def small_spec(self) -> str:
        """The spec to build this method in a small model: ``fitting`` or the name."""
        return self.fitting or self.name
