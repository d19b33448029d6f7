"""Weight Normalization (Salimans & Kingma 2016, arXiv:1602.07868) and its data-dependent init.

Each output unit's weight vector is split into a length g and a direction v:

$$ w = g \\frac{v}{\\lVert v \\rVert_2}, $$

the norm over the unit's whole fan-in (a conv filter's C_in·kh·kw values). The parametrization
is torch's own layout (``parametrizations.weight.original0`` = g, ``original1`` = v, g shaped
like ``torch.norm_except_dim``), so checkpoints of ``torch.nn.utils.parametrizations.
weight_norm`` load unchanged; those of the deprecated hook-based ``torch.nn.utils.weight_norm``
(``weight_g`` / ``weight_v``) and of the plain layer (``weight``) are converted on load.

Default dim: normlab normalizes per *output unit*, dim 1 for ConvTranspose (whose weight is
(C_in, C_out, ...)); torch's ``dim=0`` normalizes a ConvTranspose per *input* channel (a known
pitfall, METHODS.md §2). A negative dim counts from the end (torch reads -1 as "one global
norm"; here that is ``dim=None``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm as _TorchWeightNorm

from normlab import errors
from normlab.errors import ConfigError, InputError
from normlab.reparam._base import (
    WeightParametrization,
    check_dim,
    find,
    no_such_tensor,
    not_a_module,
    output_dim,
    register_once,
)

# -- errors raised here ----------------------------------------------------------------------------


def _bad_eps(eps: object) -> ConfigError:
    return ConfigError(
        f"weight_norm: eps must be None (torch's fused kernel) or a positive finite float; got "
        f"{eps!r}. With eps, w = g·v/max(‖v‖, eps): a v written to zero stays finite."
    )


def _bad_init_number(name: str, value: object, fix: str) -> ConfigError:
    return ConfigError(f"init_weight_norm_: {name} must be {fix}; got {value!r}.")


def _empty_weight(module: nn.Module, name: str, shape: tuple[int, ...]) -> ConfigError:
    return ConfigError(
        f"weight_norm: {type(module).__name__}.{name} has no elements (shape {shape}), so it has "
        "no direction to normalize (pytorch/pytorch#181510: NaN gradients in torch). Give the "
        "layer at least one input and one output unit, or leave it out (skip=)."
    )


def _no_weight_norm(model: nn.Module) -> ConfigError:
    return ConfigError(
        f"init_weight_norm_: {type(model).__name__} has no weight-normalized layer (normlab's "
        "or torch.nn.utils.parametrizations.weight_norm). Apply it first: "
        "normlab.parametrize(model, 'weight_norm')."
    )


def _cannot_init(path: str, module: nn.Module, problem: str, fix: str) -> ConfigError:
    return ConfigError(
        f"init_weight_norm_: {path or '<root>'} ({type(module).__name__}) {problem}. {fix}"
    )


def _bad_batch(problem: str) -> InputError:
    return InputError(
        f"init_weight_norm_: batch {problem}. Pass a non-empty tensor of inputs (the paper uses "
        "one minibatch of a few hundred training examples), or a tuple of the model's "
        "positional inputs."
    )


# -- the parametrization ---------------------------------------------------------------------------


def _fan_in_dims(ndim: int, dim: int | None) -> tuple[int, ...]:
    return tuple(range(ndim)) if dim is None else tuple(d for d in range(ndim) if d != dim)


def _safe_directions(g: Tensor, v: Tensor, dim: int | None) -> tuple[Tensor, Tensor]:
    """(g, v) with every zero-norm slice of v replaced by the unit direction 1/sqrt(fan-in)
    and its g set to 0: the effective weight of that slice is 0, the other slices keep their
    values, and no forward or backward divides by a zero norm."""
    norm = torch.linalg.vector_norm(v, dim=_fan_in_dims(v.dim(), dim), keepdim=True)
    zero = norm == 0
    if not bool(zero.any()):
        return g, v
    fan_in = v.numel() // (1 if dim is None else v.shape[dim])
    v = torch.where(zero, torch.full_like(v, 1 / math.sqrt(fan_in)), v)
    g = torch.where(zero.reshape(g.shape), torch.zeros_like(g), g)
    return g, v


def weight_normalize(
    v: Tensor, g: Tensor, dim: int | None = 0, *, eps: float | None = None
) -> Tensor:
    r"""The effective weight of weight normalization; pure.

    $$ w = g \frac{v}{\lVert v \rVert_2} \quad\text{or, with eps,}\quad
       w = g \frac{v}{\max(\lVert v \rVert_2, \epsilon)}, $$

    one norm per slice of ``v`` along ``dim`` (the output units), over all its other
    dimensions; ``dim=None`` takes one norm over the whole tensor. ``g`` broadcasts against
    those norms: shape (units, 1, ..., 1) with the units at ``dim``, as torch's
    ``norm_except_dim`` gives, or a scalar for ``dim=None``. Without ``eps`` (torch's fused
    kernel) a zero-norm slice gives NaN; `weight_norm` never lets one reach the kernel.

    Args:
        v: the direction tensor (the weight's shape).
        g: the magnitudes, broadcasting against the norms: (units, 1, ..., 1), or a scalar for
            ``dim=None``.
        dim: the dimension of the output units; None: one norm over the whole tensor.
        eps: a lower bound on each norm; None: no bound (torch's fused kernel).

    Example:
        >>> weight_normalize(torch.tensor([[3.0, 4.0]]), torch.tensor([[10.0]]))
        tensor([[6., 8.]])
    """
    if not isinstance(v, Tensor) or not isinstance(g, Tensor):
        raise InputError(
            f"weight_normalize: v and g must be tensors; got {type(v).__name__} and "
            f"{type(g).__name__}. g holds one length per output unit (v's norm at first)."
        )
    dim = check_dim("weight_normalize", dim, max(v.dim(), 1))
    if eps is not None and (not errors.is_finite_number(eps) or eps <= 0):
        raise _bad_eps(eps)
    return _effective(v, g, dim, eps)


def _effective(v: Tensor, g: Tensor, dim: int | None, eps: float | None) -> Tensor:
    if eps is None:  # ATen's fused kernel, one call forward and one backward
        return torch._weight_norm(v, g, -1 if dim is None else dim)
    norm = torch.linalg.vector_norm(v, dim=_fan_in_dims(v.dim(), dim), keepdim=True)
    return v * (g / norm.clamp_min(eps))


class WeightNorm(WeightParametrization):
    r"""Weight normalization of one tensor: ``forward(g, v) = g·v/‖v‖`` (see `weight_norm`).

    ``right_inverse(w)`` returns (g, v) = (‖w‖ per unit, w), so registering it leaves the
    layer's function unchanged; a zero slice of w becomes g = 0 with v = 1/sqrt(fan-in) (an
    effective weight of 0 that g can still grow out of).
    """

    method = "weight_norm"
    splits_weight = True

    def __init__(self, dim: int | None = 0, eps: float | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return _effective(v, g, self.dim, self.eps)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        g = torch.norm_except_dim(weight, 2, -1 if self.dim is None else self.dim)
        return _safe_directions(g, weight, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" + ("" if self.eps is None else f", eps={self.eps}")


def _load_compat(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any, name: str
) -> None:
    """load_state_dict pre-hook: hook-era keys (``weight_g`` / ``weight_v``) and a plain
    ``weight`` become g and v; a zero-norm v from a checkpoint becomes g = 0 and the unit
    direction (torch would compute NaN there). Values are otherwise kept as they are."""
    wn = find(module, name, WeightNorm)
    if not isinstance(wn, WeightNorm):
        return
    g_key = f"{prefix}parametrizations.{name}.original0"
    v_key = f"{prefix}parametrizations.{name}.original1"
    if g_key not in state_dict and v_key not in state_dict:
        if f"{prefix}{name}_g" in state_dict and f"{prefix}{name}_v" in state_dict:
            state_dict[g_key] = state_dict.pop(f"{prefix}{name}_g")
            state_dict[v_key] = state_dict.pop(f"{prefix}{name}_v")
        elif isinstance(state_dict.get(prefix + name), Tensor):
            with torch.no_grad():
                state_dict[g_key], state_dict[v_key] = wn.right_inverse(
                    state_dict.pop(prefix + name)
                )
    g, v = state_dict.get(g_key), state_dict.get(v_key)
    if not (isinstance(g, Tensor) and isinstance(v, Tensor)) or v.dim() <= (wn.dim or 0):
        return  # missing or misshapen: load_state_dict reports it
    if g.numel() == (1 if wn.dim is None else v.shape[wn.dim]):
        with torch.no_grad():
            state_dict[g_key], state_dict[v_key] = _safe_directions(g, v, wn.dim)


def _has_compat_hook(module: nn.Module, name: str) -> bool:
    for hook in module._load_state_dict_pre_hooks.values():
        inner = getattr(hook, "hook", hook)  # torch wraps hooks registered with_module
        while isinstance(inner, functools.partial):
            if inner.func is _load_compat and inner.keywords.get("name") == name:
                return True
            inner = inner.func
    return False


def weight_norm(
    module: nn.Module,
    name: str = "weight",
    dim: int | Literal["output"] | None = "output",
    *,
    eps: float | None = None,
) -> nn.Module:
    r"""Weight normalization: ``module.<name>`` becomes w = g·v/‖v‖, one g per output unit.

    $$ w = g \frac{v}{\lVert v \rVert_2} $$

    with the norm over each output unit's fan-in. Registered as a torch parametrization with
    g = ``parametrizations.<name>.original0`` (initialized to ‖w‖, so the layer computes the
    same function as before) and v = ``original1`` (initialized to w). Identical in training
    and eval; no statistics. For the paper's data-dependent initialization of g and the bias,
    run `init_weight_norm_` on a batch afterwards.

    A zero-norm slice of the weight (a zero-initialized layer, or a zero row in a loaded
    checkpoint) never gives NaN: it becomes g = 0 with v = 1/sqrt(fan-in) in every entry, so
    its effective weight is 0 (the value the layer had) and g still receives a gradient
    (v̂·∂L/∂w). torch gives NaN there (pytorch/pytorch#19126). A v that *you* set to zero
    afterwards (pruning ``original1`` in place) would reach the fused kernel as 0/0: pass
    ``eps`` for that use, w = g·v/max(‖v‖, eps) (unfused, a little slower).

    Args:
        module: the layer (changed in place and returned).
        name: the parameter to normalize.
        dim: the weight dimension of the output units. The default, ``"output"``, is 0 for
            Linear and Conv and 1 for ConvTranspose (torch's default 0 would normalize a
            ConvTranspose per input channel); ``None`` takes one norm over the whole tensor.
            Negative values count from the end (torch reads -1 as ``None``).
        eps: None for torch's fused kernel (the default), or a floor on ‖v‖.

    Raises:
        ConfigError: ``module`` is not a module or has no parameter ``name``, ``dim`` is out
            of range, ``eps`` is not positive, or the tensor is already weight-normalized.

    Example:
        >>> layer = weight_norm(nn.Linear(3, 2))
        >>> layer.parametrizations.weight.original0.shape
        torch.Size([2, 1])

    References:
        Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to Accelerate
        Training of Deep Neural Networks", NeurIPS 2016, arXiv:1602.07868.
    """
    if not isinstance(module, nn.Module):
        raise not_a_module("weight_norm", module)
    if not isinstance(name, str):
        raise no_such_tensor("weight_norm", module, name)
    tensor = (
        getattr(module, name)
        if parametrize.is_parametrized(module, name)
        else module._parameters.get(name)
    )
    if not isinstance(tensor, Tensor):
        raise no_such_tensor("weight_norm", module, name)
    if eps is not None and (not errors.is_finite_number(eps) or eps <= 0):
        raise _bad_eps(eps)
    if tensor.numel() == 0:
        raise _empty_weight(module, name, tuple(tensor.shape))
    ndim = tensor.dim()
    resolved = check_dim("weight_norm", output_dim(module) if dim == "output" else dim, ndim)
    register_once("weight_norm", module, name, WeightNorm(resolved, eps))
    if not _has_compat_hook(module, name):
        module._register_load_state_dict_pre_hook(
            functools.partial(_load_compat, name=name), with_module=True
        )
    return module


# -- data-dependent initialization -----------------------------------------------------------------


def _wn_of(module: nn.Module) -> nn.Module | None:
    """The weight-norm parametrization on ``module.weight`` (normlab's or torch's), or None."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations["weight"]:
        if isinstance(p, (WeightNorm, _TorchWeightNorm)):
            return p
    return None


def _init_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every weight-normalized layer, checked: per output unit, the only parametrization."""
    found = []
    for path, module in model.named_modules():
        wn = _wn_of(module)
        if wn is None:
            continue
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            raise _cannot_init(
                path,
                module,
                "is weight-normalized but is not a Linear or Conv layer, so "
                "its output units are not known",
                "Initialize it by hand.",
            )
        if len(module.parametrizations["weight"]) != 1:
            raise _cannot_init(
                path,
                module,
                "has other parametrizations on its weight besides weight norm",
                "Initialize before adding them.",
            )
        if wn.dim != output_dim(module):
            raise _cannot_init(
                path,
                module,
                f"normalizes its weight along dim={wn.dim}, not per output unit "
                f"(dim={output_dim(module)}), so there is no g per unit to set",
                "Apply normlab.weight_norm with its default dim.",
            )
        found.append((path, module))
    return found


def _unit_moments(t: Tensor, unit_dim: int) -> tuple[Tensor, Tensor]:
    """Per-unit mean and biased variance of a layer output, over every other dim, in float64."""
    t = t.detach().to(torch.float64).movedim(unit_dim, 0).reshape(t.shape[unit_dim], -1)
    var, mean = torch.var_mean(t, dim=1, correction=0)
    return mean, var


def _check_batch(batch: object) -> tuple[Any, ...]:
    args = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
    if not args or not isinstance(args[0], Tensor):
        raise _bad_batch(f"is a {type(batch).__name__}" + (" without tensors" if args else ""))
    if args[0].dim() == 0 or args[0].shape[0] == 0 or args[0].numel() == 0:
        raise _bad_batch(f"is empty (shape {tuple(args[0].shape)})")
    return args


@torch.no_grad()
def init_weight_norm_(
    model: nn.Module,
    batch: Tensor | Sequence[Tensor],
    *,
    init_scale: float = 1.0,
    eps: float = 1e-8,
) -> nn.Module:
    r"""The paper's data-dependent initialization of every weight-normalized layer (in place).

    From the bottom layer to the top, with t = v·x/‖v‖ the unit's output before its scale and
    bias, μ[t] and σ²[t] its mean and biased variance over the batch (and spatial positions):

    $$ g \leftarrow \frac{s}{\sqrt{σ^2[t] + ε}}, \qquad b \leftarrow -μ[t]\,g, $$

    with s = ``init_scale``, so that on ``batch`` every unit's pre-activation g·t + b has mean
    0 and standard deviation s (Salimans & Kingma 2016 §3; the reference's ``init=True`` pass).
    Each layer sees the outputs of the layers below *as already initialized*: one forward pass
    in which each layer's first call is taken with g = 1 and b = 0, initialized from its
    output, and that output is replaced by the initialized one for the layers above (so the
    whole model costs one forward, not one per layer). A layer without a bias gets only g.
    Layers the forward does not reach are left as they are. Works on normlab's `weight_norm`
    and torch's ``parametrizations.weight_norm`` layers (Linear and Conv, per output unit).

    The pass runs in training mode, the mode the initialization is for (batch statistics in
    BatchNorm-like layers; dropout active, as in the reference code), under ``no_grad``.
    Every module's training flag is restored afterwards, and every buffer of the model
    (running statistics, counters) is restored to its value before the call, so no other
    layer's state moves; on error the layers' g and bias are restored too.

    Args:
        model: the network, with weight norm applied.
        batch: a minibatch of inputs (the reference uses 500 training examples), or a tuple
            of the model's positional inputs.
        init_scale: the target standard deviation s of every unit.
        eps: added to σ² (a unit that is constant on the batch gets g = s/sqrt(eps)).

    Returns ``model``. Raises `ConfigError` when the model has no weight-normalized layer or a
    layer that cannot be initialized per unit, `InputError` for an empty batch.
    """
    if not isinstance(model, nn.Module):
        raise not_a_module("init_weight_norm_", model)
    if not errors.is_finite_number(init_scale) or init_scale <= 0:
        raise _bad_init_number("init_scale", init_scale, "a positive finite float (e.g. 1.0)")
    if not errors.is_finite_number(eps) or eps <= 0:
        raise _bad_init_number("eps", eps, "a positive finite float (e.g. 1e-8)")
    args = _check_batch(batch)
    targets = _init_targets(model)
    if not targets:
        raise _no_weight_norm(model)
    params = [
        t
        for _, m in targets
        for t in (m.parametrizations.weight.original0, m.bias)
        if t is not None
    ]
    saved_params = [t.clone() for t in params]
    buffers = [b for b in model.buffers() if b is not None]
    saved_buffers = [b.clone() for b in buffers]
    modes = [(m, m.training) for m in model.modules()]
    done: set[int] = set()
    handles = []

    def before(module: nn.Module, _: object) -> None:
        if id(module) not in done:
            module.parametrizations.weight.original0.fill_(1)
            if module.bias is not None:
                module.bias.zero_()

    def after(module: nn.Module, _: object, t: Tensor) -> Tensor | None:
        if id(module) in done:
            return None
        done.add(id(module))
        unit_dim = -1 if isinstance(module, nn.Linear) else 1
        mean, var = _unit_moments(t, unit_dim)
        g = init_scale / torch.sqrt(var + eps)
        b = -mean * g
        g_param = module.parametrizations.weight.original0
        g_param.copy_(g.reshape(g_param.shape))
        shape = [1] * t.dim()
        shape[unit_dim] = -1
        if module.bias is None:
            return t * g.to(t.dtype).view(shape)
        module.bias.copy_(b)
        return torch.addcmul(b.to(t.dtype).view(shape), t, g.to(t.dtype).view(shape))

    try:
        for _, module in targets:
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
        model.train()
        model(*args)
    except BaseException:
        for t, old in zip(params, saved_params, strict=True):
            t.copy_(old)
        raise
    finally:
        for handle in handles:
            handle.remove()
        for b, old in zip(buffers, saved_buffers, strict=True):
            b.copy_(old)
        for m, mode in modes:
            m.training = mode
    return model


# -- registry entries (discovered by normlab.reparam; registry and normlab.* derive from them) --
from normlab.reparam._entry import WeightEntry  # noqa: E402  (this block closes the file)

ENTRIES = (
    WeightEntry(
        "weight_norm",
        weight_norm,
        "Salimans & Kingma 2016, arXiv:1602.07868",
        parametrization=WeightNorm,
        aliases=("wn",),
        functional=(weight_normalize,),
        exports=(init_weight_norm_,),
    ),
)
