"""NormLSTM / NormLSTMCell: nn.LSTM parity, BN-LSTM and LN-LSTM against float64 oracles
(tests/oracles_rnn.py), per-step statistics and the reuse rule, padding, errors."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import oracles_rnn as oracle
from normlab.errors import ConfigError, InputError
from normlab.rnn import NormLSTM, NormLSTMCell

F64 = torch.float64


def make(
    norm: str | None, *, layers: int = 2, inp: int = 3, hid: int = 4, **kw: object
) -> NormLSTM:
    """A float64 NormLSTM whose norm parameters are moved off their init (so a swapped γ/β
    or a dropped β shows)."""
    torch.manual_seed(0)
    model = NormLSTM(inp, hid, norm=norm, num_layers=layers, dtype=F64, **kw)  # type: ignore[arg-type]  # test helper passes options through
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm_" in name:
                p.add_(torch.rand_like(p) * 0.5)
    return model


def params(model: NormLSTM) -> list[oracle.LayerParams]:
    """The model's parameters and running buffers, copied, in the oracle's terms."""
    out = []
    for cell in model.cells:
        b = cell.bias_ih.detach() + cell.bias_hh.detach()
        p = oracle.LayerParams(cell.weight_ih.detach().clone(), cell.weight_hh.detach().clone(), b)
        for key, m in (("x", cell.norm_ih), ("h", cell.norm_hh), ("c", cell.norm_c)):
            if m is None:
                continue
            beta = None if m.bias is None else m.bias.detach().clone()
            p.norm[key] = (m.weight.detach().clone(), beta)
            if cell.norm == "bn":
                p.running[key] = oracle.Running(
                    m.running_mean.clone(), m.running_var.clone(), int(m.num_steps_tracked)
                )
        out.append(p)
    return out


def assert_running(model: NormLSTM, ref: list[oracle.LayerParams]) -> None:
    for cell, p in zip(model.cells, ref, strict=True):
        for key, m in (("x", cell.norm_ih), ("h", cell.norm_hh), ("c", cell.norm_c)):
            run = p.running[key]
            torch.testing.assert_close(m.running_mean, run.mean, atol=1e-10, rtol=0)
            torch.testing.assert_close(m.running_var, run.var, atol=1e-10, rtol=0)
            assert int(m.num_steps_tracked) == run.tracked


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, atol=tol, rtol=0)


# -- norm=None is torch.nn.LSTM --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_none_matches_nn_lstm(dtype: torch.dtype, batch_first: bool, with_state: bool) -> None:
    torch.manual_seed(1)
    ref = torch.nn.LSTM(5, 6, num_layers=2, batch_first=batch_first).to(dtype)
    model = NormLSTM.from_lstm(ref, norm=None)
    x = torch.randn((4, 7, 5) if batch_first else (7, 4, 5), dtype=dtype)
    hx = (torch.randn(2, 4, 6, dtype=dtype), torch.randn(2, 4, 6, dtype=dtype))
    hx_arg = hx if with_state else None
    out_r, (h_r, c_r) = ref(x, hx_arg)
    out, (h, c) = model(x, hx_arg)
    for a, b in ((out, out_r), (h, h_r), (c, c_r)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    (out_r.sum() + h_r.sum() + c_r.sum()).backward()
    (out.sum() + h.sum() + c.sum()).backward()
    for k, cell in enumerate(model.cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            g_ref = getattr(ref, f"{name}_l{k}").grad
            torch.testing.assert_close(getattr(cell, name).grad, g_ref, atol=1e-5, rtol=1e-5)


def test_none_matches_nn_lstm_on_packed_and_lengths() -> None:
    torch.manual_seed(2)
    ref = torch.nn.LSTM(5, 6, num_layers=2)
    model = NormLSTM.from_lstm(ref, norm=None)
    x, lengths = torch.randn(6, 4, 5), [6, 2, 4, 2]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_r, (h_r, c_r) = ref(packed)
    out, (h, c) = model(packed)
    assert isinstance(out, PackedSequence)
    torch.testing.assert_close(out.data, out_r.data, atol=1e-6, rtol=0)
    assert torch.equal(out.batch_sizes, out_r.batch_sizes)
    torch.testing.assert_close(h, h_r, atol=1e-6, rtol=0)
    torch.testing.assert_close(c, c_r, atol=1e-6, rtol=0)
    out2, (h2, _) = model(x, lengths=lengths)  # the lengths= form: zero-padded tensor output
    torch.testing.assert_close(out2, pad_packed_sequence(out_r)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(h2, h_r, atol=1e-6, rtol=0)


# -- BN-LSTM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, [5, 2, 4, 3, 4]], ids=["full", "padded"])
def test_bn_training_matches_oracle(lengths: list[int] | None) -> None:
    model = make("bn", max_length=8).train()
    x = torch.randn(5, 5, 3, dtype=F64)
    hx = (torch.randn(2, 5, 4, dtype=F64), torch.randn(2, 5, 4, dtype=F64))
    for _ in range(2):  # the second pass starts from non-trivial running statistics
        ref = params(model)
        out, (h, c) = model(x, hx, lengths=lengths)
        out_o, h_o, c_o = oracle.lstm(ref, x, lengths or [5] * 5, *hx, "bn", training=True)
        close(out, out_o)
        close(h, h_o)
        close(c, c_o)
        assert_running(model, ref)
    tracked = int(model.cells[0].norm_c.num_steps_tracked)
    assert tracked == (5 if lengths is None else 4)  # step 4 runs one sequence: not tracked


def test_bn_eval_matches_oracle_with_the_reuse_rule() -> None:
    model = make("bn", max_length=10).train()
    for _ in range(3):
        model(torch.randn(4, 6, 3, dtype=F64))  # T_max = 4
    assert int(model.cells[1].norm_hh.num_steps_tracked) == 4
    model.eval()
    x = torch.randn(9, 3, 3, dtype=F64)  # longer than training: steps 4..8 reuse slot 3
    ref = params(model)
    out, (h, c) = model(x, lengths=[9, 6, 7])
    out_o, h_o, c_o = oracle.lstm(
        ref,
        x,
        [9, 6, 7],
        torch.zeros(2, 3, 4, dtype=F64),
        torch.zeros(2, 3, 4, dtype=F64),
        "bn",
        training=False,
    )
    close(out, out_o)
    close(h, h_o)
    close(c, c_o)


def test_bn_reuse_rule_pinned() -> None:
    """Eval steps t >= T_max read slot T_max − 1: slots past it are never read, and slot
    T_max − 1 is what every later step sees."""
    model = make("bn", layers=1, max_length=10).train()
    model(torch.randn(3, 6, 3, dtype=F64))  # T_max = 3
    model.eval()
    x = torch.randn(7, 2, 3, dtype=F64)
    base, _ = model(x)
    bns = [model.cells[0].norm_ih, model.cells[0].norm_hh, model.cells[0].norm_c]
    with torch.no_grad():
        for m in bns:
            m.running_mean[3:] = 1e3  # slots nobody trained: must not matter
            m.running_var[3:] = 1e-3
    close(model(x)[0], base, 0.0)
    with torch.no_grad():
        for m in bns:
            m.running_mean[2] += 0.5  # the last trained slot: steps 2..6 all change
    moved, _ = model(x)
    close(moved[:2], base[:2], 0.0)
    assert ((moved[2:] - base[2:]).abs().amax(dim=(1, 2)) > 1e-3).all()
    # the cell, asked for step 6, normalizes as at step 2
    cell, state = model.cells[0], (torch.randn(2, 4, dtype=F64), torch.randn(2, 4, dtype=F64))
    close(cell(x[0], state, step=6)[0], cell(x[0], state, step=2)[0], 0.0)


def test_bn_tracks_at_most_max_length_steps() -> None:
    model = make("bn", layers=1, max_length=3).train()
    ref = params(model)
    x = torch.randn(6, 4, 3, dtype=F64)
    z = torch.zeros(1, 4, 4, dtype=F64)
    out, _ = model(x)
    close(out, oracle.lstm(ref, x, [6] * 4, z, z, "bn", training=True)[0])
    assert_running(model, ref)
    assert int(model.cells[0].norm_ih.num_steps_tracked) == 3


def test_bn_cell_loop_equals_sequence() -> None:
    """NormLSTMCell stepped by hand (step=t) computes and tracks what NormLSTM does."""
    model = make("bn", layers=1).train()
    cell = NormLSTMCell(3, 4, norm="bn", dtype=F64)
    cell.load_state_dict(model.cells[0].state_dict())
    x = torch.randn(5, 4, 3, dtype=F64)
    out, _ = model(x)
    state = None
    for t in range(5):
        state = cell(x[t], state, step=t)
        close(state[0], out[t])
    for a, b in zip(cell.state_dict().values(), model.cells[0].state_dict().values(), strict=True):
        close(a, b)


def test_bn_init_follows_the_paper() -> None:
    cell = NormLSTMCell(3, 4, norm="bn")
    for m in (cell.norm_ih, cell.norm_hh, cell.norm_c):
        assert torch.equal(m.weight, torch.full_like(m.weight, 0.1))
    assert cell.norm_ih.bias is None and cell.norm_hh.bias is None  # β_x = β_h = 0, removed
    assert torch.equal(cell.norm_c.bias, torch.zeros(4))  # β_c learnable, starts at 0
    assert cell.norm_ih.running_mean.shape == (100, 16)  # one slot per step, 4H units


# -- LN-LSTM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths", [None, [5, 2, 5, 3]], ids=["full", "padded"])
@pytest.mark.parametrize("training", [True, False])
def test_ln_matches_oracle(lengths: list[int] | None, training: bool) -> None:
    model = make("ln").train(training)
    x = torch.randn(5, 4, 3, dtype=F64)
    hx = (torch.randn(2, 4, 4, dtype=F64), torch.randn(2, 4, 4, dtype=F64))
    out, (h, c) = model(x, hx, lengths=lengths)
    out_o, h_o, c_o = oracle.lstm(params(model), x, lengths or [5] * 4, *hx, "ln", training)
    close(out, out_o)
    close(h, h_o)
    close(c, c_o)


# -- padding, gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["ln", None, "bn"])
def test_state_stops_at_each_length(norm: str | None) -> None:
    """Past its length a sequence's output is 0 and its final state is the one it had at its
    last step: the same as running it alone, cut to its length (per-sample norms, BN eval)."""
    model = make(norm, batch_first=True).eval()
    x, lengths = torch.randn(3, 6, 3, dtype=F64), [6, 2, 4]
    out, (h, c) = model(x, lengths=lengths)
    for n, length in enumerate(lengths):
        out_n, (h_n, c_n) = model(x[n : n + 1, :length])
        close(out[n, :length], out_n[0], 1e-12)
        assert torch.equal(out[n, length:], torch.zeros_like(out[n, length:]))
        close(h[:, n], h_n[:, 0], 1e-12)
        close(c[:, n], c_n[:, 0], 1e-12)


@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_gradcheck(norm: str) -> None:
    model = make(norm, layers=1, inp=2, hid=2).train()
    x = torch.randn(3, 3, 2, dtype=F64, requires_grad=True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return model(x, lengths=[3, 2, 3])[0]

    assert torch.autograd.gradcheck(f, (x,))


# -- errors ----------------------------------------------------------------------------------


def test_exception() -> None:
    model = NormLSTM(3, 4, norm="bn")
    with pytest.raises(InputError, match=r"lengths\[1\] = 0 is outside \[1, 5\]"):
        model(torch.randn(5, 2, 3), lengths=[5, 0])
    with pytest.raises(InputError, match=r"input_size=3 .* got shape \(5, 2, 7\)"):
        model(torch.randn(5, 2, 7))
    with pytest.raises(ConfigError, match=r"got 'bnn'\. Did you mean 'bn'"):
        NormLSTM(3, 4, norm="bnn")  # type: ignore[arg-type]  # the bad value under test
    with pytest.raises(ConfigError, match="momentum=None"):
        NormLSTM(3, 4, norm="bn", momentum=None)  # type: ignore[arg-type]  # the bad value under test
    with pytest.raises(InputError, match="1 value per statistic"):
        model(torch.randn(5, 1, 3))
    with pytest.raises(InputError, match=r"h0 must have shape \(1, 2, 4\)"):
        model(torch.randn(5, 2, 3), (torch.zeros(2, 4), torch.zeros(2, 4)))
    with pytest.raises(InputError, match=r"expected input of shape \(T, N, input_size\)"):
        model(torch.randn(5, 3))
    with pytest.raises(InputError, match="not both"):
        model(pack_padded_sequence(torch.randn(5, 2, 3), [5, 3]), lengths=[5, 3])
    with pytest.raises(ConfigError, match="hidden_size must be a positive int"):
        NormLSTMCell(3, 0)


def test_equal_lengths_shorter_than_input_pad_with_zeros() -> None:
    model = make("bn").train()
    x = torch.randn(6, 3, 3, dtype=F64)
    ref = params(model)
    out, (h, _) = model(x, lengths=[4, 4, 4])
    z = torch.zeros(2, 3, 4, dtype=F64)
    out_o, h_o, _ = oracle.lstm(ref, x, [4, 4, 4], z, z, "bn", training=True)
    close(out, out_o)
    close(h, h_o)
    assert torch.equal(out[4:], torch.zeros_like(out[4:]))
    assert int(model.cells[0].norm_ih.num_steps_tracked) == 4


def test_non_finite_batch_leaves_running_statistics() -> None:
    model = make("bn", layers=1).train()
    model(torch.randn(3, 4, 3, dtype=F64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(5, 4, 3, dtype=F64)
    x[1, 2, 0] = float("inf")
    model(x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_dropout_between_layers_only_in_training() -> None:
    model = make(None, dropout=0.5)
    plain = make(None)
    x = torch.randn(4, 3, 3, dtype=F64)
    model.eval()
    close(model(x)[0], plain.eval()(x)[0], 0.0)
    model.train()
    assert not torch.allclose(model(x)[0], plain(x)[0])
