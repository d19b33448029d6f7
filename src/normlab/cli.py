"""The ``normlab`` command: ``list``, ``describe NAME``, and the lab's ``sweep`` and ``report``.

The lab's subcommands import the lab beyond its configuration schema only when they run (it
needs the ``lab`` extra).

Example:
    >>> main(["describe", "rms"])  # doctest: +ELLIPSIS
    rms_norm  (aliases: rms, rmsnorm)  normlab.RMSNorm
    ...
    0
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import NoReturn

from normlab import __version__, cli_lab, errors, registry
from normlab.cli_lab import add_report_parser, add_sweep_parser
from normlab.core.axes import Axes
from normlab.errors import NormlabError

_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:$")  # "Args:", "Shape:", "Example:", ...
_PROBE_FEATURES = 64  # channels of the instance built when the class has no ``axes`` attribute


def normalizes_over(entry: registry.Entry) -> str:
    """``entry.cls.axes.describe()``; builds a default layer when ``axes`` is set per instance.

    A method that mixes several statistics says so in a ``statistics`` class attribute instead.
    """
    mixed = getattr(entry.cls, "statistics", None)
    if isinstance(mixed, str):
        return mixed
    axes = getattr(entry.cls, "axes", None)
    if not isinstance(axes, Axes):
        layer = registry.create(entry.name, _PROBE_FEATURES)
        axes = layer.axes
    return axes.describe()


def equation(cls: Callable[..., object]) -> str:
    """The docstring's ``$$ ... $$`` paragraph and the paragraph that explains it."""
    paragraphs = (inspect.getdoc(cls) or "").split("\n\n")
    start = next((i for i, p in enumerate(paragraphs) if "$$" in p), None)
    if start is None:
        return ""
    kept = [paragraphs[start]]
    for p in paragraphs[start + 1 : start + 2]:
        if not _SECTION.match(p.splitlines()[0].strip()):
            kept.append(p)
    return "\n\n".join(kept)


def defaults(cls: Callable[..., object]) -> list[str]:
    """``name=value`` for every constructor parameter, ``name`` alone when it is required."""
    out = []
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return out


_COLUMN_WIDTHS = (24, 24, 64, 44)  # name, aliases, normalizes over / use, paper


def _table(rows: list[list[str]]) -> str:
    """A plain-text table; a cell wider than its column's cap wraps onto continuation lines."""
    wrapped = [
        [textwrap.wrap(cell, cap) or [""] for cell, cap in zip(row, _COLUMN_WIDTHS, strict=True)]
        for row in rows
    ]
    widths = [max(len(line) for row in wrapped for line in row[i]) for i in range(len(rows[0]))]
    lines = []
    for row in wrapped:
        for k in range(max(len(cell) for cell in row)):
            cells = [cell[k] if k < len(cell) else "" for cell in row]
            lines.append(
                "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
            )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def weight_kind(entry: registry.WeightEntry) -> str:
    """How a weight-side method is used: a parametrization, layers, or helpers to call."""
    if entry.apply is not None:
        return f"normlab.{entry.apply.__name__}(module)"
    return ", ".join(f"normlab.{getattr(x, '__name__', x)}" for x in entry.exports)


def cmd_list(_: argparse.Namespace) -> int:
    rows = [["name", "aliases", "normalizes over", "paper"]]
    for entry in registry.entries():
        rows.append([entry.name, ", ".join(entry.aliases), normalizes_over(entry), entry.paper])
    print(_table(rows))
    weight_rows = [["weight-side method", "aliases", "use", "paper"]]
    for w in registry.weight_entries():
        weight_rows.append([w.name, ", ".join(w.aliases), weight_kind(w), w.paper])
    if len(weight_rows) > 1:
        print()
        print(_table(weight_rows))
    return 0


def describe_weight(entry: registry.WeightEntry) -> int:
    aliases = ", ".join(entry.aliases) or "none"
    print(f"{entry.name}  (aliases: {aliases})  weight-side")
    print(f"  {entry.summary}")
    print()
    print(f"use:        {weight_kind(entry)}")
    if entry.apply is not None:
        print(f"model-wide: normlab.parametrize(model, {entry.name!r})")
    print(f"paper:      {entry.paper}")
    documented = (entry.parametrization, entry.apply, *entry.exports)
    eq = next((e for e in (equation(d) for d in documented if d is not None) if e), "")
    if eq:
        print("\nequation:")
        print("\n".join(f"  {line}".rstrip() for line in eq.splitlines()))
    if entry.apply is not None:
        print("\narguments (defaults):")
        for item in defaults(entry.apply):
            print(f"  {item}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    key = args.name.strip().lower().replace("-", "_")
    if key not in registry.known_names():
        if key not in registry.known_weight_names():
            known = sorted({*registry.available("all"), *registry.known_names(),
                            *registry.known_weight_names()})
            raise errors.unknown_choice("method", args.name, known)
        return describe_weight(registry.lookup_weight(args.name))
    entry = registry.lookup(args.name)
    cls = entry.cls
    aliases = ", ".join(entry.aliases) or "none"
    print(f"{entry.name}  (aliases: {aliases})  normlab.{cls.__name__}")
    print(f"  {entry.summary}")  # the class docstring's first line
    print()
    print(f"normalizes: {normalizes_over(entry)}")
    print(f"paper:      {entry.paper}")
    for i, line in enumerate(entry.spec_help()):
        print(f"{'spec:' if i == 0 else '':<12}{line}")
    eq = equation(cls)
    if eq:
        print("\nequation:")
        print("\n".join(f"  {line}".rstrip() for line in eq.splitlines()))
    print("\narguments (defaults):")
    for item in defaults(cls):
        print(f"  {item}")
    for key, value in entry.defaults.items():
        print(f"  registry default: {key}={value!r}")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, with the fix (argparse prints the whole usage otherwise)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}. See '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="normlab",
        description="normlab's normalization methods, and the lab that compares them.",
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="every registered method").set_defaults(run=cmd_list)
    describe = sub.add_parser("describe", help="one method in detail (names or aliases)")
    describe.add_argument("name", metavar="NAME", help="e.g. group_norm, gn, bn")
    describe.set_defaults(run=cmd_describe)
    add_sweep_parser(sub).set_defaults(run=cli_lab.sweep)
    add_report_parser(sub).set_defaults(run=cli_lab.report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for usage errors and unknown names)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return int(args.run(args))
    except NormlabError as err:
        message = " ".join(str(err).split())
        print(f"normlab: error: {message}", file=sys.stderr)
        return 2
