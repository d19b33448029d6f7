"""Mean-only batch normalization beyond the catalogue: the paper's centered gradient, the exact
running-mean law, the bias-only parameter set, and its pairing with weight norm (§4).

Oracles are float64, from tests/oracles_weight_norm.py or closed forms.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab
import normlab.functional as NF
from normlab import MeanOnlyBatchNorm
from normlab.errors import ConfigError, InputError
from oracles_weight_norm import channel_mean, mean_only_batch_norm_ref

F64 = torch.float64


def test_parameters_are_a_bias_only_by_default() -> None:
    m = MeanOnlyBatchNorm(5)
    assert [name for name, _ in m.named_parameters()] == ["bias"]
    assert m.weight is None and not m.affine
    assert MeanOnlyBatchNorm(5, bias=False).bias is None
    assert "bias=False" in repr(MeanOnlyBatchNorm(5, bias=False))
    assert {n for n, _ in MeanOnlyBatchNorm(5, affine=True).named_parameters()} == {
        "weight",
        "bias",
    }


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bias_free_layer_matches_oracle(training: bool) -> None:
    m = MeanOnlyBatchNorm(4, bias=False).double().train(training)
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    x = torch.randn(3, 4, 5, dtype=F64) * 2 + 3
    expected = mean_only_batch_norm_ref(x, m.running_mean, None, training=training)
    torch.testing.assert_close(m(x), expected, rtol=1e-13, atol=1e-13)


def test_output_has_zero_batch_mean_plus_bias_and_keeps_the_scale() -> None:
    m = MeanOnlyBatchNorm(3).double().train()
    with torch.no_grad():
        m.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    x = torch.randn(8, 3, 4, 4, dtype=F64) * torch.tensor([1.0, 5.0, 0.1], dtype=F64).view(
        1, 3, 1, 1
    )
    y = m(x)
    for c in range(3):
        torch.testing.assert_close(channel_mean(y, c), m.bias[c].detach(), rtol=0, atol=1e-13)
        torch.testing.assert_close(y[:, c].std(), x[:, c].std(), rtol=1e-13, atol=0)


def test_gradient_is_the_centered_gradient() -> None:
    """∂L/∂t = ∂L/∂t̃ − mean_B(∂L/∂t̃) per channel (§4); ∂L/∂b = Σ ∂L/∂t̃."""
    m = MeanOnlyBatchNorm(3).double().train()
    x = torch.randn(4, 3, 5, dtype=F64, requires_grad=True)
    upstream = torch.randn(4, 3, 5, dtype=F64)
    m(x).backward(upstream)
    for c in range(3):
        expected = upstream[:, c] - channel_mean(upstream, c)
        torch.testing.assert_close(x.grad[:, c], expected, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(m.bias.grad[c], upstream[:, c].sum(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("affine", [False, True], ids=["bias", "affine"])
@pytest.mark.parametrize("shape", [(4, 8, 32, 32), (6, 8, 3, 3)], ids=["large", "small"])
def test_training_step_of_the_one_pass_kernel_matches_the_paper(
    shape: tuple[int, ...], affine: bool, layout: str
) -> None:
    """float32 training step on the layer's fast path (above and below the statistics
    kernel's size switch, both memory layouts): y = γ(x − μ_B) + b, ∂L/∂x = γ(dy −
    mean_B(dy)), ∂L/∂γ = Σ dy(x − μ_B), ∂L/∂b = Σ dy and the running buffers, against float64
    sums per channel."""
    torch.manual_seed(0)
    m = MeanOnlyBatchNorm(shape[1], affine=affine)
    with torch.no_grad():
        m.bias.uniform_(-1, 1)
        if affine:
            m.weight.uniform_(0.5, 1.5)
    x = torch.randn(shape) * 2 + 3
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    upstream = torch.randn(shape)
    y = m(x)
    y.backward(upstream)
    dy = upstream.to(F64)
    for c in range(shape[1]):
        gamma = m.weight[c].item() if affine else 1.0
        mu = channel_mean(x.detach(), c)
        centered = x.detach()[:, c].to(F64) - mu
        torch.testing.assert_close(y[:, c].to(F64), gamma * centered + m.bias[c].item(),
                                   rtol=0, atol=2e-6)
        torch.testing.assert_close(x.grad[:, c].to(F64), gamma * (dy[:, c] - channel_mean(dy, c)),
                                   rtol=0, atol=2e-6)
        torch.testing.assert_close(m.bias.grad[c].to(F64), dy[:, c].sum(), rtol=1e-5, atol=1e-5)
        if affine:
            torch.testing.assert_close(m.weight.grad[c].to(F64), (dy[:, c] * centered).sum(),
                                       rtol=1e-5, atol=1e-4)
        var = centered.square().sum() / (centered.numel() - 1)
        torch.testing.assert_close(m.running_mean[c].to(F64), 0.1 * mu, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(m.running_var[c].to(F64), 0.9 + 0.1 * var, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.1, 0.5, None], ids=str)
def test_running_mean_law(momentum: float | None) -> None:
    """momentum m: rm ← (1 − m)·rm + m·μ_B (0.1 is 0.9 old + 0.1 new); None: the plain
    average of the batch means; running_var moves as in BN (unbiased)."""
    m = MeanOnlyBatchNorm(2, momentum=momentum).double().train()
    rm, rv, means = torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), []
    for step in range(1, 5):
        x = torch.randn(3 + step, 2, 3, dtype=F64) + step
        m(x)
        mu = torch.stack([channel_mean(x, c) for c in range(2)])
        n = x.numel() // 2
        uvar = torch.stack([((x[:, c] - mu[c]) ** 2).sum() / (n - 1) for c in range(2)])
        means.append(mu)
        f = momentum if momentum is not None else 1 / step
        rm, rv = (1 - f) * rm + f * mu, (1 - f) * rv + f * uvar
        torch.testing.assert_close(m.running_mean, rm, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(m.running_var, rv, rtol=1e-13, atol=1e-13)
        assert m.num_batches_tracked.item() == step
    if momentum is None:
        torch.testing.assert_close(
            m.running_mean, torch.stack(means).mean(0), rtol=1e-13, atol=1e-13
        )


def test_eval_is_not_batch_norm_eval() -> None:
    m = MeanOnlyBatchNorm(2).eval()
    assert not MeanOnlyBatchNorm.eval_is_batch_norm
    with torch.no_grad():
        m.running_var.fill_(4.0)
    x = torch.randn(3, 2)
    torch.testing.assert_close(m(x), x - m.running_mean + m.bias)  # no 1/sqrt(4 + eps)


def test_non_finite_batch_leaves_the_statistics_alone() -> None:
    m = MeanOnlyBatchNorm(2).train()
    m(torch.randn(4, 2))
    before = {k: v.clone() for k, v in m.named_buffers()}
    x = torch.randn(4, 2)
    x[0, 1] = float("inf")
    m(x)
    for key, value in m.named_buffers():
        assert torch.equal(value, before[key]), key


def test_weight_norm_with_mean_only_bn_after_init_standardizes() -> None:
    """The paper's CNN recipe: conv with weight norm, then mean-only BN, after the
    data-dependent init: unit variance and zero mean on the init batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), MeanOnlyBatchNorm(6), nn.ReLU())
    model = normlab.parametrize(model.double(), "weight_norm")
    x = torch.randn(32, 3, 8, 8, dtype=F64) + 1
    normlab.init_weight_norm_(model, x)
    assert torch.equal(model[1].running_mean, torch.zeros(6, dtype=F64))  # not disturbed
    assert model[1].num_batches_tracked.item() == 0
    y = model[1](model[0](x))
    for c in range(6):
        torch.testing.assert_close(
            channel_mean(y, c), torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0
        )
        var = ((y[:, c] - channel_mean(y, c)) ** 2).mean()
        torch.testing.assert_close(var, torch.tensor(1.0, dtype=F64), rtol=1e-6, atol=0)


def test_bad_input() -> None:
    with pytest.raises(ConfigError, match="momentum must be in"):
        MeanOnlyBatchNorm(3, momentum=2.0)
    with pytest.raises(InputError, match="MeanOnlyBatchNorm"):
        MeanOnlyBatchNorm(3)(torch.randn(2, 4))
    with pytest.raises(InputError, match=r"holds 1 value per statistic .* \(1, 3\)"):
        MeanOnlyBatchNorm(3).train()(torch.randn(1, 3))
    with pytest.raises(InputError, match="mean_only_batch_norm"):
        NF.mean_only_batch_norm(torch.randn(2, 4), torch.zeros(3))
    y = MeanOnlyBatchNorm(3)(torch.randn(0, 3, 2))  # an empty batch: no statistic moves
    assert y.shape == (0, 3, 2)
