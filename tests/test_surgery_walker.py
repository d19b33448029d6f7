"""The module walker: replacement by path, shared modules, report, copy semantics, selectors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from normlab import errors
from normlab.surgery import Replacement, matches, replace_modules
from normlab.surgery.walker import check_selector
from surgery_models import IMAGE_SHAPE, token_mlp_like, unet_decoder_like


def _bn_to_identity(path: str, module: nn.Module) -> nn.Module | None:
    return nn.Identity() if isinstance(module, nn.modules.batchnorm._BatchNorm) else None


def test_replaces_by_path_inside_sequential_indices() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.BatchNorm1d(4), nn.ReLU()))
    new, report = replace_modules(net, _bn_to_identity)
    assert isinstance(new[1][0], nn.Identity)
    assert isinstance(new[1][1], nn.ReLU)
    assert report == [Replacement("1.0", nn.BatchNorm1d, nn.Identity)]
    assert str(report[0]) == "1.0: BatchNorm1d -> Identity"
    carried = Replacement("1.0", nn.BatchNorm1d, nn.GroupNorm, ("eps", "weight"))
    assert str(carried) == "1.0: BatchNorm1d -> GroupNorm (carried: eps, weight)"


def test_replaces_inside_module_dict_and_module_list() -> None:
    unet = unet_decoder_like()
    new, report = replace_modules(unet, _bn_to_identity)
    paths = [r.path for r in report]
    assert "decoder.up2.up.1" in paths and "decoder.up1.fuse.1" in paths
    assert isinstance(new.decoder["up2"].up[1], nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    assert new(torch.randn(IMAGE_SHAPE)).shape == (4, 3, 16, 16)

    tokens = token_mlp_like()
    new, report = replace_modules(
        tokens, lambda p, m: nn.Identity() if isinstance(m, nn.LayerNorm) else None
    )
    assert [r.path for r in report] == ["blocks.0.0", "blocks.1.0", "norm"]
    assert isinstance(new.blocks[1][0], nn.Identity)


def test_shared_module_is_replaced_once_at_every_path() -> None:
    bn = nn.BatchNorm1d(4)
    net = nn.Sequential(nn.Linear(4, 4), bn, nn.Linear(4, 4), bn)
    calls = []

    def swap(path: str, module: nn.Module) -> nn.Module | None:
        if isinstance(module, nn.BatchNorm1d):
            calls.append(path)
            return nn.LayerNorm(4)
        return None

    new, report = replace_modules(net, swap)
    assert calls == ["1"]
    assert new[1] is new[3] and isinstance(new[1], nn.LayerNorm)
    assert [r.path for r in report] == ["1", "3"]
    assert len({id(p) for p in new.parameters()}) == len(list(new.parameters()))


def test_children_of_a_replaced_module_are_not_visited() -> None:
    net = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), nn.BatchNorm1d(2))
    seen = []

    def swap(path: str, module: nn.Module) -> nn.Module | None:
        seen.append(path)
        return nn.Identity() if path == "0" else None

    _, report = replace_modules(net, swap)
    assert seen == ["", "0", "1"]
    assert [r.path for r in report] == ["0"]


def test_root_can_be_replaced() -> None:
    bn = nn.BatchNorm1d(3)
    new, report = replace_modules(bn, lambda p, m: nn.Identity() if p == "" else None)
    assert isinstance(new, nn.Identity)
    assert report == [Replacement("", nn.BatchNorm1d, nn.Identity)]
    assert str(report[0]) == "<root>: BatchNorm1d -> Identity"


def test_default_copies_and_leaves_the_original_untouched() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = copy.deepcopy(net.state_dict())
    new, _ = replace_modules(net, lambda p, m: None)
    assert new is not net
    with torch.no_grad():
        new[0].weight.add_(1.0)
    assert isinstance(net[1], nn.BatchNorm1d)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])

    new, _ = replace_modules(net, _bn_to_identity)
    assert isinstance(net[1], nn.BatchNorm1d) and isinstance(new[1], nn.Identity)


def test_inplace_mutates_and_returns_the_model() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    linear = net[0]
    new, report = replace_modules(net, _bn_to_identity, inplace=True)
    assert new is net and net[0] is linear
    assert isinstance(net[1], nn.Identity) and len(report) == 1


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_a_callback_that_raises_leaves_the_model_as_it_was(inplace: bool) -> None:
    """All or nothing: the second replacement fails, so not even the first is set."""
    net = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.BatchNorm1d(4))
    before = list(net)

    def refuse_the_second(path: str, module: nn.Module) -> nn.Module | None:
        if path == "2":
            raise ValueError("no")
        return _bn_to_identity(path, module)

    with pytest.raises(ValueError, match="no"):
        replace_modules(net, refuse_the_second, inplace=inplace)
    assert list(net) == before
    with pytest.raises(errors.ConfigError, match="the callback returned int for '2'"):
        replace_modules(net, lambda p, m: 3 if p == "2" else _bn_to_identity(p, m), inplace=True)
    assert list(net) == before


def test_a_model_with_an_uninitialized_lazy_layer_is_copied() -> None:
    """torch cannot deep-copy an uninitialized lazy parameter; the copy gets a fresh one of
    the same kind, so both models materialize on their own first input."""
    net = nn.Sequential(nn.LazyLinear(5), nn.LazyBatchNorm1d(), nn.BatchNorm1d(5))
    new, report = replace_modules(net, lambda p, m: nn.Identity() if p == "2" else None)
    assert [r.path for r in report] == ["2"] and isinstance(net[2], nn.BatchNorm1d)
    lazy = [t for t in [*new.parameters(), *new.buffers()] if nn.parameter.is_lazy(t)]
    assert len(lazy) == 6  # LazyLinear: weight, bias; LazyBatchNorm1d: those and two buffers
    assert not {id(t) for t in lazy} & {id(t) for t in [*net.parameters(), *net.buffers()]}
    assert new[1].running_mean.requires_grad is False and new[0].weight.requires_grad is True
    new(torch.randn(3, 7))
    assert new[0].weight.shape == (5, 7) and new[1].running_mean.shape == (5,)
    meta = nn.Sequential(nn.LazyBatchNorm1d(device="meta", dtype=torch.float64))
    copied = replace_modules(meta, lambda p, m: None)[0][0]
    for name in ("weight", "running_mean", "running_var"):
        tensor = getattr(copied, name)
        assert nn.parameter.is_lazy(tensor) and tensor is not getattr(meta[0], name)
        assert tensor.dtype == torch.float64 and tensor.device.type == "meta", name
    assert nn.parameter.is_lazy(net[0].weight)
    net(torch.randn(3, 2))
    assert net[0].weight.shape == (5, 2)


def test_bad_callback_result_and_bad_model_are_clear_errors() -> None:
    net = nn.Sequential(nn.Linear(3, 4))
    with pytest.raises(errors.ConfigError, match="returned str for '0'"):
        replace_modules(net, lambda p, m: "oops" if p == "0" else None)  # type: ignore[arg-type,return-value]
    with pytest.raises(errors.ConfigError, match=r"must be a torch\.nn\.Module; got OrderedDict"):
        replace_modules(net.state_dict(), lambda p, m: None)  # type: ignore[arg-type]


class _MyBN(nn.BatchNorm2d):
    pass


@pytest.mark.parametrize(
    ("selector", "path", "expected"),
    [
        ("layer1", "layer1", True),
        ("layer1", "layer1.0.bn1", True),
        ("layer1", "layer10.bn1", False),
        ("*.bn2", "layer2.0.bn2", True),
        ("*.bn2", "layer2.0.bn1", False),
        ("layer?.0", "layer3.0.downsample.1", True),
        ("head.1", "head.10", False),
        (nn.BatchNorm2d, "x", True),  # subclasses count
        (nn.BatchNorm1d, "x", False),
        (["stem", nn.BatchNorm2d], "x", True),
    ],
)
def test_selectors(selector: object, path: str, expected: bool) -> None:
    items = check_selector(selector, "skip")  # type: ignore[arg-type]
    assert matches(path, _MyBN(2), items) is expected


@pytest.mark.parametrize("bad", [3, [1.5], {"a": 2}], ids=["not-iterable", "bad-item", "mapping"])
def test_bad_selectors_are_refused(bad: object) -> None:
    """Word for word, with the value received."""
    with pytest.raises(errors.ConfigError) as info:
        check_selector(bad, "only")  # type: ignore[arg-type]
    assert str(info.value) == (
        f"only must be a module path or fnmatch pattern (str), a module class, or a list of "
        f"those; got {bad!r}. Examples: only='layer1', only='*.bn2', "
        f"only=torch.nn.BatchNorm1d, only=['head', 'stem.*']."
    )


def test_a_replaced_root_is_not_entered() -> None:
    seen = []

    def swap(path: str, module: nn.Module) -> nn.Module:
        seen.append(path)
        return nn.Identity()

    new, report = replace_modules(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), swap)
    assert seen == [""] and isinstance(new, nn.Identity) and len(report) == 1


def test_walker_errors_word_for_word() -> None:
    with pytest.raises(errors.ConfigError) as info:
        replace_modules(nn.Linear(2, 2), lambda p, m: 3)  # type: ignore[arg-type,return-value]
    assert str(info.value) == (
        "replace_modules: the callback returned int for '<root>'; it must return a "
        "torch.nn.Module (the replacement) or None (keep the module)."
    )
    with pytest.raises(errors.ConfigError, match=r"^replace_modules: model must be a torch"):
        replace_modules([nn.Linear(2, 2)], lambda p, m: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("count", "shown"), [(12, "'11' (see"), (13, "'11', ... (see")])
def test_unmatched_selector_lists_twelve_paths(count: int, shown: str) -> None:
    from normlab.surgery import freeze

    net = nn.Sequential(*[nn.BatchNorm1d(2) for _ in range(count)])
    with pytest.raises(errors.ConfigError) as info:
        freeze(net, skip="head")
    text = str(info.value)
    assert "so it would leave nothing out." in text and "Paths look like: '0', '1'" in text
    assert shown in text and "'12'" not in text


def test_unmatched_selector_on_a_model_without_submodules() -> None:
    from normlab.surgery import freeze

    with pytest.raises(errors.ConfigError, match=r"Paths look like: none \(the model has no "
                       r"submodule\) \(see"):
        freeze(nn.BatchNorm1d(2), only="bn")


def test_selector_errors_through_a_tool_name_the_argument_and_suggest_the_last_name() -> None:
    from normlab.surgery import freeze

    with pytest.raises(errors.ConfigError, match=r"^only must be a module path .*Examples: "
                       r"only='layer1'"):
        freeze(nn.BatchNorm1d(2), only=3)  # type: ignore[arg-type]
    inner = nn.ModuleDict({"bn1": nn.BatchNorm1d(2)})
    net = nn.ModuleDict({"block": nn.ModuleDict({"inner": inner})})  # block.inner.bn1
    with pytest.raises(errors.ConfigError, match=r"only='bn2' matches no module path.*Did you mean "
                       r"'bn1'\?"):
        freeze(net, only="bn2")
