"""Property-based tests of the five classic norms (RELIABILITY.md I1-I8, I11; float64).

Every check compares normlab against float64 references written in this file (reshape to
"one row per normalization set", two-pass moments), or against normlab itself under a
transformation whose effect is known exactly (affine law, permutations, batch splits).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import normlab
from set_rows import from_rows, ref_forward, row_moments, to_rows

try:  # registers and loads the "ci" Hypothesis profile
    import _hypothesis_profiles
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import _hypothesis_profiles  # noqa: F401

F64 = torch.float64
U64 = torch.finfo(F64).eps
KINDS = ("bn", "ln", "in", "gn", "ln_pp", "rms")
CENTERED = ("bn", "ln", "in", "gn", "ln_pp")
CHANNELS = (1, 2, 3, 4, 6, 8)


# ----------------------------------------------------------------------------- references


def set_size(kind: str, shape: tuple[int, ...], groups: int) -> int:
    n, c, *spatial = shape
    s = math.prod(spatial)
    return {
        "bn": n * s,
        "ln": c * s,
        "in": s,
        "gn": (c // groups) * s,
        "ln_pp": c,
        "rms": c,
    }[kind]


def divisors(c: int) -> list[int]:
    return [d for d in range(1, c + 1) if c % d == 0]


# ----------------------------------------------------------------------------- modules


def build(kind, c, groups=1, *, eps, affine=False, channel_dim=1, **kw):
    common = {"eps": eps, "affine": affine, "channel_dim": channel_dim, "dtype": F64}
    if kind == "bn":
        return normlab.BatchNorm(c, **common, **kw)
    if kind == "ln":
        return normlab.LayerNorm(c, **common, **kw)
    if kind == "ln_pp":
        return normlab.LayerNorm(c, per_position=True, **common, **kw)
    if kind == "in":
        return normlab.InstanceNorm(c, **common, **kw)
    if kind == "gn":
        return normlab.GroupNorm(c, num_groups=groups, **common, **kw)
    if kind == "rms":
        return normlab.RMSNorm(c, **common, **kw)
    raise AssertionError(kind)


def run(module, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Apply ``module`` to canonical (N, C, *S) data laid out per ``channel_dim``."""
    if channel_dim == -1:
        return module(x.movedim(1, -1)).movedim(-1, 1)
    return module(x)


def randomize_affine(module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.weight.copy_(torch.randn(module.weight.shape, generator=g, dtype=F64))
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=g, dtype=F64))


def randomize_running(module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g, dtype=F64))
        module.running_var.copy_(
            torch.rand(module.running_var.shape, generator=g, dtype=F64) * 2 + 0.1
        )


def channel_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def tol(x: torch.Tensor, eps: float, extra: float = 0.0) -> float:
    """Float64 rounding bound: u * magnitude / sqrt(eps), generously scaled."""
    mag = float(x.abs().max()) + extra if x.numel() else 1.0
    return 1e-9 + 256 * U64 * mag / math.sqrt(eps)


def assert_close(actual, expected, atol):
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=atol)


# ----------------------------------------------------------------------------- strategies

VALUES = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=64)


@st.composite
def tensors(draw, shape):
    """Float64 data: either Hypothesis-shrinkable arrays or scaled Gaussian noise."""
    if draw(st.booleans()):
        arr = draw(arrays(np.float64, shape, elements=VALUES))
        return torch.from_numpy(np.array(arr, copy=True))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = 10 ** draw(st.floats(-3, 3))
    offset = draw(st.floats(-1e3, 1e3))
    g = torch.Generator().manual_seed(seed)
    return offset + scale * torch.randn(shape, generator=g, dtype=F64)


@st.composite
def configs(draw, kinds=KINDS, min_n=1, min_spatial=0):
    kind = draw(st.sampled_from(kinds))
    c = draw(st.sampled_from(CHANNELS if kind != "ln_pp" else CHANNELS[1:]))
    groups = draw(st.sampled_from(divisors(c))) if kind == "gn" else 1
    n = draw(st.integers(min_n, 4))
    rank = draw(st.integers(min_spatial, 2))
    spatial = [draw(st.integers(1, 4)) for _ in range(rank)]
    shape = (n, c, *spatial)
    if kind != "rms" and set_size(kind, shape, groups) < 2:
        shape = (*shape, 2)  # a training batch needs >= 2 values per statistic
    if min_spatial and math.prod(shape[2:]) < 2:
        shape = (*shape[:-1], shape[-1] + 1)
    channel_dim = draw(st.sampled_from((1, -1)))
    eps = 10 ** draw(st.floats(-8, -1))
    return {"kind": kind, "c": c, "groups": groups, "shape": shape, "cd": channel_dim, "eps": eps}


def module_for(cfg, *, eps=None, **kw):
    return build(
        cfg["kind"],
        cfg["c"],
        cfg["groups"],
        eps=cfg["eps"] if eps is None else eps,
        channel_dim=cfg["cd"],
        **kw,
    )


# ----------------------------------------------------------------------------- reference


@given(cfg=configs(), data=st.data(), training=st.booleans())
def test_prop_matches_float64_reference(cfg, data, training):
    x = data.draw(tensors(cfg["shape"]))
    kw = {"track_running_stats": False} if cfg["kind"] == "bn" else {}
    m = module_for(cfg, **kw).train(training)
    y = run(m, x, cfg["cd"])
    assert y.shape == x.shape
    assert y.dtype == F64
    assert_close(y, ref_forward(x, cfg["kind"], cfg["groups"], cfg["eps"]), tol(x, cfg["eps"]))


# ----------------------------------------------------------------------------- I1


@given(cfg=configs(), data=st.data())
def test_prop_moments(cfg, data):
    x = data.draw(tensors(cfg["shape"]))
    kind, eps = cfg["kind"], cfg["eps"]
    y = run(module_for(cfg), x, cfg["cd"])
    rx, ry = to_rows(x, kind, cfg["groups"]), to_rows(y, kind, cfg["groups"])
    atol = 16 * tol(x, eps)
    if kind == "rms":
        ms_x = (rx * rx).mean(1)
        torch.testing.assert_close((ry * ry).mean(1), ms_x / (ms_x + eps), rtol=1e-7, atol=atol)
        return
    mean_y, var_y = row_moments(ry)
    _, var_x = row_moments(rx)
    torch.testing.assert_close(mean_y, torch.zeros_like(mean_y), rtol=0, atol=atol)
    torch.testing.assert_close(var_y, var_x / (var_x + eps), rtol=1e-7, atol=atol)


# ----------------------------------------------------------------------------- I2


@given(
    cfg=configs(),
    data=st.data(),
    a_exp=st.floats(-2, 2),
    negative=st.booleans(),
    b_seed=st.integers(0, 2**31 - 1),
)
def test_prop_affine_law_with_eps_rescaling(cfg, data, a_exp, negative, b_seed):
    x = data.draw(tensors(cfg["shape"]))
    kind, groups, eps = cfg["kind"], cfg["groups"], cfg["eps"]
    a = (-1.0 if negative else 1.0) * 10**a_exp
    if kind == "rms":
        b = torch.zeros_like(x)  # RMSNorm is uncentered: only the scaling law holds
    else:
        rows = to_rows(x, kind, groups)
        g = torch.Generator().manual_seed(b_seed)
        per_set = (torch.rand(rows.shape[0], 1, generator=g, dtype=F64) * 2 - 1) * 1e3
        b = from_rows(per_set.expand_as(rows).contiguous(), kind, tuple(x.shape))
    shifted = a * x + b
    lhs = run(module_for(cfg), shifted, cfg["cd"])
    rhs = math.copysign(1.0, a) * run(module_for(cfg, eps=eps / a**2), x, cfg["cd"])
    atol = tol(shifted, eps) + tol(x, eps / a**2)
    assert_close(lhs, rhs, atol)


# ----------------------------------------------------------------------------- I3


@given(cfg=configs(), data=st.data(), seed=st.integers(0, 2**31 - 1), training=st.booleans())
def test_prop_affine_decomposition(cfg, data, seed, training):
    x = data.draw(tensors(cfg["shape"]))
    kind, c = cfg["kind"], cfg["c"]
    kw = {"track_running_stats": False} if kind == "bn" else {}
    plain = module_for(cfg, affine=False, **kw).train(training)
    assert plain.weight is None
    assert getattr(plain, "bias", None) is None
    assert not list(plain.parameters())
    full = module_for(cfg, affine=True, **kw).train(training)
    assert full.weight.shape == (c,)
    randomize_affine(full, seed)
    gamma = channel_view(full.weight.detach(), x.dim())
    expected = gamma * run(plain, x, cfg["cd"])
    if kind == "rms":
        assert getattr(full, "bias", None) is None
    else:
        assert full.bias.shape == (c,)
        expected = expected + channel_view(full.bias.detach(), x.dim())
    assert_close(run(full, x, cfg["cd"]), expected, 4 * tol(x, cfg["eps"]))


# ----------------------------------------------------------------------------- I4


@given(cfg=configs(), data=st.data())
def test_prop_odd_symmetry(cfg, data):
    x = data.draw(tensors(cfg["shape"]))
    y = run(module_for(cfg), x, cfg["cd"])
    y_neg = run(module_for(cfg), -x, cfg["cd"])
    assert_close(y_neg, -y, tol(x, cfg["eps"]))


# ----------------------------------------------------------------------------- I5


@given(
    cfg=configs(kinds=("ln", "in", "gn", "ln_pp", "rms", "bn"), min_n=2),
    data=st.data(),
    training=st.booleans(),
    tracked=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_prop_batch_split_invariance(cfg, data, training, tracked, seed):
    x = data.draw(tensors(cfg["shape"]))
    n = x.shape[0]
    k = data.draw(st.integers(1, n - 1))
    kind = cfg["kind"]
    if kind == "bn":
        training = False  # BN couples samples in training; the eval map is per sample
    kw = {"track_running_stats": tracked} if kind in ("bn", "in") else {}
    if kind == "bn":
        kw["track_running_stats"] = True
    m = module_for(cfg, affine=True, **kw)
    randomize_affine(m, seed)
    if kw.get("track_running_stats"):
        randomize_running(m, seed + 1)
    m.train(training)
    whole = run(m, x, cfg["cd"])
    parts = torch.cat([run(m, x[:k], cfg["cd"]), run(m, x[k:], cfg["cd"])])
    assert_close(parts, whole, 4 * tol(x, cfg["eps"]))


@given(
    cfg=configs(kinds=("bn",), min_n=2),
    data=st.data(),
    momentum=st.one_of(st.none(), st.floats(0, 1)),
    seed=st.integers(0, 2**31 - 1),
)
def test_prop_batch_permutation_equivariance_bn_train(cfg, data, momentum, seed):
    x = data.draw(tensors(cfg["shape"]))
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    a = module_for(cfg, affine=True, momentum=momentum)
    b = module_for(cfg, affine=True, momentum=momentum)
    randomize_affine(a, seed)
    b.load_state_dict(a.state_dict())
    ya = run(a, x, cfg["cd"])
    yb = run(b, x[perm], cfg["cd"])
    assert_close(yb, ya[perm], 4 * tol(x, cfg["eps"]))
    scale = float(x.abs().max()) + 1
    torch.testing.assert_close(b.running_mean, a.running_mean, rtol=1e-9, atol=1e-12 * scale)
    torch.testing.assert_close(b.running_var, a.running_var, rtol=1e-9, atol=1e-12 * scale * scale)
    assert torch.equal(b.num_batches_tracked, a.num_batches_tracked)
    assert int(a.num_batches_tracked) == 1


# ----------------------------------------------------------------------------- I6


@given(cfg=configs(min_spatial=1), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_prop_spatial_permutation_equivariance(cfg, data, seed):
    x = data.draw(tensors(cfg["shape"]))
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    perm = torch.randperm(s, generator=torch.Generator().manual_seed(seed))

    def permute(t):
        return t.reshape(n, c, s)[..., perm].reshape(t.shape)

    y = run(module_for(cfg), x, cfg["cd"])
    yp = run(module_for(cfg), permute(x), cfg["cd"])
    assert_close(yp, permute(y), tol(x, cfg["eps"]))


def _group_preserving_perm(c: int, groups: int, g: torch.Generator) -> torch.Tensor:
    size = c // groups
    order = torch.randperm(groups, generator=g)
    return torch.cat([order[i] * size + torch.randperm(size, generator=g) for i in range(groups)])


@given(
    cfg=configs(),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    training=st.booleans(),
)
def test_prop_channel_permutation_equivariance(cfg, data, seed, training):
    x = data.draw(tensors(cfg["shape"]))
    kind, c, groups = cfg["kind"], cfg["c"], cfg["groups"]
    g = torch.Generator().manual_seed(seed)
    perm = _group_preserving_perm(c, groups, g) if kind == "gn" else torch.randperm(c, generator=g)
    kw = {"track_running_stats": True} if kind in ("bn", "in") else {}
    a = module_for(cfg, affine=True, **kw)
    b = module_for(cfg, affine=True, **kw)
    randomize_affine(a, seed)
    if kw:
        randomize_running(a, seed + 1)
    state = {k: (v[perm] if v.dim() == 1 else v) for k, v in a.state_dict().items()}
    b.load_state_dict(state)
    a.train(training)
    b.train(training)
    ya = run(a, x, cfg["cd"])
    yb = run(b, x[:, perm], cfg["cd"])
    assert_close(yb, ya[:, perm], 4 * tol(x, cfg["eps"]))
    if kw and training:
        torch.testing.assert_close(b.running_mean, a.running_mean[perm], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(b.running_var, a.running_var[perm], rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- I7


@given(cfg=configs(), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_prop_grad_identities(cfg, data, seed):
    x = data.draw(tensors(cfg["shape"])).requires_grad_(True)
    kind, groups, eps = cfg["kind"], cfg["groups"], cfg["eps"]
    y = run(module_for(cfg), x, cfg["cd"])
    upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    (dx,) = torch.autograd.grad((y * upstream).sum(), x)
    x = x.detach()
    rx = to_rows(x, kind, groups)
    rdx = to_rows(dx, kind, groups)
    rg = to_rows(upstream, kind, groups)
    ry = to_rows(y.detach(), kind, groups)
    n = rx.shape[1]
    if kind == "rms":
        # scale identity: sum_C x * dL/dx = eps / r^2 * sum_C g * y, r^2 = mean(x^2) + eps
        r2 = (rx * rx).mean(1) + eps
        lhs = (rx * rdx).sum(1)
        rhs = eps / r2 * (rg * ry).sum(1)
        bound = 1e-8 * ((rx * rdx).abs().sum(1) + (rg * ry).abs().sum(1) + 1)
        assert torch.all((lhs - rhs).abs() <= bound), (lhs, rhs)
        return
    mean, var = row_moments(rx)
    mean, s = mean.squeeze(1), torch.sqrt(var.squeeze(1) + eps)
    # rounding of y (|dy| <~ tol) enters both identities through sum(y * dx)
    slack = (1e-9 + tol(x, eps)) * rdx.abs().sum(1)
    # dx is a difference of O(|g| / s) terms, each carrying x - mean's relative rounding
    # u |mean| / s: when they cancel (e.g. two values per set, eps << var) that absolute error
    # is far larger than |dx| itself.
    cancel = 64 * U64 * (1 + mean.abs() / s) / s * rg.abs().sum(1) * n
    # shift identity (any eps): sum over each set of dL/dx = 0
    bound = slack + cancel + 1e-12
    assert torch.all(rdx.sum(1).abs() <= bound), rdx.sum(1)
    # scale identity: sum_S y * dL/dx = n * mean(g * y) * eps / s^3, s^2 = var + eps
    lhs = (ry * rdx).sum(1)
    rhs = n * (rg * ry).mean(1) * eps / s**3
    bound = slack + cancel * ry.abs().amax(1) + 1e-8 * ((ry * rdx).abs().sum(1) + rhs.abs() + 1e-6)
    assert torch.all((lhs - rhs).abs() <= bound), (lhs, rhs)


# ----------------------------------------------------------------------------- I8


@given(
    kind=st.sampled_from(("bn", "ln", "gn", "in")),
    linear=st.booleans(),
    a=st.floats(1e-2, 1e2),
    eps_exp=st.floats(-6, -1),
    seed=st.integers(0, 2**31 - 1),
)
def test_prop_scale_invariance_of_preceding_weights(kind, linear, a, eps_exp, seed):
    eps = 10**eps_exp
    g = torch.Generator().manual_seed(seed)
    c_in, c, n = 3, 4, 5
    linear = linear and kind in ("bn", "ln", "gn")  # IN needs spatial positions
    if linear:
        u = torch.randn(n, c_in, generator=g, dtype=F64)
        layer1 = torch.nn.Linear(c_in, c, bias=False, dtype=F64)
        layer2 = torch.nn.Linear(c_in, c, bias=False, dtype=F64)
    else:
        u = torch.randn(n, c_in, 6, generator=g, dtype=F64)
        layer1 = torch.nn.Conv1d(c_in, c, 3, bias=False, dtype=F64)
        layer2 = torch.nn.Conv1d(c_in, c, 3, bias=False, dtype=F64)
    with torch.no_grad():
        w = torch.randn(layer1.weight.shape, generator=g, dtype=F64)
        layer1.weight.copy_(w)
        layer2.weight.copy_(a * w)
    groups = 2 if kind == "gn" else 1
    net1 = torch.nn.Sequential(layer1, build(kind, c, groups, eps=eps))
    net2 = torch.nn.Sequential(layer2, build(kind, c, groups, eps=eps * a * a))
    u1 = u.clone().requires_grad_(True)
    u2 = u.clone().requires_grad_(True)
    y1, y2 = net1(u1), net2(u2)
    torch.testing.assert_close(y2, y1, rtol=1e-9, atol=1e-9)
    upstream = torch.randn(y1.shape, generator=g, dtype=F64)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()
    torch.testing.assert_close(u2.grad, u1.grad, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(layer2.weight.grad, layer1.weight.grad / a, rtol=1e-8, atol=1e-9 / a)


# ----------------------------------------------------------------------------- I11


@given(cfg=configs(kinds=("ln",)), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_prop_group_norm_one_group_equals_layer_norm(cfg, data, seed):
    x = data.draw(tensors(cfg["shape"]))
    c, eps, cd = cfg["c"], cfg["eps"], cfg["cd"]
    ln = build("ln", c, eps=eps, affine=True, channel_dim=cd)
    gn = build("gn", c, 1, eps=eps, affine=True, channel_dim=cd)
    randomize_affine(ln, seed)
    gn.load_state_dict(ln.state_dict())
    assert_close(run(gn, x, cd), run(ln, x, cd), 4 * tol(x, eps))


@given(cfg=configs(kinds=("in",)), data=st.data())
def test_prop_group_norm_c_groups_equals_instance_norm(cfg, data):
    x = data.draw(tensors(cfg["shape"]))
    c, eps, cd = cfg["c"], cfg["eps"], cfg["cd"]
    gn = build("gn", c, c, eps=eps, channel_dim=cd)
    inn = build("in", c, eps=eps, channel_dim=cd)
    assert_close(run(gn, x, cd), run(inn, x, cd), tol(x, eps))


@given(cfg=configs(kinds=("in",)), data=st.data())
def test_prop_instance_norm_is_batch_norm_on_reshaped_input(cfg, data):
    x = data.draw(tensors(cfg["shape"]))
    n, c, *spatial = x.shape
    eps = cfg["eps"]
    inn = build("in", c, eps=eps)
    bn = build("bn", n * c, eps=eps).train()
    expected = bn(x.reshape(1, n * c, *spatial)).reshape(x.shape)
    assert_close(inn(x), expected, tol(x, eps))


@given(
    n=st.integers(2, 5),
    c=st.sampled_from(CHANNELS),
    length=st.integers(1, 6),
    momentum=st.one_of(st.none(), st.floats(0, 1)),
    seed=st.integers(0, 2**31 - 1),
)
def test_prop_batch_norm_1d_equals_2d_with_trailing_unit_dim(n, c, length, momentum, seed):
    g = torch.Generator().manual_seed(seed)
    bn1 = build("bn", c, eps=1e-5, affine=True, momentum=momentum)
    bn2 = build("bn", c, eps=1e-5, affine=True, momentum=momentum)
    randomize_affine(bn1, seed)
    bn2.load_state_dict(bn1.state_dict())
    for _ in range(3):
        x = torch.randn(n, c, length, generator=g, dtype=F64) * 3 + 1
        torch.testing.assert_close(bn2(x.unsqueeze(-1)).squeeze(-1), bn1(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(bn2.running_mean, bn1.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn2.running_var, bn1.running_var, rtol=1e-12, atol=1e-12)
    assert int(bn1.num_batches_tracked) == int(bn2.num_batches_tracked) == 3
    bn1.eval()
    bn2.eval()
    x = torch.randn(n, c, length, generator=g, dtype=F64)
    torch.testing.assert_close(bn2(x.unsqueeze(-1)).squeeze(-1), bn1(x), rtol=1e-12, atol=1e-12)


@given(cfg=configs(kinds=("bn",)), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_prop_batch_norm_eval_is_an_affine_map(cfg, data, seed):
    x = data.draw(tensors(cfg["shape"]))
    eps, cd = cfg["eps"], cfg["cd"]
    bn = module_for(cfg, affine=True)
    randomize_affine(bn, seed)
    randomize_running(bn, seed + 1)
    bn.eval()
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    expected = x * channel_view(scale, x.dim()) + channel_view(shift, x.dim())
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    mag = float(x.abs().max()) * float(scale.abs().max()) + float(shift.abs().max())
    torch.testing.assert_close(run(bn, x, cd), expected, rtol=1e-10, atol=1e-12 * (mag + 1))
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


@given(cfg=configs(kinds=("ln_pp",)), data=st.data())
def test_prop_rms_norm_on_zero_mean_rows_equals_per_position_layer_norm(cfg, data):
    x = data.draw(tensors(cfg["shape"]))
    x = x - x.mean(1, keepdim=True)  # zero mean over channels at every (sample, position)
    c, eps, cd = cfg["c"], cfg["eps"], cfg["cd"]
    rms = build("rms", c, eps=eps, channel_dim=cd)
    ln = build("ln_pp", c, eps=eps, channel_dim=cd)
    # the residual mean (~u * |x|) is the only difference
    assert_close(run(rms, x, cd), run(ln, x, cd), 4 * tol(x, eps))
