"""convert: every (source norm, registered target) pair on a ResNet-style model, what is carried,
the refusals, and the skip= / only= filters."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import pytest
import torch
from torch import nn

import normlab
import timm_stand_ins
from catalogue import keeps_bn_statistics, small_spec, statistics_kind
from normlab import errors, registry
from normlab.norms import FrozenBatchNorm, GroupNorm, LayerNorm, VirtualBatchNorm
from normlab.norms.virtual_batch_norm import reference_pass
from normlab.surgery import convert, convert_layer, convert_with_report, freeze, layers
from normlab.surgery.layers import is_norm
from surgery_models import (
    IMAGE_SHAPE,
    TOKEN_SHAPE,
    mobilenet_like,
    resnet_like,
    token_mlp_like,
    unet_decoder_like,
)

NAMES = registry.available()
TORCH_SOURCES: dict[str, Callable[[int], nn.Module]] = {
    "torch_bn2d": nn.BatchNorm2d,
    "torch_gn": lambda c: nn.GroupNorm(4, c),
    "torch_in2d": nn.InstanceNorm2d,
    "torch_ln_last": nn.LayerNorm,  # over the last dim of (N, L, C): token_mlp_like
}
SOURCES = [*TORCH_SOURCES, *NAMES]
# sources that keep BatchNorm running statistics (mean and variance over (N, *S)): the only
# ones FrozenBatchNorm can be built from
BN_STATISTICS = {"torch_bn2d", *(name for name in NAMES if keeps_bn_statistics(name))}


def _source_model(source: str) -> tuple[nn.Module, tuple[int, ...]]:
    if source == "torch_ln_last":
        return token_mlp_like(nn.LayerNorm), TOKEN_SHAPE
    layer = TORCH_SOURCES.get(source) or registry.factory(small_spec(source))
    return resnet_like(layer), IMAGE_SHAPE


def _norm_paths(model: nn.Module) -> list[str]:
    return [path for path, m in model.named_modules() if is_norm(m)]


def _forward_both_modes(model: nn.Module, x: torch.Tensor) -> None:
    if any(isinstance(m, VirtualBatchNorm) for m in model.modules()):
        with reference_pass(model):
            model(torch.randn_like(x))
    for training in (True, False):
        y = model.train(training)(x)
        assert torch.isfinite(y).all()


OUTCOMES: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("target", NAMES)
@pytest.mark.parametrize("source", SOURCES)
def test_convert_every_pair(source: str, target: str) -> None:
    model, shape = _source_model(source)
    spec = small_spec(target)
    paths = _norm_paths(model)
    if target == "frozen_batch_norm" and source not in BN_STATISTICS:
        with pytest.raises(errors.ConfigError, match="needs BatchNorm running statistics") as info:
            convert(model, spec)
        assert f"skip={paths[0]!r}" in str(info.value)
        OUTCOMES[source, target] = "refused"
        return
    new, report = convert_with_report(model, spec)
    cls = registry.lookup(target).cls
    assert [r.path for r in report] == paths
    assert all(r.new_type is cls for r in report)
    assert all(type(new.get_submodule(p)) is cls for p in paths)
    _forward_both_modes(new, torch.randn(shape))
    OUTCOMES[source, target] = "converted"


def _randomize(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Move the running statistics away from (0, 1) and the affine away from (1, 0)."""
    model.train()
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(shape, dtype=dtype) * 2 + 1)
        for m in model.modules():
            if is_norm(m) and isinstance(getattr(m, "weight", None), nn.Parameter):
                m.weight.uniform_(0.5, 1.5)
                if isinstance(getattr(m, "bias", None), nn.Parameter):
                    m.bias.normal_()
    return model


STATS = ("running_mean", "running_var", "num_batches_tracked")


def _carried_from_bn(target: str) -> tuple[str, ...]:
    """What converting a torch BatchNorm2d to ``target`` copies: the affine parameters the
    target has, and the BN statistics it keeps when they mean what BN's mean (kind "batch")."""
    state = registry.create(small_spec(target), 8, affine=True).state_dict()
    carried = tuple(k for k in ("weight", "bias") if k in state)
    if statistics_kind(target) == "batch":
        carried += tuple(k for k in STATS if k in state)
    return carried


@pytest.mark.parametrize("target", NAMES)
def test_carried_values_from_torch_batch_norm(target: str) -> None:
    model = _randomize(resnet_like(lambda c: nn.BatchNorm2d(c, eps=1e-3, momentum=0.3)),
                       IMAGE_SHAPE)
    new, report = convert_with_report(model, small_spec(target))
    expected = _carried_from_bn(target)
    assert "weight" in expected
    for r in report:
        old, layer = model.get_submodule(r.path), new.get_submodule(r.path)
        assert set(expected) <= set(r.carried)
        assert set(r.carried) & set(STATS) == set(expected) & set(STATS), r.carried
        for name in expected:
            assert torch.equal(getattr(layer, name), getattr(old, name)), (r.path, name)
        for name in set(STATS) - set(expected):
            assert getattr(layer, name, None) is None or not torch.equal(
                getattr(layer, name), getattr(old, name)
            )
        assert layer.eps == 1e-3
        if target in ("batch_norm", "ghost_batch_norm", "switchable_norm"):
            assert layer.momentum == 0.3
        if target == "batch_renorm":
            assert layer.momentum == 0.01  # its own default: its update rule is not BN's


@pytest.mark.parametrize("build", [resnet_like, mobilenet_like, unet_decoder_like])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_norm_to_frozen_is_bitwise_equal_in_eval(build: Callable, dtype: torch.dtype) -> None:
    model = _randomize(build().to(dtype), IMAGE_SHAPE).eval()
    frozen, report = convert_with_report(model, "frozen_bn")
    assert all(r.new_type is FrozenBatchNorm for r in report)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in frozen.modules())
    x = torch.randn(IMAGE_SHAPE, dtype=dtype)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(frozen(x), expected)
        assert torch.equal(frozen.train()(x), expected)  # frozen: .train() changes nothing


def test_same_method_conversions_keep_the_function() -> None:
    model = _randomize(resnet_like(), IMAGE_SHAPE).eval()
    x = torch.randn(IMAGE_SHAPE)
    normlab_bn = convert(model, "bn")
    torch.testing.assert_close(normlab_bn(x), model(x), rtol=1e-5, atol=1e-6)

    tokens = _randomize(token_mlp_like(), TOKEN_SHAPE).eval()
    t = torch.randn(TOKEN_SHAPE)
    ln, report = convert_with_report(tokens, "ln")
    layer = ln.get_submodule(report[0].path)
    assert isinstance(layer, LayerNorm) and layer.per_position and layer.channel_dim == -1
    torch.testing.assert_close(ln(t), tokens(t), rtol=1e-5, atol=1e-6)


def test_sync_batch_norm_round_trip() -> None:
    model = _randomize(resnet_like(), IMAGE_SHAPE).eval()
    synced, report = convert_with_report(model, nn.SyncBatchNorm)
    assert all(r.new_type is nn.SyncBatchNorm for r in report)
    back = convert(synced, nn.BatchNorm2d)
    assert [type(m) for m in back.modules()] == [type(m) for m in model.modules()]
    x = torch.randn(IMAGE_SHAPE)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
        assert torch.equal(synced(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_dtype_training_flag_and_requires_grad_are_carried() -> None:
    model = resnet_like().double().train()
    model.layer2.eval()
    model.bn1.weight.requires_grad_(False)
    model.layer3[0].bn2.bias.requires_grad_(False)
    new, report = convert_with_report(model, "gn:4")
    assert len(report) == len(_norm_paths(model))
    for r in report:
        old, layer = model.get_submodule(r.path), new.get_submodule(r.path)
        assert layer.training == old.training, r.path
        for name in ("weight", "bias"):
            assert getattr(layer, name).dtype == torch.float64
            assert getattr(layer, name).requires_grad == getattr(old, name).requires_grad
    assert not new.layer2[0].bn1.training and new.layer1[0].bn1.training
    assert not new.bn1.weight.requires_grad and new.bn1.bias.requires_grad
    new(torch.randn(IMAGE_SHAPE, dtype=torch.float64)).sum().backward()


def test_skip_and_only_filter_by_path_pattern_and_type() -> None:
    model = resnet_like()
    new, report = convert_with_report(model, "gn:4", skip="layer1")
    assert isinstance(new.layer1[0].bn1, nn.BatchNorm2d)
    assert isinstance(new.layer2[0].bn1, GroupNorm) and isinstance(new.bn1, GroupNorm)
    assert not any(r.path.startswith("layer1") for r in report)

    new, report = convert_with_report(model, "gn:4", only="*.bn2")
    assert sorted(r.path for r in report) == ["layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2"]

    new, report = convert_with_report(model, "gn:4", only=["layer3", "bn1"], skip="*.downsample.*")
    assert sorted(r.path for r in report) == ["bn1", "layer3.0.bn1", "layer3.0.bn2"]

    mobile = mobilenet_like()
    new, report = convert_with_report(mobile, "frozen_bn", only=nn.BatchNorm1d)
    assert [r.path for r in report] == ["classifier.1"]
    new, report = convert_with_report(mobile, "gn:4", skip=nn.BatchNorm1d)
    assert isinstance(new.classifier[1], nn.BatchNorm1d) and len(report) == 7


def test_groups_not_dividing_channels_name_the_layer_and_the_fix() -> None:
    with pytest.raises(errors.ConfigError) as info:
        convert(resnet_like(), "gn:3")
    text = str(info.value)
    assert "bn1 (BatchNorm2d with 8 channels)" in text
    assert "num_groups (3)" in text and "[1, 2, 4, 8]" in text and "skip='bn1'" in text


class _PlainSubclass(nn.BatchNorm2d):
    """A renamed BN (like mmcv's _BatchNormXd): converted like a BatchNorm2d."""


class _FusedActivation(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class _WithChild(nn.BatchNorm2d):
    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.act = nn.ReLU()


def test_subclasses_are_recognised_and_custom_ones_refused() -> None:
    new, report = convert_with_report(resnet_like(_PlainSubclass), "gn:4")
    assert len(report) == 9 and all(r.old_type is _PlainSubclass for r in report)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in new.modules())
    for custom in (_FusedActivation, _WithChild):
        with pytest.raises(errors.ConfigError, match="overrides forward or holds child modules"):
            convert(resnet_like(custom), "gn:4")
        _, report = convert_with_report(resnet_like(custom), "gn:4", skip=custom)
        assert report == []


def test_lazy_layers_convert_once_materialized() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d())
    with pytest.raises(errors.ConfigError, match="lazy layer that has not seen input"):
        convert(net, "gn:2")
    net(torch.randn(2, 3, 5, 5))
    new = convert(net, "gn:2")
    assert isinstance(new[1], GroupNorm) and new[1].num_features == 4


@pytest.mark.parametrize(
    "selection",
    [{"skip": nn.LazyBatchNorm2d}, {"skip": "2"}, {"only": nn.BatchNorm2d}, {"only": "1"}],
    ids=["skip-type", "skip-path", "only-type", "only-path"],
)
def test_a_lazy_layer_left_out_of_the_selection_is_no_obstacle(selection: dict) -> None:
    """The lazy-layer refusal covers only the layers convert would replace: one that skip= or
    only= leaves out stays as it is, still lazy, and the rest converts."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.LazyBatchNorm2d())
    new, report = convert_with_report(net, "gn:2", **selection)
    assert [r.path for r in report] == ["1"]
    assert isinstance(new[1], GroupNorm) and layers.is_lazy_uninitialized(new[2])


def _six_then_four_channels() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4)
    )


def test_an_inplace_convert_that_refuses_a_layer_changes_no_layer() -> None:
    """'gn:3' fits the 6-channel layer but not the 4-channel one after it: the refusal comes
    before any layer of the model passed is replaced."""
    net = _six_then_four_channels()
    with pytest.raises(errors.ConfigError, match=r"convert: 3 .*cannot build 'gn:3'"):
        convert(net, "gn:3", inplace=True)
    assert isinstance(net[1], nn.BatchNorm2d) and isinstance(net[3], nn.BatchNorm2d)


def test_convert_of_a_non_model_names_the_function_and_the_type() -> None:
    """A state_dict passed where the model goes: convert's own name, the type received and the
    fix, word for word."""
    with pytest.raises(errors.ConfigError) as info:
        convert(nn.BatchNorm2d(4).state_dict(), "gn:2")
    assert str(info.value) == (
        "convert: model must be a torch.nn.Module; got OrderedDict. Pass the network itself "
        "(e.g. a torchvision or timm model), not its state_dict or output."
    )


def test_other_refusals() -> None:
    net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm((2, 3)))
    with pytest.raises(errors.ConfigError, match=r"normalized_shape=\(2, 3\)"):
        convert(net, "ln")
    frozen = resnet_like()
    freeze(frozen)
    with pytest.raises(errors.ConfigError, match=r"frozen by normlab\.freeze"):
        convert(frozen, "gn:4")
    with pytest.raises(errors.ConfigError, match="takes no channel_dim"):
        convert(token_mlp_like(), nn.BatchNorm1d)
    with pytest.raises(errors.ConfigError, match="unexpected keyword"):
        convert(resnet_like(), "gn:4", warp=2)
    with pytest.raises(errors.UnknownNameError, match="Did you mean"):
        convert(resnet_like(), "group_nrom")
    with pytest.raises(errors.ConfigError, match="not a normalization layer"):
        convert_layer(nn.Linear(2, 2), "bn")


def test_keyword_arguments_override_what_is_carried() -> None:
    new = convert(resnet_like(lambda c: nn.BatchNorm2d(c, eps=1e-3)), "gbn", eps=1e-4,
                  ghost_batch_size=2, affine=False)
    layer = new.bn1
    assert layer.eps == 1e-4 and layer.ghost_batch_size == 2 and layer.weight is None


def test_copy_shared_layers_and_hooks() -> None:
    model = resnet_like()
    original = copy.deepcopy(model.state_dict())
    new = convert(model, "gn:4")
    assert all(isinstance(m, nn.BatchNorm2d) for p, m in model.named_modules() if "bn" in p)
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key])

    bn = nn.BatchNorm1d(4)
    calls = []
    bn.register_forward_hook(lambda m, args, out: calls.append(type(m).__name__))
    shared = nn.Sequential(nn.Linear(4, 4), bn, nn.Linear(4, 4), bn)
    new, report = convert_with_report(shared, "ln", inplace=True)
    assert new is shared and new[1] is new[3] and isinstance(new[1], LayerNorm)
    assert "hooks" in report[0].carried
    new(torch.randn(3, 4))
    assert calls == ["LayerNorm", "LayerNorm"]


def test_hooks_of_every_kind_are_carried_and_reported_once() -> None:
    bn = nn.BatchNorm1d(4)
    calls = []
    bn.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    bn.register_forward_hook(lambda m, args, out: calls.append("post"))
    bn.register_full_backward_hook(lambda m, gin, gout: calls.append("backward"))
    new, report = convert_with_report(nn.Sequential(bn), "ln")
    assert report[0].carried.count("hooks") == 1
    new(torch.randn(3, 4, requires_grad=True)).sum().backward()
    assert calls == ["pre", "post", "backward"]


def test_a_parameter_converted_into_a_buffer_stays_out_of_autograd() -> None:
    """BN's trainable γ, β become FrozenBatchNorm's fixed buffers: values carried, no grad."""
    bn = nn.BatchNorm2d(4)
    nn.init.uniform_(bn.weight)
    frozen = convert_layer(bn, "frozen_bn")
    assert "weight" in frozen._buffers and torch.equal(frozen.weight, bn.weight)
    assert not frozen.weight.requires_grad and not frozen.bias.requires_grad
    assert list(frozen.parameters()) == []


def test_converted_virtual_batch_norm_needs_a_reference_pass() -> None:
    new = convert(resnet_like(), "vbn")
    with pytest.raises(errors.ConfigError, match="has no reference batch"):
        new(torch.randn(IMAGE_SHAPE))


def test_torchvision_models() -> None:
    models = pytest.importorskip("torchvision.models")
    for build in (models.resnet18, models.mobilenet_v3_small):
        net = _randomize(build(num_classes=5), (4, 3, 32, 32)).eval()
        x = torch.randn(4, 3, 32, 32)
        frozen = convert(net, "frozen_bn")
        with torch.no_grad():
            assert torch.equal(frozen(x), net(x))
        gn, report = convert_with_report(net, "gn:8")
        assert report and torch.isfinite(gn.train()(x)).all()


def test_timm_models() -> None:
    timm = pytest.importorskip("timm")
    net = _randomize(timm.create_model("resnet18", pretrained=False, num_classes=5),
                     (4, 3, 32, 32)).eval()
    x = torch.randn(4, 3, 32, 32)
    frozen = convert(net, "frozen_bn")
    with torch.no_grad():
        assert torch.equal(frozen(x), net(x))


@pytest.mark.parametrize(
    "make_source",
    [lambda: nn.InstanceNorm2d(8, affine=True, track_running_stats=True),
     lambda: normlab.InstanceNorm(8, affine=True, track_running_stats=True)],
    ids=["torch", "normlab"],
)
@pytest.mark.parametrize("target", ["bn", "brn", "gbn:4", "sn"])
def test_instance_statistics_never_become_batch_statistics(make_source, target: str) -> None:
    """A tracked InstanceNorm's running buffers average per-sample statistics; a BN-family
    layer's hold the batch's. Converting starts the target's statistics fresh and keeps γ, β."""
    source = make_source()
    source.train()
    for _ in range(3):
        source(torch.randn(4, 8, 5, 5) * 3 + 2)
    fresh = registry.create(target, 8)
    new, report = convert_with_report(nn.Sequential(source), target)
    layer = new[0]
    assert not set(report[0].carried) & set(STATS), report[0].carried
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if getattr(fresh, name, None) is not None:
            assert torch.equal(getattr(layer, name), getattr(fresh, name)), name
    assert torch.equal(layer.weight, source.weight) and torch.equal(layer.bias, source.bias)


@pytest.mark.parametrize(
    ("make", "spec", "shape"),
    [
        (lambda: timm_stand_ins.BatchNormAct2d(8, act=nn.SiLU), "frozen_bn", (2, 8, 4, 4)),
        (lambda: timm_stand_ins.GroupNormAct(8, 4, act=nn.GELU), "gn:4", (2, 8, 4, 4)),
        (lambda: timm_stand_ins.LayerNormAct2d(8, act=nn.SiLU), "ln", (2, 8, 4, 4)),
        (lambda: timm_stand_ins.LayerNormAct(8), "ln", (2, 5, 8)),
        (lambda: timm_stand_ins.FrozenBatchNormAct2d(8, act=nn.GELU), "bn", (2, 8, 4, 4)),
    ],
    ids=["bn-act", "gn-act", "ln-act-2d", "ln-act", "frozen-bn-act"],
)
def test_timm_norm_act_layers_convert_their_norm_and_keep_drop_and_act(
    make: Callable[[], nn.Module], spec: str, shape: tuple[int, ...]
) -> None:
    """timm's norm + activation layers (stand-ins with timm's structure, tests/timm_stand_ins.py)
    become Sequential(norm, drop, act) computing what they computed; the original is kept."""
    layer = make()
    with torch.no_grad():
        for t in (*layer.parameters(), *layer.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    layer.eval()
    new = convert_layer(layer, spec).eval()
    assert list(new._modules) == ["norm", "drop", "act"]
    assert type(new.act) is type(layer.act) and new.act is not layer.act
    assert layer.act is not None and list(layer._modules) == ["drop", "act"]
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(new(x), layer(x), rtol=1e-5, atol=1e-5)

    net = nn.Sequential(layer)
    converted, report = convert_with_report(net, spec)
    assert report[0].carried[-2:] == ("drop", "act")
    assert report[0].new_type is nn.Sequential and isinstance(net[0], type(layer))
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(x), layer(x), rtol=1e-5, atol=1e-5)


class _WithRunningMean(nn.Module):
    """Not a norm layer, but it holds a running_mean buffer: taken to keep batch statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(3))


# module -> (is_norm, channels, channel_dim, is_affine, running_stats, stats_kind, per_position,
#            frozen_stats): what every surgery tool reads about a layer (normlab.surgery.layers)
LAYER_FACTS: dict[str, tuple[Callable[[], nn.Module], tuple[object, ...]]] = {
    "bn": (lambda: nn.BatchNorm2d(4), (True, 4, 1, True, "batch", "batch", None, False)),
    "bn-plain": (lambda: nn.BatchNorm1d(4, affine=False, track_running_stats=False),
                 (True, 4, 1, False, None, None, None, False)),
    "in": (lambda: nn.InstanceNorm2d(4), (True, 4, 1, False, None, None, None, False)),
    "in-tracked": (lambda: nn.InstanceNorm1d(4, affine=True, track_running_stats=True),
                   (True, 4, 1, True, "instance", "instance", None, False)),
    "gn": (lambda: nn.GroupNorm(2, 6), (True, 6, 1, True, None, None, None, False)),
    "ln": (lambda: nn.LayerNorm(5, elementwise_affine=False),
           (True, 5, -1, False, None, None, True, False)),
    "ln-2d": (lambda: nn.LayerNorm((2, 3)), (True, None, -1, True, None, None, True, False)),
    "rms": (lambda: nn.RMSNorm(5), (True, 5, -1, True, None, None, True, False)),
    "brn": (lambda: registry.create("brn", 4), (True, 4, 1, True, "batch_biased", "batch", None,
                                                 False)),
    "nl-ln-pos": (lambda: LayerNorm(4, per_position=True, channel_dim=-1),
                  (True, 4, -1, True, None, None, True, False)),
    "nl-ln": (lambda: LayerNorm(4), (True, 4, 1, True, None, None, False, False)),
    "nl-gn": (lambda: GroupNorm(4, num_groups=2), (True, 4, 1, True, None, None, None, False)),
    "frozen": (lambda: FrozenBatchNorm(4), (True, 4, 1, True, "batch", "batch", None, True)),
    "frozen-act": (lambda: timm_stand_ins.FrozenBatchNormAct2d(3),
                   (True, 3, 1, True, "batch", "batch", None, True)),
    "ln-act": (lambda: timm_stand_ins.LayerNormAct(3), (True, 3, -1, True, None, None, True,
                                                        False)),
    "buffer-only": (_WithRunningMean, (False, None, 1, False, "batch", "batch", None, False)),
    "linear": (lambda: nn.Linear(2, 3), (False, None, 1, True, None, None, None, False)),
}


@pytest.mark.parametrize("case", list(LAYER_FACTS))
def test_what_the_surgery_tools_read_about_a_layer(case: str) -> None:
    make, expected = LAYER_FACTS[case]
    m = make()
    got = (layers.is_norm(m), layers.channels(m), layers.channel_dim(m), layers.is_affine(m),
           layers.running_stats(m), layers.stats_kind(m), layers.per_position(m),
           layers.frozen_stats(m))
    assert got == expected
    # what the class keeps when it tracks statistics (torch classes by their base classes)
    by_class = {"in": "instance", "bn-plain": "batch", "buffer-only": None, "frozen-act": None}
    assert layers.class_stats_kind(type(m)) == by_class.get(case, layers.stats_kind(m))
    count = layers.channels(m)
    assert layers.describe("features.3", m) == (
        f"features.3 ({type(m).__name__}" + (f" with {count} channels)" if count else ")")
    )
    assert layers.describe("", m).startswith(f"<the model itself> ({type(m).__name__}")


def test_layer_classes_behind_partials_and_the_tensor_they_are_read_from() -> None:
    tracked = functools.partial(nn.InstanceNorm2d, track_running_stats=True)
    assert layers.class_stats_kind(functools.partial(tracked, affine=True)) == "instance"
    assert layers.class_running_stats(functools.partial(registry.lookup("brn").cls)) == (
        "batch_biased"
    )
    assert layers.class_stats_kind(lambda c: nn.BatchNorm2d(c)) is None  # unknown callable
    assert layers.class_stats_kind(nn.GroupNorm) is None
    bn = nn.BatchNorm2d(3).double()
    assert layers.first_tensor(bn) is bn.weight
    plain = nn.BatchNorm2d(3, affine=False)
    assert layers.first_tensor(plain) is plain.running_mean  # num_batches_tracked is an int
    assert layers.first_tensor(nn.BatchNorm2d(3, affine=False, track_running_stats=False)) is None
    lazy = nn.LazyBatchNorm2d()
    assert layers.is_lazy_uninitialized(lazy) and not layers.is_lazy_uninitialized(bn)
    lazy(torch.randn(2, 3, 4, 4))
    assert not layers.is_lazy_uninitialized(lazy)
    assert layers.norm_act_tail(bn) == [] and not layers.is_norm_act(bn)
    act = timm_stand_ins.BatchNormAct2d(3, act=nn.SiLU)
    assert [name for name, _ in layers.norm_act_tail(act)] == ["drop", "act"]
    assert not layers.has_custom_forward(_PlainSubclass(3))
    assert layers.has_custom_forward(_FusedActivation(3)) and layers.has_custom_forward(
        _WithChild(3))


def test_convert_layer_of_a_non_norm_module_message() -> None:
    """convert_layer on a Linear names its module argument, the type received and the fix
    (no skip=, which convert_layer does not take)."""
    with pytest.raises(errors.ConfigError) as info:
        convert_layer(nn.Linear(2, 2), "bn")
    assert str(info.value) == (
        "convert_layer: module (Linear): it is not a normalization layer. Pass a torch.nn or "
        "normlab norm layer, or use convert(model, ...) on a model."
    )


def test_convert_layer_that_cannot_build_the_target_message() -> None:
    """A target that cannot be built for the layer: convert_layer names its module argument
    and the channel count, with a fix for this one layer (no skip= / only=)."""
    with pytest.raises(errors.ConfigError) as info:
        convert_layer(nn.BatchNorm2d(6), "gn:4")
    message = str(info.value)
    assert message.startswith(
        "convert_layer: module (BatchNorm2d with 6 channels): cannot build 'gn:4' for it: "
        "num_features (6) must be divisible by num_groups (4)"
    ), message
    assert message.endswith(
        ". Use a spec and keyword arguments that fit this layer (e.g. 'gn:G' with G dividing 6)."
    ), message


def test_convert_layer_of_a_model_norm_keeps_the_skip_hint() -> None:
    """convert on a model that is itself a norm layer still offers skip='' (the root path)."""
    with pytest.raises(errors.ConfigError) as info:
        convert(nn.BatchNorm2d(6), "gn:4")
    message = str(info.value)
    assert message.startswith("convert: <the model itself> (BatchNorm2d with 6 channels): ")
    assert message.endswith(
        "or convert this layer separately with only=. Or leave this layer as it is with skip=''."
    ), message


def test_convert_layer_of_a_timm_norm_act_does_not_share_the_activation_parameters() -> None:
    """The act of the converted timm layer is a copy: a PReLU's weight is not shared with the
    original, so training the new layer leaves the original as it was."""
    layer = timm_stand_ins.BatchNormAct2d(4, act=nn.PReLU)
    new = convert_layer(layer, "gn:2")
    assert new.act.weight is not layer.act.weight
    with torch.no_grad():
        new.act.weight.fill_(0.75)
    assert torch.equal(layer.act.weight, nn.PReLU().weight)


def test_refusal_names_a_class_target_by_its_name() -> None:
    """A class target is named by its class name in the message (not its repr)."""
    with pytest.raises(errors.ConfigError) as info:
        convert_layer(nn.LayerNorm(4), nn.BatchNorm1d)
    assert str(info.value) == (
        "convert_layer: module (LayerNorm with 4 channels): its channels are at dim -1 and "
        "BatchNorm1d takes no channel_dim argument. Use a registered normlab norm (they take "
        "channel_dim=-1)."
    )


def test_refusal_names_a_callable_without_a_name_by_its_repr() -> None:
    """A callable target without __name__ (a functools.partial) is named by its repr."""
    target = functools.partial(nn.BatchNorm1d)
    with pytest.raises(errors.ConfigError) as info:
        convert_layer(nn.LayerNorm(4), target)
    assert f"dim -1 and {target!r} takes no channel_dim argument." in str(info.value)


def test_convert_inplace_returns_the_model_itself() -> None:
    """convert(..., inplace=True) replaces the layers of the model passed and returns it."""
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert convert(net, "gn:2", inplace=True) is net
    assert isinstance(net[1], GroupNorm)


def test_convert_layer_lazy_refusal_message() -> None:
    """convert_layer on an unmaterialized lazy layer names its module argument, without skip=."""
    with pytest.raises(errors.ConfigError) as info:
        convert_layer(nn.LazyBatchNorm2d(), "gn:2")
    assert str(info.value) == (
        "convert_layer: module (LazyBatchNorm2d): it is a lazy layer that has not seen input, so "
        "its number of channels is unknown. Run one forward pass first (it materializes the "
        "layer)."
    )


def test_frozen_target_behind_a_partial_is_refused_without_bn_statistics() -> None:
    """functools.partial(FrozenBatchNorm) is checked like the class: a GroupNorm has no
    statistics to freeze."""
    target = functools.partial(FrozenBatchNorm)
    with pytest.raises(errors.ConfigError) as info:
        convert_layer(nn.GroupNorm(2, 4), target)
    assert str(info.value) == (
        f"convert_layer: module (GroupNorm with 4 channels): {target!r} needs BatchNorm running "
        "statistics (mean and variance over (N, *S)) and this layer keeps none, so the frozen "
        "layer would normalize with mean 0 and variance 1 forever. Convert to a norm that "
        "learns its statistics (e.g. 'bn'), train or normlab.recalibrate it, then convert that "
        "to 'frozen_bn'."
    )


def test_untracked_batch_norm_stays_untracked() -> None:
    """BN(track_running_stats=False) → normlab BatchNorm keeps normalizing with batch
    statistics in eval (no running buffers)."""
    new, report = convert_with_report(
        nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False)), "bn"
    )
    assert new[0].track_running_stats is False and new[0].running_mean is None
    assert "track_running_stats" in report[0].carried


def test_instance_norm_does_not_pass_its_tracking_flag_to_batch_norm() -> None:
    """An untracked InstanceNorm2d (instance statistics) → BatchNorm keeps BN's default
    tracking: statistics of another kind carry nothing."""
    new = convert_layer(nn.InstanceNorm2d(4), "bn")
    assert new.track_running_stats is True and new.momentum == 0.1
    assert torch.equal(new.running_mean, torch.zeros(4))


def test_a_layer_lacking_eps_momentum_and_tracking_attributes_gets_the_target_defaults() -> None:
    """A BN without eps / momentum / track_running_stats attributes (as unpickled from an old
    torch) converts with the target's defaults instead of failing."""
    bn = nn.BatchNorm2d(4)
    del bn.eps, bn.momentum, bn.track_running_stats
    new = convert_layer(bn, "bn")
    assert (new.eps, new.momentum, new.track_running_stats) == (1e-5, 0.1, True)


def test_device_is_carried_to_a_target_that_takes_device() -> None:
    """A layer on the meta device converts to a torch class on the meta device."""
    new = convert_layer(nn.BatchNorm2d(4, device="meta"), nn.BatchNorm2d)
    assert new.weight.device.type == "meta" and new.running_mean.device.type == "meta"


def test_affine_flag_decides_over_a_missing_weight() -> None:
    """A BN(affine=True) whose γ, β were removed converts to an affine target (γ=1, β=0): the
    layer's affine flag is read, not guessed from its weight."""
    bn = nn.BatchNorm2d(4)
    bn.weight = None
    bn.bias = None
    new = convert_layer(bn, "gn:2")
    assert new.affine is True
    assert torch.equal(new.weight, torch.ones(4)) and torch.equal(new.bias, torch.zeros(4))


class _PerPositionAttribute(nn.BatchNorm2d):
    """A torch BN subclass with a per_position attribute of its own meaning."""

    per_position = True


def test_per_position_is_read_from_normlab_layers_only() -> None:
    """A torch BN subclass's own per_position attribute is not carried to normlab LayerNorm."""
    new, report = convert_with_report(nn.Sequential(_PerPositionAttribute(4)), "ln")
    assert new[0].per_position is False and "per_position" not in report[0].carried


class _BufferedScale(nn.Module):
    """An activation with a buffer and no parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@pytest.mark.parametrize("act", [nn.PReLU, _BufferedScale], ids=["parameter", "buffer"])
def test_dtype_is_read_from_the_norm_not_its_activation(act: Callable[[], nn.Module]) -> None:
    """A timm BN-act layer without tensors of its own and a float64 activation: the new norm
    is built in the default dtype, not the activation's."""
    layer = timm_stand_ins.BatchNormAct2d(4, affine=False, track_running_stats=False, act=act)
    layer.act.double()
    new = convert_layer(layer, "bn", affine=True)
    assert new.norm.weight.dtype == torch.float32
    assert next(iter([*new.act.parameters(), *new.act.buffers()])).dtype == torch.float64


def test_momentum_none_cumulative_average_is_carried() -> None:
    """BN(momentum=None) (a cumulative average) converts to BatchNorm with momentum=None."""
    assert convert_layer(nn.BatchNorm2d(4, momentum=None), "bn").momentum is None


class _TakesDeviceOnly(nn.GroupNorm):
    def __init__(self, num_features: int, device: torch.device | None = None) -> None:
        super().__init__(2, num_features, device=device)


class _ScaleOnly(nn.Module):
    """A replacement with a weight and no bias attribute at all."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(-1, *[1] * (x.dim() - 2))


@pytest.mark.parametrize(
    "target", [lambda n: nn.GroupNorm(2, n), _TakesDeviceOnly], ids=["takes-neither", "device-only"]
)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_target_not_given_the_device_or_dtype_is_moved_to_the_source_s(
    target: Callable, device: str
) -> None:
    """What the target's constructor does not take, the new layer still gets: it sits on the
    source's device in the source's dtype."""
    new = convert_layer(nn.BatchNorm2d(4, device=device, dtype=torch.float64), target)
    for tensor in (new.weight, new.bias):
        assert tensor.dtype == torch.float64 and tensor.device.type == device


def test_a_dtype_the_caller_passes_wins_over_the_source_s() -> None:
    new = convert_layer(
        nn.BatchNorm2d(4, dtype=torch.float64),
        lambda n, **kw: nn.GroupNorm(2, n, **kw),
        dtype=torch.float16,
    )
    assert new.weight.dtype == torch.float16


def test_the_report_lists_what_was_carried_word_for_word() -> None:
    """Neither device nor dtype (they are where the layer lives, not what it learned) nor an
    argument the caller passed; a source or target without a bias carries the weight alone."""
    bn = nn.BatchNorm2d(4, dtype=torch.float64)
    _, report = convert_with_report(nn.Sequential(bn), "frozen_bn", eps=1e-3)
    assert report[0].carried == (
        "affine", "channel_dim", "weight", "bias", "running_mean", "running_var",
        "num_batches_tracked",
    )
    rms = nn.RMSNorm(8)
    nn.init.uniform_(rms.weight)
    new, report = convert_with_report(nn.Sequential(nn.Linear(3, 8), rms), "ln")
    assert report[0].carried == ("affine", "channel_dim", "per_position", "weight")
    assert torch.equal(new[1].weight, rms.weight) and not new[1].bias.any()
    nn.init.uniform_(bn.weight)
    new, report = convert_with_report(nn.Sequential(bn), _ScaleOnly)
    assert report[0].carried == ("weight",) and torch.equal(new[0].weight, bn.weight)


def test_cannot_build_refusal_word_for_word() -> None:
    """The target's own complaint, its final period dropped, inside convert's refusal."""
    with pytest.raises(errors.ConfigError) as info:
        convert(_six_then_four_channels(), "gn:3")
    assert str(info.value) == (
        "convert: 3 (BatchNorm2d with 4 channels): cannot build 'gn:3' for it: num_features (4) "
        "must be divisible by num_groups (3); choose num_groups among [1, 2, 4], pass "
        "group_size=, or pass max_groups=3 (spec 'gn:max3') to use the largest divisor of 4 up "
        "to 3. Use a spec and keyword arguments that fit every converted layer (e.g. "
        "'gn:max32', the largest divisor of each layer's channel count up to 32, or 'gn:G' with "
        "G dividing 4), or convert this layer separately with only=. Or leave this layer as it "
        "is with skip='3'."
    )


_FROZEN_FIX = (
    "Convert to a norm that learns its statistics (e.g. 'bn'), train or normlab.recalibrate "
    "it, then convert that to 'frozen_bn'. Or leave this layer as it is with skip='0'."
)


def _frozen_bn_after_conv() -> nn.Sequential:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    freeze(net)
    return net


@pytest.mark.parametrize(
    ("model", "to", "expected"),
    [
        # an unmaterialized lazy layer: the path, the type (no placeholder channel count), why
        # and the fix
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d()), "gn:2",
         "convert: 1 (LazyBatchNorm2d): it is a lazy layer that has not seen input, so its "
         "number of channels is unknown. Run one forward pass first (it materializes the "
         "layer). Or leave this layer as it is with skip='1'."),
        # a layer frozen by normlab.freeze: unfreeze, convert, freeze again
        (_frozen_bn_after_conv, "gn:2",
         "convert: 1 (BatchNorm2d with 4 channels): it is frozen by normlab.freeze. Call "
         "normlab.unfreeze(model) first, convert, then freeze the converted model. Or leave "
         "this layer as it is with skip='1'."),
        # a subclass with its own forward: what would be dropped and the replace_modules fix
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _FusedActivation(4)), "gn:2",
         "convert: 1 (_FusedActivation with 4 channels): its class overrides forward or holds "
         "child modules (e.g. a fused activation), which a plain norm layer would silently "
         "drop. Replace it with normlab.surgery.replace_modules and a callback that keeps the "
         "extra behaviour. Or leave this layer as it is with skip='1'."),
        (lambda: nn.Sequential(nn.LayerNorm((2, 3))), "ln",
         "convert: 0 (LayerNorm): it normalizes over normalized_shape=(2, 3), more than one dim, "
         "so it is not a per-channel norm. Only LayerNorm / RMSNorm over the last dim (the "
         "channels of (N, *, C)) convert. Or leave this layer as it is with skip='0'."),
        (lambda: nn.Sequential(nn.InstanceNorm2d(4, track_running_stats=True)), "frozen_bn",
         "convert: 0 (InstanceNorm2d with 4 channels): 'frozen_bn' needs BatchNorm running "
         "statistics (mean and variance over (N, *S)) and this layer keeps averages of "
         f"per-sample statistics instead. {_FROZEN_FIX}"),
        (lambda: nn.Sequential(normlab.EvoNormB0(4)), "frozen_bn",
         "convert: 0 (EvoNormB0 with 4 channels): 'frozen_bn' needs BatchNorm running "
         f"statistics (mean and variance over (N, *S)) and this layer keeps no running mean. "
         f"{_FROZEN_FIX}"),
        (lambda: nn.Sequential(nn.GroupNorm(2, 4)), "frozen_bn",
         "convert: 0 (GroupNorm with 4 channels): 'frozen_bn' needs BatchNorm running "
         "statistics (mean and variance over (N, *S)) and this layer keeps none, so the frozen "
         f"layer would normalize with mean 0 and variance 1 forever. {_FROZEN_FIX}"),
    ],
    ids=["lazy", "frozen-by-freeze", "custom-forward", "ln-two-dims", "instance-to-frozen",
         "variance-only-to-frozen", "none-to-frozen"],
)
def test_source_refusals_word_for_word(model: Callable, to: str, expected: str) -> None:
    """Each refusal of a source layer, word for word: the path, the layer, why, the fix."""
    with pytest.raises(errors.ConfigError) as info:
        convert(model(), to)
    assert str(info.value) == expected


class BatchNormAct2d(nn.BatchNorm2d):
    """A user's own class that happens to share a timm norm + activation name."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def test_a_class_outside_timm_with_a_timm_name_is_not_taken_for_timm_s() -> None:
    """Only timm's own norm + activation classes convert with their drop and act kept; a
    look-alike elsewhere is a custom layer, refused (its forward would be dropped)."""
    layer = BatchNormAct2d(4)
    assert not layers.is_norm_act(layer)
    with pytest.raises(errors.ConfigError, match="overrides forward or holds child modules"):
        convert(nn.Sequential(layer), "gn:2")
