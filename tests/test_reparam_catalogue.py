"""The weight-side registry and its catalogue agree: every registered parametrization has a
contract case, every case names a registered method, and the public names derive from the
entries."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab
from normlab import registry
from normlab.errors import ConfigError, UnknownNameError
from weight_catalogue import WEIGHT_CASES


def test_every_parametrization_has_a_contract_case() -> None:
    covered = {case.name for case in WEIGHT_CASES}
    missing = [
        e.name for e in registry.weight_entries() if e.apply is not None and e.name not in covered
    ]
    assert not missing, f"weight-side methods without a case in tests/weight_cases_*.py: {missing}"


def test_every_case_names_a_registered_method() -> None:
    for case in WEIGHT_CASES:
        assert registry.lookup_weight(case.name).name == case.name


def test_public_names_derive_from_the_entries() -> None:
    for entry in registry.weight_entries():
        if entry.apply is not None:
            assert getattr(normlab, entry.apply.__name__) is entry.apply
            assert entry.apply.__name__ in normlab.__all__
        for export in entry.exports:
            assert getattr(normlab, export.__name__) is export
        for form in entry.functional:
            assert getattr(normlab.functional, form.__name__) is form


def test_available_kinds() -> None:
    assert normlab.available() == normlab.available("layer")
    assert set(normlab.available("all")) == {
        *normlab.available("layer"),
        *normlab.available("weight"),
    }
    with pytest.raises(UnknownNameError, match="kind"):
        normlab.available("weights")


def test_unknown_weight_method_suggests_a_name() -> None:
    with pytest.raises(UnknownNameError, match="weight-side method 'spectral_nrom'"):
        registry.lookup_weight("spectral_nrom")
    with pytest.raises(UnknownNameError):
        normlab.parametrize(nn.Linear(2, 2), "batch_norm")


def test_parametrize_rejects_what_is_not_a_model() -> None:
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        normlab.parametrize(torch.zeros(2), "weight_norm")


def test_unparametrize_leaves_foreign_parametrizations_alone() -> None:
    layer = nn.Linear(4, 4)
    torch.nn.utils.parametrizations.orthogonal(layer)
    out = normlab.unparametrize(layer)
    assert torch.nn.utils.parametrize.is_parametrized(out, "weight")
