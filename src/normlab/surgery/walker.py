"""One module walker for every surgery tool: visit, select, replace by path.

`replace_modules` visits every module of a model once, in ``named_modules()`` order (parents
before children), asks a callback for a replacement and sets it at the module's dotted path(s):

* **paths**: ``"layer1.0.bn1"``; integer names of ``nn.Sequential`` / ``nn.ModuleList`` and keys
  of ``nn.ModuleDict`` are path components like any attribute; ``""`` is the model itself
  (a replaced root becomes the returned model).
* **shared modules**: a module registered at several paths (weight tying, a norm reused
  twice) is offered to the callback once, at its first path, and the one replacement is set
  at every path, so the sharing survives. The report has one entry per path.
* **replaced subtrees are not entered**: the children of a replaced module are gone.
* **copy or not**: ``inplace=False`` (the default) deep-copies the model first (`copy_model`,
  which also copies uninitialized lazy layers) and leaves the original untouched;
  ``inplace=True`` mutates and returns the model itself.
* **all or nothing**: every replacement is made before the first is set, so a callback that
  raises leaves even an ``inplace=True`` model as it was.

`matches` / `selected` implement the ``skip=`` / ``only=`` filters every tool takes, and
`check_selectors` refuses an item that selects no module of the model (a misspelt path would
otherwise make ``only=`` a silent no-op), naming the nearest paths. A selector is a string, a
class or a list of those:

* a string is a path or an ``fnmatch`` pattern, and also selects everything below the path it
  names: ``"layer1"`` selects ``layer1`` and ``layer1.0.bn1``; ``"*.bn2"`` selects every
  ``bn2``; ``"head.?"`` selects ``head.1``.
* a class selects its instances and the instances of its subclasses (``isinstance``).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from torch import nn
from torch.nn.parameter import UninitializedBuffer

from normlab.errors import ConfigError, did_you_mean

# -- errors raised here ----------------------------------------------------------------------------


def not_a_model(function: str, model: object) -> ConfigError:
    return ConfigError(
        f"{function}: model must be a torch.nn.Module; got {type(model).__name__}. Pass the "
        "network itself (e.g. a torchvision or timm model), not its state_dict or output."
    )


def bad_replacement(path: str, value: object) -> ConfigError:
    return ConfigError(
        f"replace_modules: the callback returned {type(value).__name__} for {path or '<root>'!r}; "
        "it must return a torch.nn.Module (the replacement) or None (keep the module)."
    )


def bad_selector(argument: str, value: object) -> ConfigError:
    return ConfigError(
        f"{argument} must be a module path or fnmatch pattern (str), a module class, or a list "
        f"of those; got {value!r}. Examples: {argument}='layer1', {argument}='*.bn2', "
        f"{argument}=torch.nn.BatchNorm1d, {argument}=['head', 'stem.*']."
    )


def selector_matches_nothing(
    function: str, argument: str, item: str | type, modules: list[tuple[str, nn.Module]]
) -> ConfigError:
    """``<function>: only='layr1' matches no module of the model. Did you mean ...?``"""
    if isinstance(item, type):
        present = sorted({type(m).__name__ for _, m in modules})
        hint = did_you_mean(item.__name__, present)
        return ConfigError(
            f"{function}: {argument}={item.__name__} matches no module of the model (it holds "
            f"no {item.__name__} or subclass of it).{hint} Classes in the model: "
            f"{', '.join(present)}. Remove it or pass one of those."
        )
    paths = [p for p, _ in modules if p]
    hint = did_you_mean(item, paths) or did_you_mean(item, [p.rpartition(".")[2] for p in paths])
    shown = ", ".join(repr(p) for p in paths[:12]) + (", ..." if len(paths) > 12 else "")
    return ConfigError(
        f"{function}: {argument}={item!r} matches no module path of the model, so it would "
        f"{'select nothing' if argument == 'only' else 'leave nothing out'}.{hint} Paths "
        f"look like: {shown or 'none (the model has no submodule)'} (see "
        f"model.named_modules(); a pattern such as '*.bn1' matches at any depth)."
    )


Selector = str | type | Iterable[str | type] | None

#: The arguments that the surgery tools share, described once: `normlab.surgery` and
#: `normlab.distributed` add them to each tool's ``Args:`` (`normlab.core.docstrings`).
SHARED_ARGS: dict[str, str] = {
    "model": "the network (any ``torch.nn.Module``; its own path is ``\"\"``, so a single "
    "layer is a model too).",
    "skip": "leave out the modules it selects and everything below them: a module path or "
    "``fnmatch`` pattern (``\"layer1\"``, ``\"*.bn2\"``), a module class (its instances and "
    "its subclasses'), or a list of those (see `normlab.surgery.walker`). None: skip nothing.",
    "only": "act only on the modules it selects (and those below them), in the forms of "
    "``skip``. None: every module the tool applies to.",
    "inplace": "False: work on a deep copy and leave ``model`` untouched; True: modify and "
    "return ``model`` itself.",
    "process_group": "the replicas that share statistics (a ``torch.distributed`` process "
    "group); None: the default group (a torch ``SyncBatchNorm`` keeps its own).",
}


@dataclass(frozen=True)
class Replacement:
    """One module replaced at ``path``: its type before and after, and what was carried over
    (parameter and buffer names, for `convert`).

    Attributes:
        path: the module's dotted path (``""``: the model itself).
        old_type: the class of the replaced module.
        new_type: the class of its replacement.
        carried: the names of the arguments, parameters and buffers carried over.
    """

    path: str
    old_type: type
    new_type: type
    carried: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.path or '<root>'}: {self.old_type.__name__} -> {self.new_type.__name__}"
        return text + (f" (carried: {', '.join(self.carried)})" if self.carried else "")


def _items(selector: Selector, argument: str) -> tuple[str | type, ...]:
    if selector is None:
        return ()
    if isinstance(selector, (str, type)):
        return (selector,)
    if isinstance(selector, Mapping):
        raise bad_selector(argument, selector)
    try:
        items = tuple(selector)
    except TypeError:
        raise bad_selector(argument, selector) from None
    if not all(isinstance(item, (str, type)) for item in items):
        raise bad_selector(argument, selector)
    return items


def check_selector(selector: Selector, argument: str) -> tuple[str | type, ...]:
    """The selector as a tuple of paths/patterns and classes; ConfigError when malformed."""
    return _items(selector, argument)


def check_selectors(
    function: str, model: nn.Module, *, skip: Selector, only: Selector
) -> tuple[tuple[str | type, ...], tuple[str | type, ...]]:
    """``(skip items, only items)``, each item checked to select some module of ``model``
    (a path or pattern that names no module is a typo, not a no-op): ConfigError listing the
    nearest paths otherwise."""
    skip_items, only_items = _items(skip, "skip"), _items(only, "only")
    if skip_items or only_items:
        modules = list(model.named_modules())
        for argument, items in (("only", only_items), ("skip", skip_items)):
            for item in items:
                if not any(matches(path, module, (item,)) for path, module in modules):
                    raise selector_matches_nothing(function, argument, item, modules)
    return skip_items, only_items


def matches(path: str, module: nn.Module, items: tuple[str | type, ...]) -> bool:
    """Does any item select the module at ``path`` (see the module docstring)?

    Args:
        path: the module's dotted path (``""``: the model itself).
        module: the module at ``path`` (for class items).
        items: paths / fnmatch patterns and classes, as `check_selector` returns them.
    """
    prefixes = [path[:i] for i, ch in enumerate(path) if ch == "."] + [path]
    for item in items:
        if isinstance(item, type):
            if isinstance(module, item):
                return True
        elif any(fnmatch.fnmatchcase(prefix, item) for prefix in prefixes):
            return True
    return False


def selected(
    path: str,
    module: nn.Module,
    skip: tuple[str | type, ...],
    only: tuple[str | type, ...],
) -> bool:
    """``only`` (when given) selects, then ``skip`` removes."""
    if only and not matches(path, module, only):
        return False
    return not matches(path, module, skip)


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(root == "" or path == root or path.startswith(root + ".") for root in roots)


def _set(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path)  # "" is the root itself
    # _modules directly: Sequential / ModuleList indices and ModuleDict keys are names there
    parent._modules[name] = new


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, where an uninitialized lazy buffer (which torch refuses to
    deep-copy, unlike an uninitialized parameter) becomes a fresh uninitialized one."""
    memo: dict[int, object] = {
        id(buffer): UninitializedBuffer(
            buffer.requires_grad, device=buffer.device, dtype=buffer.dtype
        )
        for buffer in model.buffers()
        if isinstance(buffer, UninitializedBuffer)
    }
    return copy.deepcopy(model, memo)


def replace_modules(
    model: nn.Module,
    fn: Callable[[str, nn.Module], nn.Module | None],
    *,
    inplace: bool = False,
) -> tuple[nn.Module, list[Replacement]]:
    """Replace submodules by path: ``fn(path, module)`` returns the replacement or None.

    Returns ``(new_model, report)``: the model with the replacements (a deep copy unless
    ``inplace=True``) and one `Replacement` per replaced path, in visiting order. ``fn``
    receives the modules of the copy, never those of the original.

    Args:
        fn: ``fn(path, module)``: the replacement for the module at ``path``, or None to
            keep it (and visit its children).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        >>> swap = lambda path, m: nn.Identity() if isinstance(m, nn.BatchNorm2d) else None
        >>> new, report = replace_modules(net, swap)
        >>> [str(r) for r in report], type(net[1]).__name__
        (['1: BatchNorm2d -> Identity'], 'BatchNorm2d')
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("replace_modules", model)
    root = model if inplace else copy_model(model)
    paths: dict[int, list[str]] = {}
    visit: list[nn.Module] = []
    for path, module in root.named_modules(remove_duplicate=False):
        if id(module) not in paths:
            paths[id(module)] = []
            visit.append(module)
        paths[id(module)].append(path)

    # every replacement is built before the first is set: when fn raises, even an inplace
    # model is left as it was, not half replaced
    planned: dict[str, nn.Module] = {}  # path -> replacement, in visiting order
    report: list[Replacement] = []
    for module in visit:
        live = [p for p in paths[id(module)] if not _under(p, planned)]
        if not live:
            continue
        new = fn(live[0], module)
        if new is None or new is module:
            continue
        if not isinstance(new, nn.Module):
            raise bad_replacement(live[0], new)
        for path in live:
            planned[path] = new
            report.append(Replacement(path, type(module), type(new)))
    new_root = root
    for path, new in planned.items():
        if path == "":
            new_root = new
        else:
            _set(root, path, new)
    return new_root, report
