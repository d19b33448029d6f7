"""fold: BN-family layers folded into the conv / linear layer before them (issue 5).

The oracle is always the *original* model's eval forward run in float64 (a deep copy cast with
``.double()``), never normlab's fold arithmetic: a folded model must compute what the model it
came from computes. Running statistics and affine parameters are random (far from the identity,
checked), so a wrong axis, a forgotten bias or a skipped layer shows up.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import normlab
import timm_stand_ins
from normlab import errors
from normlab.surgery.fold import find_fold_pairs, fold, fold_pair, fold_with_report

BN_FAMILY = (
    nn.modules.batchnorm._BatchNorm, normlab.BatchNorm, normlab.GhostBatchNorm,
    normlab.BatchRenorm, normlab.FrozenBatchNorm,
)
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
BN_KINDS = ("torch", "normlab", "ghost", "renorm", "frozen")
TORCH_BN = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SPATIAL = {0: (), 1: (9,), 2: (7, 6), 3: (5, 4, 6)}
LAYOUT = {2: torch.channels_last, 3: torch.channels_last_3d}


@torch.no_grad()
def randomize(model: nn.Module) -> nn.Module:
    """Random running statistics and affine parameters for every BN-family layer."""
    for m in model.modules():
        if isinstance(m, BN_FAMILY):
            m.running_mean.normal_(0.0, 2.0)
            m.running_var.uniform_(0.2, 3.0)
            if m.weight is not None:
                m.weight.normal_(0.0, 1.5)
            if m.bias is not None:
                m.bias.normal_()
    return model


def make_bn(kind: str, channels: int, dims: int, **kw: object) -> nn.Module:
    """A BN-family layer of ``kind`` with random state, in eval mode; ``dims`` spatial dims."""
    kw = {"eps": 1e-3, **kw}
    if kind == "torch":
        kw.pop("channel_dim", None)
        bn = TORCH_BN[dims](channels, **kw)
    else:
        cls = {"normlab": normlab.BatchNorm, "ghost": normlab.GhostBatchNorm,
               "renorm": normlab.BatchRenorm, "frozen": normlab.FrozenBatchNorm}[kind]
        extra = {"ghost_batch_size": 2} if kind == "ghost" else {}
        bn = cls(channels, **extra, **kw)
    return randomize(bn).eval()


def bn_paths(model: nn.Module) -> list[str]:
    return [p for p, m in model.named_modules() if isinstance(m, BN_FAMILY)]


def oracle(model: nn.Module, x: Tensor) -> Tensor:
    """The original model's eval forward in float64."""
    with torch.no_grad():
        return copy.deepcopy(model).double().eval()(x.double())


def assert_folds(model: nn.Module, x: Tensor, *, pairs: list[tuple[str, str]] | None = None
                 ) -> nn.Module:
    """fold(model) matches the original in eval (fp32 1e-5, fp64 1e-10) and has no BN left."""
    state = copy.deepcopy(model.state_dict())
    folded = fold(model, pairs=pairs)
    with torch.no_grad():
        y = folded.eval()(x)
    tol = TOL[x.dtype]
    torch.testing.assert_close(y.double(), oracle(model, x), rtol=tol, atol=tol)
    assert bn_paths(folded) == []
    assert bn_paths(model), "the original keeps its BN layers (inplace=False)"
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    return folded


# -- the matrix: layer type x groups x bias x weight layout x BN kind (x dtype) -----------------

LAYERS: dict[str, tuple[type[nn.Module], int]] = {
    "Conv1d": (nn.Conv1d, 1), "Conv2d": (nn.Conv2d, 2), "Conv3d": (nn.Conv3d, 3),
    "ConvTranspose1d": (nn.ConvTranspose1d, 1), "ConvTranspose2d": (nn.ConvTranspose2d, 2),
    "ConvTranspose3d": (nn.ConvTranspose3d, 3),
}
GROUPS = {"groups1": (4, 6, 1), "groups2": (4, 6, 2), "depthwise": (4, 8, 4)}  # in, out, groups


def _matrix() -> list[object]:
    cases = []
    for layer, (_, dims) in LAYERS.items():
        layouts = ("contiguous", "channels_last") if dims >= 2 else ("contiguous",)
        for groups in GROUPS:
            for bias in (True, False):
                for layout in layouts:
                    for kind in BN_KINDS:
                        case = (layer, groups, bias, layout, kind)
                        cases.append(pytest.param(*case, id="-".join(map(str, case))))
    return cases


@pytest.mark.parametrize(("layer", "groups", "bias", "layout", "kind"), _matrix())
def test_fold_matrix(layer: str, groups: str, bias: bool, layout: str, kind: str) -> None:
    cls, dims = LAYERS[layer]
    cin, cout, g = GROUPS[groups]
    for dtype in (torch.float32, torch.float64):
        conv = cls(cin, cout, 3, groups=g, bias=bias, padding=1)
        model = nn.Sequential(conv, make_bn(kind, cout, dims)).to(dtype)
        if layout == "channels_last":
            model = model.to(memory_format=LAYOUT[dims])
            assert conv.weight.is_contiguous(memory_format=LAYOUT[dims])
            assert not conv.weight.is_contiguous() or 1 in conv.weight.shape[1:]
        x = torch.randn(3, cin, *SPATIAL[dims], dtype=dtype)
        ref = oracle(model, x)
        with torch.no_grad():  # the BN is far from the identity: skipping it would fail
            assert (conv(x).double() - ref).abs().max() > 0.1
        folded = assert_folds(model, x)
        weight = folded[0].weight
        assert isinstance(folded[1], nn.Identity)
        assert weight.dtype == dtype and folded[0].bias.dtype == dtype
        if layout == "channels_last":
            assert weight.is_contiguous(memory_format=LAYOUT[dims])
        else:
            assert weight.is_contiguous()


@pytest.mark.parametrize("kind", BN_KINDS)
@pytest.mark.parametrize("bias", [True, False])
def test_fold_linear(kind: str, bias: bool) -> None:
    for dtype in (torch.float32, torch.float64):
        model = nn.Sequential(nn.Linear(5, 7, bias=bias), make_bn(kind, 7, 0)).to(dtype)
        folded = assert_folds(model, torch.randn(6, 5, dtype=dtype))
        assert isinstance(folded[0], nn.Linear) and folded[0].bias is not None


@pytest.mark.parametrize("kind", ["normlab", "ghost", "renorm", "frozen"])
def test_fold_linear_into_channel_last_bn(kind: str) -> None:
    """(N, L, F) tokens: Linear, then a BN over the last dim (channel_dim=-1)."""
    model = nn.Sequential(nn.Linear(5, 7), make_bn(kind, 7, 1, channel_dim=-1)).double()
    assert_folds(model, torch.randn(4, 3, 5, dtype=torch.float64))


@pytest.mark.parametrize("kind", BN_KINDS)
@pytest.mark.parametrize("layer", [*LAYERS, "Linear"])
def test_fold_bn_without_affine(layer: str, kind: str) -> None:
    if layer == "Linear":
        conv, dims = nn.Linear(4, 6), 0
    else:
        cls, dims = LAYERS[layer]
        conv = cls(4, 6, 3, groups=2)
    model = nn.Sequential(conv, make_bn(kind, 6, dims, affine=False)).double()
    assert model[1].weight is None and model[1].bias is None
    assert_folds(model, torch.randn(3, 4, *SPATIAL[dims], dtype=torch.float64))


GEOMETRIES: dict[str, Callable[[], nn.Module]] = {
    "conv1d-k1": lambda: nn.Conv1d(4, 6, 1),
    "conv2d-k1-depthwise": lambda: nn.Conv2d(4, 4, 1, groups=4, bias=False),
    "conv3d-k1-stride2": lambda: nn.Conv3d(4, 6, 1, stride=2),
    "convT2d-k1": lambda: nn.ConvTranspose2d(4, 6, 1, bias=False),
    "conv2d-stride-pad-dilation": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2),
    "conv2d-reflect-padding": lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
    "conv1d-asymmetric": lambda: nn.Conv1d(4, 6, 4, stride=3, padding=3, groups=2),
    "convT1d-output-padding": lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1,
                                                         output_padding=1, groups=2),
    "convT2d-stride-dilation": lambda: nn.ConvTranspose2d(4, 8, (3, 2), stride=(2, 3),
                                                          padding=1, dilation=2, groups=4),
    "convT3d-k1-stride2": lambda: nn.ConvTranspose3d(4, 6, 1, stride=2, groups=2),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_fold_kernel_size_stride_padding_dilation(name: str) -> None:
    conv = GEOMETRIES[name]()
    dims = conv.weight.dim() - 2
    for dtype in (torch.float32, torch.float64):
        model = nn.Sequential(copy.deepcopy(conv), make_bn("torch", _out(conv), dims)).to(dtype)
        assert_folds(model, torch.randn(2, 4, *SPATIAL[dims], dtype=dtype))


def _out(conv: nn.Module) -> int:
    return conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels


def test_sync_batch_norm_folds_in_eval() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4, eps=1e-3))
    model = randomize(model).eval().double()
    assert_folds(model, torch.randn(2, 3, 6, 6, dtype=torch.float64))


def test_frozen_batch_norm_folds_in_training_mode() -> None:
    """FrozenBatchNorm's forward is BN eval in any mode, so a model in .train() folds."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), make_bn("frozen", 4, 2)).double().train()
    folded = fold(model)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(folded(x), oracle(model, x), rtol=1e-10, atol=1e-10)


def test_fold_pair_leaves_its_arguments_alone() -> None:
    conv = nn.ConvTranspose2d(4, 6, 3, groups=2, bias=False)
    bn = make_bn("renorm", 6, 2)
    before = conv.weight.detach().clone()
    new = fold_pair(conv, bn)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(new(x), bn(conv(x)), rtol=1e-5, atol=1e-5)
    assert torch.equal(conv.weight, before) and conv.bias is None and new is not conv


# -- whole models ----------------------------------------------------------------------------------


class Tiny(nn.Module):
    """Residual block, depthwise conv, ConvTranspose and a Linear + BatchNorm1d head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.dw_bn = normlab.BatchNorm(8)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2, groups=2)
        self.up_bn = normlab.GhostBatchNorm(6, ghost_batch_size=2)
        self.fc = nn.Linear(6, 5)
        self.fc_bn = nn.BatchNorm1d(5)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.stem(x))
        x = x + torch.relu(self.dw_bn(self.dw(x)))
        x = self.up_bn(self.up(x))
        return self.fc_bn(self.fc(x.mean((2, 3))))


def test_fold_small_model_with_report() -> None:
    model = randomize(Tiny()).eval()
    x = torch.randn(4, 3, 6, 6)
    result = fold_with_report(model)
    assert [(p.conv, p.bn) for p in result.folded] == [
        ("stem.0", "stem.1"), ("dw", "dw_bn"), ("up", "up_bn"), ("fc", "fc_bn"),
    ]
    assert [(r.path, r.old_type, r.new_type) for r in result.replacements] == [
        ("stem.1", nn.BatchNorm2d, nn.Identity), ("dw_bn", normlab.BatchNorm, nn.Identity),
        ("up_bn", normlab.GhostBatchNorm, nn.Identity), ("fc_bn", nn.BatchNorm1d, nn.Identity),
    ]
    assert result.unfolded == ()
    assert str(result.folded[0]) == "stem.1: BatchNorm2d -> Identity (folded into stem.0, Conv2d)"
    with torch.no_grad():
        torch.testing.assert_close(result.model(x).double(), oracle(model, x), rtol=1e-5,
                                   atol=1e-5)
    assert find_fold_pairs(model) == [(p.conv, p.bn) for p in result.folded]


def test_bn_not_after_a_conv_is_reported_and_kept() -> None:
    model = randomize(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4),
                                    nn.ReLU(), nn.BatchNorm2d(4))).eval()
    result = fold_with_report(model)
    assert [(p.conv, p.bn) for p in result.folded] == [("1", "2")]
    assert result.unfolded == ("0", "4")
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x).double(), oracle(model, x), rtol=1e-5,
                                   atol=1e-5)


def test_fold_logs_every_pair(caplog: pytest.LogCaptureFixture) -> None:
    model = randomize(Tiny()).eval()
    with caplog.at_level(logging.INFO, logger="normlab.surgery"):
        result = fold_with_report(model)
    messages = [r.getMessage() for r in caplog.records if r.name == "normlab.surgery"]
    assert messages == [f"fold: {pair}" for pair in result.folded]
    assert len(messages) == 4 and all("(folded into " in m for m in messages)


def test_inplace() -> None:
    model = randomize(Tiny()).eval()
    x = torch.randn(2, 3, 4, 4)
    ref = oracle(model, x)
    weight = model.dw.weight
    assert fold(model, inplace=True) is model
    assert model.dw.weight is weight and isinstance(model.dw_bn, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x).double(), ref, rtol=1e-5, atol=1e-5)


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = normlab.BatchRenorm(4)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        if y.mean() > 0:
            y = -y
        return self.bn2(self.conv2(y))


def test_explicit_pairs_on_an_untraceable_model() -> None:
    model = randomize(Untraceable()).eval()
    x = torch.randn(2, 3, 6, 6)
    folded = assert_folds(model, x, pairs=[("conv", "bn"), ("conv2", "bn2")])
    assert isinstance(folded.bn, nn.Identity) and isinstance(folded.bn2, nn.Identity)
    partial = fold_with_report(model, pairs=[("conv2", "bn2")])
    assert partial.unfolded == ("bn",)


@pytest.mark.parametrize("build", ["resnet_like", "mobilenet_like", "unet_decoder_like"])
@pytest.mark.parametrize("norm", ["torch", "normlab"])
def test_architectures(build: str, norm: str) -> None:
    surgery_models = pytest.importorskip("surgery_models")
    kw: dict[str, object] = {}
    if norm == "normlab":
        kw["norm_layer"] = normlab.BatchNorm
        if build == "mobilenet_like":
            kw["head_norm_layer"] = normlab.BatchNorm
    model = randomize(getattr(surgery_models, build)(**kw)).eval()
    n_bn = len(bn_paths(model))
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        x = torch.randn(surgery_models.IMAGE_SHAPE, dtype=dtype)
        result = fold_with_report(model)
        assert len(result.folded) == n_bn and result.unfolded == ()
        assert_folds(model, x)
    channels_last = model.float().to(memory_format=torch.channels_last)
    assert_folds(channels_last, torch.randn(surgery_models.IMAGE_SHAPE))


def test_torchvision_models() -> None:
    models = pytest.importorskip("torchvision.models")
    for build in (models.resnet18, models.mobilenet_v2):
        model = randomize(build(num_classes=5)).eval().double()
        assert_folds(model, torch.randn(2, 3, 32, 32, dtype=torch.float64))


def test_timm_models() -> None:
    timm = pytest.importorskip("timm")
    model = randomize(timm.create_model("resnet18", pretrained=False, num_classes=5))
    assert_folds(model.eval().double(), torch.randn(2, 3, 32, 32, dtype=torch.float64))


# -- refusals -------------------------------------------------------------------------------------


class SharedOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return self.bn2(self.conv2(self.bn(y) + y))


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(self.conv(x)))


class Inner(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x if x.sum() > 0 else -x


class UntraceableChild(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.block = Inner()

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.bn(self.conv(x)))


class StandardizedConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def _seq(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(*layers).eval()


def _shared_conv() -> nn.Module:
    conv = nn.Conv2d(3, 4, 1)
    model = _seq(conv, nn.BatchNorm2d(4), nn.ReLU())
    model.alias = conv
    return model


REFUSALS: dict[str, tuple[Callable[[], object], dict[str, object], str]] = {
    "bn-in-training": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), {},
                       r"fold requires eval mode: call model.eval\(\) first \(bn '1' "),
    "bn-in-training-pairs": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)),
                             {"pairs": [("0", "1")]}, r"call model.eval\(\) first \(bn '1'"),
    "other-consumer": (lambda: SharedOutput().eval(), {},
                       r"output of conv 'conv' \(Conv2d\) is also used by add\(\), not only by "
                       r"bn 'bn'.*fold\(model, pairs=\[\('conv2', 'bn2'\)\]\)"),
    "channel-mismatch": (lambda: _seq(nn.Conv2d(3, 6, 1), nn.Identity(), nn.BatchNorm2d(4)),
                         {"pairs": [("0", "2")]},
                         r"bn '2' \(BatchNorm2d\) has 4 channels but conv '0' \(Conv2d\) "
                         r"produces 6"),
    "untraceable": (lambda: Untraceable().eval(), {},
                    r"could not trace the forward of Untraceable \(TraceError: .*control flow"
                    r"\).*pairs=.*Candidates .*\[\('conv', 'bn'\), \('conv2', 'bn2'\)\]"),
    "untraceable-child": (lambda: UntraceableChild().eval(), {},
                          r"could not trace module 'block' \(Inner\)"),
    "bad-path": (lambda: Untraceable().eval(), {"pairs": [("conv", "bnn")]},
                 r"pairs= names the bn 'bnn', which is not a module path.*"
                 r"Did you mean 'bn', 'bn2'\?"
                 r" Paths of that kind: 'bn', 'bn2' \(see model.named_modules\(\)\)"),
    "bad-conv-path-many": (lambda: _seq(*[nn.Linear(4, 4) for _ in range(21)], nn.BatchNorm1d(4)),
                           {"pairs": [("fc", "21")]},
                           r"names the conv 'fc', which is not a module path of the model\. "
                           r"Paths of that kind: '0', '1', .*'19', \.\.\. \(see"),
    "bad-conv-path-none": (lambda: _seq(nn.BatchNorm1d(4)), {"pairs": [("fc", "0")]},
                           r"names the conv 'fc'.* Paths of that kind: none \(see"),
    "bad-pairs-type": (lambda: Untraceable().eval(), {"pairs": ("conv", "bn")},
                       r"pairs must be a list of \(conv path, bn path\) tuples of str; got "
                       r"\('conv', 'bn'\)"),
    "wrong-kind": (lambda: Untraceable().eval(), {"pairs": [("bn", "conv")]},
                   r"conv 'bn' \(BatchRenorm\) is not a Conv1d/2d/3d, ConvTranspose1d/2d/3d "
                   r"or Linear layer"),
    "not-a-bn": (lambda: _seq(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4)), {"pairs": [("0", "1")]},
                 r"bn '1' \(GroupNorm\) is not a BN-family layer"),
    "no-running-stats": (lambda: _seq(nn.Conv2d(3, 4, 1),
                                      nn.BatchNorm2d(4, track_running_stats=False)), {},
                         r"bn '1' \(BatchNorm2d\) keeps no running statistics"),
    "called-twice": (lambda: CalledTwice().eval(), {},
                     r"conv 'conv' \(Conv2d\) is called more than once"),
    "registered-twice": (_shared_conv, {"pairs": [("0", "1")]},
                         r"module '0' \(Conv2d\) is registered at several paths \(0, alias\)"),
    "same-bn-twice": (lambda: _seq(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)),
                      {"pairs": [("0", "1"), ("2", "1")]},
                      r"module '1' \(BatchNorm2d\) appears in two pairs"),
    "custom-conv-forward": (lambda: _seq(StandardizedConv(3, 4, 1), nn.BatchNorm2d(4)), {},
                            r"conv '0' \(StandardizedConv\) is a subclass that overrides forward"),
    "channel-dim-last": (lambda: _seq(nn.Conv2d(3, 4, 1), normlab.BatchNorm(4, channel_dim=-1)),
                         {"pairs": [("0", "1")]}, r"normalizes the last dim \(channel_dim=-1\)"),
    "weight-norm": (lambda: _seq(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 1)),
                                 nn.BatchNorm2d(4)), {"pairs": [("0", "1")]},
                    r"conv '0' \(ParametrizedConv2d\) has a parametrized weight"),
    "not-a-model": (lambda: {"conv": nn.Conv2d(3, 4, 1)}, {},
                    r"fold: model must be a torch.nn.Module; got dict"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(case: str) -> None:
    build, kw, message = REFUSALS[case]
    model = build()
    state = copy.deepcopy(model.state_dict()) if isinstance(model, nn.Module) else {}
    norms = bn_paths(model) if isinstance(model, nn.Module) else []
    with pytest.raises(errors.ConfigError, match=message):
        fold(model, inplace=True, **kw)  # type: ignore[arg-type]  # not-a-model passes a dict
    if isinstance(model, nn.Module):  # refused before anything was changed, even in place
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert bn_paths(model) == norms


LAZY_REFUSALS = {
    "lazy-bn": (lambda: _seq(nn.Conv2d(3, 4, 1), nn.LazyBatchNorm2d()), {"pairs": [("0", "1")]},
                r"bn '1' \(LazyBatchNorm2d\) is a lazy layer that has not seen input yet"),
    "lazy-conv": (lambda: _seq(nn.LazyConv2d(4, 1), nn.BatchNorm2d(4)), {"pairs": [("0", "1")]},
                  r"conv '0' \(LazyConv2d\) is a lazy layer that has not seen input yet"),
}


@pytest.mark.parametrize("case", list(LAZY_REFUSALS))
def test_lazy_layers_are_refused(case: str) -> None:
    build, kw, message = LAZY_REFUSALS[case]
    with pytest.raises(errors.ConfigError, match=message):
        fold(build(), **kw)  # type: ignore[arg-type]  # pairs= is a list of str pairs


def test_refusal_changes_nothing_in_place() -> None:
    """A bad second pair is found before the first is folded."""
    model = _seq(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 6, 1), nn.BatchNorm2d(4))
    before = model[0].weight.detach().clone()
    with pytest.raises(errors.ConfigError, match="has 4 channels but conv '2'"):
        fold(model, pairs=[("0", "1"), ("2", "3")], inplace=True)
    assert torch.equal(model[0].weight, before) and isinstance(model[1], nn.BatchNorm2d)


def test_fold_pair_refuses_training_bn() -> None:
    with pytest.raises(errors.ConfigError, match=r"\(bn \(BatchNorm2d\) is in training mode"):
        fold_pair(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    with pytest.raises(errors.ConfigError, match=r"fold: conv \(ReLU\) is not a Conv1d/2d/3d"):
        fold_pair(nn.ReLU(), nn.BatchNorm2d(4).eval())


@pytest.mark.parametrize("name", normlab.available())
def test_declared_bn_eval_is_bn_eval(name: str) -> None:
    """A layer that declares ``eval_is_batch_norm`` (what fold and FrozenBatchNorm read) computes
    γ(x − running_mean)/sqrt(running_var + eps) + β in eval (float64 formula), and every normlab
    class of this file's BN family declares it."""
    cls = normlab.registry.lookup(name).cls
    if cls in BN_FAMILY[1:]:
        assert cls.eval_is_batch_norm, f"{cls.__name__} folds as BN but does not declare it"
    if not getattr(cls, "eval_is_batch_norm", False):
        return
    m = randomize(normlab.create(normlab.registry.lookup(name).small_spec, 8)).eval()
    x = torch.randn(4, 8, 5, 3)
    s = (1, 8, 1, 1)
    mean, var = m.running_mean.double().view(s), m.running_var.double().view(s)
    w = m.weight.double().view(s) if m.weight is not None else 1.0
    b = m.bias.double().view(s) if m.bias is not None else 0.0
    expected = w * (x.double() - mean) / torch.sqrt(var + m.eps) + b
    with torch.no_grad():
        torch.testing.assert_close(m(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trainable", [True, False], ids=["trainable", "frozen"])
def test_bias_created_by_fold_is_trainable_exactly_when_the_conv_weight_is(trainable: bool) -> None:
    """A fine-tuning setup freezes the backbone's convs: the bias that fold adds to a bias-less
    conv must not become the one trainable parameter of a frozen layer (and vice versa)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)).eval()
    model[0].weight.requires_grad_(trainable)
    folded = fold(model)
    assert folded[0].bias is not None
    assert folded[0].bias.requires_grad is trainable
    assert folded[0].weight.requires_grad is trainable


def test_timm_bn_act_layers_fold_and_keep_their_drop_and_act() -> None:
    """timm's BatchNormAct2d / FrozenBatchNormAct2d (stand-ins with timm's structure) fold like
    the BN they are; their drop and activation stay at the same paths."""
    bn = timm_stand_ins.BatchNormAct2d(4, act=nn.SiLU, drop=lambda: nn.Dropout(0.5))
    frozen = timm_stand_ins.FrozenBatchNormAct2d(4, act=nn.GELU)
    with torch.no_grad():
        for layer in (bn, frozen):
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
            layer.weight.normal_()
            layer.bias.normal_()
    net = nn.Sequential(nn.Conv2d(3, 4, 3), bn, nn.Conv2d(4, 4, 1), frozen).eval()
    assert find_fold_pairs(net) == [("0", "1"), ("2", "3")]
    result = fold_with_report(net)
    folded = result.model
    assert result.unfolded == ()
    assert [p.kept for p in result.folded] == [("drop", "act"), ("drop", "act")]
    assert str(result.folded[0]) == (
        "1: BatchNormAct2d -> Sequential(drop, act) (folded into 0, Conv2d)"
    )
    assert isinstance(folded[1], nn.Sequential) and list(folded[1]._modules) == ["drop", "act"]
    assert isinstance(folded[1].drop, nn.Dropout) and isinstance(folded[1].act, nn.SiLU)
    assert isinstance(folded[3].act, nn.GELU) and not folded[1].training
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
        folded.train()  # the dropout still drops in training
        assert (folded[1](torch.ones(64, 4, 2, 2)) == 0).any()

    net[3].train()  # FrozenBatchNormAct2d is BN eval in any mode
    assert find_fold_pairs(net) == [("0", "1"), ("2", "3")]
    net[1].train()
    with pytest.raises(ValueError, match=r"fold requires eval mode.*'1' \(BatchNormAct2d\)"):
        fold(net)


# -- error messages, word for word ----------------------------------------------------------------

FOLD_PAIRS_EXAMPLE = 'fold(model, pairs=[("layer1.0.conv1", "layer1.0.bn1"), ...])'


def _fold_error(model: object, **kw: object) -> str:
    """The message of the ConfigError that ``fold(model, **kw)`` raises."""
    with pytest.raises(errors.ConfigError) as info:
        fold(model, **kw)  # type: ignore[arg-type]  # the tests pass wrong types on purpose
    return str(info.value)


def test_fold_of_a_training_bn_message() -> None:
    """A BN in training mode: the message says to call model.eval() and why."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert _fold_error(model) == (
        "fold requires eval mode: call model.eval() first (bn '1' (BatchNorm2d) is in training "
        "mode, where it normalizes with the batch's statistics; folding bakes in its running "
        "statistics)."
    )


class UntraceableActivation(nn.Module):
    """Untraceable, and no conv registered before a BN: no candidate pairs to suggest."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return x if x.sum() > 0 else self.act(x)


class UntraceableConvConv(nn.Module):
    """Untraceable; two convs then a BN registered in a row: only (conv2, bn) is a candidate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return self.bn(y) if y.sum() > 0 else y


def test_untraceable_model_without_candidates_message() -> None:
    """No candidate pairs: the message ends with the pairs= example, nothing appended."""
    assert _fold_error(UntraceableActivation().eval()) == (
        "fold: torch.fx could not trace the forward of UntraceableActivation (TraceError: "
        "symbolically traced variables cannot be used as inputs to control flow), so the "
        "(conv, BN) pairs cannot be found automatically. Pass them explicitly, each conv / linear "
        "path with the BN path that directly and only consumes its output: "
        f"{FOLD_PAIRS_EXAMPLE}."
    )


def test_untraceable_model_candidates_are_conv_then_bn_only() -> None:
    """Candidates are a conv / linear registered right before a BN, never conv then conv."""
    message = _fold_error(UntraceableConvConv().eval())
    assert message.endswith(
        f"{FOLD_PAIRS_EXAMPLE}. Candidates in registration order (check them against the "
        "forward): pairs=[('conv2', 'bn')]."
    ), message


def test_unknown_path_lists_exactly_twenty_known_paths_without_ellipsis() -> None:
    """20 paths of the kind are all shown; '...' only marks more than 20."""
    model = _seq(*[nn.BatchNorm1d(4) for _ in range(20)])
    listed = ", ".join(f"'{i}'" for i in range(20))
    assert _fold_error(model, pairs=[("0", "bn")]) == (
        "fold: pairs= names the bn 'bn', which is not a module path of the model. Paths of that "
        f"kind: {listed} (see model.named_modules())."
    )


class ConvOutputEverywhere(nn.Module):
    """The output of ``conv`` goes to its BN and to a module, a function, a method and the
    model's output; c1 / b1 and c2 / b2 are foldable pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU()
        self.c1, self.b1 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self.conv(x)
        z = self.b2(self.c2(self.b1(self.c1(self.bn(y)))))
        return z + self.head(y) + torch.relu(y) + y.mean(), y


def test_other_consumers_of_a_conv_output_are_named() -> None:
    """Each other consumer is named as a user reads it: module 'path', fn(), .method(),
    the model's output."""
    message = _fold_error(ConvOutputEverywhere().eval())
    assert message.startswith(
        "fold: the output of conv 'conv' (Conv2d) is also used by module 'head', relu(), "
        ".mean(), the model's output, not only by bn 'bn' (BatchNorm2d); folding would change "
        "what that consumer sees. Leave this pair out, or let that consumer read the BN's output "
        "instead."
    ), message


def test_refusal_suggests_the_other_pairs_found() -> None:
    """The refusal of one pair lists every other foldable pair as a pairs= argument."""
    message = _fold_error(ConvOutputEverywhere().eval())
    assert message.endswith(
        " To fold only the other pairs torch.fx found: fold(model, pairs=[('c1', 'b1'), "
        "('c2', 'b2')])."
    ), message


def test_find_fold_pairs_of_a_non_model_message() -> None:
    """find_fold_pairs on a state_dict names itself, the type received and the fix."""
    with pytest.raises(errors.ConfigError) as info:
        find_fold_pairs({"conv": nn.Conv2d(3, 4, 1)})  # type: ignore[arg-type]  # not a model
    assert str(info.value) == (
        "find_fold_pairs: model must be a torch.nn.Module; got dict. Pass the network itself "
        "(e.g. a torchvision or timm model), not its state_dict or output."
    )


PAIRS_FIX = (
    'Pass e.g. pairs=[("layer1.0.conv1", "layer1.0.bn1")], or leave pairs=None to find them '
    "with torch.fx."
)


def test_pairs_that_is_not_iterable_is_refused() -> None:
    """pairs=5 (not an iterable): a ConfigError naming the value and the fix."""
    assert _fold_error(UntraceableConvConv().eval(), pairs=5) == (
        f"fold: pairs must be a list of (conv path, bn path) tuples of str; got 5. {PAIRS_FIX}"
    )


def test_pair_of_three_paths_is_refused() -> None:
    """Each pair must hold exactly two paths: a 3-tuple of str is refused with the fix."""
    pairs = [("conv1", "conv2", "bn")]
    assert _fold_error(UntraceableConvConv().eval(), pairs=pairs) == (
        "fold: pairs must be a list of (conv path, bn path) tuples of str; got "
        f"[('conv1', 'conv2', 'bn')]. {PAIRS_FIX}"
    )


def _refusal(model: nn.Module, pairs: list[tuple[str, str]]) -> str:
    """The message of the ConfigError (that class exactly) that ``fold(model, pairs=pairs)``
    raises."""
    with pytest.raises(errors.ConfigError) as info:
        fold(model, pairs=pairs)
    assert type(info.value) is errors.ConfigError
    return str(info.value)


def test_not_a_bn_message() -> None:
    """A GroupNorm given as the BN of a pair: named, the BN family listed, a pairs= example."""
    model = _seq(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4))
    assert _refusal(model, [("0", "1")]) == (
        "fold: bn '1' (GroupNorm) is not a BN-family layer (torch.nn BatchNorm*d / "
        "SyncBatchNorm, normlab BatchNorm, GhostBatchNorm, BatchRenorm, FrozenBatchNorm). "
        "Only layers whose eval function is BN's fold into a conv; "
        'e.g. pairs=[("layer1.0.conv1", "layer1.0.bn1")].'
    )


class ScaledBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d subclass whose forward is not BN's: twice BN."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


def test_bn_subclass_with_its_own_forward_message() -> None:
    """A BN subclass overriding forward is refused: why, and to leave it out or use a plain BN."""
    model = _seq(nn.Conv2d(3, 4, 1), ScaledBatchNorm(4))
    assert _refusal(model, [("0", "1")]) == (
        "fold: bn '1' (ScaledBatchNorm) is a subclass that overrides forward (or holds child "
        "modules), so its eval function may not be BN's (timm's BatchNormAct2d adds an "
        "activation). Leave this pair out (pass pairs= without it) or replace the layer by a "
        "plain BN."
    )


NO_RUNNING_STATS = (
    "keeps no running statistics (track_running_stats=False), so in eval it normalizes with "
    "each batch's statistics, which no weight can hold. Fold only BNs with running statistics "
    "(recalibrate them first, or convert the layer to FrozenBatchNorm with known statistics)."
)


def test_bn_without_running_statistics_message() -> None:
    """track_running_stats=False: why no weight can hold the BN, and how to get statistics."""
    model = _seq(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))
    assert _refusal(model, [("0", "1")]) == f"fold: bn '1' (BatchNorm2d) {NO_RUNNING_STATS}"


_FOLD_NEEDS_BOTH = (
    "and the folded weight and bias are made from both running statistics. Fold only BNs with "
    "running statistics (recalibrate them first, or convert the layer to FrozenBatchNorm with "
    "known statistics)."
)


@pytest.mark.parametrize("missing", ["running_mean", "running_var"])
def test_frozen_bn_act_without_one_statistic_is_refused(missing: str) -> None:
    """A timm FrozenBatchNormAct2d lacking running_mean or running_var (attribute gone, not
    None) is refused naming the missing buffer (not as track_running_stats=False, which it
    has no such flag for), not failed with an AttributeError."""
    bn = timm_stand_ins.FrozenBatchNormAct2d(4)
    delattr(bn, missing)
    model = _seq(nn.Conv2d(3, 4, 1), bn)
    assert _refusal(model, [("0", "1")]) == (
        f"fold: bn '1' (FrozenBatchNormAct2d) has no {missing}, {_FOLD_NEEDS_BOTH}"
    )


def test_tracked_bn_whose_statistics_were_set_to_none_is_refused_naming_them() -> None:
    bn = nn.BatchNorm2d(4)
    bn.running_mean = bn.running_var = None
    model = _seq(nn.Conv2d(3, 4, 1), bn.eval())
    assert _refusal(model, [("0", "1")]) == (
        f"fold: bn '1' (BatchNorm2d) has no running_mean and no running_var, {_FOLD_NEEDS_BOTH}"
    )


def test_lazy_bn_message() -> None:
    """A LazyBatchNorm2d that has not seen input: the fix is one forward pass."""
    model = _seq(nn.Conv2d(3, 4, 1), nn.LazyBatchNorm2d())
    assert _refusal(model, [("0", "1")]) == (
        "fold: bn '1' (LazyBatchNorm2d) is a lazy layer that has not seen input yet. Run one "
        "forward pass first."
    )


def test_frozen_bn_act_without_affine_attributes_folds() -> None:
    """A timm FrozenBatchNormAct2d with no weight / bias attributes at all folds as γ = 1,
    β = 0: the result equals BN eval of the conv's output, then the activation (float64)."""
    bn = timm_stand_ins.FrozenBatchNormAct2d(4, eps=1e-3, act=nn.Tanh)
    with torch.no_grad():
        bn.running_mean.normal_(0.0, 2.0)
        bn.running_var.uniform_(0.2, 3.0)
    del bn.weight, bn.bias
    conv = nn.Conv2d(3, 4, 3)
    model = _seq(conv, bn).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = fold(model, pairs=[("0", "1")])
    with torch.no_grad():
        z = conv(x)
        expected = torch.tanh(torch.nn.functional.batch_norm(
            z, bn.running_mean, bn.running_var, training=False, eps=1e-3
        ))
        assert (z - expected).abs().max() > 0.1
        torch.testing.assert_close(folded(x), expected, rtol=1e-10, atol=1e-10)


def test_same_bn_in_two_pairs_message() -> None:
    """A BN listed in two pairs of pairs=: named, and the fix is to remove the duplicate."""
    model = _seq(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    assert _refusal(model, [("0", "1"), ("2", "1")]) == (
        "fold: module '1' (BatchNorm2d) appears in two pairs of pairs=, ('0', '1') and "
        "('2', '1'). Each conv and each BN folds once; remove the duplicate from pairs=."
    )


def test_conv_registered_at_two_paths_message() -> None:
    """A conv registered at two paths: both paths named, the fix is a deep copy per use."""
    assert _refusal(_shared_conv(), [("0", "1")]) == (
        "fold: module '0' (Conv2d) is registered at several paths (0, alias), so folding would "
        "change every use of it. Give each use its own module (copy.deepcopy) before folding, "
        "or leave it out."
    )


def test_conv_weight_tied_to_one_other_conv_message() -> None:
    """A conv weight shared with exactly one other conv: both names given, fix: untie."""
    model = _seq(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    model[2].weight = model[0].weight
    assert _refusal(model, [("0", "1")]) == (
        "fold: module '0' (Conv2d) shares a parameter with another module (0.weight, 2.weight), "
        "so folding would change that module too. Untie the weights first, or leave this pair "
        "out."
    )


def test_activation_shared_by_a_bn_act_layer_does_not_block_folding() -> None:
    """A PReLU shared by a BatchNormAct2d and another path is kept, not folded: only the BN's
    own parameters must be untied, so the pair folds and the model computes the same."""
    prelu = nn.PReLU(4, init=0.1)
    bn = randomize(timm_stand_ins.BatchNormAct2d(4, act=lambda: prelu))
    model = _seq(nn.Conv2d(3, 4, 3), bn, prelu).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    folded = fold(model, pairs=[("0", "1")])
    assert folded[1].act is folded[2]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), oracle(model, x), rtol=1e-10, atol=1e-10)


class UnregisteredConv(nn.Module):
    """A conv kept in a plain list: called in forward, but not a submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = [nn.Conv2d(3, 4, 1)]
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.convs[0](x))


def test_untraceable_unregistered_module_message() -> None:
    """A module called in forward but not registered: a ConfigError naming its class and the
    fix (nn.ModuleList), not an AttributeError from looking up its path."""
    assert _fold_error(UnregisteredConv().eval()) == (
        "fold: torch.fx could not trace a Conv2d that is not a submodule of the model (held in a "
        "plain list or dict, not an nn.ModuleList / nn.ModuleDict) (NameError: module is not "
        "installed as a submodule), so the (conv, BN) pairs cannot be found automatically. Pass "
        "them explicitly, each conv / linear path with the BN path that directly and only "
        f"consumes its output: {FOLD_PAIRS_EXAMPLE}."
    )


class BareRaise(nn.Module):
    """Checks its input with a bare ``raise TypeError`` (no message), which a Proxy trips."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError
        return self.bn(self.conv(x))


def test_untraceable_model_whose_error_has_no_message() -> None:
    """An exception without a message is named by its class alone, and the candidates follow."""
    assert _fold_error(BareRaise().eval()) == (
        "fold: torch.fx could not trace the forward of BareRaise (TypeError), so the (conv, BN) "
        "pairs cannot be found automatically. Pass them explicitly, each conv / linear path with "
        f"the BN path that directly and only consumes its output: {FOLD_PAIRS_EXAMPLE}. "
        "Candidates in registration order (check them against the forward): "
        "pairs=[('conv', 'bn')]."
    )


PAIRS_EXAMPLE = 'e.g. pairs=[("layer1.0.conv1", "layer1.0.bn1")]'


def test_layer_that_is_not_a_conv_message() -> None:
    """A ReLU given as the conv of a pair: named, the foldable layers listed, a pairs= example."""
    model = _seq(nn.ReLU(), nn.BatchNorm2d(4))
    assert _refusal(model, [("0", "1")]) == (
        "fold: conv '0' (ReLU) is not a Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear layer. "
        "Each pair is (path of the layer whose output the BN normalizes, path of the BN), "
        f"{PAIRS_EXAMPLE}."
    )


def test_lazy_conv_message() -> None:
    """A LazyConv2d that has not seen input: the fix is one forward pass."""
    model = _seq(nn.LazyConv2d(4, 1), nn.BatchNorm2d(4))
    assert _refusal(model, [("0", "1")]) == (
        "fold: conv '0' (LazyConv2d) is a lazy layer that has not seen input yet. Run one "
        "forward pass first."
    )


def test_conv_with_torch_weight_norm_message() -> None:
    """torch's weight norm on the conv: why folding would be overwritten, and how to remove it."""
    model = _seq(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 1)), nn.BatchNorm2d(4))
    assert _refusal(model, [("0", "1")]) == (
        "fold: conv '0' (ParametrizedConv2d) has a parametrized weight or forward pre-hooks "
        "(weight norm / spectral norm recompute the weight at every call and would overwrite "
        "the folded one). Remove them first (torch.nn.utils.parametrize.remove_parametrizations("
        "layer, 'weight') or torch.nn.utils.remove_weight_norm(layer)), or leave this pair out."
    )


class ClampedConv(nn.Conv2d):
    """Overrides ``_conv_forward`` only (forward is Conv2d's): its output is not a plain conv."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return super()._conv_forward(x, weight.clamp(-0.1, 0.1), bias)


CUSTOM_CONV = (
    "is a subclass that overrides forward or _conv_forward (or holds child modules), so its "
    "output may not be the plain conv that folding assumes. Leave this pair out (pass pairs= "
    "without it) or replace the layer by a plain one."
)


def test_conv_overriding_conv_forward_message() -> None:
    """A conv subclass overriding only _conv_forward is found by torch.fx and refused."""
    assert _fold_error(_seq(ClampedConv(3, 4, 1), nn.BatchNorm2d(4))) == (
        f"fold: conv '0' (ClampedConv) {CUSTOM_CONV} torch.fx found no other pair that could be "
        "folded."
    )


def test_normlab_parametrized_conv_with_a_child_module_is_refused() -> None:
    """normlab's weight standardization is baked in, but a child module besides it may change
    the conv's output: refused as a custom conv."""
    conv = normlab.weight_standardization(nn.Conv2d(3, 4, 1))
    conv.gate = nn.Sigmoid()
    assert _refusal(_seq(conv, nn.BatchNorm2d(4)), [("0", "1")]) == (
        f"fold: conv '0' (ParametrizedConv2d) {CUSTOM_CONV}"
    )


def test_timm_group_norm_act_is_not_a_bn_message() -> None:
    """timm's GroupNormAct is a norm + activation layer but not BN: refused as not BN-family."""
    model = _seq(nn.Conv2d(3, 4, 1), timm_stand_ins.GroupNormAct(4, 2))
    assert _refusal(model, [("0", "1")]) == (
        "fold: bn '1' (GroupNormAct) is not a BN-family layer (torch.nn BatchNorm*d / "
        "SyncBatchNorm, normlab BatchNorm, GhostBatchNorm, BatchRenorm, FrozenBatchNorm). "
        f"Only layers whose eval function is BN's fold into a conv; {PAIRS_EXAMPLE}."
    )


def test_bn_over_the_last_dim_after_a_conv_message() -> None:
    """A normlab BatchNorm with channel_dim=-1 after a conv: why, and to leave the pair out."""
    model = _seq(nn.Conv2d(3, 4, 1), normlab.BatchNorm(4, channel_dim=-1))
    assert _refusal(model, [("0", "1")]) == (
        "fold: bn '1' (BatchNorm) normalizes the last dim (channel_dim=-1), but the output "
        "channels of conv '0' (Conv2d) are at dim 1. Only a BN over the conv's output channels "
        "folds; leave this pair out."
    )


def test_bn_with_other_channels_than_the_conv_message() -> None:
    """A BN over 4 channels paired with a conv producing 6: both counts, check the paths."""
    model = _seq(nn.Conv2d(3, 6, 1), nn.Identity(), nn.BatchNorm2d(4))
    assert _refusal(model, [("0", "2")]) == (
        "fold: bn '2' (BatchNorm2d) has 4 channels but conv '0' (Conv2d) produces 6. A pair is "
        "a layer and the BN that normalizes its output; check the paths in pairs=."
    )


class PlainBatchNorm(nn.BatchNorm2d):
    """A user subclass of BatchNorm2d that changes nothing (its module is not torch.nn)."""


def test_bn_subclass_outside_torch_nn_is_found_and_folds() -> None:
    """torch.fx would trace into a BN subclass of a user module; fold keeps it whole, finds the
    pair and folds it (float64 oracle)."""
    model = randomize(_seq(nn.Conv2d(3, 4, 3), PlainBatchNorm(4), nn.ReLU())).double()
    assert find_fold_pairs(model) == [("0", "1")]
    assert_folds(model, torch.randn(2, 3, 6, 6, dtype=torch.float64))


class KeywordBatchNorm(nn.Module):
    """Calls its BN with the conv's output as a keyword argument, ``bn(input=...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(input=self.conv(x)))


def test_bn_called_with_its_input_by_keyword_is_found_and_folds() -> None:
    """``bn(input=conv(x))`` is a pair like ``bn(conv(x))`` (float64 oracle)."""
    model = randomize(KeywordBatchNorm()).eval().double()
    assert find_fold_pairs(model) == [("conv", "bn")]
    assert_folds(model, torch.randn(2, 3, 6, 6, dtype=torch.float64))


class ArgumentlessBatchNorm(nn.Module):
    """Calls its BN with no argument at all: traced (the BN is a leaf), it would fail if run."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + self.bn()


def test_bn_called_without_arguments_is_no_pair() -> None:
    """A BN call without input consumes no conv: no pair, and no crash while looking."""
    assert find_fold_pairs(ArgumentlessBatchNorm().eval()) == []


class BatchNormsAfterOtherLayers(nn.Module):
    """A BN after a ReLU module and a BN after a function come before the one foldable pair."""

    def __init__(self) -> None:
        super().__init__()
        self.act, self.bn1 = nn.ReLU(), nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv, self.bn3 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(torch.tanh(self.bn1(self.act(x))))
        return self.bn3(self.conv(y))


def test_pairs_after_bns_that_follow_no_conv_are_found() -> None:
    """BNs after a non-conv module or a function are skipped and the search goes on: the later
    pair is found and folded, the other BNs stay (float64 oracle)."""
    model = randomize(BatchNormsAfterOtherLayers()).eval().double()
    assert find_fold_pairs(model) == [("conv", "bn3")]
    result = fold_with_report(model)
    assert result.unfolded == ("bn1", "bn2")
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), oracle(model, x), rtol=1e-10, atol=1e-10)


class SharedBatchNorm(nn.Module):
    """One BN module called after two convs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.bn = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv1(x)) + self.bn(self.conv2(x))


def test_bn_called_twice_message() -> None:
    """A BN called after two convs: the BN (not a conv) is named, the fix is a copy per call."""
    assert _fold_error(SharedBatchNorm().eval()) == (
        "fold: bn 'bn' (BatchNorm2d) is called more than once in the forward, so folding this "
        "pair would change its other calls too. Give each call its own module (copy.deepcopy), "
        "or leave this pair out. torch.fx found no other pair that could be folded."
    )
