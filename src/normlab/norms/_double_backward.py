"""First-order gradients as a differentiable graph, for ``create_graph=True``.

The analytic backward passes of normlab's autograd Functions are not themselves differentiable.
When the backward pass is to be differentiated (grad mode on inside ``backward``), each Function
instead recomputes its forward y = f(x, θ₁, …, θ_k) from differentiable eager operations and
lets autograd differentiate that recomputation.

The Function returns one gradient per input, and autograd sends each of them on along that
input's own history. So the recomputation must return **partial** derivatives ∂L/∂x, ∂L/∂θ_i:
if θ_i is itself a function of x (Virtual BN's reference statistics, γ = f(x) in a functional
call), ``torch.autograd.grad(y, [x, θ_i])`` would return the total derivative
dL/dx = ∂L/∂x + ∂L/∂θ_i·∂θ_i/∂x for x, and autograd would add ∂L/∂θ_i·∂θ_i/∂x a second time
through θ_i. Rebuilding f from fresh alias nodes (``t.view_as(t)``) and differentiating with
respect to the aliases cuts those paths: the only route from y to an alias is f itself. The
results still carry the aliases' history, so second-order gradients reach x and θ as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def recomputed_grads(
    forward: Callable[..., Tensor | tuple[Tensor, ...]],
    inputs: Sequence[Tensor | None],
    wanted: Sequence[bool],
    grad_output: Tensor | tuple[Tensor, ...],
) -> list[Tensor | None]:
    """(∂L/∂input for every input; None where not wanted or the input is None), differentiable.

    ``forward(*aliases)`` must recompute the Function's output (a tensor or a tuple of them)
    from differentiable operations (None passes through as None); ``grad_output`` is ∂L/∂y
    (one per output), reshaped by the caller to the recomputed outputs' shapes. An input that y
    does not depend on gets zeros. Each gradient has its input's dtype.
    """
    with torch.enable_grad():
        aliases = [None if t is None else t.view_as(t) for t in inputs]
        y = forward(*aliases)
        outputs = y if isinstance(y, tuple) else (y,)
        grads = grad_output if isinstance(grad_output, tuple) else (grad_output,)
        chosen = [i for i, (a, w) in enumerate(zip(aliases, wanted, strict=True))
                  if w and a is not None and a.requires_grad]
        found = torch.autograd.grad(
            outputs, [aliases[i] for i in chosen],  # type: ignore[misc]
            [g.to(o.dtype) for g, o in zip(grads, outputs, strict=True)],
            create_graph=True, allow_unused=True,
        ) if chosen else ()
    result: list[Tensor | None] = [None] * len(inputs)
    for i, g in zip(chosen, found, strict=True):
        like = aliases[i]
        result[i] = None if like is None else torch.zeros_like(like) if g is None else g.to(
            like.dtype)
    return result


__all__ = ["recomputed_grads"]
