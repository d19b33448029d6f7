"""Tools outside normlab that find norm layers by type treat normlab's layers as norms.

One test per tool. torch's tools run beside torch 2.13; timm's, torchvision's and mmengine's
are skipped where those packages are absent (they run in an environment that has them).
detectron2 cannot be installed from a package registry: its tests reproduce its checks (the
``norm_module_types`` tuple of ``detectron2.solver.build.get_default_optimizer_params`` and
the isinstance test of ``FrozenBatchNorm2d.convert_frozen_batchnorm``), saying so.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normlab


def _net(norm: type[nn.Module] | None = None) -> nn.Sequential:
    """conv → BN → ReLU → conv → BN, with normlab's BatchNorm unless ``norm`` is given."""
    def bn(c: int) -> nn.Module:
        return normlab.BatchNorm(c) if norm is None else norm(c)
    return nn.Sequential(nn.Conv2d(3, 6, 3), bn(6), nn.ReLU(), nn.Conv2d(6, 5, 1), bn(5))


def _trained(model: nn.Module, seed: int = 0, steps: int = 3) -> nn.Module:
    """``model`` with running statistics and affine parameters moved away from their init."""
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
        for _ in range(steps):
            model(2.0 + 3.0 * torch.randn(4, 3, 8, 8, generator=gen))
    return model


def _torch_twin(model: nn.Sequential) -> nn.Sequential:
    """The same network with torch.nn.BatchNorm2d layers holding copies of the state."""
    twin = _net(nn.BatchNorm2d)
    twin.load_state_dict(model.state_dict())
    return twin


# -- torch.optim.swa_utils.update_bn -------------------------------------------------------------
def test_swa_update_bn_recomputes_running_stats_like_torch() -> None:
    model = _trained(_net())
    twin = _torch_twin(model)
    gen = torch.Generator().manual_seed(1)
    loader = [(torch.randn(5, 3, 8, 8, generator=gen) - 1.0, 0) for _ in range(4)]
    model.eval()
    twin.eval()

    torch.optim.swa_utils.update_bn(loader, model)
    torch.optim.swa_utils.update_bn(loader, twin)

    assert not model.training  # restored, like torch's
    for i in (1, 4):
        ours, theirs = model[i], twin[i]
        assert ours.momentum == theirs.momentum == 0.1  # restored after the pass
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 4
        torch.testing.assert_close(ours.running_mean, theirs.running_mean)
        torch.testing.assert_close(ours.running_var, theirs.running_var)


def test_swa_update_bn_leaves_frozen_batch_norm_alone() -> None:
    # FrozenBatchNorm is not a torch BatchNorm by type: its fixed statistics are not reset
    model = nn.Sequential(nn.Conv2d(3, 4, 1), normlab.FrozenBatchNorm(4))
    with torch.no_grad():
        model[1].running_mean.fill_(2.0)
    torch.optim.swa_utils.update_bn([torch.randn(2, 3, 4, 4)], model)
    assert torch.equal(model[1].running_mean, torch.full((4,), 2.0))


# -- torch.nn.SyncBatchNorm.convert_sync_batchnorm -----------------------------------------------
def test_convert_sync_batchnorm_converts_and_keeps_state() -> None:
    model = _trained(_net()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    weight, running_mean = model[1].weight, model[1].running_mean.clone()

    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)

    converted = [m for m in synced.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(converted) == 2
    assert synced[1].weight is weight  # torch's rule: the same parameters, not copies
    torch.testing.assert_close(synced[1].running_mean, running_mean)
    assert int(synced[4].num_batches_tracked) == 3
    assert not synced[1].training
    torch.testing.assert_close(synced(x), expected, rtol=0, atol=0)
    # training without a process group falls back to plain BN: the same as normlab's
    reference = _trained(_net()).train()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(reference)).train()
    torch.testing.assert_close(synced(x), reference(x))
    torch.testing.assert_close(synced[4].running_var, reference[4].running_var)


# -- torch.func.replace_all_batch_norm_modules_ -------------------------------------------------
def test_functorch_replace_all_batch_norm_modules_drops_running_stats_like_torch() -> None:
    model = _trained(_net())
    twin = _torch_twin(model)
    torch.func.replace_all_batch_norm_modules_(model)
    torch.func.replace_all_batch_norm_modules_(twin)
    assert model[1].running_mean is None and not model[1].track_running_stats
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(model.eval()(x), twin.eval()(x))  # batch statistics in eval


# -- torch.ao.quantization.fuse_modules ----------------------------------------------------------
def test_quantization_fuse_modules_fuses_conv_and_normlab_batch_norm() -> None:
    model = _trained(_net()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)

    fused = torch.ao.quantization.fuse_modules(model, [["0", "1", "2"], ["3", "4"]])

    assert type(fused[0]).__name__ == "ConvReLU2d" and isinstance(fused[1], nn.Identity)
    assert type(fused[3]) is nn.Conv2d and isinstance(fused[4], nn.Identity)
    torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


def test_quantization_fuse_modules_qat_keeps_the_batch_norm_parameters() -> None:
    model = _trained(_net()).train()
    bn = model[4]
    fused = torch.ao.quantization.fuse_modules_qat(model, [["3", "4"]], inplace=True)
    assert type(fused[3]).__name__ == "ConvBn2d"
    assert fused[3][1].weight is bn.weight  # trained on, not copied
    assert fused[3][1].running_var is bn.running_var


def test_quantization_fuse_modules_refuses_channels_last_batch_norm() -> None:
    model = nn.Sequential(nn.Linear(4, 4), normlab.BatchNorm(4, channel_dim=-1)).eval()
    with pytest.raises(normlab.NormlabError, match="channel_dim=-1"):
        torch.ao.quantization.fuse_modules(model, [["0", "1"]])


# -- mmengine ------------------------------------------------------------------------------------
_SAME_AS_TORCH = (
    normlab.BatchNorm(4), normlab.GroupNorm(4, num_groups=2),
    normlab.InstanceNorm(4, affine=True),
)


def test_mmengine_is_norm_and_norm_decay_mult() -> None:
    pytest.importorskip("mmengine")
    from mmengine.optim import DefaultOptimWrapperConstructor
    from mmengine.utils.dl_utils import is_norm

    assert all(is_norm(layer) for layer in _SAME_AS_TORCH)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), *copy.deepcopy(_SAME_AS_TORCH))
    constructor = DefaultOptimWrapperConstructor(
        {"type": "OptimWrapper", "optimizer": {"type": "SGD", "lr": 0.1, "weight_decay": 1e-4}},
        {"norm_decay_mult": 0.0},
    )
    groups = constructor(model).optimizer.param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model[0].weight)] == 1e-4
    for layer in model[1:]:
        assert decay[id(layer.weight)] == 0.0 and decay[id(layer.bias)] == 0.0


def test_mmengine_convert_sync_batchnorm() -> None:
    model_utils = pytest.importorskip("mmengine.model.utils")
    model = _trained(_net()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)
    synced = model_utils.convert_sync_batchnorm(model)
    assert isinstance(synced[1], nn.SyncBatchNorm) and isinstance(synced[4], nn.SyncBatchNorm)
    torch.testing.assert_close(synced.eval()(x), expected, rtol=0, atol=0)


# -- detectron2 (reproduced: not installable from a package registry) ----------------------------
# detectron2/solver/build.py, get_default_optimizer_params: the types whose parameters get
# ``weight_decay_norm``.
_D2_NORM_MODULE_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)


def test_detectron2_weight_decay_norm_types_reproduced() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), *copy.deepcopy(_SAME_AS_TORCH))
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, _D2_NORM_MODULE_TYPES)
        for p in m.parameters(recurse=False)
    }
    assert norm_params == {id(p) for layer in model[1:] for p in layer.parameters()}


def test_detectron2_convert_frozen_batchnorm_check_reproduced() -> None:
    # detectron2/layers/batch_norm.py, FrozenBatchNorm2d.convert_frozen_batchnorm: converts
    # what is an instance of (BatchNorm2d, SyncBatchNorm), copying weight, bias, running
    # statistics and eps into a layer computing F.batch_norm(training=False).
    model = _trained(_net()).eval()
    converted = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))]
    assert converted == [model[1], model[4]]
    x = torch.randn(2, 3, 8, 8)
    bn = model[1]
    frozen = nn.functional.batch_norm(
        model[0](x), bn.running_mean.clone(), bn.running_var.clone(), bn.weight.detach(),
        bn.bias.detach(), False, 0.0, bn.eps,
    )
    torch.testing.assert_close(frozen, bn(model[0](x)))


# -- timm ----------------------------------------------------------------------------------------
def test_timm_freeze_converts_normlab_batch_norm() -> None:
    pytest.importorskip("torchvision")
    timm_model = pytest.importorskip("timm.utils.model")
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = _trained(_net()).eval()
    x = torch.randn(2, 3, 8, 8)
    expected = model(x)

    timm_model.freeze(model)

    assert isinstance(model[1], FrozenBatchNorm2d) and isinstance(model[4], FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()  # frozen: training batches no longer move the statistics
    torch.testing.assert_close(model(x), expected)
    timm_model.unfreeze(model)
    assert isinstance(model[1], nn.BatchNorm2d)


def test_timm_param_groups_weight_decay_exempts_normlab_norms() -> None:
    param_groups = pytest.importorskip("timm.optim").param_groups_weight_decay
    model = nn.Sequential(nn.Conv2d(3, 4, 1), *copy.deepcopy(_SAME_AS_TORCH),
                          normlab.LayerNorm(4), normlab.SwitchableNorm(4))
    groups = param_groups(model, weight_decay=1e-4)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert id(model[0].weight) not in no_decay
    assert {id(p) for layer in model[1:] for p in layer.parameters()} <= no_decay
