"""recalibrate (precise BN, AdaBN): exact population moments of each norm's input, restored
modes, dropout kept off, batch forms, errors, and AdaBN on a shifted domain."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

import normlab
import timm_stand_ins
from catalogue import small_spec, statistics_kind
from normlab import errors, registry
from normlab.surgery import freeze, recalibrate
from normlab.surgery.layers import class_stats_kind, frozen_stats
from surgery_models import mobilenet_like, resnet_like, unet_decoder_like

KINDS: dict[str, Callable[[int], nn.Module]] = {
    "torch_bn2d": nn.BatchNorm2d,
    "torch_sync_bn": nn.SyncBatchNorm,
    "torch_in2d_tracked": lambda c: nn.InstanceNorm2d(c, affine=True, track_running_stats=True),
    "brn": registry.factory("brn", warmup_steps=0, rmax_ramp_end=1, dmax_ramp_end=1),
    "in_tracked": registry.factory("in", affine=True, track_running_stats=True),
    # every registered method that keeps running statistics (not fixed ones: FrozenBatchNorm)
    **{
        name: registry.factory(small_spec(name))
        for name in registry.available()
        if statistics_kind(name) is not None
        and not frozen_stats(registry.create(small_spec(name), 8))
    },
}


def _batches(dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Unequal batch sizes and spatial sizes: the merge must weigh by count."""
    shapes = [(6, 3, 16, 16), (3, 3, 12, 12), (5, 3, 16, 16)]
    return [torch.randn(s, dtype=dtype) * 1.5 + 0.5 for s in shapes]


def _stale(model: nn.Module) -> nn.Module:
    """Running statistics of another distribution (what training leaves behind)."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.randn(4, 3, 16, 16, dtype=dtype) * 3 - 2)
    return model


def _with_stats(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (p, m) for p, m in model.named_modules()
        if any(m._buffers.get(k) is not None for k in ("running_mean", "running_var"))
    ]


def _stores_biased_variance(layer: nn.Module, x: Tensor) -> bool:
    """The layer's own training law, observed: a copy trained one step at momentum 1 from reset
    statistics on a slice of its input (2 samples, at most 3 positions per spatial dim) stores
    that slice's biased variance (Batch Renorm's and EvoNorm-B0's convention) or its unbiased
    one (torch.nn BatchNorm's)."""
    x = x[(slice(0, 2), slice(None), *[slice(0, 3)] * (x.dim() - 2))]
    probe = copy.deepcopy(layer).train()
    probe.reset_running_stats()
    probe.momentum = 1.0
    with torch.no_grad():
        probe(x.to(probe.running_var.dtype))
    values = x.transpose(0, 1).reshape(x.shape[1], -1)
    stored = probe.running_var.double()
    biased = torch.allclose(stored, values.var(1, unbiased=False), rtol=1e-4, atol=0)
    assert biased or torch.allclose(stored, values.var(1, unbiased=True), rtol=1e-4, atol=0)
    return biased


def _reference(model: nn.Module, batches: list[Tensor]) -> dict[str, tuple[Tensor, Tensor, int]]:
    """Per layer: float64 (mean, variance in the layer's convention, values per channel) of its
    inputs in train-mode forwards (norm layers in train mode, the rest in eval, the state
    reloaded after every batch), computed from the collected inputs with plain torch."""
    ref = copy.deepcopy(model).eval()
    layers = _with_stats(ref)
    inputs: dict[str, list[Tensor]] = {p: [] for p, _ in layers}
    hooks = [
        layer.register_forward_pre_hook(
            lambda mod, args, path=path: inputs[path].append(args[0].detach().double())
        )
        for path, layer in layers
    ]
    for _, layer in layers:
        layer.training = True
    state = copy.deepcopy(ref.state_dict())
    with torch.no_grad():
        for x in batches:
            ref(x)
            ref.load_state_dict(state)
    for hook in hooks:
        hook.remove()
    result = {}
    for path, layer in layers:
        xs = inputs[path]
        c = xs[0].shape[1]
        if class_stats_kind(type(layer)) == "instance":  # torch.nn's instance rule
            per_sample = [x.reshape(x.shape[0], c, -1) for x in xs]
            means = torch.cat([s.mean(-1) for s in per_sample])
            variances = torch.cat([s.var(-1, unbiased=True) for s in per_sample])
            result[path] = (means.mean(0), variances.mean(0), means.shape[0])
            continue
        flat = torch.cat([x.transpose(0, 1).reshape(c, -1) for x in xs], dim=1)
        biased = _stores_biased_variance(layer, xs[0])
        result[path] = (flat.mean(1), flat.var(1, unbiased=not biased), flat.shape[1])
    return result


def _check(model: nn.Module, expected: dict, rtol: float, atol: float) -> None:
    for path, (mean, var, _) in expected.items():
        layer = model.get_submodule(path)
        if getattr(layer, "running_mean", None) is not None:
            torch.testing.assert_close(layer.running_mean.double(), mean, rtol=rtol, atol=atol)
        torch.testing.assert_close(layer.running_var.double(), var, rtol=rtol, atol=atol)


@pytest.mark.parametrize("build", [resnet_like, mobilenet_like, unet_decoder_like])
def test_recovers_population_moments_on_real_architectures(build: Callable) -> None:
    model = _stale(build())
    batches = _batches()
    expected = _reference(model, batches)
    counts = {p: m.num_batches_tracked.clone() for p, m in _with_stats(model)}
    report = recalibrate(model, batches)
    assert [r.path for r in report] == list(expected)
    assert [r.count for r in report] == [n for _, _, n in expected.values()]
    assert all(r.batches == 3 for r in report)
    _check(model, expected, rtol=1e-5, atol=1e-6)
    for path, count in counts.items():  # counts training steps: unchanged
        assert torch.equal(model.get_submodule(path).num_batches_tracked, count)


@pytest.mark.parametrize("kind", list(KINDS))
def test_recovers_population_moments_for_every_norm_with_running_stats(kind: str) -> None:
    model = _stale(resnet_like(KINDS[kind]))
    batches = _batches()
    expected = _reference(model, batches)
    report = recalibrate(model, batches)
    assert len(report) == len(expected) == 9
    _check(model, expected, rtol=1e-5, atol=1e-6)


def test_float64_order_does_not_matter_and_adabn_is_the_same_computation() -> None:
    model = _stale(resnet_like().double())
    batches = _batches(torch.float64)
    expected = _reference(model, batches)
    forward = copy.deepcopy(model)
    recalibrate(forward, batches)
    _check(forward, expected, rtol=1e-12, atol=1e-12)
    backward = copy.deepcopy(model)
    recalibrate(backward, batches[::-1], mode="adabn")
    _check(backward, expected, rtol=1e-12, atol=1e-12)


def _dropout_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 16), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)
    )


def test_dropout_stays_in_eval_and_recalibration_is_deterministic() -> None:
    model = _dropout_net().train()
    batches = [torch.randn(8, 6) for _ in range(4)]
    seen = []

    def check_dropout(module: nn.Module, args: tuple, out: Tensor) -> None:
        seen.append(module.training)
        assert torch.equal(out, args[0])

    handle = model[1].register_forward_hook(check_dropout)
    expected = _reference(model, batches)
    first = copy.deepcopy(model)
    recalibrate(first, batches)
    second = copy.deepcopy(model)
    recalibrate(second, batches)
    handle.remove()
    assert seen and not any(seen)
    assert torch.equal(first[2].running_var, second[2].running_var)
    _check(first, expected, rtol=1e-5, atol=1e-6)
    assert model[1].training and first[1].training  # its flag is restored

    mobile = mobilenet_like(dropout=0.5)
    flags = []
    mobile.classifier[3].register_forward_pre_hook(lambda m, a: flags.append(m.training))
    recalibrate(mobile, _batches())
    assert flags == [False, False, False]


def _mixed_modes(model: nn.Module) -> nn.Module:
    model.train()
    model.layer2.eval()
    model.fc.eval()
    model.bn1.momentum = None
    return model


def _snapshot(model: nn.Module) -> tuple:
    return (
        [(p, m.training, getattr(m, "momentum", None), len(m._forward_pre_hooks))
         for p, m in model.named_modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
    )


def _assert_same(model: nn.Module, snapshot: tuple) -> None:
    modes, state = _snapshot(model)
    assert modes == snapshot[0]
    for key, value in state.items():
        assert torch.equal(value, snapshot[1][key]), key


def test_modes_momenta_and_buffers_are_restored_when_a_forward_raises() -> None:
    model = _mixed_modes(_stale(resnet_like(KINDS["brn"])))
    before = _snapshot(model)

    def failing() -> Iterator[Tensor]:
        yield from _batches()[:2]
        yield torch.randn(2, 5, 16, 16)  # wrong channel count: the first conv raises

    with pytest.raises(RuntimeError):
        recalibrate(model, failing())
    _assert_same(model, before)

    def explode(module: nn.Module, args: tuple) -> None:
        if args[0].shape[0] == 3:  # the second batch, after the layers below updated buffers
            raise ZeroDivisionError("boom")

    handle = model.layer3.register_forward_pre_hook(explode)
    with pytest.raises(ZeroDivisionError):
        recalibrate(model, _batches())
    handle.remove()
    _assert_same(model, before)

    poisoned = _batches()
    poisoned[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(errors.InputError, match="NaN or Inf values in batch 1"):
        recalibrate(model, poisoned)
    _assert_same(model, before)

    recalibrate(model, _batches())
    modes, _ = _snapshot(model)
    assert modes == before[0]  # modes and momenta restored after success too


def test_num_batches_limits_what_is_pulled() -> None:
    model = _stale(resnet_like())
    batches = _batches() + _batches()
    pulled = []

    def stream() -> Iterator[Tensor]:
        for i, x in enumerate(batches):
            pulled.append(i)
            yield x

    limited = copy.deepcopy(model)
    report = recalibrate(limited, stream(), num_batches=2)
    assert pulled == [0, 1] and report[0].batches == 2
    assert recalibrate(copy.deepcopy(model), batches, num_batches=1)[0].batches == 1
    _check(limited, _reference(model, batches[:2]), rtol=1e-5, atol=1e-6)


def test_batch_forms_tuples_lists_dicts_and_a_custom_forward() -> None:
    model = _stale(resnet_like())
    batches = _batches()
    results = []
    for form in (
        batches,
        [(x, torch.zeros(len(x))) for x in batches],
        [[x, torch.zeros(len(x)), "meta"] for x in batches],
        [{"x": x, "y": torch.zeros(len(x))} for x in batches],
    ):
        net = copy.deepcopy(model)
        recalibrate(net, form)
        results.append(net.state_dict())
    net = copy.deepcopy(model)
    recalibrate(net, [{"image": x} for x in batches], forward=lambda m, b: m(b["image"]))
    results.append(net.state_dict())
    for other in results[1:]:
        for key, value in results[0].items():
            assert torch.equal(other[key], value), key


def test_frozen_and_unused_layers_keep_their_statistics() -> None:
    model = _stale(resnet_like())
    freeze(model, only="layer1")
    frozen_mean = model.layer1[0].bn1.running_mean.clone()
    report = recalibrate(model, _batches())
    assert not any(r.path.startswith("layer1") for r in report) and len(report) == 7
    assert torch.equal(model.layer1[0].bn1.running_mean, frozen_mean)

    net = nn.ModuleDict({"used": nn.BatchNorm1d(3), "unused": nn.BatchNorm1d(3)})
    net.forward = lambda x: net["used"](x)  # type: ignore[method-assign]
    report = recalibrate(net, [torch.randn(4, 3)])
    counts = {r.path: r.count for r in report}
    assert counts == {"used": 4, "unused": 0}
    assert torch.equal(net["unused"].running_mean, torch.zeros(3))
    assert "statistics unchanged" in str(report[1])


def test_errors() -> None:
    """Each error names the argument or batch, the value received and the fix."""
    model = resnet_like()
    with pytest.raises(errors.ConfigError, match=r"^recalibrate: batches yielded no batch "
                       r"\(num_batches=None\)\. Pass a non-empty iterable of input batches, e\.g\. "
                       r"a DataLoader over the training set \(precise BN\) or over unlabeled "
                       r"target-domain data \(AdaBN\)\.$"):
        recalibrate(model, [])
    with pytest.raises(errors.ConfigError, match=r"^recalibrate: batches yielded no batch "
                       r"\(num_batches=5\)\."):
        recalibrate(model, iter([]), num_batches=5)
    with pytest.raises(errors.ConfigError, match=r"^recalibrate: Sequential holds no layer with "
                       r"running statistics\. Recalibration \(precise BN / AdaBN\) re-estimates"):
        recalibrate(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), [torch.randn(2, 2)])
    with pytest.raises(errors.ConfigError) as info:
        recalibrate(nn.LayerNorm(2), [torch.randn(2, 2)])
    assert str(info.value) == (
        "recalibrate: LayerNorm holds no layer with running statistics. Recalibration (precise "
        "BN / AdaBN) re-estimates the running statistics of BatchNorm-like layers (torch.nn "
        "BatchNorm*d / SyncBatchNorm, normlab BatchNorm, GhostBatchNorm, BatchRenorm, "
        "SwitchableNorm, BatchInstanceNorm, EvoNormB0, InstanceNorm with "
        "track_running_stats=True); layers frozen by normlab.freeze or FrozenBatchNorm keep "
        "theirs. Unfreeze them first if you mean to."
    )
    frozen = resnet_like()
    freeze(frozen)
    with pytest.raises(errors.ConfigError, match=r"^recalibrate: ResNetLike holds 9 layer\(s\) "
                       r"with running statistics, all frozen\..*Unfreeze them first"):
        recalibrate(frozen, _batches())
    with pytest.raises(errors.UnknownNameError, match=r"^Unknown recalibration mode 'adabm'\. Did "
                       r"you mean 'adabn'\? Known: precise, adabn\.$"):
        recalibrate(model, _batches(), mode="adabm")
    for bad in (0, -1, True, 2.5):
        with pytest.raises(errors.ConfigError, match=r"^recalibrate: num_batches must be a "
                           rf"positive int or None \(all batches\); got {bad!r}\..*"
                           r"num_batches=200"):
            recalibrate(model, _batches(), num_batches=bad)  # type: ignore[arg-type]
    fix = (r"\. A batch is a tensor, an \(inputs, targets\) tuple.*; for anything else pass "
           r"forward=lambda model, batch: model\(\.\.\.\)\.$")
    with pytest.raises(errors.InputError, match=r"^recalibrate: batch 0: it is a str" + fix):
        recalibrate(model, ["not a tensor"])
    with pytest.raises(errors.InputError, match=r"^recalibrate: batch 1: it is an empty tuple"):
        recalibrate(model, [_batches()[0], ()])
    with pytest.raises(errors.InputError, match=r"batch 0: it is a dict without key 'x' "
                       r"\(keys: \['image'\]\)" + fix):
        recalibrate(model, [{"image": torch.randn(2, 3, 16, 16)}])
    with pytest.raises(errors.ConfigError, match=r"^recalibrate: model must be a torch\.nn\."
                       r"Module; got OrderedDict\."):
        recalibrate(model.state_dict(), _batches())  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match=r"^recalibrate: 1 \(LazyBatchNorm2d.*\) is a "
                       r"lazy layer that has not seen input yet, so it has no statistics to "
                       r"work on\. Run one forward pass first \(it materializes the layer\)\.$"):
        recalibrate(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LazyBatchNorm2d()), _batches())


def test_report_text() -> None:
    report = recalibrate(nn.BatchNorm1d(3), [torch.randn(4, 3), torch.randn(2, 3)])
    assert [str(r) for r in report] == [
        "<root> (BatchNorm1d): precise statistics of 6 values per channel"
    ]
    net = nn.ModuleDict({"used": nn.BatchNorm1d(3), "unused": nn.BatchNorm1d(3)})
    net.forward = lambda x: net["used"](x)  # type: ignore[method-assign]
    report = recalibrate(net, [torch.randn(4, 3)], mode="adabn")
    assert [str(r) for r in report] == [
        "used (BatchNorm1d): adabn statistics of 4 values per channel",
        "unused (BatchNorm1d): no input in 1 batches, statistics unchanged",
    ]


def test_adabn_recovers_accuracy_on_a_shifted_domain() -> None:
    """Source: two Gaussian classes in 4-D. Target: the same data under a per-feature scale and
    offset x' = a·x + b. The network starts with a BatchNorm over the input features, so
    AdaBN's target statistics undo the shift; with the source statistics it misclassifies."""
    gen = torch.Generator().manual_seed(0)

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, 2, (n,), generator=gen)
        centers = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, -0.5, 0.5]])
        return centers[y] + 0.6 * torch.randn(n, 4, generator=gen), y

    model = nn.Sequential(
        nn.BatchNorm1d(4), nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(150):
        x, y = sample(64)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    scale, offset = torch.tensor([2.0, 0.5, 3.0, 1.5]), torch.tensor([3.0, -2.0, 4.0, 1.0])
    x_test, y_test = sample(2000)
    target = x_test * scale + offset

    def error(net: nn.Module, x: Tensor) -> float:
        with torch.no_grad():
            return (net.eval()(x).argmax(1) != y_test).float().mean().item()

    source_error, before = error(model, x_test), error(model, target)
    unlabeled = [sample(64)[0] * scale + offset for _ in range(30)]
    report = recalibrate(model, unlabeled, mode="adabn")
    after = error(model, target)
    assert report[0].mode == "adabn" and "adabn statistics" in str(report[0])
    # chosen before running: AdaBN removes at least 75% of the error the shift adds
    assert after - source_error <= 0.25 * (before - source_error), (source_error, before, after)
    assert before > source_error + 0.1


def test_torchvision_resnet() -> None:
    models = pytest.importorskip("torchvision.models")
    net = _stale(models.resnet18(num_classes=5))
    batches = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    expected = _reference(net, batches)
    recalibrate(net, batches)
    _check(net, expected, rtol=1e-5, atol=1e-6)


def test_timm_resnet() -> None:
    timm = pytest.importorskip("timm")
    net = _stale(timm.create_model("resnet18", pretrained=False, num_classes=5))
    batches = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    expected = _reference(net, batches)
    recalibrate(net, batches)
    _check(net, expected, rtol=1e-5, atol=1e-6)



def test_timm_bn_act_is_recalibrated_like_its_bn_and_frozen_bn_act_is_kept() -> None:
    """timm's BatchNormAct2d (stand-ins with timm's structure): precise statistics of its
    input; FrozenBatchNormAct2d keeps its statistics (it is frozen on purpose)."""
    act = timm_stand_ins.BatchNormAct2d(4, act=nn.SiLU)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 5, 1),
                        timm_stand_ins.BatchNormAct2d(5), timm_stand_ins.FrozenBatchNormAct2d(5))
    batch = torch.randn(6, 3, 7, 7)
    report = recalibrate(net.eval(), [batch])
    assert [r.path for r in report] == ["1", "3"]
    with torch.no_grad():
        z1 = net[0](batch)
        z2 = net[2](nn.functional.silu(nn.functional.batch_norm(
            z1, None, None, act.weight, act.bias, training=True, eps=act.eps)))
    for layer, z in ((net[1], z1), (net[3], z2)):
        torch.testing.assert_close(layer.running_mean, z.mean((0, 2, 3)))
        torch.testing.assert_close(layer.running_var, z.var((0, 2, 3)))
    assert torch.equal(net[4].running_mean, torch.zeros(5))


@pytest.fixture
def one_replica_group() -> Iterator[object]:
    """A real gloo process group of one process (tests/test_distributed_recalibrate.py runs
    several): recalibrate's cross-replica path, run in this process."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialized")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def _every_kind(dtype: torch.dtype = torch.float64) -> nn.Module:
    """One layer of each kind of running statistics, and one that never sees input."""
    net = nn.ModuleDict({
        "bn": nn.BatchNorm2d(3),  # "batch", unbiased variance
        "brn": registry.create("brn", 3, warmup_steps=0),  # "batch_biased"
        "inorm": nn.InstanceNorm2d(3, track_running_stats=True),  # "instance"
        "evo": registry.create("evo_norm_b0", 3),  # running_var only
        "nbn": registry.create("bn", 3),  # normlab's (normlab.sync gives it a reducer)
        "unused": nn.BatchNorm2d(3),
        "unused_in": nn.InstanceNorm2d(3, track_running_stats=True),
    }).to(dtype)

    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = net

        def forward(self, x: Tensor) -> Tensor:
            for name in ("bn", "brn", "inorm", "evo", "nbn"):
                x = self.layers[name](x)
            return x

    return _stale(Chain())


def test_a_one_replica_group_gives_the_single_process_statistics(one_replica_group: object) -> None:
    batches = _batches(torch.float64)
    alone = _every_kind()
    merged, wrapped, synced = (copy.deepcopy(alone) for _ in range(3))
    expected = recalibrate(alone, batches)
    report = recalibrate(merged, batches, process_group=one_replica_group)
    assert [(r.path, r.count, r.batches) for r in report] == [
        (r.path, r.count, r.batches) for r in expected
    ]
    values = 6 * 256 + 3 * 144 + 5 * 256  # per channel over (N, H, W) of the three batches
    assert [r.count for r in report] == [values, values, 6 + 3 + 5, values, values, 0, 0]
    for key, value in alone.state_dict().items():
        torch.testing.assert_close(merged.state_dict()[key], value, rtol=1e-12, atol=1e-12,
                                   msg=key)
    wrapped = nn.parallel.DistributedDataParallel(wrapped)
    report = recalibrate(wrapped, batches, process_group=one_replica_group)
    assert [r.path for r in report] == [r.path for r in expected]  # the wrapper looked through
    synced = normlab.sync(synced, one_replica_group, only="layers.nbn")
    reducer = synced.layers.nbn.moments_reducer
    assert reducer is not None
    recalibrate(synced, batches, process_group=one_replica_group)
    assert synced.layers.nbn.moments_reducer is reducer  # given back after the passes
    for key, value in alone.state_dict().items():
        torch.testing.assert_close(synced.state_dict()[key], value, rtol=1e-12, atol=1e-12,
                                   msg=key)


def test_a_failing_batch_in_a_group_raises_its_own_error_and_keeps_the_statistics(
    one_replica_group: object,
) -> None:
    net = _every_kind()
    before = copy.deepcopy(net.state_dict())
    bad = _batches(torch.float64)
    bad[1][0, 0, 0, 0] = float("nan")
    with pytest.raises(errors.InputError, match=r"layers\.bn .*NaN or Inf values in batch 1"):
        recalibrate(net, bad, process_group=one_replica_group)
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value), key
    with pytest.raises(errors.ConfigError, match="yielded no batch"):
        recalibrate(net, [], process_group=one_replica_group)


def test_process_group_without_torch_distributed_says_how_to_fix() -> None:
    net = _every_kind()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(errors.ConfigError, match=r"process_group=<object object at .*> asks to "
                       r"merge statistics across replicas, but torch.distributed is not "
                       r"initialized\. Call torch\.distributed\.init_process_group\(\.\.\.\) "
                       r"first .*or pass process_group=None"):
        recalibrate(net, _batches(torch.float64), process_group=object())
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value), key


@pytest.mark.parametrize("poison", ["nan", "overflow"])
@pytest.mark.parametrize("layer", ["bn", "inorm"])
def test_a_batch_whose_statistics_are_not_finite_is_refused(layer: str, poison: str) -> None:
    """NaN in the input, or finite values whose variance overflows float64 (±1e200), make the
    population statistics meaningless: refused, nothing written."""
    net = _every_kind()
    before = copy.deepcopy(net.state_dict())
    bad = _batches(torch.float64)
    if poison == "nan":
        bad[2][1, 0, 0, 0] = float("nan")
    else:
        bad[2][:, 0] = torch.tensor([1e200, -1e200]).repeat(bad[2][:, 0].numel() // 2).view_as(
            bad[2][:, 0])
    if layer == "inorm":  # reaches the instance norm only: the layers before it see a clean batch
        net.layers["bn"] = nn.Identity()
        net.layers["brn"] = nn.Identity()
    else:
        net.forward = lambda x: net.layers["bn"](x)  # type: ignore[method-assign]
    with pytest.raises(errors.InputError, match=rf"the input of layers\.{layer} \(.*\) holds NaN "
                       r"or Inf values in batch 2 \(or values so large that their variance "
                       r"overflows float64\); the population statistics would be NaN\. "
                       r"Check the data and the layers before it; every running statistic was "
                       r"left as it was\.$"):
        recalibrate(net, bad)
    for key, value in net.state_dict().items():
        if key in before:
            assert torch.equal(value, before[key]), key


def test_channels_last_layers_are_recalibrated_over_their_channel_dim() -> None:
    """A normlab BN with channel_dim=-1 on (N, L, C): one statistic per C over (N, L)."""
    layer = registry.create("bn", 5, channel_dim=-1).double()
    batches = [torch.randn(4, 7, 5, dtype=torch.float64) * 2 + 1 for _ in range(2)]
    report = recalibrate(layer, batches)
    values = torch.cat(batches).reshape(-1, 5)
    assert report[0].count == 56
    torch.testing.assert_close(layer.running_mean, values.mean(0))
    torch.testing.assert_close(layer.running_var, values.var(0))


def test_float32_statistics_are_the_population_statistics_rounded_once() -> None:
    """Merged in float64 (precise BN's exactness), then rounded to the buffers' float32 once:
    bitwise the float64 statistics of all values (a float32 accumulation is ~1e-7 off)."""
    batches = [1000 + torch.randn(64, 3, 8, 8) for _ in range(3)]
    layer = nn.BatchNorm2d(3)
    recalibrate(layer, batches)
    values = torch.cat(batches).double()
    assert torch.equal(layer.running_mean, values.mean((0, 2, 3)).float())
    assert torch.equal(layer.running_var, values.var((0, 2, 3)).float())


def test_a_layer_given_its_input_by_keyword_is_reported_unchanged() -> None:
    """recalibrate reads a layer's input from its positional arguments: a layer called as
    ``bn(input=x)`` is reported with no input and keeps its statistics (no crash)."""
    net = nn.ModuleDict({"bn": nn.BatchNorm1d(3)})
    net.forward = lambda x: net["bn"](input=x)  # type: ignore[method-assign]
    report = recalibrate(net, [torch.randn(4, 3) + 5])
    assert [(r.path, r.count) for r in report] == [("bn", 0)]
    assert torch.equal(net["bn"].running_mean, torch.zeros(3))


def test_a_synced_model_recalibrates_without_torch_distributed() -> None:
    """normlab.sync's reducers are set aside during the passes (no collective per batch, so no
    process group is needed) and given back afterwards."""
    net = normlab.sync(nn.Sequential(nn.Linear(3, 4), normlab.BatchNorm(4)))
    reducer = net[1].moments_reducer
    batches = [torch.randn(5, 3) for _ in range(2)]
    report = recalibrate(net, batches)
    assert [(r.path, r.count, r.batches) for r in report] == [("1", 2 * 5, 2)]
    assert net[1].moments_reducer is reducer


def test_instance_statistics_with_finite_means_but_overflowing_variances_are_refused() -> None:
    """Inputs of ±1e200 have finite means but variances that overflow float64: refused, and
    the running statistics stay as they were."""
    net = nn.Sequential(nn.InstanceNorm2d(2, track_running_stats=True)).double()
    before = copy.deepcopy(net.state_dict())
    x = torch.full((2, 2, 3, 3), 1e200, dtype=torch.float64)
    x[..., 0, :] = -1e200
    with pytest.raises(errors.InputError) as info:
        recalibrate(net, [x])
    assert str(info.value) == (
        "recalibrate: the input of 0 (InstanceNorm2d with 2 channels) holds NaN or Inf values "
        "in batch 0 (or values so large that their variance overflows float64); the "
        "population statistics would be NaN. Check the data and the layers before it; every "
        "running statistic was left as it was."
    ), info.value
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
