"""Graph capture over the catalogue: torch.fx, torch.export, torch.compile and TorchScript.

Every check compares the captured program with the eager layer: the output, the input and
parameter gradients, and the state after the call (running statistics must move in training,
and stay put in eval). FX runs every case of tests/catalogue.py; export and compile run one
case per registered layer by default (the first one of its name, so a newly registered method
is covered; compile in training mode only) and every case, in both modes, with ``-m slow``.
TorchScript is not supported: ``torch.jit.script`` must raise a ConfigError that names the
alternatives, for the layer and for a model holding it. The torchvision test runs where
torchvision is installed.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import normlab
from catalogue import (
    CASES,
    Case,
    close,
    make_input,
    randomize_,
    small_spec,
    snapshot,
)
from normlab import registry
from normlab.errors import ConfigError
from normlab.rnn import NormLSTM
from weight_catalogue import WEIGHT_CASE_IDS, WEIGHT_CASES, WeightCase

pytestmark = [
    # dynamo instantiates autograd.Function classes while tracing them (torch's own warning)
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]

FIRST_OF_NAME = tuple({c.name: c for c in reversed(CASES)}[n] for n in registry.available())
SLOW_REST = tuple(
    pytest.param(c, id=c.id, marks=pytest.mark.slow) for c in CASES if c not in FIRST_OF_NAME
)
ONE_PER_NAME = tuple(pytest.param(c, id=c.id) for c in FIRST_OF_NAME)
MODES = pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])


def test_every_registered_layer_has_a_default_case() -> None:
    assert [c.name for c in FIRST_OF_NAME] == registry.available()


def _layer(case: Case, dtype: torch.dtype) -> nn.Module:
    return randomize_(case.make().to(dtype))


def _run(fn: Callable[[Tensor], Any], params_of: nn.Module, x: Tensor) -> tuple[
    Tensor, Tensor, dict[str, Tensor]
]:
    """fn(x) on a fresh leaf copy of x, backward of a fixed random upstream gradient: output,
    dL/dx, and the gradient of each parameter of ``params_of`` that received one, by name."""
    params_of.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_()
    y = fn(leaf)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y.backward(g.to(y.dtype))
    grads = {k: p.grad for k, p in params_of.named_parameters() if p.grad is not None}
    return y.detach(), leaf.grad, grads  # type: ignore[return-value]


def _same_run(
    eager: nn.Module, captured: Callable[[Tensor], Any], state_of: nn.Module, x: Tensor,
    tol: float, *, partial_state: bool = False,
) -> None:
    """``captured`` (whose parameters and buffers are ``state_of``'s, under eager's names)
    gives eager's output, gradients and state after one call, on the same input and upstream
    gradient."""
    initial = snapshot(eager)
    y0, gx0, gp0 = _run(eager, eager, x)
    y1, gx1, gp1 = _run(captured, state_of, x)
    close(y1, y0, tol, msg="output")
    close(gx1, gx0, tol, msg="input gradient")
    assert gp1.keys() == gp0.keys()
    for key, value in gp0.items():
        close(gp1[key], value, tol, msg=f"gradient of {key}")
    before, after = snapshot(eager), snapshot(state_of)
    if partial_state:  # strict export drops the buffers the graph does not read or write
        assert after.keys() <= before.keys()
        missing = before.keys() - after.keys()
        assert all(torch.equal(before[k], initial[k]) for k in missing), missing
    else:
        assert before.keys() == after.keys()
    for key, value in after.items():
        close(value.double(), before[key].double(), tol, msg=f"state {key}")


# -- FX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@MODES
def test_fx_symbolic_trace_matches_eager(case: Case, training: bool) -> None:
    """The layer is a leaf of the traced graph (one call_module node); the GraphModule runs it
    with real tensors, so output, gradients and running statistics are eager's."""
    eager = _layer(case, torch.float64).train(training)
    model = nn.Sequential(copy.deepcopy(eager))
    gm = torch.fx.symbolic_trace(model)
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["0"]
    assert gm.get_submodule("0") is model[0]
    _same_run(eager, gm, model[0], make_input(case.grad_shape), 1e-12)


def test_fx_root_layer_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"BatchNorm.*leaf.*Sequential\(layer\)"):
        torch.fx.symbolic_trace(normlab.BatchNorm(4))


def test_fx_model_with_several_layers_keeps_updating_statistics() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), normlab.BatchNorm(8), nn.ReLU(), normlab.GroupNorm(8, num_groups=2)
    )
    gm = torch.fx.symbolic_trace(model)
    x = torch.randn(4, 3, 6, 6)
    y = gm(x)
    assert model[1].num_batches_tracked.item() == 1
    close(y, model.eval().train()(x), 1e-6)  # the graph and the model are the same modules
    assert model[1].num_batches_tracked.item() == 2


# -- torch.export ---------------------------------------------------------------------------


def _export_case(case: Case, training: bool, strict: bool) -> None:
    eager = _layer(case, torch.float64).train(training)
    exported_layer = copy.deepcopy(eager)
    x = make_input(case.grad_shape)
    program = torch.export.export(exported_layer, (x,), strict=strict)
    module = program.module()
    _same_run(eager, module, module, x, 1e-10, partial_state=strict)
    # the exported program's buffers are the exported copy's: it moves like eager on a 2nd call
    _same_run(eager, module, module, x * 2 + 1, 1e-10, partial_state=strict)


@pytest.mark.parametrize("case", ONE_PER_NAME + SLOW_REST)
@MODES
def test_export_matches_eager(case: Case, training: bool) -> None:
    _export_case(case, training, strict=False)


@pytest.mark.slow
@pytest.mark.parametrize("case", ONE_PER_NAME)
@MODES
def test_strict_export_matches_eager(case: Case, training: bool) -> None:
    torch._dynamo.reset()
    _export_case(case, training, strict=True)


# -- torch.compile ----------------------------------------------------------------------------


def _compile_case(case: Case, backend: str, training: bool) -> None:
    # the cases compile the same code objects: start from an empty cache so that they do not
    # add up to dynamo's recompile limit
    torch._dynamo.reset()
    eager = _layer(case, torch.float32).train(training)
    compiled_layer = copy.deepcopy(eager)
    compiled = torch.compile(compiled_layer, fullgraph=True, backend=backend)
    x = make_input(case.grad_shape, torch.float32)
    for step in range(2):  # the second call reads the buffers the first one wrote
        _same_run(eager, compiled, compiled_layer, x + step, 1e-5)


@pytest.mark.parametrize("case", ONE_PER_NAME + SLOW_REST)
@pytest.mark.parametrize(
    "training", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["train", "eval"]
)
def test_compile_aot_eager_matches_eager(case: Case, training: bool) -> None:
    _compile_case(case, "aot_eager", training)


@pytest.mark.slow
@pytest.mark.parametrize("case", ONE_PER_NAME + SLOW_REST)
@MODES
def test_compile_eager_backend_matches_eager(case: Case, training: bool) -> None:
    _compile_case(case, "eager", training)


@pytest.mark.slow
# inductor's own import of torch.jit.script_method warns in torch 2.13
@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method. is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", ["batch_norm", "group_norm", "evo_norm_s0", "switchable_norm"])
def test_compile_inductor_smoke(name: str) -> None:
    case = next(c for c in FIRST_OF_NAME if c.name == name)
    _compile_case(case, "inductor", True)


# -- TorchScript ------------------------------------------------------------------------------


def _script(module: nn.Module) -> Any:
    with warnings.catch_warnings():  # torch deprecates torch.jit.script itself (2.13, 2.14)
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script. is deprecated")
        return torch.jit.script(module)



@pytest.mark.parametrize("name", registry.available())
def test_script_raises_a_clear_error(name: str) -> None:
    layer = registry.create(small_spec(name), 8)
    cls = type(layer).__name__
    pattern = rf"{cls} cannot be compiled by TorchScript.*torch\.compile.*torch\.export"
    with pytest.raises(ConfigError, match=pattern):
        _script(layer)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), layer)  # found inside a model too
    with pytest.raises(ConfigError, match=pattern):
        _script(model)


def test_script_of_norm_lstm_raises_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"NormLSTM cannot be compiled by TorchScript"):
        _script(NormLSTM(3, 4, norm="ln"))


# -- torchvision (run where it is installed: a separate environment) ---------------------------


@pytest.mark.parametrize("case", ONE_PER_NAME)
def test_torchvision_feature_extractor(case: Case) -> None:
    feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
    c = case.num_features
    model = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), _layer(case, torch.float32), nn.ReLU())
    reference = copy.deepcopy(model)
    extractor = feature_extraction.create_feature_extractor(model, {"1": "norm", "2": "act"})
    x = torch.randn(4, 3, 5, 5)
    features = extractor(x)
    normalized = reference[1](reference[0](x))
    close(features["norm"], normalized, 1e-6)
    close(features["act"], reference[2](normalized), 1e-6)
    state = snapshot(extractor)
    for key, value in snapshot(reference).items():  # statistics updated once, like eager's
        close(state[key].double(), value.double(), 1e-6, msg=key)


# -- NormLSTM ---------------------------------------------------------------------------------


class _Summed(nn.Module):
    def __init__(self, lstm: nn.Module) -> None:
        super().__init__()
        self.lstm = lstm

    def forward(self, x: Tensor) -> Tensor:
        out, (h, c) = self.lstm(x)
        return out + h[-1] + c[-1]


def _lstm(norm: str | None, training: bool) -> nn.Module:
    return _Summed(NormLSTM(3, 4, norm=norm, num_layers=2).double()).train(training)


@pytest.mark.parametrize("norm", ["bn", "ln", None])
@MODES
def test_norm_lstm_fx(norm: str | None, training: bool) -> None:
    eager = _lstm(norm, training)
    gm = torch.fx.symbolic_trace(copy.deepcopy(eager))
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["lstm"]
    _same_run(eager, gm, gm, torch.randn(5, 2, 3, dtype=torch.float64), 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["bn", "ln", None])
@MODES
def test_norm_lstm_export(norm: str | None, training: bool) -> None:
    eager = _lstm(norm, training)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    module = torch.export.export(copy.deepcopy(eager), (x,), strict=False).module()
    _same_run(eager, module, module, x, 1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["bn", "ln", None])
@MODES
def test_norm_lstm_compile(norm: str | None, training: bool) -> None:
    torch._dynamo.reset()
    eager = _lstm(norm, training).float()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")
    _same_run(eager, compiled, compiled_model, torch.randn(5, 2, 3), 1e-5)


# -- weight-side parametrizations -------------------------------------------------------------


FIRST_WEIGHT_CASES = tuple({c.name: c for c in reversed(WEIGHT_CASES)}.values())


@pytest.mark.parametrize("case", WEIGHT_CASES, ids=WEIGHT_CASE_IDS)
@MODES
def test_weight_parametrization_fx(case: WeightCase, training: bool) -> None:
    """A module with a normlab parametrization traces with FX (torch.nn's parametrized module
    is a leaf) and gives eager's results, spectral norm's power iteration included."""
    eager = case.build(torch.float64).train(training)
    model = nn.Sequential(copy.deepcopy(eager))
    gm = torch.fx.symbolic_trace(model)
    _same_run(eager, gm, model[0], torch.randn(case.input_shape, dtype=torch.float64), 1e-12)


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=() if c in FIRST_WEIGHT_CASES else pytest.mark.slow)
    for c in WEIGHT_CASES
])
@MODES
def test_weight_parametrization_export(case: WeightCase, training: bool) -> None:
    """The exported program inlines the parametrization and gives eager's results and state."""
    eager = case.build(torch.float64).train(training)
    x = torch.randn(case.input_shape, dtype=torch.float64)
    module = torch.export.export(copy.deepcopy(eager), (x,), strict=False).module()
    _same_run(eager, module, module, x, 1e-10)


def test_eager_composition_runs_the_captured_composition_in_eager_mode() -> None:
    """`eager_composition` (normlab bench's eager baseline): `compiling` is True inside, the
    count says whether a layer asked, the switch is restored on exit (nested too), and the
    composition computes what the fast path computes."""
    from normlab.core.tracing import compiling, eager_composition

    assert not compiling()
    layer = normlab.RMSNorm(8)
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    layer = layer.double()
    y_fast = layer(x)
    (g_fast,) = torch.autograd.grad(y_fast.square().sum(), x)
    with eager_composition() as asked:
        assert asked() == 0
        y = layer(x)
        assert asked() > 0
        with eager_composition():
            assert compiling()
        assert compiling()
        (g,) = torch.autograd.grad(y.square().sum(), x)
    assert not compiling()
    assert y.grad_fn is not None and type(y.grad_fn) is not type(y_fast.grad_fn)
    torch.testing.assert_close(y, y_fast)
    torch.testing.assert_close(g, g_fast)
    with eager_composition() as asked:
        normlab.GroupNorm(8, num_groups=4)(x.float())  # the native kernel: nothing to ask
        assert asked() == 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@MODES
def test_eager_composition_computes_what_the_fast_path_computes(case: Case, training: bool) -> None:
    """`normlab bench` times each layer's captured composition in eager mode: every catalogue
    case must run there and give the fast path's output, gradients and state (a layer whose
    fast path hands its statistics over differently broke here: Ghost BN's analytic
    coefficients once left them unset)."""
    from normlab.core.tracing import eager_composition

    eager = _layer(case, torch.float64).train(training)
    composed = copy.deepcopy(eager)

    def run(x: Tensor) -> Any:
        with eager_composition():
            return composed(x)

    _same_run(eager, run, composed, make_input(case.grad_shape), 1e-10)


def test_eager_composition_of_ghost_batch_norm_on_a_map_that_takes_its_analytic_path() -> None:
    """64 positions per slice: Ghost BN's analytic-coefficients path, not the permuted one."""
    from normlab.core.tracing import eager_composition

    eager = randomize_(normlab.GhostBatchNorm(6, ghost_batch_size=4).double())
    composed = copy.deepcopy(eager)

    def run(x: Tensor) -> Any:
        with eager_composition():
            return composed(x)

    _same_run(eager, run, composed, torch.randn(12, 6, 8, 8, dtype=torch.float64), 1e-10)
