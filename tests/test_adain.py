"""AdaIN's own tests: the paper's claims, per-call styles, masks, set_style and its errors.

The catalogue (cases_adain.py) covers the stored-style layer; here the style is a tensor.
"""

from __future__ import annotations

import pytest
import torch

import normlab
import normlab.functional as NF
from catalogue import close, make_input
from normlab.errors import ConfigError, InputError
from oracles_adain import adain_ref, style_stats_ref

F64 = torch.float64


def _pair(n_style: int = 2, dtype: torch.dtype = F64) -> tuple[torch.Tensor, torch.Tensor]:
    content = make_input((2, 4, 5, 6), dtype, seed=1)
    style = make_input((n_style, 4, 7, 3), dtype, seed=2) * 3.0 + 1.5
    return content, style


def _stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = t.to(F64).flatten(2)
    return flat.mean(-1), flat.std(-1, correction=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_output_has_the_styles_mean_and_std(dtype: torch.dtype) -> None:
    """Claim 1: exactly μ(y), and σ(y)·sqrt(σ²_x/(σ²_x + ε)), which is σ(y) for small ε."""
    content, style = _pair(dtype=dtype)
    s_mean, s_std = _stats(style)
    c_var = content.to(F64).flatten(2).var(-1, correction=0)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for eps in (1e-5, 1e-12):
        mean, std = _stats(NF.adain(content, style, eps=eps))
        close(mean, s_mean, tol)
        close(std, s_std * (c_var / (c_var + eps)).sqrt(), tol)
    mean, std = _stats(NF.adain(content, style, eps=1e-12))
    close(std, s_std, tol)  # to 1e-6 (fp32) / 1e-12 (fp64)


@pytest.mark.parametrize("n_style", [1, 2])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_per_call_style_matches_oracle(n_style: int, alpha: float, channel_dim: int) -> None:
    content, style = _pair(n_style)
    s_mean, s_std = style_stats_ref(style)
    expected = adain_ref(content, s_mean, s_std, alpha=alpha)
    if channel_dim == -1:
        content, style = content.movedim(1, -1), style.movedim(1, -1)
    layer = normlab.AdaIN(4, alpha=alpha, channel_dim=channel_dim, dtype=F64)
    for y in (
        layer(content, style),
        NF.adain(content, style, alpha=alpha, channel_dim=channel_dim),
    ):
        close(y.movedim(-1, 1) if channel_dim == -1 else y, expected, 1e-10)


def test_content_equal_to_style_is_nearly_the_identity() -> None:
    """Claim 2: AdaIN(x, x) ≈ x (exactly, up to the content's ε)."""
    x = make_input((2, 4, 6, 5), F64, seed=3)
    close(NF.adain(x, x, eps=1e-14), x, 1e-10)


def test_alpha_zero_returns_the_content() -> None:
    content, style = _pair()
    close(NF.adain(content, style, alpha=0.0), content, 1e-14)


def test_gradients_reach_content_and_style() -> None:
    content, style = _pair()
    content = content[:, :, :3, :3].clone().requires_grad_()
    style = style[:, :, :3, :2].clone().requires_grad_()
    for alpha in (1.0, 0.6):
        assert torch.autograd.gradcheck(
            lambda c, s, a=alpha: NF.adain(c, s, alpha=a), (content, style)
        )
    mask = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(0)) > 0.4
    mask[:, :, 0, 0] = True
    assert torch.autograd.gradcheck(
        lambda c, s: NF.adain(c, s, content_mask=mask, style_mask=mask[:, :, :, :2]),
        (content, style),
    )


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_masks_match_oracle(alpha: float) -> None:
    """Partial style: statistics from the masked positions; the content outside is kept."""
    content, style = _pair()
    gen = torch.Generator().manual_seed(4)
    c_mask = torch.rand(2, 1, 5, 6, generator=gen) > 0.5
    s_mask = torch.rand(7, 3, generator=gen) > 0.3  # one region for every style sample
    s_mean, s_std = style_stats_ref(style, s_mask)
    expected = adain_ref(content, s_mean, s_std, alpha=alpha, content_mask=c_mask)
    y = NF.adain(content, style, alpha=alpha, content_mask=c_mask, style_mask=s_mask)
    close(y, expected, 1e-10)
    assert torch.equal(y[~c_mask.expand_as(y)], content[~c_mask.expand_as(y)])
    last = normlab.AdaIN(4, alpha=alpha, channel_dim=-1, dtype=F64)
    y_last = last(
        content.movedim(1, -1),
        style.movedim(1, -1),
        content_mask=c_mask.movedim(1, -1),
        style_mask=s_mask,
    )
    close(y_last.movedim(-1, 1), expected, 1e-10)


def test_set_style_stores_population_statistics() -> None:
    content, style = _pair(1)
    layer = normlab.AdaIN(4, dtype=F64)
    close(layer(content), NF.instance_norm(content), 1e-12)  # fresh: μ_s = 0, σ_s = 1
    layer.set_style(style)
    s_mean, s_std = style_stats_ref(style)
    close(layer.style_mean, s_mean[0], 1e-12)
    close(layer.style_var, s_std[0] ** 2, 1e-12)
    close(layer(content), layer(content, style), 1e-12)
    mask = torch.zeros(7, 3, dtype=torch.bool)
    mask[:4] = True
    layer.set_style(style, mask=mask)
    close(layer.style_mean, style_stats_ref(style, mask)[0][0], 1e-12)
    assert normlab.create("adain", 4).state_dict().keys() == {"style_mean", "style_var"}


def test_channel_mismatch_is_a_clear_error() -> None:
    content, _ = _pair()
    style = make_input((2, 3, 4, 4), F64, seed=5)
    with pytest.raises(InputError, match=r"style has 3 channels .* content has 4"):
        NF.adain(content, style)
    with pytest.raises(InputError, match=r"style has 3 channels .* content has 4"):
        normlab.AdaIN(4, dtype=F64)(content, style)
    with pytest.raises(InputError, match=r"style has 3 channels .* content has 4"):
        normlab.AdaIN(4).set_style(style[:1])
    with pytest.raises(InputError, match=r"style_mean must have shape \(4,\)"):
        NF.adain_from_stats(content, torch.zeros(3), torch.ones(4))


def test_other_bad_inputs_are_clear_errors() -> None:
    content, style = _pair(2)
    with pytest.raises(InputError, match="style batch of 2 for a content batch of 3"):
        NF.adain(make_input((3, 4, 5, 5), F64), style)
    with pytest.raises(InputError, match="set_style stores one style; got a batch of 2"):
        normlab.AdaIN(4).set_style(style)
    with pytest.raises(InputError, match="content_mask must be a bool tensor"):
        NF.adain(content, style, content_mask=torch.ones(5, 6))
    with pytest.raises(InputError, match=r"style_mask of shape \(2, 2\) does not match"):
        NF.adain(content, style, style_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(InputError, match=r"selects no position in sample\(s\) \[1\]"):
        mask = torch.ones(2, 1, 5, 6, dtype=torch.bool)
        mask[1] = False
        NF.adain(content, style, content_mask=mask)
    with pytest.raises(InputError, match="style_mask given without a style"):
        normlab.AdaIN(4)(content.float(), style_mask=torch.ones(5, 6, dtype=torch.bool))
    with pytest.raises(ConfigError, match=r"alpha must be a number in \[0, 1\]; got 1.5"):
        normlab.AdaIN(4, alpha=1.5)
    with pytest.raises(ConfigError, match="alpha must be"):
        NF.adain(content, style, alpha=float("nan"))
