"""Gradients under ``create_graph=True``, for every catalogue entry.

With create_graph=True normlab's Functions differentiate a recomputation of their forward
(`normlab.norms._double_backward`). Two properties, in float64:

* first-order gradients are the same numbers with and without create_graph, for the module and
  for the functional form with every floating parameter and buffer θ made a function of x,
  θ·s(x) with s(x) = 1 − 0.1·sigmoid(⟨w, x⟩) in (0.9, 1) (positive variances and a gate in
  [0, 1] stay valid). Running statistics (``running_*``) stay constants: they are state that
  no method differentiates (torch's batch-norm kernels reject them as differentiable inputs);
  Virtual BN's reference statistics are tied. A recomputation that returns total instead of
  partial derivatives counts ∂L/∂θ·∂θ/∂x twice there (gradcheck and gradgradcheck cannot see
  it: they check a consistently wrong function);
* second-order gradients, those of the gradient penalty P = Σ (∂L/∂x)² with respect to x and
  the parameters, equal the float64 oracle's (``case.reference`` driven by the same tied
  values, differentiated by autograd).

Virtual BN's reference pass, where R's statistics are functions of x_R inside the layer, is
checked on its own against the paper's graph (`oracles_virtual_batch_norm.paper_layer`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import normlab
from catalogue import CASES, Case, close, make_input, randomize_
from oracles_virtual_batch_norm import paper_layer

F64 = torch.float64
MODE_CASES = [(c, True) for c in CASES] + [(c, False) for c in CASES if c.train_eval_differ]
MODE_IDS = [f"{c.id}-{'train' if t else 'eval'}" for c, t in MODE_CASES]
mode_cases = pytest.mark.parametrize(("case", "training"), MODE_CASES, ids=MODE_IDS)

Loss = Callable[[Tensor, list[Tensor]], Tensor]


class _Tied:
    """``m`` with some attributes replaced (what the case's functional / reference read)."""

    def __init__(self, m: nn.Module, overrides: dict[str, Tensor]) -> None:
        self._m, self._overrides = m, overrides

    def __getattr__(self, name: str) -> Any:
        overrides = self.__dict__["_overrides"]
        return overrides[name] if name in overrides else getattr(self.__dict__["_m"], name)


def _setup(case: Case, training: bool) -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """(layer, x, upstream gradient, weights w of s(x)), float64."""
    m = randomize_(case.make(dtype=F64)).train(training)
    x = make_input(case.grad_shape, F64, seed=11).requires_grad_()
    gen = torch.Generator().manual_seed(12)
    g = torch.randn(case.grad_shape, dtype=F64, generator=gen)
    w = torch.randn(case.grad_shape, dtype=F64, generator=gen) / x.numel() ** 0.5
    return m, x, g, w


def _tied_loss(m: nn.Module, w: Tensor, g: Tensor, run: Callable[[Any, Tensor], Tensor]
               ) -> tuple[Loss, list[Tensor]]:
    """Loss(x, leaves) = Σ g·run(tied m, x), and the parameter leaves it is differentiated in."""
    names = [k for k, p in m.named_parameters() if p.is_floating_point()]
    leaves = [p.detach().clone().requires_grad_() for k, p in m.named_parameters() if k in names]
    buffers = {k: b for k, b in m.named_buffers()
               if b is not None and b.is_floating_point() and not k.startswith("running_")}

    def loss(x: Tensor, leaves: list[Tensor]) -> Tensor:
        s = 1 - 0.1 * torch.sigmoid((x * w).sum())
        tied = {k: p * s for k, p in zip(names, leaves, strict=True)}
        tied.update({k: b * s for k, b in buffers.items()})
        return (run(_Tied(m, tied), x) * g).sum()

    return loss, leaves


def _grads(loss: Loss, x: Tensor, leaves: list[Tensor], create_graph: bool) -> list[Tensor]:
    inputs = [x, *leaves]
    found = torch.autograd.grad(loss(x, leaves), inputs, create_graph=create_graph,
                                allow_unused=True)
    return [torch.zeros_like(t) if d is None else d for t, d in zip(inputs, found, strict=True)]


def _penalty_grads(loss: Loss, x: Tensor, leaves: list[Tensor]) -> list[Tensor]:
    """∂P/∂(x, leaves) for P = Σ (∂L/∂x)²."""
    (gx,) = torch.autograd.grad(loss(x, leaves), x, create_graph=True)
    inputs = [x, *leaves]
    penalty = gx.square().sum()
    if not penalty.requires_grad:  # L linear in x (eval, no parameters): P is constant
        return [torch.zeros_like(t) for t in inputs]
    found = torch.autograd.grad(penalty, inputs, allow_unused=True)
    return [torch.zeros_like(t) if d is None else d for t, d in zip(inputs, found, strict=True)]


def _same(actual: list[Tensor], expected: list[Tensor], tol: float, what: str) -> None:
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        close(a, e, tol, msg=f"{what}: input {i} (0 = x, then the parameters)")


@mode_cases
def test_module_first_order_same_with_create_graph(case: Case, training: bool) -> None:
    m, x, g, _ = _setup(case, training)

    def run(create_graph: bool) -> list[Tensor]:
        layer = copy.deepcopy(m)  # a training step may update the running statistics
        params = list(layer.parameters())
        found = torch.autograd.grad((layer(x) * g).sum(), [x, *params],
                                    create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(t) if d is None else d
                for t, d in zip([x, *params], found, strict=True)]

    _same(run(True), run(False), 1e-12, "module, create_graph=True vs False")


@mode_cases
def test_functional_first_order_same_with_create_graph(case: Case, training: bool) -> None:
    m, x, g, w = _setup(case, training)
    loss, leaves = _tied_loss(m, w, g, case.functional)
    _same(_grads(loss, x, leaves, True), _grads(loss, x, leaves, False), 1e-12,
          "functional with parameters and buffers functions of x, create_graph=True vs False")


@mode_cases
def test_second_order_matches_float64_oracle(case: Case, training: bool) -> None:
    m, x, g, w = _setup(case, training)
    loss, leaves = _tied_loss(m, w, g, case.functional)
    oracle, oracle_leaves = _tied_loss(m, w, g, case.reference)
    xo = x.detach().clone().requires_grad_()
    _same(_penalty_grads(loss, x, leaves), _penalty_grads(oracle, xo, oracle_leaves), 1e-9,
          "∂(Σ (∂L/∂x)²) vs the float64 oracle's")


def _vbn_reference_pass_loss(x_ref: Tensor, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """Loss of a VirtualBatchNorm reference pass (R = x_ref) and a minibatch x."""
    layer = normlab.VirtualBatchNorm(x.shape[1], dtype=F64).train()
    with torch.no_grad():
        layer.weight.copy_(gamma)
        layer.bias.copy_(beta)
    params = {"weight": gamma, "bias": beta}
    with normlab.VirtualBatchNorm.reference_pass(layer):
        y_ref = torch.func.functional_call(layer, params, (x_ref,))
    y = torch.func.functional_call(layer, params, (x,))
    return _vbn_weighted(y_ref, y)


def _vbn_weighted(y_ref: Tensor, y: Tensor) -> Tensor:
    gen = torch.Generator().manual_seed(21)
    g_ref = torch.randn(y_ref.shape, dtype=F64, generator=gen)
    g = torch.randn(y.shape, dtype=F64, generator=gen)
    return (y_ref * g_ref).sum() + (y * g).sum()


def test_virtual_batch_norm_reference_pass() -> None:
    """The issue's reproducer (set_reference's output, differentiated in x_R) and a full step:
    first-order gradients equal with and without create_graph and the paper's graph's, and so
    do the gradients of the penalty Σ (∂L/∂x_R)² + Σ (∂L/∂x)²."""
    gen = torch.Generator().manual_seed(20)
    x_ref = torch.randn(4, 3, 4, 5, dtype=F64, generator=gen).requires_grad_()
    x = torch.randn(3, 3, 4, 5, dtype=F64, generator=gen).requires_grad_()
    gamma = (torch.rand(3, dtype=F64, generator=gen) + 0.5).requires_grad_()
    beta = torch.randn(3, dtype=F64, generator=gen).requires_grad_()
    inputs = [x_ref, x, gamma, beta]

    def oracle(x_ref: Tensor, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        return _vbn_weighted(*paper_layer(x_ref, x, gamma, beta))

    g_ref = torch.randn(4, 3, 4, 5, dtype=F64, generator=gen)
    alone = torch.autograd.grad(
        (normlab.VirtualBatchNorm(3, dtype=F64).set_reference(x_ref) * g_ref).sum(), x_ref
    )[0]
    alone_graph = torch.autograd.grad(
        (normlab.VirtualBatchNorm(3, dtype=F64).set_reference(x_ref) * g_ref).sum(), x_ref,
        create_graph=True,
    )[0]
    close(alone_graph, alone, 1e-12, msg="set_reference: create_graph=True vs False")

    plain = torch.autograd.grad(_vbn_reference_pass_loss(*inputs), inputs)
    graph = torch.autograd.grad(_vbn_reference_pass_loss(*inputs), inputs, create_graph=True)
    expected = torch.autograd.grad(oracle(*inputs), inputs, create_graph=True)
    _same(list(graph), list(plain), 1e-12, "reference pass, create_graph=True vs False")
    _same(list(plain), [e.detach() for e in expected], 1e-10, "reference pass vs the paper")

    def penalty(first: tuple[Tensor, ...]) -> Tensor:
        return first[0].square().sum() + first[1].square().sum()

    actual = torch.autograd.grad(penalty(graph), inputs[:3])  # β does not enter ∂L/∂x
    wanted = torch.autograd.grad(penalty(expected), inputs[:3])
    _same(list(actual), list(wanted), 1e-9, "penalty gradients vs the paper's graph")
