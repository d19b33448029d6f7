"""Cosine Normalization (Luo et al. 2017, arXiv:1702.05870): float64 oracles written from the
paper's cosine (explicit patches and sums, not normlab's norm-by-convolution), the bound, the
scale invariance, zero inputs, the output-layer pitfall and bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import normlab
from normlab.errors import ConfigError, InputError
from normlab.functional import cosine_conv2d, cosine_linear

D = torch.float64


def _cos(w: list[float], x: list[float], centered: bool = False) -> float:
    """cos(w, x) (or the Pearson correlation) from its definition."""
    if centered:
        mw, mx = sum(w) / len(w), sum(x) / len(x)
        w, x = [v - mw for v in w], [v - mx for v in x]
    dot = sum(a * b for a, b in zip(w, x, strict=True))
    norm = math.sqrt(sum(a * a for a in w)) * math.sqrt(sum(b * b for b in x))
    return dot / norm if norm else 0.0


def linear_oracle(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    out = torch.empty(x.shape[0], w.shape[0], dtype=D)
    for n, o in itertools.product(range(x.shape[0]), range(w.shape[0])):
        wv, xv = w[o].tolist(), x[n].tolist()
        if b is not None:  # augmented vectors [w; b], [x; 1]
            wv, xv = [*wv, b[o].item()], [*xv, 1.0]
        out[n, o] = _cos(wv, xv)
    return out


def conv_oracle(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: int, padding: int,
    dilation: int, groups: int, centered: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Cosine of each filter with each receptive-field patch, patches cut out by index."""
    xp = F.pad(x, (padding,) * 4)
    n_, c_out, kh, kw = x.shape[0], w.shape[0], w.shape[2], w.shape[3]
    cin_g, cout_g = w.shape[1], c_out // groups
    h_out = (xp.shape[2] - dilation * (kh - 1) - 1) // stride + 1
    w_out = (xp.shape[3] - dilation * (kw - 1) - 1) // stride + 1
    out = torch.empty(n_, c_out, h_out, w_out, dtype=D)
    for n, o, i, j in itertools.product(range(n_), range(c_out), range(h_out), range(w_out)):
        g = o // cout_g
        rows = slice(i * stride, i * stride + dilation * (kh - 1) + 1, dilation)
        cols = slice(j * stride, j * stride + dilation * (kw - 1) + 1, dilation)
        patch = xp[n, g * cin_g : (g + 1) * cin_g, rows, cols].flatten().tolist()
        wv = w[o].flatten().tolist()
        if centered:
            mw, mp = sum(wv) / len(wv), sum(patch) / len(patch)
            wv, patch = [v - mw for v in wv], [v - mp for v in patch]
        if b is not None:
            wv, patch = [*wv, b[o].item()], [*patch, 1.0]
        out[n, o, i, j] = _cos(wv, patch)
    return out


@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_cosine_oracle(bias: bool) -> None:
    layer = normlab.CosineLinear(7, 5, bias=bias, dtype=D)
    x = torch.randn(4, 7, dtype=D)
    expected = linear_oracle(x, layer.weight.detach(), layer.bias)
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


def test_centered_linear_is_pearson_correlation() -> None:
    layer = normlab.CosineLinear(6, 3, bias=False, centered=True, dtype=D)
    x = torch.randn(5, 6, dtype=D) + 3.0
    expected = torch.tensor(
        [[_cos(w.tolist(), v.tolist(), centered=True) for w in layer.weight] for v in x], dtype=D
    )
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "bias", "centered"),
    [(1, 0, 1, 1, False, False), (2, 1, 1, 1, True, False), (1, 2, 2, 2, True, False),
     (1, 1, 1, 2, False, True), (2, 1, 1, 1, True, True)],
)  # fmt: skip
def test_conv_matches_patch_oracle(
    stride: int, padding: int, dilation: int, groups: int, bias: bool, centered: bool
) -> None:
    conv = normlab.CosineConv2d(4, 6, 3, stride, padding, dilation, groups, bias=bias,
                                centered=centered, dtype=D)  # fmt: skip
    x = torch.randn(2, 4, 7, 6, dtype=D)
    expected = conv_oracle(x, conv.weight.detach(), conv.bias, stride, padding, dilation, groups,
                           centered)  # fmt: skip
    torch.testing.assert_close(conv(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding", [0, "same"])
def test_centered_conv_keeps_float32_accuracy_on_a_large_offset(padding: object) -> None:
    """Patches of 1000 + N(0, 1): the centered patch norm must not cancel in float32 (a
    one-pass Σp² − (Σp)²/n loses every significant digit of the variance there)."""
    conv = normlab.CosineConv2d(3, 4, 3, padding=padding, dilation=2, centered=True, bias=False)
    x = torch.randn(2, 3, 9, 8, dtype=D) + 1000.0
    pad = 2 if padding == "same" else 0
    w = conv.weight.detach().to(D)
    if padding == "same":  # zero padding inside the oracle: patches at the border hold zeros
        expected = conv_oracle(x, w, None, 1, pad, 2, 1, centered=True)
    else:
        expected = conv_oracle(x, w, None, 1, 0, 2, 1, centered=True)
    torch.testing.assert_close(conv(x.float()).double(), expected, rtol=2e-3, atol=2e-3)


def test_output_is_bounded_by_one() -> None:
    layer = normlab.CosineLinear(16, 8)
    x = torch.cat([torch.randn(64, 16) * 100, layer.weight.detach() * 3, -layer.weight.detach()])
    assert layer(x).abs().max() <= 1 + 1e-6  # Cauchy–Schwarz, up to float32 rounding
    conv = normlab.CosineConv2d(3, 8, 3, padding=1, centered=True)
    assert conv(torch.randn(4, 3, 9, 9) * 50 + 7).abs().max() <= 1 + 1e-6


def test_scale_invariance_in_weight_and_input_is_exact() -> None:
    x = torch.randn(3, 5, dtype=D)
    w, b = torch.randn(4, 5, dtype=D), torch.randn(4, dtype=D)
    base = cosine_linear(x, w)
    torch.testing.assert_close(cosine_linear(7.5 * x, 0.02 * w), base, rtol=1e-14, atol=1e-14)
    # with a bias, [w; b] scales as one vector (x's augmenting 1 is fixed)
    torch.testing.assert_close(cosine_linear(x, 3 * w, 3 * b), cosine_linear(x, w, b),
                               rtol=1e-14, atol=1e-14)  # fmt: skip
    xc, wc = torch.randn(2, 3, 6, 6, dtype=D), torch.randn(5, 3, 3, 3, dtype=D)
    scaled = cosine_conv2d(4 * xc, 0.1 * wc, padding=1)
    torch.testing.assert_close(scaled, cosine_conv2d(xc, wc, padding=1), rtol=1e-13, atol=1e-13)


def test_zero_input_gives_zero_and_finite_gradients() -> None:
    layer = normlab.CosineLinear(4, 3, bias=False)
    x = torch.zeros(2, 4, requires_grad=True)
    y = layer(x)
    assert torch.equal(y, torch.zeros(2, 3))
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    conv = normlab.CosineConv2d(2, 3, 3, padding=1, bias=False, centered=True)
    xc = torch.zeros(1, 2, 4, 4, requires_grad=True)
    yc = conv(xc)
    assert torch.equal(yc, torch.zeros_like(yc))
    yc.sum().backward()
    assert torch.isfinite(xc.grad).all() and torch.isfinite(conv.weight.grad).all()


def test_zero_input_with_bias_gives_the_augmented_cosine() -> None:
    # cos([w; b], [0; 1]) = b/sqrt(|w|² + b²)
    w, b = torch.tensor([[3.0, 0.0]]), torch.tensor([4.0])
    assert torch.equal(cosine_linear(torch.zeros(1, 2), w, b), torch.tensor([[0.8]]))


def test_gradcheck() -> None:
    x = torch.randn(3, 4, dtype=D, requires_grad=True)
    w, b = torch.randn(2, 4, dtype=D, requires_grad=True), torch.randn(2, dtype=D)
    assert torch.autograd.gradcheck(lambda *a: cosine_linear(*a, centered=True), (x, w, b))
    xc = torch.randn(1, 2, 4, 4, dtype=D, requires_grad=True)
    wc = torch.randn(2, 1, 2, 2, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: cosine_conv2d(a, c, padding=1, groups=2),
                                    (xc, wc))  # fmt: skip


def test_functional_equals_module_and_train_equals_eval() -> None:
    conv = normlab.CosineConv2d(4, 4, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 8, 8)
    expected = cosine_conv2d(x, conv.weight, conv.bias, stride=2, padding=1, groups=2)
    assert torch.equal(conv.train()(x), expected) and torch.equal(conv.eval()(x), expected)
    layer = normlab.CosineLinear(5, 2)
    xl = torch.randn(3, 2, 5)  # any leading dims
    assert torch.equal(layer(xl), cosine_linear(xl, layer.weight, layer.bias))


def test_state_dict_interoperates_with_torch_layers() -> None:
    plain = torch.nn.Conv2d(3, 4, 3, padding=1)
    conv = normlab.CosineConv2d(3, 4, 3, padding=1)
    conv.load_state_dict(plain.state_dict())
    assert torch.equal(conv.weight, plain.weight)
    torch.nn.Linear(5, 2).load_state_dict(normlab.CosineLinear(5, 2).state_dict())


def test_cosine_output_layer_caps_confidence() -> None:
    # the documented pitfall: logits in [−1, 1] bound the loss below by log(1 + (K − 1)e^−2);
    # the same head with its logits scaled by 10 (not in the paper) fits far below it.
    k = 10
    floor = math.log(1 + (k - 1) * math.exp(-2))
    losses = []
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        head = normlab.CosineLinear(32, k, bias=False)
        x, target = torch.randn(16, 32), torch.arange(16) % k
        opt = torch.optim.Adam(head.parameters(), lr=0.1)
        for _ in range(60):
            opt.zero_grad()
            loss = F.cross_entropy(scale * head(x), target)
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert losses[0] >= floor
    assert losses[1] < floor / 4


@pytest.mark.parametrize(
    ("make", "x", "match"),
    [
        (lambda: normlab.CosineLinear(4, 2), torch.randn(3, 5), r"shape \(\*, 4\); got \(3, 5\)"),
        (lambda: normlab.CosineLinear(4, 2), torch.ones(3, 4, dtype=torch.long), "torch.int64"),
        (lambda: normlab.CosineConv2d(3, 2, 3), torch.randn(3, 5, 5), r"\(N, 3, H, W\)"),
        (lambda: normlab.CosineConv2d(3, 2, 3), torch.randn(1, 4, 5, 5), r"got \(1, 4, 5, 5\)"),
    ],
)
def test_bad_input_is_an_input_error(make: object, x: torch.Tensor, match: str) -> None:
    with pytest.raises(InputError, match=match):
        make()(x)  # type: ignore[operator]


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"padding_mode='reflect' is not supported"):
        normlab.CosineConv2d(3, 2, 3, padding_mode="reflect")
    with pytest.raises(ConfigError, match=r"in_channels \(3\) .* divisible by groups \(2\)"):
        normlab.CosineConv2d(3, 2, 3, groups=2)
    with pytest.raises(ConfigError, match=r"eps must be a positive finite float; got 0"):
        normlab.CosineLinear(3, 2, eps=0)
    with pytest.raises(ConfigError, match=r"in_features must be a positive int; got 0"):
        normlab.CosineLinear(0, 2)
    with pytest.raises(InputError, match=r"weight=.*\(out_features, in_features\)"):
        cosine_linear(torch.ones(2, 3), torch.ones(3))
