"""What every weight-side parametrization shares: the base class, the one registration path
(with its checks), and the output-unit view of a weight.

A weight-side method is a `torch.nn.utils.parametrize` parametrization: ``module.weight`` is
recomputed from ``module.parametrizations.weight.original`` on every access, so ``state_dict``,
``deepcopy``, pickling, ``torch.compile`` and ``remove_parametrizations`` work as for torch's
own. `register_once` is the only place that registers one; it refuses a module without the
named tensor and a second copy of the same method on the same tensor (torch lets the second
one in, and backward then breaks: pytorch/pytorch#66363).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from normlab.errors import ConfigError

# -- errors raised here ----------------------------------------------------------------------------


def not_a_module(function: str, module: object) -> ConfigError:
    return ConfigError(
        f"{function}: module must be a torch.nn.Module (e.g. nn.Linear or nn.Conv2d); got "
        f"{type(module).__name__}. For a whole model use normlab.parametrize(model, ...)."
    )


def no_such_tensor(function: str, module: nn.Module, name: object) -> ConfigError:
    tensors = [n for n, _ in module.named_parameters(recurse=False)]
    return ConfigError(
        f"{function}: {type(module).__name__} has no parameter named {name!r} (name={name!r}); "
        f"its parameters are {tensors or 'none'}. Pass name= one of those, e.g. name='weight'."
    )


def layer_name(module: nn.Module) -> str:
    """The class name a user wrote: torch's ``ParametrizedConv2d`` is reported as ``Conv2d``."""
    if parametrize.is_parametrized(module):
        return type(module).__bases__[0].__name__
    return type(module).__name__


def applied_twice(function: str, module: nn.Module, name: str) -> ConfigError:
    return ConfigError(
        f"{function}: {layer_name(module)}.{name} already has {function}; applying it twice "
        "normalizes twice and breaks backward (pytorch/pytorch#66363). Remove the first with "
        f"normlab.unparametrize(module) or torch.nn.utils.parametrize.remove_parametrizations"
        f"(module, {name!r}) before applying it again."
    )


def cannot_stack(function: str, module: nn.Module, name: str) -> ConfigError:
    methods = ", ".join(type(p).__name__ for p in module.parametrizations[name])
    return ConfigError(
        f"{function}: {layer_name(module)}.{name} already has a parametrization ({methods}); "
        f"{function} splits the weight into several tensors and can only come first in a chain. "
        f"Apply {function} before the others, or remove them first with "
        "normlab.unparametrize(module)."
    )


def bad_dim(function: str, dim: object, ndim: int) -> ConfigError:
    return ConfigError(
        f"{function}: dim={dim!r} is out of range for a weight with {ndim} dimensions; pass an "
        f"int in [{-ndim}, {ndim - 1}] (the output units' dimension: 0 for Linear and Conv, 1 for "
        "ConvTranspose) or None for one norm over the whole weight."
    )


# -- the base class --------------------------------------------------------------------------------


class WeightParametrization(nn.Module):
    """Base of normlab's weight-side parametrizations: ``forward(weight) -> effective weight``.

    ``method`` is the registry name. ``has_state`` is True for a parametrization that updates
    buffers in training forwards (spectral norm's power iteration); `normlab.freeze` stops
    those updates, as it stops a norm layer's running statistics. ``splits_weight`` is True
    when ``right_inverse`` returns several tensors (weight norm's g and v): torch can only put
    such a parametrization first in a chain.
    """

    method: ClassVar[str] = ""
    has_state: ClassVar[bool] = False
    splits_weight: ClassVar[bool] = False


def find(module: nn.Module, name: str, kind: type[nn.Module]) -> nn.Module | None:
    """The parametrization of type ``kind`` on ``module.<name>``, or None."""
    if not parametrize.is_parametrized(module, name):
        return None
    for registered in module.parametrizations[name]:
        if isinstance(registered, kind):
            return registered
    return None


def register_once(
    function: str,
    module: nn.Module,
    name: str,
    parametrization: WeightParametrization,
    *,
    unsafe: bool = False,
) -> nn.Module:
    """Register ``parametrization`` on ``module.<name>`` after the checks every method shares.

    Raises ConfigError when ``module`` is not a module, has no parameter ``name``, already
    has a parametrization of the same class on it, or has any when ``parametrization`` splits
    the weight. Returns ``module`` (changed in place).
    """
    if not isinstance(module, nn.Module):
        raise not_a_module(function, module)
    if not isinstance(name, str) or not isinstance(_tensor(module, name), Tensor):
        raise no_such_tensor(function, module, name)
    if find(module, name, type(parametrization)) is not None:
        raise applied_twice(function, module, name)
    if parametrization.splits_weight and parametrize.is_parametrized(module, name):
        raise cannot_stack(function, module, name)
    parametrize.register_parametrization(module, name, parametrization, unsafe=unsafe)
    _support_copies(type(module))
    return module


def _tensor(module: nn.Module, name: str) -> object:
    if parametrize.is_parametrized(module, name):
        chain = module.parametrizations[name]  # one original, or original0, 1, ... (g, v)
        return chain.original if hasattr(chain, "original") else chain.original0
    return module._parameters.get(name)


# torch gives each parametrized module a class of its own (Parametrized<Class>) and refuses to
# pickle it; its __deepcopy__ shares that class with the copy, so removing a parametrization
# from the copy deletes the original's property too. Copies here get a class of their own, and
# pickling rebuilds one from the base class and the parametrized names.


def _rebuild_parametrized(base: type[nn.Module], names: tuple[str, ...]) -> nn.Module:
    module = base.__new__(base)
    parametrize._inject_new_class(module)
    for name in names:
        parametrize._inject_property(module, name)
    _support_copies(type(module))
    return module


def _reduce_parametrized(self: nn.Module, protocol: object) -> tuple[object, ...]:
    names = tuple(self.__dict__["_modules"]["parametrizations"].keys())
    return (_rebuild_parametrized, (type(self).__bases__[0], names), self.__dict__.copy())


def _deepcopy_parametrized(self: nn.Module, memo: dict[int, object]) -> nn.Module:
    names = tuple(self.__dict__["_modules"]["parametrizations"].keys())
    replica = _rebuild_parametrized(type(self).__bases__[0], names)
    memo[id(self)] = replica
    replica.__setstate__(copy.deepcopy(self.__dict__, memo))
    return replica


def _support_copies(cls: type) -> None:
    cls.__reduce_ex__ = _reduce_parametrized  # type: ignore[assignment]  # see above
    cls.__deepcopy__ = _deepcopy_parametrized  # type: ignore[attr-defined]  # see above


def weight_of(module: nn.Module, name: str = "weight") -> Tensor:
    """The tensor a parametrization of ``module.<name>`` starts from (its ``original``)."""
    tensor = _tensor(module, name)
    if not isinstance(tensor, Tensor):
        raise no_such_tensor("weight_of", module, name)
    return tensor


def output_dim(module: nn.Module) -> int:
    """The weight dimension of the output units: 1 for ConvTranspose, 0 otherwise.

    torch's ``weight_norm(dim=0)`` on a ConvTranspose normalizes per *input* channel (a known
    pitfall, ../METHODS.md §2); normlab's default follows the output units instead.
    """
    return 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0


def check_dim(function: str, dim: object, ndim: int) -> int | None:
    """``dim`` as a non-negative int (or None); ConfigError when out of range or not an int."""
    if dim is None:
        return None
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise bad_dim(function, dim, ndim)
    return dim % ndim


def as_matrix(weight: Tensor, dim: int = 0) -> Tensor:
    """``weight`` as a (units, fan-in) matrix: dimension ``dim`` first, the rest flattened.

    A conv filter bank (C_out, C_in, kh, kw) becomes (C_out, C_in·kh·kw), the matrix the
    papers normalize (Miyato et al. 2018 §2.1, Salimans & Kingma 2016 §2).
    """
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.reshape(weight.shape[0], -1)


def from_matrix(matrix: Tensor, like: Tensor, dim: int = 0) -> Tensor:
    """The inverse of `as_matrix`: a (units, fan-in) matrix back in ``like``'s layout."""
    if dim == 0:
        return matrix.reshape(like.shape)
    moved = like.movedim(dim, 0)
    return matrix.reshape(moved.shape).movedim(0, dim)


@contextlib.contextmanager
def _chain_in_eval(module: nn.Module, name: str) -> Iterator[None]:
    """``module.<name>``'s parametrizations in eval mode for the block (no power iteration)."""
    modes = [(m, m.training) for m in module.parametrizations[name].modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def effective_weight(module: nn.Module, name: str = "weight") -> Tensor:
    """``module.<name>`` as the layer uses it (after any parametrizations already registered,
    computed in eval mode and without gradient); what a new parametrization receives."""
    tensor = _tensor(module, name)
    if not isinstance(tensor, Tensor):
        raise no_such_tensor("effective_weight", module, name)
    if not parametrize.is_parametrized(module, name):
        return tensor
    with torch.no_grad(), _chain_in_eval(module, name):
        return getattr(module, name)


def bake_weight(module: nn.Module, name: str = "weight") -> nn.Module:
    """Replace ``module.<name>``'s parametrizations by the plain effective weight (in place).

    The effective weight is computed in eval mode, so baking runs no power iteration and does
    not change any buffer.
    """
    # grad mode on: with several originals (weight norm's g, v) torch keeps the baked weight a
    # Parameter only when the computed weight requires grad
    with torch.enable_grad(), _chain_in_eval(module, name):
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return module
