"""Contract battery for every weight-side parametrization (tests/weight_catalogue.py).

Each case: the effective weight equals its float64 oracle; state round trip, deepcopy, pickle
and ``torch.compile(fullgraph=True)`` give the module's outputs back; an eval forward changes
no buffer; applying the method twice, or to a missing tensor, is a ConfigError; `unparametrize`
bakes the effective weight into a plain parameter; `parametrize` reaches every target layer.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize as torch_parametrize

import normlab
from normlab import registry
from normlab.errors import ConfigError
from weight_catalogue import WEIGHT_CASE_IDS, WEIGHT_CASES, WeightCase

pytestmark = pytest.mark.parametrize("case", WEIGHT_CASES, ids=WEIGHT_CASE_IDS)


def _input(case: WeightCase, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(case.input_shape, dtype=dtype)


def _buffers(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


def _apply(case: WeightCase) -> object:
    return registry.lookup_weight(case.name).apply


def test_effective_weight_matches_float64_oracle(case: WeightCase) -> None:
    module = case.build(dtype=torch.float64).eval()
    expected = case.oracle(module)
    torch.testing.assert_close(module.weight, expected, rtol=1e-10, atol=1e-12)


def test_output_uses_effective_weight(case: WeightCase) -> None:
    module = case.build(dtype=torch.float64).eval()
    x = _input(case, torch.float64)
    plain = copy.deepcopy(module)
    torch_parametrize.remove_parametrizations(plain, "weight", leave_parametrized=True)
    with torch.no_grad():
        plain.weight.copy_(case.oracle(module))
    torch.testing.assert_close(module(x), plain(x), rtol=1e-10, atol=1e-12)


def test_state_dict_round_trip(case: WeightCase) -> None:
    source = case.build()
    if case.has_state:
        source.train()
        for _ in range(3):
            source(_input(case))
    target = case.build()
    target.load_state_dict(source.state_dict())
    x = _input(case)
    source.eval()
    target.eval()
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
    assert set(target.state_dict()) == set(source.state_dict())


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_compute_the_same_function(case: WeightCase, how: str) -> None:
    module = case.build()
    if how == "deepcopy":
        twin = copy.deepcopy(module)
    elif how == "pickle":
        twin = pickle.loads(pickle.dumps(module))
    else:
        buffer = io.BytesIO()
        torch.save(module, buffer)
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
    assert torch_parametrize.is_parametrized(twin, "weight")
    x = _input(case)
    for mode in (False, True):  # eval, then one training forward each (same state)
        module.train(mode)
        twin.train(mode)
        torch.testing.assert_close(twin(x), module(x), rtol=0, atol=0)
    assert {k: v for k, v in twin.state_dict().items()}.keys() == module.state_dict().keys()


def test_compile_fullgraph_matches_eager(case: WeightCase) -> None:
    # every case compiles the same code objects (ParametrizationList.forward, Conv forward):
    # start from an empty cache so the cases do not add up to dynamo's recompile limit
    torch._dynamo.reset()
    eager = case.build()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True, backend="aot_eager")
    x = _input(case).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    for mode in (True, False):
        eager.train(mode)
        compiled_module.train(mode)
        y_eager = eager(x)
        y_compiled = compiled(x2)
        torch.testing.assert_close(y_compiled, y_eager, rtol=1e-5, atol=1e-6)
        g = torch.randn_like(y_eager)
        (gx_eager,) = torch.autograd.grad(y_eager, x, g)
        (gx_compiled,) = torch.autograd.grad(y_compiled, x2, g)
        torch.testing.assert_close(gx_compiled, gx_eager, rtol=1e-5, atol=1e-6)
    for (name, a), (_, b) in zip(
        eager.named_buffers(), compiled_module.named_buffers(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_eval_forward_changes_no_buffer(case: WeightCase) -> None:
    module = case.build().eval()
    before = _buffers(module)
    module(_input(case))
    after = _buffers(module)
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_training_forward_updates_state_only_when_declared(case: WeightCase) -> None:
    module = case.build().train()
    before = _buffers(module)
    module(_input(case))
    changed = [n for n in before if not torch.equal(before[n], dict(module.named_buffers())[n])]
    assert bool(changed) == case.has_state, changed


def test_applying_twice_is_a_config_error(case: WeightCase) -> None:
    apply = _apply(case)
    if apply is None:
        pytest.skip("not a parametrization applied by a function")
    module = case.build()
    with pytest.raises(ConfigError, match="twice"):
        apply(module)


def test_missing_tensor_is_a_config_error(case: WeightCase) -> None:
    apply = _apply(case)
    if apply is None:
        pytest.skip("not a parametrization applied by a function")
    with pytest.raises(ConfigError, match="no parameter named 'kernel'"):
        apply(nn.Linear(3, 4), name="kernel")
    with pytest.raises(ConfigError, match=r"torch\.nn\.Module"):
        apply(torch.zeros(3, 4))


def test_unparametrize_bakes_the_effective_weight(case: WeightCase) -> None:
    module = case.build().eval()
    x = _input(case)
    expected = module(x)
    buffers = _buffers(module)
    baked = normlab.unparametrize(module)
    assert not torch_parametrize.is_parametrized(baked)
    assert isinstance(baked.weight, nn.Parameter)
    torch.testing.assert_close(baked.eval()(x), expected, rtol=1e-6, atol=1e-6)
    assert torch_parametrize.is_parametrized(module, "weight")  # the original is untouched
    for name, value in _buffers(module).items():
        assert torch.equal(value, buffers[name]), name


def test_parametrize_reaches_every_target_layer(case: WeightCase) -> None:
    entry = registry.lookup_weight(case.name)
    if entry.apply is None:
        pytest.skip("not a parametrization")
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    )
    new, report = normlab.surgery.parametrize_with_report(model, case.name)
    assert [r.path for r in report] == ["0", "2", "4"]
    assert not torch_parametrize.is_parametrized(model)  # a copy by default
    for path in ("0", "2", "4"):
        layer = new.get_submodule(path)
        chain = layer.parametrizations.weight
        assert any(isinstance(p, entry.parametrization) for p in chain)
    skipped = normlab.parametrize(model, case.name, skip="4")
    assert not torch_parametrize.is_parametrized(skipped[4])
    assert torch_parametrize.is_parametrized(skipped[0])
