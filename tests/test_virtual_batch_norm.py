"""Virtual Batch Normalization: what is unique to the method (METHODS.md section 17).

Expected values come from float64 references written from the paper's equations
(tests/oracles_virtual_batch_norm.py) or from closed forms; the generic contract rows run on the
cases in tests/cases_virtual_batch_norm.py.
"""

from __future__ import annotations

import copy
import doctest
import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
import normlab.functional as NF
import oracles_virtual_batch_norm as ref
from catalogue import close, make_input, saved_storages
from normlab.errors import ConfigError, InputError, NormlabError
from normlab.norms import virtual_batch_norm as vbn_module
from normlab.norms.virtual_batch_norm import reference_pass

F64 = torch.float64
F32 = torch.float32


def _layer(c: int = 6, dtype: torch.dtype = F64, seed: int = 3, **kw: object) -> nn.Module:
    """A VirtualBatchNorm with random γ, β (no reference yet)."""
    m = normlab.VirtualBatchNorm(c, dtype=dtype, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if m.weight is not None:
            m.weight.copy_((torch.rand(c, generator=g, dtype=F64) + 0.5).to(dtype))
            m.bias.copy_(torch.randn(c, generator=g, dtype=F64).to(dtype))
    return m


def _stats_close(m: nn.Module, x_ref: Tensor, tol: float = 1e-12, channel_dim: int = 1) -> None:
    mean, _, var, n_ref = ref.reference_stats_ref(x_ref, channel_dim)
    close(m.reference_mean.double(), mean, tol, msg="reference_mean")
    close(m.reference_var.double(), var, tol, msg="reference_var")
    assert m.reference_size.dtype == torch.long
    assert int(m.reference_size) == n_ref


# -- the paper's equations ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("n_ref", [1, 3, 16])
def test_closed_form_one_channel_one_pixel(dtype: torch.dtype, n_ref: int) -> None:
    """METHODS claim 3: μ' = (x + N_R μ_R)/(N_R+1), m2' = (x² + N_R m2_R)/(N_R+1)."""
    g = torch.Generator().manual_seed(n_ref)
    r = (torch.randn(n_ref + 1, generator=g, dtype=F64) * 2 + 1)[: max(n_ref, 2)]
    if n_ref == 1:  # one example of one value is refused; use a 1x2 example instead
        r_batch = r[:2].reshape(1, 1, 1, 2)
        values = r[:2].tolist()
    else:
        r_batch = r[:n_ref].reshape(n_ref, 1, 1, 1)
        values = r[:n_ref].tolist()
    gamma, beta, eps = 1.7, -0.3, 1e-5
    m = normlab.VirtualBatchNorm(1, eps=eps, dtype=dtype)
    with torch.no_grad():
        m.weight.fill_(gamma)
        m.bias.fill_(beta)
    m.set_reference(r_batch.to(dtype))
    mu_r = math.fsum(values) / len(values)
    m2_r = math.fsum(v * v for v in values) / len(values)
    xs = [-2.5, 0.0, 0.4, 3.0, 11.0]
    y = m(torch.tensor(xs, dtype=F64).reshape(-1, 1, 1, 1).to(dtype)).double().flatten()
    for i, x in enumerate(xs):
        mu = (x + n_ref * mu_r) / (n_ref + 1)
        m2 = (x * x + n_ref * m2_r) / (n_ref + 1)
        expected = gamma * (x - mu) / math.sqrt(eps + m2 - mu * mu) + beta
        tol = 1e-12 if dtype == F64 else 2e-6
        assert abs(y[i].item() - expected) <= tol * max(1.0, abs(expected)), (x, y[i], expected)


@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize(
    ("ref_shape", "shape"),
    [
        ((7, 4, 3, 5), (3, 4, 2, 6)),
        ((5, 4, 9), (2, 4, 4)),
        ((9, 4), (6, 4)),
        ((4, 4, 3, 2, 2), (4, 4, 3, 2, 2)),
    ],
    ids=["2d", "1d", "rank2", "3d"],
)
def test_set_reference_and_forward_match_oracles(
    ref_shape: tuple[int, ...], shape: tuple[int, ...], channel_dim: int
) -> None:
    m = _layer(4, channel_dim=channel_dim)
    x_ref = make_input(ref_shape, F64, seed=1)
    x = make_input(shape, F64, seed=2) * 1.5 - 0.5
    if channel_dim == -1:
        x_ref, x = x_ref.movedim(1, -1).contiguous(), x.movedim(1, -1).contiguous()
    y_ref = m.set_reference(x_ref)
    close(y_ref, ref.reference_output_ref(x_ref, m.weight, m.bias, channel_dim=channel_dim), 1e-12)
    _stats_close(m, x_ref, channel_dim=channel_dim)
    mean, _, var, n_ref = ref.reference_stats_ref(x_ref, channel_dim)
    expected = ref.virtual_batch_norm_ref(
        x, mean, var, n_ref, m.weight, m.bias, channel_dim=channel_dim
    )
    close(m(x), expected, 1e-12)


def test_merged_variance_equals_m2_minus_mu_squared_in_float64() -> None:
    """The stable merged variance is algebraically the paper's m2(x) − μ(x)²."""
    g = torch.Generator().manual_seed(5)
    mean = torch.randn(8, 6, generator=g, dtype=F64) * 3
    var = torch.rand(8, 6, generator=g, dtype=F64)
    ref_mean = torch.randn(6, generator=g, dtype=F64)
    ref_var = torch.rand(6, generator=g, dtype=F64)
    for n_ref in (1, 2, 7, 100):
        w = 1.0 / (n_ref + 1)
        coefficients = vbn_module.mixed_coefficients(1e-5, False, False)
        scale, shift = coefficients(mean, var, ref_mean, ref_var, w=w)
        m2 = w * (var + mean**2) + (1 - w) * (ref_var + ref_mean**2)
        mu = w * mean + (1 - w) * ref_mean
        close(scale, 1 / torch.sqrt(1e-5 + m2 - mu**2), 1e-12, msg=f"N_R={n_ref}")
        close(shift, -mu / torch.sqrt(1e-5 + m2 - mu**2), 1e-12, msg=f"N_R={n_ref}")


def test_merged_variance_keeps_fp32_accuracy_where_m2_form_fails() -> None:
    """|μ| ≫ σ: the merged form stays within 50·u·κ of float64; E[x²] − E[x]² in fp32 does not."""
    g = torch.Generator().manual_seed(6)
    x_ref = (100.0 + 0.1 * torch.randn(8, 3, 6, 6, generator=g, dtype=F64)).float()
    x = (100.0 + 0.1 * torch.randn(4, 3, 6, 6, generator=g, dtype=F64)).float()
    m = normlab.VirtualBatchNorm(3)
    m.set_reference(x_ref)
    mean, _, var, n_ref = ref.reference_stats_ref(x_ref)
    expected = ref.virtual_batch_norm_ref(x, mean, var, n_ref)
    tol = 50 * 6e-8 * (1 + 100.0 / 0.1)
    close(m(x).double(), expected, tol, msg="normlab, fp32")
    # the paper's formula evaluated naively in fp32 misses the same tolerance
    mu_x, m2_x = x.mean((2, 3), keepdim=True), (x * x).mean((2, 3), keepdim=True)
    mu_r = x_ref.mean((0, 2, 3), keepdim=True)
    m2_r = (x_ref * x_ref).mean((0, 2, 3), keepdim=True)
    mu = (mu_x + n_ref * mu_r) / (n_ref + 1)
    m2 = (m2_x + n_ref * m2_r) / (n_ref + 1)
    naive = (x - mu) / torch.sqrt(1e-5 + (m2 - mu * mu).clamp(min=0))
    assert (naive.double() - expected).abs().max() > tol


def test_weights_count_examples_not_elements() -> None:
    """Pitfall 3: R of 4x4 maps, x of 2x2 maps: w = 1/(N_R+1), not |S_x|/(N_R|S_R| + |S_x|)."""
    m = _layer(3)
    x_ref = make_input((5, 3, 4, 4), F64, seed=7)
    x = make_input((2, 3, 2, 2), F64, seed=8) * 2 + 1
    m.set_reference(x_ref)
    assert int(m.reference_size) == 5  # examples, not 5·16 elements
    mean, _, var, n_ref = ref.reference_stats_ref(x_ref)
    expected = ref.virtual_batch_norm_ref(x, mean, var, n_ref, m.weight, m.bias)
    y = m(x)
    close(y, expected, 1e-12)
    # with element counts R would weigh like 5·16/4 = 20 examples of x's size
    by_elements = ref.virtual_batch_norm_ref(x, mean, var, 20, m.weight, m.bias)
    assert (y - by_elements).abs().max() > 1e-2


def test_batch_mates_do_not_matter() -> None:
    """METHODS claim 1: replacing or permuting the other examples leaves an output unchanged."""
    m = _layer(6)
    m.set_reference(make_input((5, 6, 3, 4), F64, seed=9))
    x = make_input((6, 6, 3, 4), F64, seed=10)
    y = m(x)
    replaced = x.clone()
    replaced[1:] = make_input((5, 6, 3, 4), F64, seed=11) * 50 - 20
    assert torch.equal(m(replaced)[0], y[0])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.equal(m(x[perm]), y[perm])
    for n in range(6):
        assert torch.equal(m(x[n : n + 1])[0], y[n])


def test_large_reference_approaches_reference_only_normalization() -> None:
    """METHODS claim 2: as N_R → ∞, y → γ (x − μ_R)/sqrt(σ²_R + ε) + β, with error O(1/N_R)."""
    g = torch.Generator().manual_seed(12)
    x = make_input((3, 4, 5, 5), F64, seed=13)
    ref_mean = torch.randn(4, generator=g, dtype=F64)
    ref_var = torch.rand(4, generator=g, dtype=F64) + 0.5
    weight, bias = torch.rand(4, dtype=F64) + 0.5, torch.randn(4, dtype=F64)
    view = (1, 4, 1, 1)
    limit = (x - ref_mean.view(view)) / torch.sqrt(ref_var.view(view) + 1e-5)
    limit = limit * weight.view(view) + bias.view(view)
    errors = []
    for n_ref in (10, 100, 1_000, 10_000, 1_000_000):
        y = NF.virtual_batch_norm(x, ref_mean, ref_var, n_ref, weight, bias)
        errors.append((y - limit).abs().max().item())
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    scaled = [e * n for e, n in zip(errors[1:], (100, 1_000, 10_000, 1_000_000), strict=True)]
    assert max(scaled) < 1.5 * min(scaled), f"error·N_R not constant: {scaled}"  # O(1/N_R)
    assert errors[-1] < 1e-3
    # the module, with ever larger reference batches of one distribution
    module_errors = []
    for n_ref in (4, 64, 1024):
        m = normlab.VirtualBatchNorm(4, affine=False, dtype=F64)
        x_ref = make_input((n_ref, 4, 2, 2), F64, seed=14)
        m.set_reference(x_ref)
        mean, _, var, _ = ref.reference_stats_ref(x_ref)
        alone = (x - mean.view(view)) / torch.sqrt(var.view(view) + 1e-5)
        module_errors.append((m(x) - alone).abs().max().item())
    assert module_errors[0] > module_errors[1] > module_errors[2]


# -- the reference batch is fixed -----------------------------------------------------------------


def test_reference_changes_only_through_set_reference_or_a_reference_pass() -> None:
    m = _layer(6)
    x_ref = make_input((5, 6, 3), F64, seed=15)
    m.set_reference(x_ref)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    probe = make_input((2, 6, 3), F64, seed=16)
    y0 = m(probe)
    for i in range(5):  # training steps on other batches, and eval calls
        batch = make_input((3 + i, 6, 3), F64, seed=20 + i).requires_grad_()
        m.train()(batch).sum().backward()
        m.eval()(batch)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(m.train()(probe), y0)
    x_ref2 = make_input((7, 6, 3), F64, seed=17) * 2
    m.set_reference(x_ref2)
    _stats_close(m, x_ref2)
    with reference_pass(m):
        m(x_ref)
    _stats_close(m, x_ref)
    assert torch.equal(m(probe), y0)


def test_first_call_without_reference_is_an_error_not_a_silent_reference() -> None:
    m = normlab.VirtualBatchNorm(6)
    with pytest.raises(ConfigError) as excinfo:
        m(torch.randn(4, 6, 3))
    msg = str(excinfo.value)
    assert "VirtualBatchNorm(6)" in msg and "set_reference" in msg and "reference_pass" in msg
    assert int(m.reference_size) == 0
    m.set_reference(torch.randn(4, 6, 3))
    m.reset_reference()  # reset_parameters does this too
    with pytest.raises(ConfigError):
        m(torch.randn(4, 6, 3))


# -- gradients through the reference statistics (the paper's graph) ------------------------------


class _Net(nn.Module):
    """conv → VBN → tanh → conv → VBN, float64."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(30)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, dtype=F64)
        self.vbn1 = normlab.VirtualBatchNorm(4, dtype=F64)
        self.conv2 = nn.Conv2d(4, 5, 1, dtype=F64)
        self.vbn2 = normlab.VirtualBatchNorm(5, dtype=F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
            for v in (self.vbn1, self.vbn2):
                v.weight.add_(1.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.vbn2(self.conv2(torch.tanh(self.vbn1(self.conv1(x)))))


def _paper_net(params: dict[str, Tensor], x_ref: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The same network as one float64 graph, R and x side by side (reference TF code)."""
    h_ref = F.conv2d(x_ref, params["conv1.weight"], params["conv1.bias"], padding=1)
    h = F.conv2d(x, params["conv1.weight"], params["conv1.bias"], padding=1)
    r, o = ref.paper_layer(h_ref, h, params["vbn1.weight"], params["vbn1.bias"])
    h_ref = F.conv2d(torch.tanh(r), params["conv2.weight"], params["conv2.bias"])
    h = F.conv2d(torch.tanh(o), params["conv2.weight"], params["conv2.bias"])
    return ref.paper_layer(h_ref, h, params["vbn2.weight"], params["vbn2.bias"])


def _step_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(31)
    x_ref = torch.randn(6, 3, 5, 5, generator=g, dtype=F64)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=F64) * 1.3 + 0.2
    g_out = torch.randn(4, 5, 5, 5, generator=g, dtype=F64)
    g_ref = torch.randn(6, 5, 5, 5, generator=g, dtype=F64)
    return x_ref, x, g_out, g_ref


def _oracle_grads(net: nn.Module, with_ref_loss: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    x_ref, x, g_out, g_ref = _step_data()
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    x_ref, x = x_ref.requires_grad_(), x.requires_grad_()
    r, o = _paper_net(params, x_ref, x)
    loss = (o * g_out).sum() + ((r * g_ref).sum() if with_ref_loss else 0.0)
    grads = torch.autograd.grad(loss, [x_ref, x, *params.values()])
    return grads[0], grads[1], dict(zip(params, grads[2:], strict=True))


@pytest.mark.parametrize("with_ref_loss", [False, True], ids=["loss_on_x", "loss_on_x_and_R"])
def test_reference_pass_gradients_match_the_papers_graph(with_ref_loss: bool) -> None:
    net = _Net()
    x_ref, x, g_out, g_ref = _step_data()
    x_ref, x = x_ref.requires_grad_(), x.requires_grad_()
    with reference_pass(net):
        r = net(x_ref)
    o = net(x)
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    expected_r, expected_o = _paper_net(params, x_ref.detach(), x.detach())
    close(r, expected_r, 1e-12, msg="R's output")
    close(o, expected_o, 1e-12, msg="x's output")
    loss = (o * g_out).sum() + ((r * g_ref).sum() if with_ref_loss else 0.0)
    loss.backward()
    gx_ref, gx, gparams = _oracle_grads(net, with_ref_loss)
    close(x.grad, gx, 1e-10, msg="x grad")
    close(x_ref.grad, gx_ref, 1e-10, msg="x_ref grad (reaches R through μ_R, σ²_R)")
    for name, p in net.named_parameters():
        close(p.grad, gparams[name], 1e-10, msg=f"{name} grad")


def test_frozen_reference_statistics_give_different_gradients() -> None:
    """Detaching R's statistics (what some ports do) is a different method: the test can fail."""
    net = _Net()
    x_ref, x, g_out, _ = _step_data()
    with torch.no_grad(), reference_pass(net):  # same statistics, no graph
        net(x_ref)
    (net(x) * g_out).sum().backward()
    _, _, paper = _oracle_grads(net, with_ref_loss=False)
    diff = (net.conv1.weight.grad - paper["conv1.weight"]).abs().max()
    assert diff > 1e-3 * paper["conv1.weight"].abs().max()


def test_graph_carrying_statistics_are_released() -> None:
    net = _Net()
    x_ref, x, g_out, _ = _step_data()
    x_ref.requires_grad_()
    with reference_pass(net):
        net(x_ref)
    assert net.vbn1._live is not None and net.vbn2._live is not None
    (net(x) * g_out).sum().backward()
    assert net.vbn1._live is None and net.vbn2._live is None  # released by the backward pass
    # later calls use the detached buffers: no "backward through the graph a second time"
    x_ref.grad = None
    (net(x) * g_out).sum().backward()
    assert x_ref.grad is None
    # released on .eval(), on copies, and never kept in eval or without grad
    with reference_pass(net):
        net(x_ref)
    assert net.vbn1._live is not None
    assert copy.deepcopy(net).vbn1._live is None
    net.eval()
    assert net.vbn1._live is None
    with reference_pass(net):
        net(x_ref)
    assert net.vbn1._live is None
    net.train()
    with torch.no_grad(), reference_pass(net):
        net(x_ref)
    assert net.vbn1._live is None
    # a new pass replaces the statistics of the previous one
    with reference_pass(net):
        net(x_ref)
    first = net.vbn1._live
    with reference_pass(net):
        net(x_ref * 2)
    assert net.vbn1._live is not None and net.vbn1._live[0] is not first[0]


def test_reference_pass_step_gradcheck_and_gradgradcheck() -> None:
    """∂ through μ_R, σ²_R (the analytic backward and its recomputed double backward)."""
    layer = _layer(3)
    names = [k for k, _ in layer.named_parameters()]

    def step(x_ref: Tensor, x: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        state = dict(zip(names, params, strict=True))
        with reference_pass(layer):
            r = torch.func.functional_call(layer, state, (x_ref,))
        return r, torch.func.functional_call(layer, state, (x,))

    x_ref = make_input((4, 3, 2, 3), F64, seed=40).requires_grad_()
    x = make_input((2, 3, 2, 3), F64, seed=41).requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(step, (x_ref, x, *params))
    assert torch.autograd.gradgradcheck(step, (x_ref, x, *params))


def test_eval_never_sends_gradients_into_the_reference() -> None:
    net = _Net()
    x_ref, x, g_out, _ = _step_data()
    x_ref.requires_grad_()
    net.eval()
    with reference_pass(net):
        net(x_ref)
    (net(x) * g_out).sum().backward()
    assert x_ref.grad is None


def test_reference_pass_saves_at_most_the_input() -> None:
    m = normlab.VirtualBatchNorm(8)
    x_ref = make_input((8, 8, 16, 16), F32, seed=3).requires_grad_()
    with reference_pass(m):
        storages = saved_storages(lambda: m(x_ref))
    assert sum(storages.values()) <= 1.5 * x_ref.numel() * x_ref.element_size()


def test_reference_pass_is_reachable_from_the_class_and_needs_a_vbn_layer() -> None:
    assert normlab.VirtualBatchNorm.reference_pass is reference_pass
    with (
        pytest.raises(ConfigError, match="holds no VirtualBatchNorm"),
        reference_pass(nn.Sequential(nn.Linear(2, 2))),
    ):
        pass
    m = _layer(2)
    with pytest.raises(RuntimeError), reference_pass(m):
        raise RuntimeError("inside")
    assert not m._in_reference_pass  # restored after an exception


# -- state ----------------------------------------------------------------------------------------


def test_state_dict_round_trip_reproduces_outputs() -> None:
    net = _Net()
    x_ref, x, _, _ = _step_data()
    with reference_pass(net):
        net(x_ref)
    net.eval()
    expected = net(x)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = _Net().eval()
    with pytest.raises(ConfigError, match="no reference batch"):
        fresh(x)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh(x), expected)
    assert torch.equal(fresh.train()(x), expected)  # no train/eval difference
    assert set(net.vbn1.state_dict()) == {
        "weight", "bias", "reference_mean", "reference_var", "reference_size",
    }


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("reference_var", torch.tensor([1.0, -0.5, 1.0]), "negative variance"),
        ("reference_mean", torch.tensor([0.0, float("nan"), 0.0]), "NaN or Inf"),
        ("reference_mean", torch.zeros(4), r"shape \(4,\), expected \(3,\)"),
        ("reference_size", torch.tensor(-2), "negative"),
        ("reference_size", torch.tensor(2.0), "integer scalar"),
    ],
)
def test_invalid_loaded_reference_is_refused(key: str, value: Tensor, match: str) -> None:
    m = _layer(3, dtype=F32)
    m.set_reference(torch.randn(4, 3, 2))
    state = m.state_dict()
    state[key] = value
    fresh = normlab.VirtualBatchNorm(3)
    with pytest.raises(ConfigError, match=match) as excinfo:
        fresh.load_state_dict(state)
    assert key in str(excinfo.value)


def test_loading_an_unset_state_unsets_the_reference() -> None:
    m = _layer(3, dtype=F32)
    m.set_reference(torch.randn(4, 3, 2))
    m.load_state_dict(normlab.VirtualBatchNorm(3).state_dict())
    with pytest.raises(ConfigError, match="no reference batch"):
        m(torch.randn(2, 3, 2))


def test_default_parameters_and_reference_code_initialization_note() -> None:
    m = normlab.VirtualBatchNorm(5)
    assert torch.equal(m.weight, torch.ones(5)) and torch.equal(m.bias, torch.zeros(5))
    assert torch.equal(m.reference_mean, torch.zeros(5))
    assert torch.equal(m.reference_var, torch.ones(5))
    assert m.eps == 1e-5
    assert "N(1, 0.02)" in (normlab.VirtualBatchNorm.__doc__ or "")


# -- errors ---------------------------------------------------------------------------------------


def test_reference_with_wrong_channel_count() -> None:
    m = normlab.VirtualBatchNorm(6)
    with pytest.raises(InputError) as excinfo:
        m.set_reference(torch.randn(4, 5, 3))
    msg = str(excinfo.value)
    assert "set_reference" in msg and "(N, 6, *S)" in msg and "(4, 5, 3)" in msg
    with pytest.raises(InputError, match="channel_dim=-1"):
        m.set_reference(torch.randn(4, 3, 6))
    with pytest.raises(InputError, match=r"\(4, 5, 3\)"), reference_pass(m):
        m(torch.randn(4, 5, 3))


@pytest.mark.parametrize(
    ("x_ref", "match"),
    [
        (torch.randn(0, 6, 3), r"empty \(shape \(0, 6, 3\)\)"),
        (torch.randn(1, 6), "1 value per channel"),
        (torch.randn(1, 6, 1, 1), "1 value per channel"),
        (torch.full((3, 6, 2), float("nan")), "not finite"),
        (torch.full((3, 6, 2), float("inf")), "not finite"),
    ],
    ids=["empty", "one_value", "one_pixel", "nan", "inf"],
)
def test_bad_reference_batch_is_refused_and_leaves_state(x_ref: Tensor, match: str) -> None:
    m = normlab.VirtualBatchNorm(6)
    m.set_reference(torch.randn(4, 6, 2))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(InputError, match=match) as excinfo:
        m.set_reference(x_ref)
    assert "x_ref" in str(excinfo.value)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_functional_argument_errors() -> None:
    x = torch.randn(2, 3, 4)
    mean, var = torch.zeros(3), torch.ones(3)
    for bad in (0, -1, 2.5, True, torch.tensor(1.5), torch.tensor([1, 2])):
        with pytest.raises(InputError, match="reference_size must be an int >= 1"):
            NF.virtual_batch_norm(x, mean, var, bad)
    with pytest.raises(InputError, match=r"reference_var must have shape \(3,\), one value per"):
        NF.virtual_batch_norm(x, mean, torch.ones(4), 3)
    with pytest.raises(InputError, match=r"\(N, 3, \*S\)"):
        NF.virtual_batch_norm(torch.randn(2, 4, 4), mean, var, 3)
    for err in (InputError, ConfigError):
        assert issubclass(err, NormlabError) and issubclass(err, ValueError)


def test_functional_accepts_the_buffer_and_is_pure() -> None:
    m = _layer(3)
    m.set_reference(make_input((4, 3, 5), F64, seed=50))
    x = make_input((2, 3, 5), F64, seed=51)
    y = NF.virtual_batch_norm(
        x, m.reference_mean, m.reference_var, m.reference_size, m.weight, m.bias
    )
    close(y, m(x), 1e-14)
    close(y, NF.virtual_batch_norm(x, m.reference_mean, m.reference_var, 4, m.weight, m.bias),
          0.0)


def test_empty_batch_gives_empty_output() -> None:
    m = _layer(3)
    m.set_reference(make_input((4, 3, 5), F64, seed=52))
    y = m(torch.empty(0, 3, 5, dtype=F64))
    assert y.shape == (0, 3, 5)


def test_docstring_examples() -> None:
    result = doctest.testmod(vbn_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
