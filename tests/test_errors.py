"""Bad inputs are rejected early with typed normlab errors (RELIABILITY.md 5.1/5.2, STYLE 10.4).

Every check matches the message text, and every error must also be a ValueError.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

import normlab
from normlab.errors import ConfigError, DataError, InputError, NormlabError, UnknownNameError

CLASSES = {
    "BatchNorm": normlab.BatchNorm,
    "LayerNorm": normlab.LayerNorm,
    "InstanceNorm": normlab.InstanceNorm,
    "GroupNorm": lambda c, **kw: normlab.GroupNorm(c, num_groups=1, **kw),
    "RMSNorm": normlab.RMSNorm,
}
MOMENTUM_CLASSES = {"BatchNorm": normlab.BatchNorm, "InstanceNorm": normlab.InstanceNorm}


def check(excinfo, cls):
    err = excinfo.value
    assert isinstance(err, cls)
    assert isinstance(err, NormlabError)
    assert isinstance(err, ValueError)
    assert str(err).strip(), "empty error message"
    return str(err)


def test_error_hierarchy():
    for cls in (ConfigError, DataError, InputError, UnknownNameError):
        assert issubclass(cls, NormlabError)
    assert issubclass(NormlabError, ValueError)
    assert normlab.errors.NormlabError is NormlabError


# ----------------------------------------------------------------------------- constructors


@pytest.mark.parametrize(("bad", "shown"), [(0, "0"), (-3, "-3"), (True, "True"), (4.0, "4.0")])
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_num_features_must_be_a_positive_int(name, bad, shown):
    factory = {
        "BatchNorm": normlab.BatchNorm,
        "LayerNorm": normlab.LayerNorm,
        "InstanceNorm": normlab.InstanceNorm,
        "GroupNorm": normlab.GroupNorm,
        "RMSNorm": normlab.RMSNorm,
    }[name]
    with pytest.raises(ConfigError, match=rf"num_features must be a positive int; got {shown}\b"):
        factory(bad)


def test_num_features_message_exact_example():
    with pytest.raises(ConfigError) as excinfo:
        normlab.BatchNorm(0)
    assert "num_features must be a positive int; got 0" in check(excinfo, ConfigError)


@pytest.mark.parametrize(("c", "g"), [(7, 2), (64, 5), (6, 4)])
def test_num_groups_must_divide_num_features(c, g):
    with pytest.raises(ConfigError) as excinfo:
        normlab.GroupNorm(c, num_groups=g)
    msg = check(excinfo, ConfigError)
    assert re.search(rf"num_features\W{{0,3}}{c}\b.*divisible.*num_groups\W{{0,3}}{g}\b", msg), msg


def test_num_groups_message_exact_example():
    with pytest.raises(
        ConfigError, match=re.escape("num_features (7) must be divisible by num_groups (2)")
    ):
        normlab.GroupNorm(7, num_groups=2)


@pytest.mark.parametrize("g", [0, -2, True, 2.0])
def test_num_groups_must_be_a_positive_int(g):
    with pytest.raises(ConfigError, match="num_groups") as excinfo:
        normlab.GroupNorm(8, num_groups=g)
    check(excinfo, ConfigError)


def test_group_size_must_divide_num_features():
    with pytest.raises(ConfigError, match="group_size") as excinfo:
        normlab.GroupNorm(10, group_size=4)
    msg = check(excinfo, ConfigError)
    assert "10" in msg
    assert "4" in msg


def test_num_groups_and_group_size_are_exclusive():
    with pytest.raises(ConfigError) as excinfo:
        normlab.GroupNorm(8, num_groups=2, group_size=4)
    msg = check(excinfo, ConfigError)
    assert "num_groups" in msg
    assert "group_size" in msg


@pytest.mark.parametrize(
    ("eps", "shown"),
    [(0.0, "0.0"), (-0.5, "-0.5"), (math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")],
)
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_eps_must_be_positive_and_finite(name, eps, shown):
    pattern = rf"eps must be a positive finite float; got {re.escape(shown)}"
    with pytest.raises(ConfigError, match=pattern) as excinfo:
        CLASSES[name](8, eps=eps)
    check(excinfo, ConfigError)


def test_rms_norm_eps_none_is_allowed():
    m = normlab.RMSNorm(8, eps=None)
    y = m(torch.randn(2, 8))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("momentum", "shown"), [(-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan")])
@pytest.mark.parametrize("name", sorted(MOMENTUM_CLASSES))
def test_momentum_must_be_in_unit_interval(name, momentum, shown):
    pattern = rf"momentum must be in \[0, 1\] or None; got {re.escape(shown)}"
    with pytest.raises(ConfigError, match=pattern) as excinfo:
        MOMENTUM_CLASSES[name](8, momentum=momentum)
    check(excinfo, ConfigError)


@pytest.mark.parametrize("momentum", [0.0, 1.0, None, 0.3])
@pytest.mark.parametrize("name", sorted(MOMENTUM_CLASSES))
def test_valid_momentum_is_accepted(name, momentum):
    m = MOMENTUM_CLASSES[name](8, momentum=momentum)
    assert m.momentum == momentum


# ----------------------------------------------------------------------------- forward inputs

FORWARD = {
    "BatchNorm": lambda c, **kw: normlab.BatchNorm(c, **kw),
    "LayerNorm": lambda c, **kw: normlab.LayerNorm(c, **kw),
    "LayerNorm(per_position)": lambda c, **kw: normlab.LayerNorm(c, per_position=True, **kw),
    "InstanceNorm": lambda c, **kw: normlab.InstanceNorm(c, **kw),
    "GroupNorm": lambda c, **kw: normlab.GroupNorm(c, num_groups=4, **kw),
    "RMSNorm": lambda c, **kw: normlab.RMSNorm(c, **kw),
}


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_wrong_channel_count_names_shapes_and_suggests_channel_dim(name, affine):
    m = FORWARD[name](64, affine=affine)
    x = torch.randn(8, 16, 16, 64)  # NHWC fed to an NCHW layer
    with pytest.raises(InputError) as excinfo:
        m(x)
    msg = check(excinfo, InputError)
    assert "(N, 64, *S)" in msg, msg
    assert "(8, 16, 16, 64)" in msg, msg
    assert "channel_dim=-1" in msg, msg


def test_wrong_channel_count_message_names_the_layer():
    with pytest.raises(InputError) as excinfo:
        normlab.BatchNorm(64)(torch.randn(8, 16, 16, 64))
    msg = check(excinfo, InputError)
    assert "BatchNorm" in msg
    assert "channels at dim 1" in msg


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_wrong_channel_count_channels_last(name, affine):
    m = FORWARD[name](64, affine=affine, channel_dim=-1)
    x = torch.randn(8, 64, 16, 16)  # NCHW fed to a channels-last layer
    with pytest.raises(InputError) as excinfo:
        m(x)
    msg = check(excinfo, InputError)
    assert "(8, 64, 16, 16)" in msg, msg
    assert "64" in msg
    assert "channel_dim" in msg, msg


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_wrong_channel_count_not_fixed_by_channel_dim(name):
    m = FORWARD[name](64)
    with pytest.raises(InputError) as excinfo:
        m(torch.randn(4, 32, 5))
    msg = check(excinfo, InputError)
    assert "(4, 32, 5)" in msg
    assert "64" in msg


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_rank_one_input_is_rejected(name):
    m = FORWARD[name](4)
    with pytest.raises(InputError) as excinfo:
        m(torch.randn(4))
    msg = check(excinfo, InputError)
    assert re.search(r"(?i)\(N, 4|rank|ndim|dimension|>= ?2", msg), msg


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_non_float_input_is_rejected(name, dtype):
    m = FORWARD[name](4)
    x = torch.ones(3, 4, 5, dtype=dtype)
    with pytest.raises(InputError) as excinfo:
        m(x)
    msg = check(excinfo, InputError)
    assert re.search(r"(?i)dtype|floating|float", msg), msg
    assert str(dtype).replace("torch.", "") in msg, msg


# ------------------------------------------------------------------- 1 value per statistic

SINGLE_VALUE_CASES = {
    "BatchNorm N=1 no spatial": (lambda: normlab.BatchNorm(4), (1, 4)),
    "BatchNorm N=1 1x1": (lambda: normlab.BatchNorm(4), (1, 4, 1, 1)),
    "InstanceNorm 1x1": (lambda: normlab.InstanceNorm(4), (3, 4, 1, 1)),
    "InstanceNorm rank 2": (lambda: normlab.InstanceNorm(4), (3, 4)),
    "GroupNorm C/G=1 no spatial": (lambda: normlab.GroupNorm(4, num_groups=4), (3, 4)),
    "GroupNorm C/G=1 1x1": (lambda: normlab.GroupNorm(6, group_size=1), (2, 6, 1)),
    "LayerNorm C=1 no spatial": (lambda: normlab.LayerNorm(1), (5, 1)),
}


@pytest.mark.parametrize("case", sorted(SINGLE_VALUE_CASES))
def test_training_with_one_value_per_statistic(case):
    make, shape = SINGLE_VALUE_CASES[case]
    m = make().train()
    with pytest.raises(InputError, match="1 value per statistic") as excinfo:
        m(torch.randn(shape))
    check(excinfo, InputError)


def test_batch_norm_single_value_message_suggests_fixes():
    m = normlab.BatchNorm(4).train()
    with pytest.raises(InputError) as excinfo:
        m(torch.randn(1, 4))
    msg = check(excinfo, InputError)
    assert "1 value per statistic" in msg
    assert "drop_last" in msg
    assert "eval" in msg
    assert "GroupNorm" in msg


def test_batch_norm_single_value_error_leaves_buffers_untouched():
    m = normlab.BatchNorm(4).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(InputError):
        m(torch.randn(1, 4))
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_eval_batch_norm_with_batch_of_one_works():
    m = normlab.BatchNorm(4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.running_mean.copy_(torch.randn(4, generator=g))
        m.running_var.copy_(torch.rand(4, generator=g) + 0.5)
        m.weight.copy_(torch.randn(4, generator=g))
        m.bias.copy_(torch.randn(4, generator=g))
    m.eval()
    x = torch.randn(1, 4, generator=g)
    y = m(x)
    scale = m.weight / torch.sqrt(m.running_var + m.eps)
    expected = (x - m.running_mean) * scale + m.bias
    torch.testing.assert_close(y, expected.detach())
    y1 = m(torch.randn(1, 4, 1, 1, generator=g))
    assert y1.shape == (1, 4, 1, 1)
    assert torch.isfinite(y1).all()


def test_per_sample_norms_accept_batch_of_one_in_training():
    x = torch.randn(1, 8, 5)
    for m in (
        normlab.LayerNorm(8),
        normlab.InstanceNorm(8),
        normlab.GroupNorm(8, num_groups=2),
        normlab.RMSNorm(8),
        normlab.LayerNorm(8, per_position=True),
    ):
        y = m.train()(x)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
