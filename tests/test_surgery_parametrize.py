"""Model-wide weight-side tools: `parametrize` / `unparametrize`, and what `fold` and `freeze`
do with weight-side parametrizations (the per-method contract is tests/test_reparam_contract.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize as torch_parametrize

import normlab
from normlab.errors import ConfigError


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, 5),
    )


def _randomize_bn(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)


def test_report_names_every_target_and_the_original_type() -> None:
    new, report = normlab.surgery.parametrize_with_report(_net(), "weight_norm")
    assert [(r.path, r.module_type) for r in report] == [
        ("0", nn.Conv2d),
        ("3", nn.ConvTranspose2d),
        ("5", nn.Linear),
    ]
    assert str(report[1]) == "3.weight: weight_norm (ConvTranspose2d)"
    assert isinstance(new[3], nn.ConvTranspose2d)  # torch's generated class derives from it
    _, report = normlab.surgery.parametrize_with_report(nn.Linear(3, 2), "weight_norm")
    assert [str(r) for r in report] == ["<root>.weight: weight_norm (Linear)"]


def test_only_and_skip_select_by_class_and_path() -> None:
    net = normlab.parametrize(_net(), "ws", only=nn.Conv2d)
    assert torch_parametrize.is_parametrized(net[0])
    assert not torch_parametrize.is_parametrized(net[5])
    assert not torch_parametrize.is_parametrized(net[3])  # ConvTranspose2d is not a Conv2d
    net = normlab.parametrize(_net(), "wn", skip=["0", "5"])
    assert [torch_parametrize.is_parametrized(net[i]) for i in (0, 3, 5)] == [False, True, False]


def test_only_reaches_a_module_outside_the_default_targets() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
    for only in ("0", nn.Embedding):
        net = normlab.parametrize(model, "weight_norm", only=only)
        assert torch_parametrize.is_parametrized(net[0], "weight")
        assert not torch_parametrize.is_parametrized(net[1])


def test_shared_module_is_parametrized_once() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    new, report = normlab.surgery.parametrize_with_report(model, "weight_norm")
    assert [r.path for r in report] == ["0"]
    assert new[0] is new[2]


def test_nothing_selected_and_twice_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^parametrize: no module of the model was selected "
                       r"for 'weight_norm' \(only=\['0', '1'\], skip='1'\); it applies to "
                       r"nn\.Linear and nn\.Conv\*d / nn\.ConvTranspose\*d by default\. Check the "
                       r"paths"):
        normlab.parametrize(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), "wn", only=["0", "1"],
                            skip="1")
    with pytest.raises(ConfigError, match=r"^parametrize: 'cosine_norm' is not a parametrization; "
                       r"use normlab\.CosineLinear, normlab\.CosineConv2d\.$"):
        normlab.parametrize(nn.Linear(2, 2), "cosine_norm")
    net = normlab.parametrize(_net(), "weight_norm")
    with pytest.raises(ConfigError, match="twice"):
        normlab.parametrize(net, "weight_norm")


def test_method_arguments_reach_the_method_and_the_original_is_untouched() -> None:
    model = _net()
    for tool in (normlab.parametrize, lambda *a, **k: normlab.surgery.parametrize_with_report(
            *a, **k)[0]):
        net = tool(model, "spectral_norm", n_power_iterations=3)
        assert net is not model and not torch_parametrize.is_parametrized(model[0])
        assert net[0].parametrizations.weight[0].n_power_iterations == 3


def test_a_second_method_reports_the_layer_class_not_torchs_generated_one() -> None:
    net = normlab.parametrize(_net(), "wn", only="0")
    _, report = normlab.surgery.parametrize_with_report(net, "ws", only="0")
    assert [(r.path, r.module_type) for r in report] == [("0", nn.Conv2d)]


@pytest.mark.parametrize("tool", [normlab.parametrize, normlab.unparametrize])
def test_not_a_model_names_the_tool_and_the_type(tool) -> None:
    with pytest.raises(ConfigError, match=rf"^{tool.__name__}: model must be a torch\.nn\."
                       r"Module; got OrderedDict\. Pass the network itself"):
        tool(nn.Linear(2, 2).state_dict(), "wn")


def test_inplace_mutates_and_returns_the_model() -> None:
    model = _net()
    assert normlab.parametrize(model, "ws", inplace=True) is model
    assert torch_parametrize.is_parametrized(model[0])


def test_unparametrize_by_method_keeps_the_others() -> None:
    net = normlab.parametrize(_net(), "weight_norm", only="5")
    net = normlab.parametrize(net, "ws", only="0", inplace=True)
    x = torch.randn(2, 3, 6, 6)
    expected = net.eval()(x)
    out = normlab.unparametrize(net, "weight_standardization")
    assert not torch_parametrize.is_parametrized(out[0])
    assert torch_parametrize.is_parametrized(net[0])  # a copy by default
    assert torch_parametrize.is_parametrized(out[5])
    torch.testing.assert_close(out(x), expected)


def test_unparametrize_without_bake_restores_the_original_or_explains() -> None:
    net = normlab.parametrize(_net(), "ws", only="0")
    original = net[0].parametrizations.weight.original.detach().clone()
    out = normlab.unparametrize(net, bake=False)
    assert torch.equal(out[0].weight, original)
    with pytest.raises(ConfigError, match=r"^unparametrize\(bake=False\): 0\.weight "
                       r"\(weight_norm\) keeps several original tensors .*Use bake=True"):
        normlab.unparametrize(normlab.parametrize(_net(), "wn"), bake=False)
    with pytest.raises(ConfigError) as info:
        normlab.unparametrize(normlab.parametrize(nn.Linear(2, 2), "wn"), bake=False)
    assert str(info.value) == (
        "unparametrize(bake=False): <root>.weight (weight_norm) keeps several original tensors "
        "(e.g. weight norm's g and v), so there is no single unnormalized weight to restore. "
        "Use bake=True (the effective weight) instead."
    )


class _Kernel(nn.Module):
    """A layer whose weight is called ``kernel`` (reached with only= and name=)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.kernel.T


def test_a_tensor_with_another_name_is_parametrized_and_baked() -> None:
    _, report = normlab.surgery.parametrize_with_report(
        nn.Sequential(_Kernel()), "weight_norm", name="kernel", only="0"
    )
    assert [str(r) for r in report] == ["0.kernel: weight_norm (_Kernel)"]
    net = normlab.parametrize(nn.Sequential(_Kernel()), "weight_norm", name="kernel", only="0")
    assert torch_parametrize.is_parametrized(net[0], "kernel")
    x = torch.randn(2, 3)
    expected = net(x)
    baked = normlab.unparametrize(net)
    assert not torch_parametrize.is_parametrized(baked[0])
    assert isinstance(baked[0].kernel, nn.Parameter)
    torch.testing.assert_close(baked(x), expected)


def test_fold_bakes_weight_side_methods_and_folds_the_bn() -> None:
    net = normlab.parametrize(_net(), "weight_norm")
    net = normlab.parametrize(net, "ws", only="0", inplace=True)
    _randomize_bn(net[1])
    net.eval()
    x = torch.randn(2, 3, 6, 6)
    folded = normlab.fold(net)
    assert isinstance(folded[1], nn.Identity)
    assert not any(torch_parametrize.is_parametrized(m) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    assert torch_parametrize.is_parametrized(net[0])  # the original model is untouched


def test_fold_still_refuses_a_foreign_parametrization() -> None:
    net = _net().eval()
    torch.nn.utils.parametrizations.orthogonal(net[0])
    with pytest.raises(ConfigError, match=r"parametrized weight|not normlab's"):
        normlab.fold(net)


def test_freeze_leaves_parameter_free_weight_methods_alone() -> None:
    net = normlab.parametrize(_net(), "weight_norm")
    before = copy.deepcopy(net.state_dict())
    report = normlab.freeze(net)
    assert [r.path for r in report] == ["1"]  # only the BN: weight norm has no state
    net.train()(torch.randn(2, 3, 6, 6))
    assert torch.equal(net[1].running_mean, before["1.running_mean"])


def _power_vectors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("._u", "._v"))}


def test_freeze_stops_spectral_norm_power_iteration_and_unfreeze_resumes() -> None:
    net = normlab.parametrize(_net(), "spectral_norm")
    x = torch.randn(2, 3, 6, 6)
    report = normlab.freeze(net)
    paths = {r.path for r in report if r.statistics}
    assert paths == {
        "1",
        "0.parametrizations.weight.0",
        "3.parametrizations.weight.0",
        "5.parametrizations.weight.0",
    }
    before = _power_vectors(net)
    assert len(before) == 6
    eval_out = net.eval()(x)
    train_out = net.train()(x)
    for key, value in _power_vectors(net).items():
        assert torch.equal(value, before[key]), key
    # frozen: the training forward uses the stored u, v and the BN's running statistics
    torch.testing.assert_close(train_out, eval_out, rtol=0, atol=0)
    normlab.unfreeze(net)
    net.train()(x)
    changed = [k for k, v in _power_vectors(net).items() if not torch.equal(v, before[k])]
    assert changed


def test_fold_bakes_spectral_norm_without_a_power_iteration() -> None:
    net = normlab.parametrize(_net(), "spectral_norm")
    _randomize_bn(net[1])
    net.eval()
    before = _power_vectors(net)
    x = torch.randn(2, 3, 6, 6)
    expected = net(x)
    folded = normlab.fold(net)
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
    for key, value in _power_vectors(net).items():
        assert torch.equal(value, before[key]), key


def test_default_works_on_a_copy_and_leaves_the_model_alone() -> None:
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = normlab.parametrize(model, "weight_norm")
    assert new is not model
    assert not any(torch_parametrize.is_parametrized(m) for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    back = normlab.unparametrize(new)
    assert back is not new
    assert all(torch_parametrize.is_parametrized(new[i]) for i in (0, 3, 5))
    assert not any(torch_parametrize.is_parametrized(m) for m in back.modules())


def test_unparametrize_in_training_mode_bakes_the_eval_weight() -> None:
    """Whatever mode the model is in, the baked weight is the effective weight of eval mode:
    spectral norm's stored u, v, with no power iteration, so the deployed model computes what
    the parametrized one computes in eval."""
    net = normlab.parametrize(_net(), "spectral_norm")
    _randomize_bn(net[1])
    x = torch.randn(2, 3, 6, 6)
    net.train()(x)  # a few power iterations: u, v are not at their fixed point
    before = _power_vectors(net)
    expected = copy.deepcopy(net).eval()(x)
    baked = normlab.unparametrize(net.train())
    torch.testing.assert_close(baked.eval()(x), expected, rtol=1e-6, atol=1e-6)
    for key, value in _power_vectors(net).items():
        assert torch.equal(value, before[key]), key


class _Double(nn.Module):
    """A parametrization that is not normlab's."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_unparametrize_refuses_a_tensor_that_mixes_in_foreign_parametrizations() -> None:
    net = normlab.parametrize(_net(), "ws", only="0")
    torch_parametrize.register_parametrization(net[0], "weight", _Double())
    torch_parametrize.register_parametrization(net[5], "weight", _Double())  # foreign only
    with pytest.raises(ConfigError, match=r"unparametrize: 0\.weight also has parametrizations "
                       r"that are not normlab's \(_Double\).*remove_parametrizations, or skip="):
        normlab.unparametrize(net)
    root = normlab.parametrize(nn.Linear(2, 2), "ws")
    for _ in range(2):
        torch_parametrize.register_parametrization(root, "weight", _Double())
    with pytest.raises(ConfigError) as info:
        normlab.unparametrize(root)
    assert str(info.value) == (
        "unparametrize: <root>.weight also has parametrizations that are not normlab's "
        "(_Double, _Double); torch can only remove all of a tensor's parametrizations at once. "
        "Remove them with torch.nn.utils.parametrize.remove_parametrizations, or skip= this "
        "module."
    )
    out = normlab.unparametrize(net, skip="0")
    assert torch_parametrize.is_parametrized(out[0])  # skipped
    assert isinstance(out[5].parametrizations.weight[0], _Double)  # not normlab's: left alone


def test_unparametrize_selects_by_class_and_path() -> None:
    net = normlab.parametrize(_net(), "ws")  # layers 0 (Conv2d), 3 (ConvTranspose2d), 5 (Linear)
    out = normlab.unparametrize(net, skip=nn.Conv2d)
    assert [torch_parametrize.is_parametrized(out[i]) for i in (0, 3, 5)] == [True, False, False]
    out = normlab.unparametrize(net, only="3")
    assert [torch_parametrize.is_parametrized(out[i]) for i in (0, 3, 5)] == [True, False, True]


def test_unparametrize_by_method_goes_on_to_the_next_tensor_of_a_layer() -> None:
    layer = _Kernel()
    layer.gate = nn.Parameter(torch.randn(4, 3))
    net = normlab.parametrize(nn.Sequential(layer), "wn", name="kernel", only="0")
    net = normlab.parametrize(net, "ws", name="gate", only="0", inplace=True)
    out = normlab.unparametrize(net, "ws")
    assert torch_parametrize.is_parametrized(out[0], "kernel")  # weight norm: kept
    assert not torch_parametrize.is_parametrized(out[0], "gate")


def test_name_that_no_layer_has_is_not_selected_even_beside_another_parametrization() -> None:
    """name= is looked up per tensor: a layer whose weight is parametrized (by torch) but which
    has no tensor of that name is not selected, so nothing is and the error says so."""
    net = nn.Sequential(nn.utils.parametrizations.orthogonal(nn.Linear(4, 4)))
    with pytest.raises(ConfigError) as info:
        normlab.parametrize(net, "weight_norm", name="scale")
    assert str(info.value) == (
        "parametrize: no module of the model was selected for 'weight_norm' (only=None, "
        "skip=None); it applies to nn.Linear and nn.Conv*d / nn.ConvTranspose*d by default. "
        "Check the paths or classes in only= / skip=."
    )
