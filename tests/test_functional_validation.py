"""The functional forms validate their input as their modules do, over the whole catalogue.

For every catalogue case and every bad input below, the module and its ``normlab.functional``
twin (driven with the module's own parameters, buffers and mode) either both accept the input
or both raise the same normlab error class. A functional form that skipped a check would fail
here with a raw RuntimeError, a ZeroDivisionError or a silently constant output.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import normlab.functional as NF
from catalogue import CASE_IDS, CASES, Case
from normlab.errors import ConfigError, InputError, NormlabError

BadInput = Callable[[int], Tensor]
BAD_INPUTS: dict[str, BadInput] = {
    "wrong-channels": lambda c: torch.randn(2, c + 2, 4, 3),
    "channels-last-fed": lambda c: torch.randn(2, 4, 3, c),
    "rank-1": lambda c: torch.randn(c),
    "int64": lambda c: torch.ones(2, c, 4, 3, dtype=torch.int64),
    "one-sample": lambda c: torch.randn(1, c),
    "one-sample-1x1": lambda c: torch.randn(1, c, 1, 1),
    "1x1-maps": lambda c: torch.randn(3, c, 1, 1),
    "rank-2": lambda c: torch.randn(3, c),
}


def _outcome(call: Callable[[], Tensor]) -> str:
    try:
        y = call()
    except NormlabError as error:
        return type(error).__name__
    except Exception as error:  # the test reports what escaped
        return f"raw {type(error).__name__}: {error}"
    return "accepted" if torch.isfinite(y).all() else "non-finite output"


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_functional_form_validates_like_its_module(case: Case, training: bool, bad: str) -> None:
    module = case.make().train(training)
    x = BAD_INPUTS[bad](case.num_features)
    twin = case.make().train(training)
    twin.load_state_dict(module.state_dict())
    from_module = _outcome(lambda: module(x))
    from_functional = _outcome(lambda: case.functional(twin, x))
    assert not from_functional.startswith("raw"), from_functional
    if bad in CHANNEL_MISMATCHES and not _knows_channels(twin, case.num_features):
        # no weight, bias or statistic says how many channels to expect: any count is valid
        # unless another argument rules it out (a channel window wider than the channels)
        assert from_functional in ("accepted", "ConfigError"), from_functional
        return
    assert from_functional == from_module, (from_module, from_functional)


CHANNEL_MISMATCHES = ("wrong-channels", "channels-last-fed")


def _knows_channels(module: torch.nn.Module, channels: int) -> bool:
    """Whether the functional form gets a per-channel tensor (a weight, bias or statistic)."""
    return any(t.dim() == 1 and t.shape[0] == channels and t.is_floating_point()
               for t in module.state_dict().values())


@pytest.mark.parametrize("bad", ["wrong-channels", "int64", "rank-1"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_module_s_input_error_names_the_layer_and_what_it_got(case: Case, bad: str) -> None:
    """The message starts with the layer (its class and channel count) and quotes the shape or
    dtype it received."""
    module = case.make()
    x = BAD_INPUTS[bad](case.num_features)
    if bad == "wrong-channels" and not _knows_channels(module, case.num_features):
        pytest.skip("no per-channel tensor: any channel count is valid")
    with pytest.raises(InputError) as info:
        module(x)
    text = str(info.value)
    assert text.startswith(f"{type(module).__name__}({case.num_features}"), text
    assert (f"got dtype {x.dtype}" if bad == "int64" else f"got {tuple(x.shape)}") in text, text


@pytest.mark.parametrize("bad", [True, 0, 2, "last", 1.0], ids=repr)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_channel_dim_must_be_1_or_minus_1_in_every_functional_form(case: Case, bad) -> None:
    """The twin is driven with a module whose channel_dim was overwritten after construction,
    so only the functional form's own check stands between the value and the kernel."""
    twin = case.make()
    twin.channel_dim = bad
    with pytest.raises(ConfigError, match=rf"channel_dim must be 1 .* or -1 .*got {bad!r}"):
        case.functional(twin, torch.randn(2, case.num_features, 3))


@pytest.mark.parametrize(("groups", "match"), [
    (4, r"num_features \(6\) must be divisible by num_groups \(4\).*\[1, 2, 3, 6\]"),
    (0, r"num_groups must be a positive int; got 0"),
    (-2, r"num_groups must be a positive int; got -2"),
    (7, r"num_features \(6\) must be divisible by num_groups \(7\)"),
])
def test_group_norm_functional_checks_its_groups(groups: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NF.group_norm(torch.randn(2, 6, 3, 3), groups)


def test_per_position_layer_norm_with_one_channel_is_an_error_not_zeros() -> None:
    with pytest.raises(InputError, match="1 value per statistic"):
        NF.layer_norm(torch.randn(2, 1, 3), per_position=True)
    with pytest.raises(InputError, match="1 value per statistic"):
        NF.layer_norm(torch.randn(2, 5, 1), per_position=True, channel_dim=-1)
