"""Specs that fit whole models: ``gn:max32`` / ``gn:size16`` (GroupNorm whose groups fit every
channel count), ``ln:per_position`` (ConvNeXt's LN), and how ``normlab describe`` shows them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab
from normlab import errors, registry
from normlab.cli import main
from normlab.surgery import convert, convert_with_report

MOBILENET_V3_CHANNELS = (16, 24, 40, 48, 96, 576)


def mobilenet_v3_like() -> nn.Sequential:
    """Conv + BN + Hardswish blocks with MobileNetV3-small's channel counts."""
    layers: list[nn.Module] = []
    c_in = 3
    for c in MOBILENET_V3_CHANNELS:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.Hardswish()]
        c_in = c
    return nn.Sequential(*layers)


def test_gn_max_fits_every_layer() -> None:
    new, report = convert_with_report(mobilenet_v3_like(), "gn:max32")
    assert len(report) == len(MOBILENET_V3_CHANNELS)
    groups = [m.num_groups for m in new.modules() if isinstance(m, normlab.GroupNorm)]
    assert groups == [16, 24, 20, 24, 32, 32]  # the largest divisor of C up to 32
    assert new(torch.randn(2, 3, 8, 8)).shape == (2, 576, 8, 8)


def test_gn_strict_spec_stays_strict_and_points_to_max() -> None:
    with pytest.raises(errors.ConfigError) as info:
        convert(mobilenet_v3_like(), "gn:32")
    text = str(info.value)
    assert "num_features (16) must be divisible by num_groups (32)" in text
    assert "'gn:max32'" in text and "skip='1'" in text


def test_gn_size_spec() -> None:
    layer = registry.create("gn:size8", 48)
    assert layer.num_groups == 6
    assert registry.create("gn:max32", 40).num_groups == 20
    with pytest.raises(errors.ConfigError, match=r"divisible by group_size \(16\).*'gn:max1'"):
        registry.create("gn:size16", 24)
    with pytest.raises(errors.ConfigError, match="not several"):
        normlab.GroupNorm(64, num_groups=8, max_groups=32)


def test_ln_per_position_spec() -> None:
    layer = normlab.factory("ln:per_position")(8)
    assert layer.per_position is True and registry.create("ln", 8).per_position is False
    x = torch.randn(2, 8, 3, 3)
    expected = nn.functional.layer_norm(x.movedim(1, -1), (8,)).movedim(-1, 1)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gn:mx32", r"'mx32' is none of 'group_norm''s forms: .*'group_norm:max<G>'"),
        ("gn:max", r"'max' is none of"),
        ("ln:4", r"'4' is none of 'layer_norm''s forms: .*'layer_norm:per_position'"),
        ("bn:4", r"'batch_norm' takes no ':value' argument"),
    ],
)
def test_bad_spec_forms_list_the_valid_ones(spec: str, match: str) -> None:
    with pytest.raises(errors.ConfigError, match=match):
        normlab.factory(spec)


def test_describe_lists_the_forms(capsys: pytest.CaptureFixture[str]) -> None:
    main(["describe", "gn"])
    out = capsys.readouterr().out
    assert "'group_norm:<num_groups>' sets num_groups: strict" in out
    assert "'group_norm:max<G>' sets max_groups: the largest divisor of C" in out
    assert "'group_norm:size<S>' sets group_size" in out
    main(["describe", "ln"])
    out = capsys.readouterr().out
    assert "'layer_norm': LN over (C, *S), one statistic per sample" in out
    assert "'layer_norm:per_position' sets per_position=True: LN over C alone" in out


def test_timm_mobilenetv3_with_gn_max() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilenetv3_small_100", pretrained=False).eval()
    new, report = convert_with_report(model, "gn:max32")
    assert len(report) == 34
    assert not any("BatchNorm" in type(m).__name__ for m in new.modules())
    assert new(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
