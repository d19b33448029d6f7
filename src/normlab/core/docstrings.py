"""Shared arguments documented once: `append_shared_args` adds, to a Google-style docstring's
``Args:`` section, the entries of a table for the parameters that the object's signature has
and its docstring does not already describe (with the default read from the signature).

`normlab.Norm` applies it to every subclass (``eps``, ``momentum``, ``affine``, ...) and the
method entries to their functional forms (``x``, ``weight``, ``bias``, ``training``, ...), so
``help(normlab.BatchNorm)`` and the documentation site list every argument while each method
file documents only its own.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Mapping
from typing import Any

_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Shape|Returns?|Yields?|Raises|Examples?|References|Notes?"
    r"|Warnings?|Attributes|See Also|Methods):\s*$"
)
_ARG_SECTIONS = ("Args", "Arguments", "Parameters")
_ENTRY = re.compile(r"^\s+\**(\w+)\s*(\([^)]*\))?:")
_WIDTH = 96  # text width of an appended entry, indentation included


def documented_params(doc: str) -> set[str]:
    """The names that the ``Args:`` (or a dataclass's ``Attributes:``) sections of a cleaned
    docstring describe."""
    names: set[str] = set()
    in_args = False
    for line in doc.splitlines():
        header = _SECTION.match(line)
        if header:
            in_args = header.group(1) in (*_ARG_SECTIONS, "Attributes")  # a dataclass's
            continue
        if line and not line[0].isspace():
            in_args = False
        elif in_args:
            entry = _ENTRY.match(line)
            if entry and len(line) - len(line.lstrip()) == 4:
                names.add(entry.group(1))
    return names


def _signature_of(obj: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    except (TypeError, ValueError):
        return None


def _entry(name: str, text: str, param: inspect.Parameter) -> str:
    if param.default is not inspect.Parameter.empty:
        text = f"{text} Default: ``{param.default!r}``."
    return textwrap.fill(
        f"{name}: {text}", _WIDTH, initial_indent="    ", subsequent_indent="        "
    )


def append_shared_args(obj: Any, table: Mapping[str, str]) -> None:
    """Add ``table``'s entry for each parameter of ``obj``'s signature (a class's
    ``__init__``) that its own docstring does not describe, to its ``Args:`` section in the
    signature's order (a new section before ``Shape:`` / ``Example:`` / ... when it has none).

    Objects other than classes and functions, and those without a docstring of their own,
    are left alone; applying it twice changes nothing.
    """
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # a builtin, a partial, ...: its docstring is not its own to extend
    raw = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    signature = _signature_of(obj)
    if not raw or signature is None:
        return
    doc = inspect.cleandoc(raw)
    have = documented_params(doc)
    new = [
        _entry(name, table[name], param)
        for name, param in signature.parameters.items()
        if name in table and name not in have
    ]
    if not new:
        return
    lines = doc.splitlines()
    at, header = _insertion_point(lines)
    if header:  # merged into the section, in the signature's order
        start = next(i for i in range(at - 1, -1, -1) if _SECTION.match(lines[i])) + 1
        order = {name: k for k, name in enumerate(signature.parameters)}
        lines[start:at] = _in_order([*_entries_of(lines[start:at]), *new], order)
    elif at < len(lines):  # a new section before the next one
        lines[at:at] = ["Args:", *new, ""]
    else:
        lines += ["", "Args:", *new]
    obj.__doc__ = "\n".join(lines) + "\n"


def _entries_of(section: list[str]) -> list[str]:
    """The entries of an ``Args:`` section's body, each with its continuation lines."""
    entries: list[str] = []
    for line in section:
        if entries and not (_ENTRY.match(line) and len(line) - len(line.lstrip()) == 4):
            entries[-1] += "\n" + line
        else:
            entries.append(line)
    return entries


def _in_order(entries: list[str], order: Mapping[str, int]) -> list[str]:
    """``entries`` sorted by their parameter's place in the signature (the others last)."""

    def place(entry: str) -> int:
        match = _ENTRY.match(entry)
        return order.get(match.group(1), len(order)) if match else len(order)

    return [line for entry in sorted(entries, key=place) for line in entry.split("\n")]


def _insertion_point(lines: list[str]) -> tuple[int, bool]:
    """Where new entries go: after the last entry of the first ``Args:`` section (True), or
    before the first other section / at the end (False: an ``Args:`` header is needed)."""
    for i, line in enumerate(lines):
        header = _SECTION.match(line)
        if header and header.group(1) in _ARG_SECTIONS:
            end = i + 1
            for j in range(i + 1, len(lines)):
                if lines[j] and not lines[j][0].isspace():
                    break
                if lines[j]:
                    end = j + 1
            return end, True
        if header and i > 0 and lines[i - 1] == "":
            return i, False
    return len(lines), False
