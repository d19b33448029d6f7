"""Ghost Batch Normalization: what is unique to it (RELIABILITY `test_ghostbn_semantics`, I11).

Expected values come from the float64 oracle in oracles_batch_family_bn.py (a literal loop over
the ghost batches), from torch.nn's BatchNorm applied chunk by chunk (the reference code's
procedure), or from closed forms. The generic contract tests run on the catalogue cases in
cases_ghost_batch_norm.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import normlab
import normlab.functional as NF
import normlab.norms.ghost_batch_norm as gbn_module
from catalogue import close, make_input, param_grads, randomize_, saved_storages
from normlab.cli import main as cli_main
from normlab.errors import ConfigError, InputError
from normlab.norms.ghost_batch_norm import chunk_sizes, ghost_plan
from oracles_batch_family_bn import (
    ghost_batch_norm_ref,
    ghost_chunk_stats_ref,
    ghost_chunks_ref,
    ghost_running_step_ref,
)

F32, F64 = torch.float32, torch.float64
TOL = {F32: 1e-6, F64: 1e-12}
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


@pytest.fixture(params=["permuted", "instance"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on each fast path, whatever the number of positions per slice."""
    threshold = 10**9 if request.param == "permuted" else 1
    monkeypatch.setattr(gbn_module, "MIN_POSITIONS_PER_SLICE", threshold)
    return request.param


def _gbn(c: int, g: int, dtype: torch.dtype = F64, **kw: object) -> nn.Module:
    return randomize_(normlab.GhostBatchNorm(c, ghost_batch_size=g, dtype=dtype, **kw))


def _fwd_bwd(m: nn.Module, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    m.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_()
    y = m(leaf)
    y.backward(g)
    assert leaf.grad is not None
    return y.detach(), leaf.grad, param_grads(m)


def _chunked_torch_bn(
    m: nn.Module, x: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """torch.nn.functional.batch_norm on every ghost batch (oracle chunks), concatenated."""
    weight = None if m.weight is None else m.weight.detach().clone().requires_grad_()
    bias = None if m.bias is None else m.bias.detach().clone().requires_grad_()
    leaf = x.detach().clone().requires_grad_()
    n, positions = x.shape[0], x[0, 0].numel()
    outputs = [
        F.batch_norm(leaf[a:b], None, None, weight, bias, training=True, eps=m.eps)
        for a, b in ghost_chunks_ref(n, m.ghost_batch_size, positions)
    ]
    y = torch.cat(outputs)
    y.backward(g)
    grads = {} if weight is None else {"weight": weight.grad, "bias": bias.grad}
    return y.detach(), leaf.grad, grads


# -- the chunk plan and the remainder policy ------------------------------------------------------


@pytest.mark.parametrize("positions", [1, 2, 5])
@pytest.mark.parametrize("g", [1, 2, 3, 4, 7, 128])
def test_plan_matches_oracle_chunks(g: int, positions: int) -> None:
    for n in range(1, 40):
        if g == 1 and positions == 1 and n > 1:
            continue  # one value per statistic: rejected (test_one_value_chunks_are_rejected)
        sizes = chunk_sizes(ghost_plan(n, g, positions))
        expected = [b - a for a, b in ghost_chunks_ref(n, g, positions)]
        assert sizes == expected, (n, g, positions)
        assert sum(sizes) == n
        assert n == 1 or min(sizes) * positions >= 2


def test_documented_examples_of_the_policy() -> None:
    assert chunk_sizes(ghost_plan(10, 4, positions=6)) == [4, 4, 2]
    assert chunk_sizes(ghost_plan(9, 4, positions=6)) == [4, 4, 1]  # 1 sample, 6 values: kept
    assert chunk_sizes(ghost_plan(9, 4, positions=1)) == [4, 5]  # 1 value: merged
    assert chunk_sizes(ghost_plan(5, 4, positions=1)) == [5]
    assert chunk_sizes(ghost_plan(3, 4, positions=1)) == [3]
    assert chunk_sizes(ghost_plan(8, 4, positions=1)) == [4, 4]


@pytest.mark.parametrize(
    ("shape", "g"),
    [((10, 3, 5), 4), ((9, 3), 4), ((5, 3), 4), ((9, 3, 4), 4), ((7, 3, 2, 3), 1), ((6, 3), 2)],
    ids=["10_by_4", "merge_9_by_4", "merge_5_by_4", "one_sample_tail", "ghost_1", "even"],
)
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_train_output_and_grads_equal_cat_of_bn_over_chunks(
    shape: tuple[int, ...], g: int, dtype: torch.dtype, path: str
) -> None:
    m = _gbn(shape[1], g, dtype).train()
    x = make_input(shape, dtype, seed=1)
    up = make_input(shape, dtype, seed=2)
    y, gx, gp = _fwd_bwd(m, x, up)
    y_ref, gx_ref, gp_ref = _chunked_torch_bn(m, x, up)
    close(y, y_ref, TOL[dtype], msg="output")
    close(gx, gx_ref, 5 * TOL[dtype], msg="input grad")
    assert gp.keys() == gp_ref.keys()
    for key in gp:
        close(gp[key], gp_ref[key], 5 * TOL[dtype], msg=key)
    close(y.double(), ghost_batch_norm_ref(x, m.weight, m.bias, None, None, training=True,
                                           ghost_batch_size=g, eps=m.eps), 10 * TOL[dtype])


@pytest.mark.parametrize("layout", ["channels_last", "channel_dim_last"])
def test_chunking_in_other_layouts(layout: str, path: str) -> None:
    shape, g = (10, 3, 4, 2), 4
    x = make_input(shape, F64, seed=3)
    if layout == "channels_last":
        m = _gbn(3, g)
        got = m(x.to(memory_format=torch.channels_last))
        assert got.is_contiguous(memory_format=torch.channels_last)
    else:
        m = _gbn(3, g, channel_dim=-1)
        got = m(x.movedim(1, -1).contiguous()).movedim(-1, 1)
    expected = ghost_batch_norm_ref(x, m.weight, m.bias, None, None, training=True,
                                    ghost_batch_size=g, eps=m.eps)
    close(got, expected, 1e-12)


@pytest.mark.parametrize("affine", ["weight_and_bias", "none", "weight_only"])
@pytest.mark.parametrize(("shape", "g"), [((10, 3, 2), 4), ((9, 3), 4), ((7, 2, 3), 1)])
def test_gradcheck_with_uneven_chunks(
    shape: tuple[int, ...], g: int, affine: str, path: str
) -> None:
    m = _gbn(shape[1], g).train()
    x = make_input(shape, F64, seed=4).requires_grad_()
    params = []
    if affine != "none":
        params.append(m.weight.detach().clone().requires_grad_())
    if affine == "weight_and_bias":
        params.append(m.bias.detach().clone().requires_grad_())

    def fn(x: Tensor, *p: Tensor) -> Tensor:
        w, b = [*p, None, None][:2]
        return NF.ghost_batch_norm(x, weight=w, bias=b, training=True, ghost_batch_size=g)

    assert torch.autograd.gradcheck(fn, (x, *params))
    assert torch.autograd.gradgradcheck(fn, (x, *params))


def test_one_value_chunks_are_rejected_with_a_clear_message(path: str) -> None:
    m = normlab.GhostBatchNorm(3, ghost_batch_size=1)
    with pytest.raises(InputError, match="1 value per statistic"):
        m(torch.randn(8, 3))
    with pytest.raises(InputError, match="1 value per statistic"):
        normlab.GhostBatchNorm(3, ghost_batch_size=4)(torch.randn(1, 3))
    m(torch.randn(8, 3, 2))  # one sample per chunk, 2 positions: allowed
    m.eval()(torch.randn(1, 3))  # eval: running statistics, any batch size


# -- split="count": the reference code's x.chunk(N // g) ----------------------------------------


def _bigbatch_chunks(x: Tensor, g: int) -> tuple[Tensor, ...]:
    """eladhoffer/bigBatch, main_gbn.py: ``input_var.chunk(batch_size // mini_batch_size)``."""
    return x.chunk(x.shape[0] // g)


@pytest.mark.parametrize("positions", [1, 2, 5])
@pytest.mark.parametrize("g", [1, 2, 3, 4, 7, 128])
def test_count_plan_matches_oracle_chunks(g: int, positions: int) -> None:
    for n in range(1, 40):
        if g == 1 and positions == 1 and n > 1:
            continue  # one value per statistic: rejected
        sizes = chunk_sizes(ghost_plan(n, g, positions, split="count"))
        expected = [b - a for a, b in ghost_chunks_ref(n, g, positions, split="count")]
        assert sizes == expected, (n, g, positions)
        if n >= g and positions > 1:  # no merge: exactly torch's chunk
            assert sizes == [len(c) for c in _bigbatch_chunks(torch.arange(n), g)], (n, g)


def test_documented_examples_of_the_count_rule() -> None:
    assert chunk_sizes(ghost_plan(10, 4, positions=6, split="count")) == [5, 5]
    assert chunk_sizes(ghost_plan(13, 4, positions=6, split="count")) == [5, 5, 3]
    assert chunk_sizes(ghost_plan(7, 4, positions=6, split="count")) == [7]  # chunk(1)
    assert chunk_sizes(ghost_plan(3, 4, positions=6, split="count")) == [3]  # N < g: BN
    assert chunk_sizes(ghost_plan(17, 3, positions=1, split="count")) == [4, 4, 4, 5]  # merged
    assert chunk_sizes(ghost_plan(10, 4, positions=6)) == [4, 4, 2]  # the default: "size"


@pytest.mark.parametrize(("shape", "g"), [((10, 3, 5), 4), ((13, 3, 2, 2), 4), ((11, 2), 3),
                                          ((7, 3, 4), 4), ((8, 3, 3), 2)],
                         ids=["10_by_4", "13_by_4", "11_by_3", "one_chunk", "even"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_count_split_equals_bn_over_torch_chunks(
    shape: tuple[int, ...], g: int, dtype: torch.dtype, path: str
) -> None:
    """Outputs and gradients equal torch BN run on every piece of x.chunk(N // g), and the
    float64 oracle of the rule."""
    m = _gbn(shape[1], g, dtype, split="count").train()
    x = make_input(shape, dtype, seed=1)
    up = make_input(shape, dtype, seed=2)
    y, gx, gp = _fwd_bwd(m, x, up)
    weight = m.weight.detach().clone().requires_grad_()
    bias = m.bias.detach().clone().requires_grad_()
    leaf = x.detach().clone().requires_grad_()
    y_ref = torch.cat([F.batch_norm(piece, None, None, weight, bias, training=True, eps=m.eps)
                       for piece in _bigbatch_chunks(leaf, g)])
    y_ref.backward(up)
    close(y, y_ref.detach(), TOL[dtype], msg="output")
    close(gx, leaf.grad, 5 * TOL[dtype], msg="input grad")
    close(gp["weight"], weight.grad, 5 * TOL[dtype], msg="weight grad")
    close(gp["bias"], bias.grad, 5 * TOL[dtype], msg="bias grad")
    expected = ghost_batch_norm_ref(x, m.weight, m.bias, None, None, training=True,
                                    ghost_batch_size=g, eps=m.eps, split="count")
    close(y.double(), expected, 10 * TOL[dtype], msg="float64 oracle")
    functional = NF.ghost_batch_norm(x, weight=m.weight, bias=m.bias, training=True,
                                     ghost_batch_size=g, split="count", eps=m.eps)
    close(functional, y, TOL[dtype], msg="functional")


@pytest.mark.parametrize("momentum", [0.1, 1.0], ids=str)
@pytest.mark.parametrize(("batch", "g"), [(10, 4), (13, 4), (9, 2)])
def test_count_split_running_stats_equal_torch_bn_fed_chunk_by_chunk(
    batch: int, g: int, momentum: float, path: str
) -> None:
    ours = normlab.GhostBatchNorm(3, ghost_batch_size=g, momentum=momentum, split="count",
                                  dtype=F64)
    theirs = nn.BatchNorm1d(3, momentum=momentum).double()
    for step in range(3):
        x = make_input((batch + step, 3, 4), F64, seed=70 + step)
        ours(x)
        for piece in _bigbatch_chunks(x, g):
            theirs(piece)
        close(ours.running_mean, theirs.running_mean, 1e-12, msg=f"step {step}")
        close(ours.running_var, theirs.running_var, 1e-12, msg=f"step {step}")


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.7, None], ids=str)
def test_count_split_running_stats_match_the_chunk_loop_oracle(
    momentum: float | None, path: str
) -> None:
    m = normlab.GhostBatchNorm(3, ghost_batch_size=4, momentum=momentum, split="count",
                               dtype=F64)
    expected = {k: v.clone() for k, v in m.named_buffers()}
    for step, (batch, tail) in enumerate([(10, 5), (17, 1), (16, 2), (3, 4), (13, 1)]):
        x = make_input((batch, 3, tail), F64, seed=80 + step)
        m(x)
        expected = ghost_running_step_ref(expected, x, momentum, ghost_batch_size=4,
                                          split="count")
        close(m.running_mean, expected["running_mean"], 1e-12, msg=f"step {step}")
        close(m.running_var, expected["running_var"], 1e-12, msg=f"step {step}")
        assert torch.equal(m.num_batches_tracked, expected["num_batches_tracked"])


@pytest.mark.parametrize("bad", ["sizes", "Count", "", 2, None, True], ids=repr)
def test_split_must_be_size_or_count(bad: object) -> None:
    for make in (
        lambda: normlab.GhostBatchNorm(8, ghost_batch_size=2, split=bad),
        lambda: NF.ghost_batch_norm(torch.randn(4, 8), training=True, ghost_batch_size=2,
                                    split=bad),
    ):
        with pytest.raises(ConfigError) as excinfo:
            make()
        msg = str(excinfo.value)
        assert f"split must be 'size' or 'count'; got {bad!r}" in msg
        assert "x.chunk(N // ghost_batch_size)" in msg
        assert "Pass split='size' (the default) or split='count'" in msg  # the fix


def test_split_is_in_the_repr_and_survives_a_state_round_trip() -> None:
    m = normlab.GhostBatchNorm(4, ghost_batch_size=2, split="count")
    assert "split=count" in repr(m)
    assert "split=size" in repr(normlab.GhostBatchNorm(4, ghost_batch_size=2))
    assert set(m.state_dict()) == {"weight", "bias", "running_mean", "running_var",
                                   "num_batches_tracked"}


# -- equivalences (RELIABILITY I11; METHODS Appendix A.7) ------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "cumulative"])
@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (3, 3, 4, 2), (2, 3, 2, 3, 2)],
                         ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_ghost_size_at_least_batch_size_is_batch_norm(
    shape: tuple[int, ...], dtype: torch.dtype, momentum: float | None, path: str
) -> None:
    """Outputs, input and parameter gradients, running statistics, then the eval output."""
    for g in (shape[0], 2 * shape[0], 128):
        ours = _gbn(shape[1], g, dtype, momentum=momentum)
        theirs = TORCH_BN[len(shape)](shape[1], momentum=momentum).to(dtype)
        theirs.load_state_dict(ours.state_dict())
        for step in range(3):
            x, up = make_input(shape, dtype, seed=10 + step), make_input(shape, dtype, seed=20)
            y0, gx0, gp0 = _fwd_bwd(ours.train(), x, up)
            y1, gx1, gp1 = _fwd_bwd(theirs.train(), x, up)
            close(y0, y1, TOL[dtype], msg=f"output, g={g}")
            close(gx0, gx1, 5 * TOL[dtype], msg=f"input grad, g={g}")
            for key in gp1:
                close(gp0[key], gp1[key], 5 * TOL[dtype], msg=f"{key} grad, g={g}")
            close(ours.running_mean, theirs.running_mean, TOL[dtype])
            close(ours.running_var, theirs.running_var, TOL[dtype])
            assert torch.equal(ours.num_batches_tracked, theirs.num_batches_tracked)
        x = make_input(shape, dtype, seed=30)
        close(ours.eval()(x), theirs.eval()(x), TOL[dtype], msg="eval")


@pytest.mark.parametrize("batch", [1, 3, 7, 10, 33])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
def test_eval_is_batch_norm_eval_at_any_batch_size(batch: int, dtype: torch.dtype) -> None:
    """GhostBN eval is plain BN eval: no divisibility requirement (keras-team/keras#15790)."""
    ours = _gbn(3, 4, dtype).eval()
    theirs = nn.BatchNorm2d(3).to(dtype).eval()
    theirs.load_state_dict(ours.state_dict())
    x = make_input((batch, 3, 2, 3), dtype, seed=batch)
    up = make_input((batch, 3, 2, 3), dtype, seed=99)
    y0, gx0, gp0 = _fwd_bwd(ours, x, up)
    y1, gx1, gp1 = _fwd_bwd(theirs, x, up)
    close(y0, y1, TOL[dtype])
    close(gx0, gx1, TOL[dtype])
    for key in gp1:
        close(gp0[key], gp1[key], 5 * TOL[dtype], msg=key)
    expected = ghost_batch_norm_ref(x, ours.weight, ours.bias, ours.running_mean,
                                    ours.running_var, training=False, ghost_batch_size=4,
                                    eps=ours.eps)
    close(y0.double(), expected, 10 * TOL[dtype])


def test_untracked_eval_uses_the_whole_batch() -> None:
    m = _gbn(3, 2, track_running_stats=False)
    x = make_input((6, 3, 4), F64, seed=5)
    expected = F.batch_norm(x, None, None, m.weight, m.bias, training=True, eps=m.eps)
    close(m.eval()(x), expected.detach(), 1e-12)
    assert not torch.allclose(m.train()(x), expected, atol=1e-3)


# -- running statistics ----------------------------------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0], ids=str)
@pytest.mark.parametrize(("batch", "g"), [(10, 4), (9, 4), (8, 2), (5, 2)])
def test_running_stats_equal_torch_bn_fed_chunk_by_chunk(
    batch: int, g: int, momentum: float, path: str
) -> None:
    """The reference code's procedure: every ghost batch through torch BN, one after another."""
    ours = normlab.GhostBatchNorm(3, ghost_batch_size=g, momentum=momentum, dtype=F64)
    theirs = nn.BatchNorm1d(3, momentum=momentum).double()
    for step in range(3):
        x = make_input((batch + step, 3, 4), F64, seed=40 + step)
        ours(x)
        for a, b in ghost_chunks_ref(x.shape[0], g, 4):
            theirs(x[a:b])
        close(ours.running_mean, theirs.running_mean, 1e-12, msg=f"step {step}")
        close(ours.running_var, theirs.running_var, 1e-12, msg=f"step {step}")
    assert int(ours.num_batches_tracked) == 3  # counts steps; torch counted every chunk


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.7, 1.0, None], ids=str)
def test_running_stats_match_the_chunk_loop_oracle(momentum: float | None, path: str) -> None:
    m = normlab.GhostBatchNorm(3, ghost_batch_size=4, momentum=momentum, dtype=F64)
    expected = {k: v.clone() for k, v in m.named_buffers()}
    for step, (batch, tail) in enumerate([(10, 5), (9, 1), (16, 2), (3, 4), (13, 1)]):
        x = make_input((batch, 3, tail), F64, seed=50 + step)
        m(x)
        expected = ghost_running_step_ref(expected, x, momentum, ghost_batch_size=4)
        close(m.running_mean, expected["running_mean"], 1e-12, msg=f"step {step}")
        close(m.running_var, expected["running_var"], 1e-12, msg=f"step {step}")
        assert torch.equal(m.num_batches_tracked, expected["num_batches_tracked"])


def test_cumulative_average_is_mean_over_all_ghost_batches() -> None:
    """momentum=None with a constant number of chunks: the mean of every chunk's statistics."""
    m = normlab.GhostBatchNorm(3, ghost_batch_size=3, momentum=None, dtype=F64)
    stats = []
    for step in range(4):
        x = make_input((9, 3, 5), F64, seed=60 + step)
        m(x)
        stats += ghost_chunk_stats_ref(x, 3)
    close(m.running_mean, torch.stack([s[0] for s in stats]).mean(0), 1e-12)
    close(m.running_var, torch.stack([s[1] for s in stats]).mean(0), 1e-12)


def test_momentum_closed_form_one_step() -> None:
    """From (0, 1) with K equal chunks: rm = Σ m(1 − m)^(K−i) μ_i, rv = (1 − m)^K + Σ ...."""
    m_ = 0.3
    m = normlab.GhostBatchNorm(2, ghost_batch_size=2, momentum=m_, dtype=F64)
    x = make_input((6, 2, 3), F64, seed=7)
    m(x)
    stats = ghost_chunk_stats_ref(x, 2)
    k = len(stats)
    weights = [m_ * (1 - m_) ** (k - 1 - i) for i in range(k)]
    close(m.running_mean, sum(w * s[0] for w, s in zip(weights, stats, strict=True)), 1e-12)
    close(m.running_var, (1 - m_) ** k + sum(w * s[1] for w, s in zip(weights, stats,
                                                                        strict=True)), 1e-12)


@pytest.mark.parametrize("where", [0, 7], ids=["first_chunk", "last_chunk"])
def test_nonfinite_chunk_leaves_every_buffer_unchanged(where: int, path: str) -> None:
    m = normlab.GhostBatchNorm(3, ghost_batch_size=4)
    m(torch.randn(8, 3, 2))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.randn(8, 3, 2)
    x[where, 1, 0] = math.inf
    m(x)
    for key, value in m.state_dict().items():
        assert torch.equal(value, before[key]), key


# -- vectorized: no work per chunk ----------------------------------------------------------------


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(batch: int, g: int) -> int:
    """ATen calls of one training step in steady state: a first step fills the caches of
    constant operands (kept per size), which would otherwise count, or not, by test order."""
    m = normlab.GhostBatchNorm(8, ghost_batch_size=g)
    x = torch.randn(batch, 8, 4, 4, requires_grad=True)
    m(x).sum().backward()
    with _CountOps() as counter:
        m(x).sum().backward()
    return counter.count


def test_op_count_does_not_grow_with_the_number_of_ghost_batches(path: str) -> None:
    assert _ops_per_step(64, 2) == _ops_per_step(8, 2)  # 32 chunks vs 4
    assert _ops_per_step(65, 2) == _ops_per_step(9, 2)  # with a remainder chunk


def test_saved_for_backward_with_many_chunks(path: str) -> None:
    m = normlab.GhostBatchNorm(16, ghost_batch_size=2)
    x = torch.randn(64, 16, 8, 8, requires_grad=True)
    saved = saved_storages(lambda: m(x))
    assert sum(saved.values()) <= 1.5 * x.numel() * x.element_size()


# -- low precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_low_precision_training_matches_float64(dtype: torch.dtype, path: str) -> None:
    m = _gbn(4, 3, dtype)
    x = make_input((10, 4, 6), dtype, seed=8).requires_grad_()
    expected = ghost_batch_norm_ref(x, m.weight, m.bias, None, None, training=True,
                                    ghost_batch_size=3, eps=m.eps)
    y = m(x)
    assert y.dtype == dtype
    close(y.double(), expected, 2e-2)
    y.backward(torch.ones_like(y))
    assert torch.isfinite(x.grad).all()
    assert m.running_mean.dtype == dtype and torch.isfinite(m.running_var).all()


# -- configuration errors, registry, CLI -----------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -4, 2.5, True, "8", None], ids=repr)
def test_ghost_batch_size_must_be_a_positive_int(bad: object) -> None:
    for make in (
        lambda: normlab.GhostBatchNorm(8, ghost_batch_size=bad),
        lambda: NF.ghost_batch_norm(torch.randn(4, 8), training=True, ghost_batch_size=bad),
    ):
        with pytest.raises(ConfigError) as excinfo:
            make()
        msg = str(excinfo.value)
        assert f"ghost_batch_size must be a positive int; got {bad!r}" in msg
        assert "ghost_batch_size=32" in msg  # the fix


@pytest.mark.parametrize("eps", [0.0, -1e-5, math.nan])
def test_eps_must_be_positive(eps: float) -> None:
    with pytest.raises(ConfigError, match="eps must be a positive finite float"):
        normlab.GhostBatchNorm(8, ghost_batch_size=2, eps=eps)


def test_registry_spec_sets_the_ghost_batch_size() -> None:
    m = normlab.create("gbn:32", 64)
    assert isinstance(m, normlab.GhostBatchNorm)
    assert m.ghost_batch_size == 32
    assert m.axes.ghost_batch_size == 32
    assert normlab.factory("ghost_bn:8")(16).ghost_batch_size == 8
    assert normlab.create("ghost_batch_norm", 4).ghost_batch_size == 128  # the paper's default
    with pytest.raises(ConfigError, match="ghost_batch_size"):
        normlab.create("gbn:0", 64)


def test_axes_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    m = normlab.GhostBatchNorm(4, ghost_batch_size=16)
    assert m.axes.describe() == (
        "over (ghost batches of 16, *S): one statistic per (ghost batch, channel)"
    )
    assert "ghost_batch_size=16" in repr(m)
    assert cli_main(["describe", "gbn"]) == 0
    out = capsys.readouterr().out
    assert "y = γ · (x − μₖ) / √(σ²ₖ + ε) + β" in out  # the equation, as plain text
    assert "ghost_batch_size=128" in out
    assert "arXiv:1705.08741" in out


@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("momentum", [0.1, None], ids=str)
def test_one_ghost_batch_takes_batch_norm_path_and_matches_oracle(
    channel_dim: int, momentum: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N <= ghost_batch_size: BN's kernel (no instance or permuted path), the oracle's output,
    gradients and running statistics; the functional and an untracked layer alike."""
    def ghost_path(*args: object, **kwargs: object) -> None:
        raise AssertionError("one ghost batch took a ghost-batch path")

    monkeypatch.setattr(gbn_module, "_ghost_train", ghost_path)
    m = _gbn(5, 8, F64, momentum=momentum, channel_dim=channel_dim)
    expected = {k: v.clone() for k, v in m.named_buffers()}
    for step, batch in enumerate((8, 2, 1)):
        shape = (batch, 5, 4, 3) if channel_dim == 1 else (batch, 4, 3, 5)
        x = make_input(shape, F64, seed=60 + step).requires_grad_()
        y = m(x)
        up = make_input(shape, F64, seed=70)
        grads = torch.autograd.grad(y, [x, m.weight, m.bias], up)
        xr = x.detach().requires_grad_()
        wr, br = (p.detach().clone().requires_grad_() for p in (m.weight, m.bias))
        yr = ghost_batch_norm_ref(xr, wr, br, None, None, training=True, ghost_batch_size=8,
                                  eps=m.eps, channel_dim=channel_dim)
        close(y, yr, 1e-12, msg=f"step {step}")
        for got, want in zip(grads, torch.autograd.grad(yr, [xr, wr, br], up), strict=True):
            close(got, want, 1e-10, msg=f"grad, step {step}")
        close(NF.ghost_batch_norm(x, weight=m.weight, bias=m.bias, training=True,
                                  ghost_batch_size=8, channel_dim=channel_dim), yr, 1e-12)
        expected = ghost_running_step_ref(expected, x.detach(), momentum, ghost_batch_size=8,
                                          channel_dim=channel_dim)
        close(m.running_mean, expected["running_mean"], 1e-12, msg=f"step {step}")
        close(m.running_var, expected["running_var"], 1e-12, msg=f"step {step}")
        assert torch.equal(m.num_batches_tracked, expected["num_batches_tracked"])
    free = _gbn(5, 8, F64, track_running_stats=False, channel_dim=channel_dim)
    close(free(x), ghost_batch_norm_ref(x, free.weight, free.bias, None, None, training=True,
                                        ghost_batch_size=8, channel_dim=channel_dim), 1e-12)
