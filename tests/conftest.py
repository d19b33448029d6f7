"""Shared pytest configuration: helper-module imports and a deterministic seed per test.

Hypothesis profiles live in tests/_hypothesis_profiles.py (imported by the property tests).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# tests/ holds plain helper modules (oracles, catalogue) that the test files import by name
_TESTS = str(Path(__file__).parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

# methods defined and registered inside the test directory (a toy proves a new method needs no
# edit outside its file, its catalogue case and its unique tests)
import toy_norms  # noqa: E402, F401


@pytest.fixture(autouse=True)
def _seed_and_default_dtype() -> Iterator[None]:
    """Every test starts from the same RNG state and leaves the default dtype as it found it."""
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)

# Per-method catalogue cases are imported by catalogue.py; importing one first (as
# --doctest-modules would) makes a circular import.
# semantic_mutants/ is data for scripts/semantic_mutants.py, not tests.
collect_ignore_glob = ["cases_*.py", "weight_cases_*.py", "toy_norms/*", "semantic_mutants/*"]
