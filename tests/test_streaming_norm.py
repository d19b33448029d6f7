"""StreamingNorm's own tests: online training at batch size 1 where BatchNorm refuses, eval
equal to the training normalization after the stream, windows of several steps replayed
against the float64 oracle (outputs, gradients, buffers), and the configuration errors."""

from __future__ import annotations

import pytest
import torch

import normlab
import oracles_streaming as ref
from catalogue import close, make_input
from normlab.errors import ConfigError

F64 = torch.float64
BUFFERS = (
    "running_mean",
    "running_var",
    "num_batches_tracked",
    "short_mean",
    "short_var",
    "short_steps",
)


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: getattr(m, k).detach().clone() for k in BUFFERS}


def test_trains_online_at_batch_size_1_where_batch_norm_refuses() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(1, 8)
    with pytest.raises(ValueError, match=r"1 value|more than 1"):
        torch.nn.BatchNorm1d(8).train()(x0)
    with pytest.raises(ValueError):
        normlab.BatchNorm(8).train()(x0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16),
        normlab.StreamingNorm(16, window=4),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 1),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    target = torch.randn(4, 1)
    data = torch.randn(64, 4)
    labels = data @ target
    losses = []
    for _epoch in range(6):
        total = 0.0
        for i in range(64):  # one sample per step: online learning
            loss = (model(data[i : i + 1]) - labels[i : i + 1]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / 64)
    assert losses[-1] < 0.6 * losses[0], losses
    norm = model[1]
    assert int(norm.num_batches_tracked) == 6 * 64
    norm = normlab.StreamingNorm(8, window=4)  # a fresh layer on (1, C) input
    for _ in range(5):
        norm(torch.randn(1, 8))
    # after the stream: eval normalizes the last sample exactly as its training step did
    norm.train()
    last = torch.randn(1, 8)
    y_train = norm(last)
    norm.eval()
    close(norm(last), y_train, 1e-6)


@pytest.mark.parametrize("momentum", [0.1, None], ids=str)
@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_stream_replayed_against_the_oracle(momentum: float | None, alpha: float) -> None:
    """Window 3 over 7 steps (two restarts) of varying batch sizes, batch size 1 included:
    outputs, input and affine gradients, every buffer, then eval, all to 1e-10."""
    m = normlab.StreamingNorm(5, window=3, alpha=alpha, momentum=momentum, dtype=F64).train()
    torch.nn.init.normal_(m.weight)
    torch.nn.init.normal_(m.bias)
    state = _state(m)
    for step in range(7):
        x = make_input((1 + step % 3, 5, 4), F64, seed=40 + step).requires_grad_()
        xo = x.detach().clone().requires_grad_()
        w = m.weight.detach().clone().requires_grad_()
        g = torch.randn(x.shape, dtype=F64, generator=torch.Generator().manual_seed(step))
        m.zero_grad()
        y = m(x)
        y.backward(g)
        expected = ref.streaming_norm_ref(
            xo, w, m.bias, state, training=True, alpha=alpha, window=3, momentum=momentum, eps=m.eps
        )
        expected.backward(g)
        close(y, expected, 1e-10, msg=f"output at step {step}")
        close(x.grad, xo.grad, 1e-10, msg=f"input gradient at step {step}")
        close(m.weight.grad, w.grad, 1e-10, msg=f"weight gradient at step {step}")
        state = ref.streaming_step_ref(state, x.detach(), alpha=alpha, window=3, momentum=momentum)
        for key in BUFFERS:
            close(getattr(m, key).to(F64), state[key].to(F64), 1e-10, msg=f"{key} @ {step}")
    x = make_input((2, 5, 4), F64, seed=99)
    expected = ref.streaming_norm_ref(
        x,
        m.weight,
        m.bias,
        state,
        training=False,
        alpha=alpha,
        window=3,
        momentum=momentum,
        eps=m.eps,
    )
    close(m.eval()(x), expected, 1e-10, msg="eval")


def test_eval_before_any_step_uses_the_long_term_statistics() -> None:
    m = normlab.StreamingNorm(3, affine=False, dtype=F64).eval()
    x = make_input((2, 3), F64, seed=1)
    close(m(x), x / (1 + m.eps) ** 0.5, 1e-12)


def test_functional_gradcheck_mid_window() -> None:
    """Pure functional, buffers in the middle of a window: gradcheck and gradgradcheck."""
    gen = torch.Generator().manual_seed(3)
    rm, rs = torch.randn(4, dtype=F64, generator=gen), torch.randn(4, dtype=F64, generator=gen)
    rv, sv = torch.rand(4, dtype=F64, generator=gen) + 0.5, torch.rand(4, dtype=F64) + 0.5
    steps, tracked = torch.tensor(5), torch.tensor(9)
    x = make_input((2, 4, 3), F64, seed=5).requires_grad_()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return normlab.functional.streaming_norm(
            x, rm, rv, rs, sv, steps, tracked, training=True, window=4, alpha=0.3
        )

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_alpha(alpha: object) -> None:
    with pytest.raises(ConfigError, match=r"alpha must be in \[0, 1\]; got"):
        normlab.StreamingNorm(4, alpha=alpha)  # type: ignore[arg-type]


@pytest.mark.parametrize("window", [0, -2, 1.5, None, True])
def test_bad_window(window: object) -> None:
    with pytest.raises(ConfigError, match=r"window must be a positive int; got"):
        normlab.StreamingNorm(4, window=window)  # type: ignore[arg-type]


def test_bad_short_state_is_refused_on_load() -> None:
    m = normlab.StreamingNorm(3)
    state = m.state_dict()
    state["short_var"] = torch.tensor([1.0, -1.0, 1.0])
    with pytest.raises(ConfigError, match="short_var"):
        m.load_state_dict(state)
    state = m.state_dict()
    state["short_steps"] = torch.tensor(-1)
    with pytest.raises(ConfigError, match="short_steps"):
        m.load_state_dict(state)
