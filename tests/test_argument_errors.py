"""Helpful failures: torch.nn's argument order or names given to a normlab layer, and
``only=`` / ``skip=`` selectors that match no module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab
from normlab import errors
from normlab.norms._arguments import ArgumentError
from normlab.surgery import convert, freeze, parametrize, unfreeze, unparametrize


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: normlab.GroupNorm(32, 64),
         "In torch.nn.GroupNorm's order (num_groups, num_channels, eps, affine) that is: write "
         "normlab.GroupNorm(64, num_groups=32)."),
        (lambda: normlab.GroupNorm(64, 32), "e.g. normlab.GroupNorm(64, num_groups=32)."),
        (lambda: normlab.BatchNorm(64, 1e-3),
         "In torch.nn.BatchNorm2d's order (num_features, eps, momentum, affine, "
         "track_running_stats) that is: write normlab.BatchNorm(64, eps=0.001)."),
        (lambda: normlab.BatchNorm(64, 1e-3, 0.01, False, track_running_stats=False),
         "write normlab.BatchNorm(64, eps=0.001, momentum=0.01, affine=False, "
         "track_running_stats=False)."),
        (lambda: normlab.LayerNorm(64, 1e-6), "write normlab.LayerNorm(64, eps=1e-06)."),
        (lambda: normlab.InstanceNorm(8, 1e-3), "write normlab.InstanceNorm(8, eps=0.001)."),
        (lambda: normlab.GhostBatchNorm(64, 32),
         "Pass them by name, e.g. normlab.GhostBatchNorm(64, ghost_batch_size=32)."),
    ],
)
def test_torch_argument_order(build, expected: str) -> None:
    with pytest.raises(ArgumentError) as info:
        build()
    text = str(info.value)
    assert "takes one positional argument, the number of channels (num_features)" in text
    assert expected in text
    assert "keyword arguments: " in text
    assert isinstance(info.value, TypeError) and isinstance(info.value, errors.ConfigError)


def test_torch_keyword_names() -> None:
    with pytest.raises(ArgumentError, match=r"'elementwise_affine'\. It is torch\.nn's name "
                       r"for normlab's affine="):
        normlab.LayerNorm(64, elementwise_affine=False)
    with pytest.raises(ArgumentError, match=r"'num_channels'.*write normlab\.GroupNorm\(64, "
                       r"num_groups=32\)"):
        normlab.GroupNorm(num_channels=64, num_groups=32)
    with pytest.raises(ArgumentError, match=r"'epss'\. Did you mean 'eps'\?"):
        normlab.BatchNorm(64, epss=1e-3)


def test_signatures_and_valid_calls_unchanged() -> None:
    import inspect

    params = inspect.signature(normlab.GroupNorm).parameters
    assert list(params)[:3] == ["num_features", "num_groups", "group_size"]
    assert normlab.GroupNorm(64, num_groups=32).num_groups == 32


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)),
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda net, **kw: convert(net, "gn:2", **kw),
        lambda net, **kw: freeze(net, **kw),
        lambda net, **kw: unfreeze(net, **kw),
        lambda net, **kw: parametrize(net, "ws", **kw),
        lambda net, **kw: unparametrize(net, **kw),
        lambda net, **kw: normlab.sync(net, **kw),
    ],
    ids=["convert", "freeze", "unfreeze", "parametrize", "unparametrize", "sync"],
)
def test_selectors_that_match_nothing(call, request: pytest.FixtureRequest) -> None:
    tool = request.node.callspec.id  # the error names the tool it came from
    with pytest.raises(errors.ConfigError) as info:
        call(_net(), only="3.bn1")
    text = str(info.value)
    assert text.startswith(f"{tool}: only='3.bn1'")
    assert "only='3.bn1' matches no module path of the model, so it would select nothing" in text
    assert "Did you mean '3.1'" in text or "Did you mean" in text
    assert "Paths look like: '0', '1', '2', '3', '3.0', '3.1'" in text
    with pytest.raises(errors.ConfigError,
                       match=rf"^{tool}: skip='head' matches no module path.*leave nothing out"):
        call(_net(), skip=["1", "head"])
    with pytest.raises(errors.ConfigError, match=rf"^{tool}: only=BatchNorm1d matches no module "
                       r"of the model.*Did you mean 'BatchNorm2d'\?.*Classes in the model: "
                       r"BatchNorm2d,"):
        call(_net(), only=nn.BatchNorm1d)


def test_selector_did_you_mean_nearest_path() -> None:
    with pytest.raises(errors.ConfigError, match=r"Did you mean '3\.1'"):
        convert(_net(), "gn:2", only="3.11")
    assert convert(_net(), "gn:2", only="*.1")[3][1].num_groups == 2  # patterns still work
    x = torch.randn(2, 3, 6, 6)
    assert convert(_net(), "gn:2", skip="3")(x).shape == (2, 4, 4, 4)
