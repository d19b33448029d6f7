"""One small description per weight-side method (and notable variant): the contract battery of
tests/test_reparam_contract.py runs every row on every case.

A method describes its cases in ``tests/weight_cases_<method>.py`` (a ``CASES`` tuple of
`WeightCase`), collected here in file-name order; a test fails when a parametrization in
``normlab.available("weight")`` has no case, so no weight-side method lands untested.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn


@dataclass(frozen=True)
class WeightCase:
    """One module with a weight-side method applied.

    ``build(dtype)`` returns a fresh module (random weights from the test's seed) with the
    method registered on ``weight``; ``input_shape`` is what it takes. ``oracle(module)`` is
    the float64 effective weight written from the paper's equation, read from the module's
    original tensors and buffers (``module.parametrizations.weight.original*``); it must not
    call normlab. ``has_state``: training forwards update buffers (spectral norm's u, v).
    """

    name: str  # the registry's canonical name
    build: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    oracle: Callable[[nn.Module], Tensor]
    variant: str = ""
    has_state: bool = False

    @property
    def id(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name


def _collect() -> tuple[WeightCase, ...]:
    found: list[WeightCase] = []
    for path in sorted(Path(__file__).parent.glob("weight_cases_*.py")):
        found.extend(importlib.import_module(path.stem).CASES)
    return tuple(found)


WEIGHT_CASES = _collect()
WEIGHT_CASE_IDS = [c.id for c in WEIGHT_CASES]
