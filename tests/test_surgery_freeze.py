"""freeze / unfreeze: statistics that survive .train(), optional frozen parameters, exact undo."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import timm_stand_ins
from catalogue import small_spec, statistics_kind
from normlab import errors, registry
from normlab.norms import VirtualBatchNorm
from normlab.norms.virtual_batch_norm import reference_pass
from normlab.surgery import freeze, is_frozen, unfreeze
from normlab.surgery.layers import frozen_stats, is_norm
from surgery_models import IMAGE_SHAPE, mobilenet_like, resnet_like, token_mlp_like


class _PlainSubclass(nn.BatchNorm2d):
    pass


class _CustomRunningMean(nn.Module):
    """Not a torch or normlab norm, but it keeps a running mean updated in training."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.running_mean.lerp_(x.mean((0, 2, 3)), 0.5)
            return x - x.mean((0, 2, 3), keepdim=True)
        return x - self.running_mean.view(1, -1, 1, 1)


KINDS: dict[str, Callable[[int], nn.Module]] = {
    "torch_bn2d": nn.BatchNorm2d,
    "torch_bn2d_subclass": _PlainSubclass,
    "torch_sync_bn": nn.SyncBatchNorm,
    "torch_in2d_tracked": lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True),
    "torch_gn": lambda c: nn.GroupNorm(4, c),
    "custom_running_mean": _CustomRunningMean,
    "in_tracked": registry.factory("in", affine=True, track_running_stats=True),
    "bn_untracked": registry.factory("bn", track_running_stats=False),
    **{name: registry.factory(small_spec(name)) for name in registry.available()},
}
WITH_STATISTICS = {
    "torch_bn2d", "torch_bn2d_subclass", "torch_sync_bn", "torch_in2d_tracked",
    "custom_running_mean", "in_tracked",
    *(name for name in registry.available() if statistics_kind(name) is not None),
}


def _model(kind: str) -> nn.Module:
    model = resnet_like(KINDS[kind]).train()
    with torch.no_grad():
        if any(isinstance(m, VirtualBatchNorm) for m in model.modules()):
            with reference_pass(model):
                model(torch.randn(IMAGE_SHAPE))
        for _ in range(2):  # statistics away from their initial values
            model(torch.randn(IMAGE_SHAPE) * 2 + 1)
    return model


def _norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(p, m) for p, m in model.named_modules() if is_norm(m) or "running_mean" in m._buffers]


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("kind", list(KINDS))
def test_frozen_buffers_survive_train_forward_backward_and_step(kind: str, affine: bool) -> None:
    model = _model(kind)
    report = freeze(model.eval(), affine=affine)
    paths = [p for p, _ in _norm_layers(model)]
    assert [r.path for r in report] == paths
    assert all(r.statistics == (kind in WITH_STATISTICS) for r in report)

    model.train()
    before = _clone_state(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(IMAGE_SHAPE)
    model(x).square().mean().backward()
    opt.step()
    for name, buf in model.named_buffers():
        assert torch.equal(buf, before[name]), name
    for path, layer in _norm_layers(model):
        for name, param in layer.named_parameters(recurse=False):
            key = f"{path}.{name}"
            if affine:
                assert not param.requires_grad and torch.equal(param, before[key]), key
            else:
                assert param.requires_grad, key
    assert not torch.equal(model.fc.weight, before["fc.weight"])  # the rest trains

    with torch.no_grad():
        frozen_train = model.train()(x)
        assert torch.equal(frozen_train, model.eval()(x))
    assert model.training is False and model.bn1.training is False
    model.train()
    assert model.bn1.training is True  # the flag follows .train() as usual


def _mode_state(model: nn.Module) -> list[tuple]:
    return [
        (
            path, type(m), m.training, getattr(m, "momentum", None),
            tuple((n, p.requires_grad) for n, p in m.named_parameters(recurse=False)),
            tuple(m._forward_pre_hooks), tuple(m._forward_hooks),
            tuple(m._forward_hooks_always_called), hasattr(m, "_normlab_frozen"),
        )
        for path, m in model.named_modules()
    ]


@pytest.mark.parametrize("kind", list(KINDS))
def test_unfreeze_restores_exactly_and_trains_like_a_never_frozen_twin(kind: str) -> None:
    model = _model(kind)
    model.layer2.eval()
    if isinstance(getattr(model.bn1, "weight", None), nn.Parameter):
        model.bn1.weight.requires_grad_(False)
    twin = copy.deepcopy(model)
    modes, state = _mode_state(model), _clone_state(model)
    layers = {id(m) for _, m in model.named_modules()}
    touched = [  # layers freeze records something on: statistics or a parameter to turn off
        p for p, m in _norm_layers(model)
        if any(m._buffers.get(k) is not None for k in ("running_mean", "running_var"))
        or any(q.requires_grad for q in m.parameters(recurse=False))
    ]

    freeze(model, affine=False)
    freeze(model, affine=True)  # a second freeze keeps the first record
    with torch.no_grad():
        model.train()(torch.randn(IMAGE_SHAPE))
    model.train()
    model.layer2.eval()
    restored = unfreeze(model)
    assert [r.path for r in restored] == touched
    assert _mode_state(model) == modes
    assert {id(m) for _, m in model.named_modules()} == layers
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key

    data = [torch.randn(IMAGE_SHAPE) for _ in range(2)]
    for net in (model, twin):
        opt = torch.optim.SGD(net.parameters(), lr=0.05)
        for x in data:
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for key, value in twin.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    layer = model.layer1[0].bn1
    if kind in WITH_STATISTICS and not frozen_stats(layer):  # updated again (not FrozenBN's)
        name = next(k for k in ("running_mean", "running_var") if k in layer._buffers)
        assert not torch.equal(getattr(layer, name), state[f"layer1.0.bn1.{name}"])


def test_deepcopy_pickle_and_state_dict_of_a_frozen_model() -> None:
    model = _model("torch_bn2d")
    freeze(model, affine=True)
    x = torch.randn(IMAGE_SHAPE)

    clone = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for net in (clone, loaded):
        assert is_frozen(net.bn1) and not net.bn1.weight.requires_grad
        state = _clone_state(net)
        net.train()(x)
        assert all(torch.equal(b, state[n]) for n, b in net.named_buffers())

    unfreeze(clone)
    assert is_frozen(model.bn1) and not is_frozen(clone.bn1) and clone.bn1.weight.requires_grad

    plain = resnet_like()
    assert model.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(model.state_dict())
    fresh = resnet_like()
    model.load_state_dict(fresh.state_dict())  # loading keeps it frozen
    assert is_frozen(model.bn1) and torch.equal(model.bn1.running_mean, torch.zeros(8))
    model.train()(x)
    assert torch.equal(model.bn1.running_mean, torch.zeros(8))


def test_training_flag_is_restored_when_a_frozen_forward_raises() -> None:
    model = resnet_like().train()
    freeze(model)
    with pytest.raises(RuntimeError):
        model.bn1(torch.randn(2, 5, 4, 4))
    assert model.bn1.training is True
    assert model.bn1._normlab_frozen.training == []


def test_prior_requires_grad_is_restored_and_filters_apply() -> None:
    model = resnet_like()
    model.bn1.bias.requires_grad_(False)
    report = freeze(model, affine=True, only="layer1", skip="*.bn2")
    assert [r.path for r in report] == ["layer1.0.bn1"]
    assert report[0].parameters == ("weight", "bias")
    assert str(report[0]) == (
        "layer1.0.bn1 (BatchNorm2d): statistics frozen; frozen parameters: weight, bias"
    )
    assert not is_frozen(model.bn1) and not is_frozen(model.layer1[0].bn2)
    freeze(model, affine=True, only="bn1")
    assert freeze_record(model.bn1) == ("weight",)  # bias was already off
    unfreeze(model)
    assert model.bn1.weight.requires_grad and not model.bn1.bias.requires_grad
    assert unfreeze(model) == []


def test_class_selectors_pick_layers_by_type() -> None:
    mobile = mobilenet_like()
    assert [r.path for r in freeze(mobile, only=nn.BatchNorm1d)] == ["classifier.1"]
    skipped = [r.path for r in freeze(mobilenet_like(), skip=nn.BatchNorm1d)]
    assert skipped and "classifier.1" not in skipped
    assert [r.path for r in unfreeze(mobile, skip=nn.BatchNorm2d)] == ["classifier.1"]


def freeze_record(layer: nn.Module) -> tuple[str, ...]:
    return tuple(layer._normlab_frozen.requires_grad)


@pytest.mark.parametrize("build", [mobilenet_like, lambda: token_mlp_like()])
def test_other_architectures_report_what_they_freeze(build: Callable[[], nn.Module]) -> None:
    model = build()
    report = freeze(model, affine=True)
    assert report and all(r.parameters for r in report)
    has_stats = {r.path: r.statistics for r in report}
    for path, layer in model.named_modules():
        if path in has_stats:
            assert has_stats[path] == isinstance(layer, nn.modules.batchnorm._BatchNorm)
    assert all(("statistics frozen" in str(r)) == r.statistics for r in report)


def test_bad_arguments() -> None:
    with pytest.raises(errors.ConfigError, match=r"^freeze: model must be a torch\.nn\.Module; "
                       r"got list\. Pass the network itself"):
        freeze([nn.BatchNorm2d(2)])  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match=r"^freeze: skip='layr1' matches no module"):
        freeze(resnet_like(), skip="layr1")
    with pytest.raises(errors.ConfigError, match="skip must be"):
        freeze(resnet_like(), skip=3)  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match=r"^unfreeze: only='layr1' matches no module"):
        unfreeze(resnet_like(), only="layr1")
    with pytest.raises(errors.ConfigError, match=r"^unfreeze: model must be a torch"):
        unfreeze({"bn": nn.BatchNorm2d(2)})  # type: ignore[arg-type]


def test_report_text_of_a_layer_without_statistics() -> None:
    """A single layer is a model too (path ``<root>``); a LayerNorm has only its affine."""
    assert [str(r) for r in freeze(nn.LayerNorm(4))] == [
        "<root> (LayerNorm): no running statistics"
    ]
    layer = nn.LayerNorm(4)
    frozen = freeze(layer, affine=True)
    assert [str(r) for r in frozen] == [
        "<root> (LayerNorm): no running statistics; frozen parameters: weight, bias"
    ]
    assert unfreeze(layer) == frozen  # unfreeze reports what it restored, in the same terms


def test_unfreeze_reports_what_freeze_did() -> None:
    model = resnet_like()
    frozen = freeze(model, only="layer1")
    also = freeze(model, only="bn1", affine=True)
    assert [(r.layer_type, r.statistics, r.parameters) for r in also] == [
        (nn.BatchNorm2d, True, ("weight", "bias"))
    ]
    assert unfreeze(model) == also + frozen  # model order


def test_torchvision_model() -> None:
    models = pytest.importorskip("torchvision.models")
    net = models.resnet18(num_classes=5)
    freeze(net, affine=True)
    state = _clone_state(net)
    net.train()(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(torch.equal(b, state[n]) for n, b in net.named_buffers())
    unfreeze(net)
    assert all(p.requires_grad for p in net.parameters())


def test_timm_bn_act_freezes_its_bn_and_affine_but_not_its_activation() -> None:
    """timm's BatchNormAct2d (a stand-in with timm's structure): the BN runs in eval, its γ, β
    stop requiring grad, the DropBlock-like drop keeps training and PReLU's slope keeps training."""
    layer = timm_stand_ins.BatchNormAct2d(4, act=nn.PReLU, drop=lambda: nn.Dropout(0.5))
    net = nn.Sequential(nn.Conv2d(3, 4, 3), layer)
    report = freeze(net, affine=True)
    assert [(r.path, r.statistics, r.parameters) for r in report] == [
        ("1", True, ("weight", "bias"))
    ]
    before = layer.running_mean.clone()
    net.train()
    out = net(torch.randn(8, 3, 6, 6) + 3.0)
    assert torch.equal(layer.running_mean, before) and layer.training
    assert (out == 0).any()  # the dropout still drops
    assert layer.act.weight.requires_grad and not layer.weight.requires_grad
    unfreeze(net)
    assert layer.weight.requires_grad


def test_frozen_layer_runs_with_training_false_inside_its_forward() -> None:
    """Inside a frozen layer's forward ``training`` is the bool False (what hooks and forward
    code read), and the layer's own mode comes back afterwards."""
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    freeze(net)
    seen: list[object] = []
    net[1].register_forward_pre_hook(lambda module, args: seen.append(module.training))
    net.train()(torch.randn(2, 3, 5, 5))
    assert seen == [False] and seen[0] is False
    assert net[1].training is True
