"""timm's norm + activation layers (timm/layers/norm_act.py) in convert, fold, freeze and
recalibrate: the norm is handled like its torch base, the ``drop`` and ``act`` stay.

Runs with timm installed (skipped otherwise); the models are built with pretrained=False.
"""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from torch import nn

from normlab import surgery

timm = pytest.importorskip("timm")
timm_layers = pytest.importorskip("timm.layers")

MODELS = {"mobilenetv3_small_100": 34, "efficientnet_b0": 49}  # BatchNormAct2d layers


def _trained(name: str) -> nn.Module:
    """The model after a few SGD steps on random data (running statistics and affine moved
    away from their initial values, so folding is not trivial), in eval mode."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.3)
                m.bias.normal_(0.0, 0.3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(3):
        x = torch.randn(4, 3, 64, 64) * 2 + 0.5
        loss = model(x).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _acts(model: nn.Module) -> collections.Counter[str]:
    return collections.Counter(
        type(m).__name__ for p, m in model.named_modules() if p.endswith(".act") or p == "act"
    )


def _norm_acts(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if "NormAct" in type(m).__name__]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fold_whole_model(name: str) -> None:
    model = _trained(name)
    x = torch.randn(2, 3, 64, 64)
    result = surgery.fold_with_report(model)
    assert len(result.folded) == MODELS[name] and result.unfolded == ()
    assert _norm_acts(result.model) == [] and _norm_acts(model) != []
    assert _acts(result.model) == _acts(model)  # every activation kept
    assert str(result.folded[0]) == (
        "bn1: BatchNormAct2d -> Sequential(drop, act) (folded into conv_stem, Conv2d)"
    )
    with torch.no_grad():
        expected, got = model(x), result.model(x)
    assert (expected - got).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_fold_keeps_the_drop_layer_and_folds_frozen_bn_act() -> None:
    bn = timm_layers.BatchNormAct2d(4, act_layer=nn.SiLU, drop_layer=lambda: nn.Dropout(0.5))
    frozen = timm_layers.FrozenBatchNormAct2d(4, act_layer=nn.GELU)
    with torch.no_grad():
        for layer in (bn, frozen):
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.normal_()
            layer.bias.normal_()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), bn, nn.Conv2d(4, 4, 1), frozen).eval()
    folded = surgery.fold(net)
    assert isinstance(folded[1], nn.Sequential) and list(folded[1]._modules) == ["drop", "act"]
    assert isinstance(folded[1].drop, nn.Dropout) and isinstance(folded[1].act, nn.SiLU)
    assert isinstance(folded[3].act, nn.GELU)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
        folded.train()  # the dropout still drops in training
        assert (folded[1](torch.ones(64, 4, 2, 2)) == 0).any()


def test_fold_refuses_bn_act_in_training_mode() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), timm_layers.BatchNormAct2d(4))
    with pytest.raises(ValueError, match=r"fold requires eval mode.*'1' \(BatchNormAct2d\)"):
        surgery.fold(net)


def test_convert_whole_model_keeps_activations() -> None:
    model = _trained("mobilenetv3_small_100")
    x = torch.randn(2, 3, 64, 64)
    new, report = surgery.convert_with_report(model, "bn")
    assert len(report) == MODELS["mobilenetv3_small_100"] and _norm_acts(new) == []
    assert report[0].carried[-2:] == ("drop", "act")
    assert _acts(new) == _acts(model)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "spec", "shape"),
    [
        (lambda: timm_layers.BatchNormAct2d(8, act_layer=nn.SiLU), "frozen_bn", (2, 8, 4, 4)),
        (lambda: timm_layers.GroupNormAct(8, num_groups=4, act_layer=nn.GELU), "gn:4",
         (2, 8, 4, 4)),
        (lambda: timm_layers.GroupNorm1Act(8), "gn:1", (2, 8, 4, 4)),
        (lambda: timm_layers.LayerNormAct2d(8, act_layer=nn.SiLU), "ln", (2, 8, 4, 4)),
        (lambda: timm_layers.LayerNormAct(8), "ln", (2, 5, 8)),
        (lambda: timm_layers.FrozenBatchNormAct2d(8), "bn", (2, 8, 4, 4)),
    ],
    ids=["bn-act", "gn-act", "gn1-act", "ln-act-2d", "ln-act", "frozen-bn-act"],
)
def test_convert_layer_equals_the_timm_layer(make, spec: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        for t in (*layer.parameters(), *layer.buffers()):
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    layer.eval()
    new = surgery.convert_layer(layer, spec).eval()
    assert list(new._modules) == ["norm", "drop", "act"]
    assert type(new.act) is type(layer.act) and new.act is not layer.act
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(new(x), layer(x), rtol=1e-5, atol=1e-5)


def test_freeze_bn_act_statistics_and_affine() -> None:
    model = _trained("mobilenetv3_small_100")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    report = surgery.freeze(model, affine=True)
    assert len(report) == MODELS["mobilenetv3_small_100"]
    assert all(r.statistics and r.parameters == ("weight", "bias") for r in report)
    state = copy.deepcopy({k: v for k, v in model.state_dict().items() if "bn" in k})
    model.train()
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected)  # BN eval, the activations still applied
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not model.bn1.weight.requires_grad and model.conv_stem.weight.requires_grad
    surgery.unfreeze(model)
    assert model.bn1.weight.requires_grad


def test_recalibrate_bn_act_is_precise_bn() -> None:
    torch.manual_seed(0)
    act = timm_layers.BatchNormAct2d(4, act_layer=nn.SiLU)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 5, 1),
                        timm_layers.BatchNormAct2d(5), timm_layers.FrozenBatchNormAct2d(5))
    batch = torch.randn(6, 3, 7, 7)
    report = surgery.recalibrate(net.eval(), [batch])
    assert [r.path for r in report] == ["1", "3"]  # the frozen layer keeps its statistics
    with torch.no_grad():
        z1 = net[0](batch)
        z2 = net[2](nn.functional.silu(nn.functional.batch_norm(
            z1, None, None, act.weight, act.bias, training=True, eps=act.eps)))
    for layer, z in ((net[1], z1), (net[3], z2)):
        torch.testing.assert_close(layer.running_mean, z.mean((0, 2, 3)))
        torch.testing.assert_close(layer.running_var, z.var((0, 2, 3)))
    assert torch.equal(net[4].running_mean, torch.zeros(5))


def test_recalibrate_whole_model() -> None:
    model = timm.create_model("mobilenetv3_small_100", pretrained=False).eval()
    report = surgery.recalibrate(model, [torch.randn(4, 3, 64, 64) for _ in range(2)])
    assert len(report) == MODELS["mobilenetv3_small_100"]
    assert not model.bn1.running_mean.eq(0).all()


class _ScaledBNAct(timm_layers.BatchNormAct2d):
    """A user subclass that changes the forward (no longer norm, drop, act)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_user_subclass_overriding_forward_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), _ScaledBNAct(4)).eval()
    with pytest.raises(ValueError, match=r"'1' \(_ScaledBNAct\) is a subclass that overrides"):
        surgery.fold(net)
    with pytest.raises(ValueError, match=r"1 \(_ScaledBNAct with 4 channels\): its class "
                       r"overrides forward"):
        surgery.convert(net, "bn")


def test_sync_bn_act_syncs_its_norm() -> None:
    import normlab

    net = nn.Sequential(nn.Conv2d(3, 4, 3), timm_layers.BatchNormAct2d(4, act_layer=nn.SiLU))
    synced, report = normlab.distributed.sync_with_report(net)
    assert [str(r.new_type.__name__) for r in report] == ["Sequential"]
    assert synced[1].norm.moments_reducer is not None and isinstance(synced[1].act, nn.SiLU)
