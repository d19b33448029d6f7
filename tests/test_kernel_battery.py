"""A fast battery over the shared kernels and state code, for mutation testing (`make mutate`).

The catalogue-wide contract files (test_contract, test_state, test_double_backward) call every
kernel thousands of times, far too slow to rerun for each mutant. This file runs their checks
(the same functions, not copies) over the few catalogue cases that reach each kernel path:

* `normlab.norms._batch_affine`: StreamingNorm and MeanOnlyBatchNorm (training);
* `normlab.norms._per_instance` / `_instance_affine`: Switchable Norm, Batch-Instance Norm,
  Virtual BN, Ghost BN, AdaIN, EvoNorm-B0 (their per-(n, c) kernels), Batch Renorm
  (`batch_moments`);
* `normlab.norms.frozen_batch_norm`: FrozenBatchNorm, frozen and trainable affine;
* `normlab.norms._batch_norm_composed`: BatchNorm on an input of ≥ 2^19 elements;
* `normlab.norms._base`'s group-norm kernel and ε rule: InstanceNorm, LayerNorm, GroupNorm,
  RMSNorm.

and adds what the catalogue's small shapes never reach: inputs above the kernels' size
thresholds (`SMALL_INPUT` = 2^14 elements, BatchNorm's composed path at 2^19), in every layout,
each checked against the case's float64 oracle (output, input and parameter gradients, one
running-statistics step), and the cross-replica composition with a group of one replica.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import oracles
import test_contract as contract
import test_double_backward as double_backward
import test_state as state
from catalogue import CASES, Case, close, make_input, param_grads, randomize_
from normlab.core.tracing import eager_composition

F64, F32 = torch.float64, torch.float32

KERNEL_IDS = (
    "streaming_norm", "streaming_norm-affine_false", "streaming_norm-short_only",
    "mean_only_batch_norm", "mean_only_batch_norm-affine",
    "batch_renorm", "batch_renorm-clipped_affine_false",
    "switchable_norm", "switchable_norm-affine_false", "switchable_norm-ln_bn",
    "batch_instance_norm", "batch_instance_norm-affine_false",
    "virtual_batch_norm", "virtual_batch_norm-affine_false",
    "ghost_batch_norm-ghost_3", "ghost_batch_norm-long_slices", "ghost_batch_norm-split_count",
    "adain", "adain-affine",
    "evo_norm_b0",
    "frozen_batch_norm", "frozen_batch_norm-affine_false", "frozen_batch_norm-trainable_affine",
    "batch_norm",
    "instance_norm-affine", "layer_norm", "rms_norm-eps", "group_norm-affine_false",
)
KERNEL_CASES = [c for c in CASES if c.id in KERNEL_IDS]
MODES = [(c, True) for c in KERNEL_CASES] + [(c, False) for c in KERNEL_CASES
                                            if c.train_eval_differ]
MODE_IDS = [f"{c.id}-{'train' if t else 'eval'}" for c, t in MODES]
mode_cases = pytest.mark.parametrize(("case", "training"), MODES, ids=MODE_IDS)
cases = pytest.mark.parametrize("case", KERNEL_CASES, ids=[c.id for c in KERNEL_CASES])
RUNNING = [(c, m) for c in KERNEL_CASES if c.has_running_stats for m in (0.1, None)]


def test_every_kernel_case_exists() -> None:
    assert sorted(c.id for c in KERNEL_CASES) == sorted(KERNEL_IDS)


# -- the contract checks, on the kernel cases ----------------------------------------------------


@mode_cases
def test_forward_matches_float64_oracle(case: Case, training: bool) -> None:
    contract.test_forward_matches_float64_oracle(case, training)


@mode_cases
def test_second_order_matches_float64_oracle(case: Case, training: bool) -> None:
    double_backward.test_second_order_matches_float64_oracle(case, training)


@mode_cases
def test_functional_matches_module(case: Case, training: bool) -> None:
    contract.test_functional_matches_module(case, training)


@mode_cases
def test_channels_last_matches_contiguous(case: Case, training: bool) -> None:
    contract.test_channels_last_matches_contiguous(case, training, F64)


@mode_cases
def test_channel_dim_last_matches_channel_dim_1(case: Case, training: bool) -> None:
    contract.test_channel_dim_last_matches_channel_dim_1(case, training, F64)


@cases
def test_state_dict_roundtrip_bitwise(case: Case) -> None:
    contract.test_state_dict_roundtrip_bitwise(case)


@cases
def test_eval_forward_leaves_state_unchanged(case: Case) -> None:
    contract.test_eval_forward_leaves_state_unchanged(case)


@cases
def test_repr_contains_hyperparameters(case: Case) -> None:
    contract.test_repr_contains_hyperparameters(case)
    text = repr(case.make())  # channels first: the default, not shown
    assert text.startswith(f"{case.cls.__name__}({case.num_features}, ")
    assert "channel_dim" not in text


@cases
def test_factory_kwargs_reach_params_and_buffers(case: Case) -> None:
    contract.test_factory_kwargs_reach_params_and_buffers(case, F64)


@cases
def test_device_kwarg_meta(case: Case) -> None:
    contract.test_device_kwarg_meta(case)


@mode_cases
def test_bf16_matches_float64_oracle(case: Case, training: bool) -> None:
    contract.test_bf16_smoke(case, training)


@mode_cases
@pytest.mark.parametrize("size", ["small", "large"])
def test_bf16_input_far_from_zero_matches_float64_oracle(
    case: Case, training: bool, size: str
) -> None:
    """bf16 activations around 64 with a spread of 2, and running statistics there too: the
    statistics are accumulated in float32, so the output (of order 1) is as good as the
    oracle's on the same rounded values to a few bf16 steps. A mean kept in bf16 is off by up
    to 0.25 here, an eighth of the spread."""
    m = randomize_(case.make(dtype=torch.bfloat16)).train(training)
    with torch.no_grad():
        for name, buffer in m.named_buffers():
            if name.endswith("mean") and buffer.is_floating_point():
                buffer.add_(64.0)
    shape = _shape(case, size, training)
    x = (make_input(shape, F64, seed=7) * 2.0 + 64.0).to(torch.bfloat16)
    expected = case.reference(copy.deepcopy(m), x)
    y = m(x)
    assert y.dtype == torch.bfloat16
    close(y.double(), expected, 5e-2, msg=f"bf16 around 64, {size}")


@pytest.mark.parametrize("case", [c for c in KERNEL_CASES if c.id.endswith("affine_false")],
                         ids=lambda c: c.id)
def test_low_precision_without_affine_under_a_float64_default_dtype(case: Case) -> None:
    """The float32 ones and zeros a native kernel gets in place of absent γ, β are float32
    whatever the default dtype (a float64 one beside a bf16 input is a mixed-dtype error)."""
    m = case.make(dtype=torch.bfloat16).train()
    x = make_input(case.shapes[-1], torch.bfloat16, seed=8)
    expected = case.reference(copy.deepcopy(m), x)
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        y = m(x)
    finally:
        torch.set_default_dtype(default)
    close(y.double(), expected, 3e-2, msg="bf16 under a float64 default dtype")


# the layers built on `normlab.norms._base.dense` / `in_layout` (RMSNorm's elementwise
# composition keeps the input's strides instead)
CHANNELS_FIRST = [(c, t) for c, t in MODES if c.name != "rms_norm"]


@pytest.mark.parametrize(("case", "training"), CHANNELS_FIRST,
                         ids=[f"{c.id}-{'train' if t else 'eval'}" for c, t in CHANNELS_FIRST])
def test_output_keeps_the_input_memory_format(case: Case, training: bool) -> None:
    """channels_last (3d) input gives channels_last (3d) output, any other strided input a
    contiguous one, small and above `SMALL_INPUT` alike (what the next layer reads fastest)."""
    m = randomize_(case.make()).train(training)
    c = case.num_features
    for shape in ((2, c, 4, 3), (4, c, 32, 24)):
        x = make_input(shape, F32, seed=1)
        assert m(x.to(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last), shape
        assert m(x.transpose(2, 3)).is_contiguous(), shape
    x5 = make_input((2, c, 3, 4, 5), F32, seed=2).to(memory_format=torch.channels_last_3d)
    assert m(x5).is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize(("case", "training"), CHANNELS_FIRST,
                         ids=[f"{c.id}-{'train' if t else 'eval'}" for c, t in CHANNELS_FIRST])
def test_transposed_rank5_input_gives_a_contiguous_output(case: Case, training: bool) -> None:
    """A rank-5 input that is neither contiguous nor channels_last_3d (two spatial dims
    swapped) comes back contiguous, not in a layout it never had."""
    m = randomize_(case.make()).train(training)
    x = make_input((2, case.num_features, 3, 4, 5), F32, seed=3).transpose(3, 4)
    assert m(x).is_contiguous()


WITH_PARAMS = [(c, t) for c, t in MODES if len(list(c.make().parameters())) > 1]


@pytest.mark.parametrize(("case", "training"), WITH_PARAMS,
                         ids=[f"{c.id}-{'train' if t else 'eval'}" for c, t in WITH_PARAMS])
def test_a_parameter_alone_gets_the_gradient_it_gets_with_all(case: Case, training: bool) -> None:
    """Freezing some parameters (requires_grad=False, e.g. a frozen bias) changes nothing in
    the gradients of the others, in the small and the large kernel paths."""
    base = randomize_(case.make(dtype=F64)).train(training)
    names = [name for name, _ in base.named_parameters()]
    for shape in ((3, case.num_features, 4, 2), _shape(case, "large", training)):
        x, g = make_input(shape, F64, seed=5), make_input(shape, F64, seed=6)
        everything = copy.deepcopy(base)
        everything(x).backward(g)
        expected = param_grads(everything)
        for name in names:
            alone = copy.deepcopy(base)
            for other, p in alone.named_parameters():
                p.requires_grad_(other == name)
            alone(x).backward(g)
            got = param_grads(alone)
            assert got.keys() == {name}, (shape, name, got.keys())
            close(got[name], expected[name], 1e-12, msg=f"{name} alone, {shape}")


@pytest.mark.parametrize(("case", "momentum"), RUNNING, ids=[f"{c.id}-{m}" for c, m in RUNNING])
def test_running_stats_match_oracle(case: Case, momentum: float | None) -> None:
    state.test_running_stats_match_oracle(case, momentum)


@cases
def test_checkpoint_continuation_is_bitwise(case: Case) -> None:
    state.test_checkpoint_continuation_is_bitwise(case)


# -- above the size thresholds, every layout ----------------------------------------------------


def _shape(case: Case, size: str, training: bool) -> tuple[int, ...]:
    c = case.num_features
    if size == "small":
        return (3, c, 4, 2)
    if case.id == "batch_norm" and training:  # the composed path: ≥ 2^19 elements, ≥ 32 positions
        return (16, c, 64, 96)
    return (4, c, 32, 24)  # 18432 elements for C = 6: above SMALL_INPUT = 2^14


def _layouts(x: Tensor, layout: str) -> Tensor:
    if layout == "channels_last":
        return x.to(memory_format=torch.channels_last)
    if layout == "channel_dim_last":
        return x.movedim(1, -1).contiguous()
    return x


@mode_cases
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channel_dim_last"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_gradients_match_float64_oracle(
    case: Case, training: bool, layout: str, dtype: torch.dtype, size: str
) -> None:
    """Output, input and parameter gradients and the running statistics after the step, of a
    small input and of one above the kernels' size thresholds, against the float64 oracle
    (autograd through the paper's equations) with the same state."""
    tol = 1e-10 if dtype == F64 else 1e-4
    extra = {"channel_dim": -1} if layout == "channel_dim_last" else {}
    m = randomize_(case.make(dtype=dtype, **extra)).train(training)
    oracle = copy.deepcopy(m).to(F64)
    shape = _shape(case, size, training)
    x64 = make_input(shape, F64, seed=3)
    g64 = make_input(shape, F64, seed=4)
    x, g = _layouts(x64, layout), _layouts(g64, layout)
    if layout == "channels_last":
        assert not x.is_contiguous()
    before = {k: v.detach().clone().to(F64) if v.is_floating_point() else v.clone()
              for k, v in m.named_buffers() if v is not None}

    leaf = x.to(dtype).detach().requires_grad_()
    m.zero_grad(set_to_none=True)
    y = m(leaf)
    y.backward(g.to(dtype))
    xo = x.detach().clone().requires_grad_()
    expected = case.reference(oracle, xo)
    expected.backward(g)
    back = (lambda t: t.movedim(-1, 1)) if extra else (lambda t: t)
    close(back(y.detach()).to(F64), back(expected.detach()), tol, msg=f"output {layout}")
    assert leaf.grad is not None and xo.grad is not None
    close(back(leaf.grad).to(F64), back(xo.grad), tol, msg=f"input grad {layout}")
    expected_params = param_grads(oracle)
    assert param_grads(m).keys() == expected_params.keys()
    # fp32 parameter gradients sum ~10^5 products per channel: torch's own channels_last BN
    # kernel is ~1 % off the float64 value there with one thread, so only gross errors show
    # in fp32; fp64 checks them to 1e-9
    param_tol = 1e-9 if dtype == F64 else 5e-2
    for key, grad in param_grads(m).items():
        close(grad.to(F64), expected_params[key], param_tol, msg=f"{key} grad {layout}")
    if training and case.has_running_stats:
        _check_running_step(case, m, before, x64, tol)


@mode_cases
def test_one_sample_of_one_channel_matches_float64_oracle(case: Case, training: bool) -> None:
    """(1, 1, 4, 4): one (sample, channel) set, so each kind of statistic is a single value
    (the per-(n, c) kernels' edge: their count is the whole input). Output, input and
    parameter gradients against the float64 oracle."""
    try:
        m = randomize_(case.make(num_features=1, dtype=F64)).train(training)
    except ValueError as exc:  # e.g. two groups cannot split one channel
        pytest.skip(f"{case.id} takes no single channel: {exc}")
    oracle = copy.deepcopy(m)
    x, g = make_input((1, 1, 4, 4), F64, seed=5), make_input((1, 1, 4, 4), F64, seed=6)
    leaf, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = m(leaf)
    y.backward(g)
    expected = case.reference(oracle, xo)
    expected.backward(g)
    close(y.detach(), expected.detach(), 1e-10, msg="output")
    close(leaf.grad, xo.grad, 1e-10, msg="input grad")
    got = param_grads(m)
    for key, grad in param_grads(oracle).items():
        close(got[key], grad, 1e-9, msg=f"{key} grad")


@mode_cases
@pytest.mark.parametrize("size", ["small", "large"])
def test_traced_composition_matches_float64_oracle(case: Case, training: bool, size: str) -> None:
    """What torch.compile / torch.export trace (`normlab.core.tracing.eager_composition` runs it
    eagerly): the same output, gradients and running statistics as the oracle."""
    with eager_composition():
        test_gradients_match_float64_oracle(case, training, "channels_last", F64, size)


def _check_running_step(case: Case, m: nn.Module, before: dict[str, Tensor], x: Tensor,
                        tol: float) -> None:
    momentum = m.momentum
    if case.running_step is not None:
        expected = case.running_step(before, x, momentum)
    else:
        per_instance = state._per_instance(case)
        mean, var, tracked = oracles.running_stats_step_ref(
            before["running_mean"], before["running_var"],
            int(before["num_batches_tracked"]), x, momentum, per_instance=per_instance)
        expected = {"running_mean": mean, "running_var": var,
                    "num_batches_tracked": torch.tensor(tracked)}
    for key, value in expected.items():
        actual = getattr(m, key)
        if value.is_floating_point():
            close(actual.to(F64), value, tol, msg=f"{key} after a large step")
        else:
            assert int(actual) == int(value), key


# -- the per-instance helpers' own contracts -----------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 5), (2, 3, 64, 48)], ids=str)
@pytest.mark.parametrize("dtype", [F32, F64, torch.bfloat16], ids=str)
def test_batch_norm_with_moments_returns_the_moments_it_normalized_with(
    shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """(y, moments): y is training-mode BN of x, the moments its mean and biased variance over
    (N, *S) with their count N·|S| (an int: every channel has the same count), float32 or
    wider."""
    from normlab.norms._per_instance import batch_norm_with_moments

    x = make_input(shape, dtype, seed=3)
    gen = torch.Generator().manual_seed(4)
    weight = (torch.rand(3, generator=gen) + 0.5).to(dtype)
    bias = torch.randn(3, generator=gen).to(dtype)
    y, moments = batch_norm_with_moments(x, weight, bias, 1e-5)
    x64 = x.double()
    dims = (0, *range(2, x.dim()))
    var, mean = torch.var_mean(x64, dim=dims, correction=0)
    view = (1, 3) + (1,) * (x.dim() - 2)
    expected = (x64 - mean.view(view)) / (var.view(view) + 1e-5).sqrt()
    expected = expected * weight.double().view(view) + bias.double().view(view)
    tol = {F32: 1e-5, F64: 1e-12, torch.bfloat16: 3e-2}[dtype]
    assert y.dtype == dtype
    close(y.double(), expected, tol)
    stat_tol = 1e-12 if dtype == F64 else 1e-5  # bf16 input: exact float32 statistics
    close(moments.mean.double(), mean, stat_tol)
    close(moments.var.double(), var, stat_tol)
    assert moments.mean.dtype == (F64 if dtype == F64 else F32)
    count = x.numel() // 3
    assert isinstance(moments.count, int) and moments.count == count


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(5, 3, 4, 6), (6, 4, 40, 24)], ids=["small", "large"])
@pytest.mark.parametrize("dtype", [F32, torch.float16], ids=str)
def test_batch_moments_are_per_channel_with_their_count(
    shape: tuple[int, ...], dtype: torch.dtype, layout: str
) -> None:
    """`batch_moments_and_scratch`: the mean and biased variance over (N, *S) per channel, in
    float32 for fp16 input, with the count N·|S| as an int, on each of its paths (group-norm
    statistics above `SMALL_INPUT` for contiguous input, BN's statistics kernel otherwise);
    N ≠ C, so a count built from the wrong dims shows."""
    from normlab.norms._per_instance import batch_moments_and_scratch

    x = make_input(shape, dtype, seed=5) * 3 + 2
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    moments, _ = batch_moments_and_scratch(x, 1e-5)
    var, mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    assert moments.mean.dtype == F32
    close(moments.mean.double(), mean, 1e-5)
    close(moments.var.double(), var, 1e-5)
    count = shape[0] * shape[2] * shape[3]
    assert isinstance(moments.count, int) and moments.count == count


@pytest.mark.parametrize("shape", [(1, 1, 5, 3), (2, 3, 4), (3, 2, 2, 2, 2)], ids=str)
def test_channel_affine_is_one_scale_and_shift_per_slice(shape: tuple[int, ...]) -> None:
    """`channel_affine`: x·scale[n, c] + shift[n, c] per (n, c) slice, one slice included."""
    from normlab.norms._per_instance import channel_affine

    x = make_input(shape, F32, seed=6)
    gen = torch.Generator().manual_seed(7)
    scale, shift = torch.randn(shape[:2], generator=gen), torch.randn(shape[:2], generator=gen)
    view = shape[:2] + (1,) * (len(shape) - 2)
    expected = x.double() * scale.double().view(view) + shift.double().view(view)
    close(channel_affine(x, scale, shift).double(), expected, 1e-6)


def test_one_value_per_statistic_error_names_the_layer_its_sets_and_the_fixes() -> None:
    import normlab

    with pytest.raises(normlab.NormlabError) as excinfo:
        normlab.BatchNorm(6).train()(torch.randn(1, 6))
    assert str(excinfo.value) == (
        "BatchNorm(6) computes each statistic over (N, *S), which holds 1 value per statistic "
        "for input of shape (1, 6): the output would be a constant. Use a larger batch "
        "(DataLoader(drop_last=True) avoids a last batch of 1), call .eval() to use running "
        "statistics, or use a per-sample norm such as GroupNorm.")
