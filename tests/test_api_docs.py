"""Every argument of every public callable is documented (issue 13's API documentation).

The check reads ``inspect.getdoc`` (what ``help()`` and the documentation site show), so the
shared arguments that `normlab.core.docstrings.append_shared_args` adds count, and a new
undocumented argument fails here. Its parser is independent of that module's.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch

import normlab
import normlab.distributed
import normlab.functional
import normlab.surgery
from normlab.norms import Norm

MODULES = (normlab, normlab.functional, normlab.surgery, normlab.distributed)
_HEADER = re.compile(r"^(\w[\w ]*):\s*$")
_ENTRY = re.compile(r"^    (\*{0,2}\w+)(?: \([^)]*\))?:(?:\s|$)")


def public_callables() -> dict[str, object]:
    found: dict[str, object] = {}
    seen: set[int] = set()
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.ismodule(obj) and id(obj) not in seen:
                seen.add(id(obj))
                found[f"{module.__name__}.{name}"] = obj
    return found


def documented(doc: str) -> set[str]:
    """Names with an entry in the Args / Arguments / Parameters / Attributes sections."""
    names: set[str] = set()
    section = None
    for line in doc.splitlines():
        header = _HEADER.match(line)
        if header:
            section = header.group(1)
        elif line and not line[0].isspace():
            section = None
        elif section in ("Args", "Arguments", "Parameters", "Attributes"):
            entry = _ENTRY.match(line)
            if entry:
                names.add(entry.group(1).lstrip("*"))
    return names


def undocumented(obj: object) -> list[str]:
    """The parameters of ``obj``'s signature (a class's constructor) its docstring lacks."""
    signature = inspect.signature(obj)
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and obj.__init__ is not object.__init__:
        doc += "\n" + (inspect.getdoc(obj.__init__) or "")
    have = documented(doc)
    return [name for name in signature.parameters if name not in have]


PUBLIC = public_callables()


def test_every_public_area_is_covered() -> None:
    # the four namespaces hold the layers, the functional forms, surgery and distributed
    assert len(PUBLIC) >= 90
    objects = {id(obj) for obj in PUBLIC.values()}
    for obj in (normlab.BatchNorm, normlab.functional.batch_norm, normlab.surgery.fold_with_report,
                normlab.distributed.merge_across, normlab.CosineConv2d, normlab.create):
        assert id(obj) in objects, obj


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_parameter_is_documented(name: str) -> None:
    obj = PUBLIC[name]
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return  # an exception takes its message, as ValueError does
    assert undocumented(obj) == [], f"{name}: document these arguments"


def test_shared_arguments_reach_help() -> None:
    doc = inspect.getdoc(normlab.BatchNorm) or ""
    args = doc.split("Args:")[1].split("Shape:")[0]
    for name in ("num_features", "eps", "momentum", "affine", "track_running_stats",
                 "channel_dim", "device", "dtype"):
        assert re.search(rf"^    {name}:", args, re.M), name
    assert "Default: ``1e-05``." in args and "cumulative average" in args


def test_the_check_fails_on_an_undocumented_argument() -> None:
    class Tiny(Norm):
        """A layer for this test.

        Args:
            num_features: C.
        """

        def __init__(
            self, num_features: int, *, scale: float = 2.0, eps: float = 1e-5,
            affine: bool = True, channel_dim: int = 1,
        ) -> None:
            super().__init__(num_features, eps=eps, affine=affine, channel_dim=channel_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    # the shared arguments were added to its docstring, its own is missing
    assert undocumented(Tiny) == ["scale"]

    def helper(x: torch.Tensor, *, width: int = 3) -> torch.Tensor:
        """A helper.

        Args:
            x: the input.
        """
        return x

    assert undocumented(helper) == ["width"]


def test_every_public_name_is_on_an_api_page() -> None:
    """Each public callable is rendered by a ``::: dotted.path`` directive of docs/api (or is
    a member of a module rendered there), so a new method cannot be left off the site."""
    import importlib
    from pathlib import Path

    pages = Path(__file__).resolve().parents[1] / "docs" / "api"
    rendered: set[int] = set()
    for page in pages.glob("*.md"):
        text = page.read_text()
        for path, options in re.findall(r"^::: (\S+)\n((?:    .*\n)*)", text, re.M):
            module_name, _, attr = path.rpartition(".")
            try:
                target = importlib.import_module(path)
            except ImportError:
                target = getattr(importlib.import_module(module_name), attr)
            if inspect.ismodule(target):
                listed = re.search(r"members: \[(.*)\]", options)
                if "members: false" in options:
                    continue
                names = [n.strip() for n in listed.group(1).split(",")] if listed else [
                    n for n, v in vars(target).items()
                    if not n.startswith("_") and getattr(v, "__module__", None) == target.__name__
                ]
                rendered.update(id(getattr(target, n)) for n in names)
            else:
                rendered.add(id(target))
    missing = [name for name, obj in PUBLIC.items() if id(obj) not in rendered]
    assert missing == [], f"add these to a page of docs/api: {missing}"


def test_shared_arguments_are_added_once_in_signature_order() -> None:
    from normlab.core.docstrings import append_shared_args

    def f(x: int, *, width: int = 3, eps: float = 1e-5) -> None:
        """Summary.

        Example:
            >>> 1
            1
        """

    table = {"eps": "ε.", "x": "the input."}
    append_shared_args(f, table)
    once = f.__doc__
    append_shared_args(f, table)
    assert f.__doc__ == once
    args = "Args:\n    x: the input.\n    eps: ε. Default: ``1e-05``.\n"
    assert f"Summary.\n\n{args}\nExample:" in once
    assert undocumented(f) == ["width"]
