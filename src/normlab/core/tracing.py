"""How normlab's modules meet torch's graph capture: FX, torch.export, torch.compile, TorchScript.

* **FX** (``torch.fx.symbolic_trace``, torchvision's ``create_feature_extractor``): a normlab
  module is a leaf, as torch.nn's own norms are. Its forward validates its input, picks a
  native kernel from the input's layout and runs custom autograd Functions, none of which a
  Proxy can go through; so, called with a Proxy, it records a ``call_module`` node instead. The
  GraphModule then calls the very module with real tensors: the same output, the same
  gradients, and the running statistics update in training mode.
* **torch.export** and **torch.compile** trace the forward itself (`compiling` is True there);
  the few code paths that only suit eager execution ask `compiling`.
* `eager_composition` makes `compiling` True in eager mode too, so that ``normlab bench`` can
  time the composition a graph capture would trace against the layer's own fast path.
* **TorchScript** cannot compile these forwards (custom autograd Functions, dataclasses,
  closures): ``torch.jit.script`` raises `errors.ConfigError` naming the module and the
  alternatives instead of a parser error deep inside normlab.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn
from torch.fx import Proxy

from normlab import errors

M = TypeVar("M", bound=type[nn.Module])
F = TypeVar("F", bound=Callable[..., Any])


_composing = False  # inside `eager_composition`
_asked = 0  # how often `compiling` answered True there


def compiling() -> bool:
    """True while torch.compile or torch.export (strict or not) traces the forward, and inside
    `eager_composition`."""
    if _composing:
        global _asked
        _asked += 1
        return True
    return torch.compiler.is_compiling()


@contextlib.contextmanager
def eager_composition() -> Iterator[Callable[[], int]]:
    """Run the differentiable compositions that graph capture traces, in eager mode.

    Inside the block `compiling` is True, so every layer that has a fast path (a custom
    autograd Function, a hand-written backward) runs the plain composition of ATen operations
    it hands to torch.compile and torch.export instead. Yields a callable: how many times a
    layer asked `compiling` inside the block so far (0: the layer has no separate composition,
    its forward is the same with or without the block). Not thread-safe; for benchmarks.

    Example:
        >>> with eager_composition() as asked:
        ...     before = asked()
        ...     compiling()
        ...     asked() - before
        True
        1
    """
    global _composing, _asked
    outer, start = _composing, _asked
    _composing = True
    try:
        yield lambda: _asked - start
    finally:
        _composing = outer


def eager_lru_cache(maxsize: int) -> Callable[[F], F]:
    """``functools.lru_cache`` in eager mode; a plain call under graph capture, where a cached
    tensor would be a fake one (and dynamo warns that it ignores the cache anyway)."""

    def decorate(fn: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args: Any) -> Any:
            return fn(*args) if torch.compiler.is_compiling() else cached(*args)

        return call  # type: ignore[return-value]  # same signature as fn

    return decorate


def _fx_proxy(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Proxy | None:
    """The first Proxy among the arguments of a forward (the input, in practice), or None."""
    if args:
        first = args[0]
        return first if isinstance(first, Proxy) else None
    return next((v for v in kwargs.values() if isinstance(v, Proxy)), None)


def _leaf_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def traced_as_leaf(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if args and not isinstance(args[0], Proxy):  # eager, compile, export: one check
            return forward(self, *args, **kwargs)
        proxy = _fx_proxy(args, kwargs)
        if proxy is None:
            return forward(self, *args, **kwargs)
        tracer = proxy.tracer
        path = tracer.path_of_module(self)
        if not path:  # the layer is the root: a graph cannot call its own root module
            raise fx_root(self)
        return tracer.create_proxy("call_module", path, args, kwargs)

    traced_as_leaf.__normlab_fx_leaf__ = True  # type: ignore[attr-defined]  # wrapped once
    return traced_as_leaf


def fx_root(module: nn.Module) -> errors.ConfigError:
    """The error of ``torch.fx.symbolic_trace(layer)`` on a normlab layer itself."""
    name = type(module).__name__
    return errors.ConfigError(
        f"torch.fx.symbolic_trace({name}(...)): normlab layers are FX leaf modules (the graph "
        "calls them, as it calls torch.nn's norms), so a graph cannot be traced from the layer "
        "alone. Trace the model that holds it, or wrap it: "
        "torch.fx.symbolic_trace(torch.nn.Sequential(layer))."
    )


def fx_leaf(cls: M) -> M:
    """Make ``cls`` (and, through `Norm.__init_subclass__`, its subclasses) an FX leaf: a
    forward called with a Proxy records ``call_module`` rather than tracing the body."""
    forward = cls.__dict__.get("forward")
    if forward is not None and not getattr(forward, "__normlab_fx_leaf__", False):
        cls.forward = _leaf_forward(forward)  # type: ignore[attr-defined]  # method replaced
    return cls


def not_scriptable(module: nn.Module) -> errors.ConfigError:
    """The error ``torch.jit.script`` raises for a normlab module (see `refuse_script`)."""
    name = type(module).__name__
    return errors.ConfigError(
        f"{name} cannot be compiled by TorchScript (torch.jit.script): its forward runs "
        "custom autograd Functions and Python-side dispatch that TorchScript does not support. "
        f"Use torch.compile(model) or torch.export.export(model, args) instead; both capture "
        f"{name}, and torch.fx.symbolic_trace keeps it as a leaf module."
    )


def refuse_script(self: nn.Module) -> nn.Module:
    """``__prepare_scriptable__`` of a normlab module: torch.jit.script calls it on every
    submodule before compiling, so a model holding a normlab layer fails with `not_scriptable`."""
    raise not_scriptable(self)


__all__ = [
    "compiling", "eager_composition", "eager_lru_cache", "fx_leaf", "fx_root", "not_scriptable",
    "refuse_script",
]
