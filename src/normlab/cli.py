"""The ``normlab`` command: ``list``, ``describe NAME``, the lab's ``sweep`` and ``report``, and
``bench``.

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
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from normlab import __version__, cli_bench, cli_claims, cli_lab, cli_math, errors, registry
from normlab.cli_claims import add_claims_parser
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


# What the arguments most layers share mean, for a class whose docstring does not say
COMMON_ARGUMENTS = {
    "num_features": "C, the number of channels.",
    "eps": "added to the variance under the square root, so that a constant input does not "
    "divide by zero.",
    "momentum": "weight of the newest batch in the running statistics' update; None: a "
    "cumulative average over every batch so far.",
    "affine": "learn a per-channel scale γ (starts at 1) and shift β (starts at 0); False: "
    "γ = 1 and β = 0, fixed.",
    "elementwise_affine": "learn γ and β per element of the normalized shape.",
    "track_running_stats": "keep running statistics and use them in eval; False: eval uses "
    "each batch's own statistics, as training does.",
    "channel_dim": "the channel axis: 1 for (N, C, *S) inputs, -1 for channels-last "
    "(N, *S, C).",
    "device": "of the parameters and buffers; None: torch's default device.",
    "dtype": "of the parameters and buffers; None: torch's default dtype.",
}


def documented_arguments(*documented: object) -> dict[str, str]:
    """``{name: description}`` from the ``Args:`` sections of the docstrings (first one wins),
    each description on one line, math and markup as plain text."""
    found: dict[str, str] = {}
    for obj in documented:
        lines = (inspect.getdoc(obj) or "").splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
        if start is None:
            continue
        name = None
        for line in lines[start + 1 :]:
            if line.strip() and not line.startswith(" "):
                break  # the next section
            head = re.match(r"^    (\w+)(?: \([^)]*\))?: ?(.*)$", line)
            if head:
                name = head.group(1)
                found.setdefault(name, "")
                if found[name]:
                    name = None  # documented by an earlier docstring
                    continue
                found[name] = head.group(2).strip()
            elif name is not None and line.strip():
                found[name] = f"{found[name]} {line.strip()}".strip()
    return {k: cli_math.text(v) for k, v in found.items() if v}


def explained_defaults(cls: Callable[..., object], *documented: object) -> list[str]:
    """`defaults`, each followed by what the argument means (what its default does)."""
    meaning = {**COMMON_ARGUMENTS, **documented_arguments(*documented, cls)}
    items = [(item, meaning.get(item.partition("=")[0], "")) for item in defaults(cls)]
    width = min(max(len(item) for item, _ in items), 28) + 2
    lines = []
    for item, text in items:
        if not text:
            lines.append(f"  {item}")
            continue
        head = f"  {item}".ljust(width + 2)
        wrapped = textwrap.wrap(text, LIST_WIDTH - len(head), break_on_hyphens=False)
        lines.append(head + wrapped[0])
        lines += [" " * len(head) + rest for rest in wrapped[1:]]
    return lines


LIST_WIDTH = 100  # `normlab list` fits a terminal this wide
_GAP = "  "  # between columns
_INDENT = "    "  # of a row's detail line


def _table(rows: list[list[str]], details: list[str], detail_title: str) -> str:
    """A plain-text table within `LIST_WIDTH` columns: name, aliases and paper side by side, and
    under each row, indented, its detail (what it normalizes over, or how it is used).

    The names' column is as wide as its longest name, the aliases' as its longest alias; the
    paper gets the rest. A cell too long for its column, and a long detail, wrap onto
    continuation lines (between words, never inside one: only an alias or a word longer than
    the whole line would be cut).
    """
    name_width = max(len(row[0]) for row in rows)
    alias_width = max(len(w) for row in rows for w in row[1].split() or [""])
    paper_width = LIST_WIDTH - name_width - alias_width - 2 * len(_GAP)
    caps = (name_width, alias_width, paper_width)
    header = [*rows[0][:2], f"{rows[0][2]} (then, indented: {detail_title})"]
    lines = [_GAP.join(c.ljust(w) for c, w in zip(header, caps, strict=True)).rstrip(),
             _GAP.join("-" * w for w in caps)]
    for row, detail in zip(rows[1:], details, strict=True):
        cells = [textwrap.wrap(c, w, break_on_hyphens=False) or [""]
                 for c, w in zip(row, caps, strict=True)]
        for k in range(max(len(cell) for cell in cells)):
            parts = [cell[k] if k < len(cell) else "" for cell in cells]
            lines.append(_GAP.join(p.ljust(w) for p, w in zip(parts, caps, strict=True)).rstrip())
        lines += textwrap.wrap(detail, LIST_WIDTH, initial_indent=_INDENT,
                               subsequent_indent=_INDENT, break_on_hyphens=False)
    return "\n".join(lines)


def weight_kind(entry: registry.WeightEntry) -> str:
    """How a weight-side method is used: a parametrization, layers, or helpers to call."""
    if entry.apply is not None:
        return f"normlab.{entry.apply.__name__}(module)"
    return ", ".join(f"normlab.{getattr(x, '__name__', x)}" for x in entry.exports)


def cmd_list(_: argparse.Namespace) -> int:
    rows = [["name", "aliases", "paper"]]
    for entry in registry.entries():
        rows.append([entry.name, ", ".join(entry.aliases), entry.paper])
    print(_table(rows, [normalizes_over(e) for e in registry.entries()], "normalizes over"))
    weight_rows = [["weight-side method", "aliases", "paper"]]
    for w in registry.weight_entries():
        weight_rows.append([w.name, ", ".join(w.aliases), w.paper])
    if len(weight_rows) > 1:
        print()
        print(_table(weight_rows, [f"use: {weight_kind(w)}" for w in registry.weight_entries()],
                     "how to use it"))
    return 0


def describe_weight(entry: registry.WeightEntry) -> int:
    aliases = ", ".join(entry.aliases) or "none"
    print(f"{entry.name}  (aliases: {aliases})  weight-side")
    print(f"  {cli_math.text(entry.summary)}")
    print()
    print(f"use:        {weight_kind(entry)}")
    if entry.apply is not None:
        print(f"model-wide: normlab.parametrize(model, {entry.name!r})")
    print(f"paper:      {entry.paper}")
    documented = (entry.parametrization, entry.apply, *entry.exports)
    eq = next((e for e in (equation(d) for d in documented if d is not None) if e), "")
    if eq:
        print("\nequation:")
        print(_indented(cli_math.text(eq)))
    if entry.apply is not None:
        print("\narguments (defaults):")
        print("\n".join(explained_defaults(entry.apply, entry.parametrization)))
    return 0


def _indented(text: str) -> str:
    return "\n".join(f"  {line}".rstrip() for line in text.splitlines())


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
    print(f"  {cli_math.text(entry.summary)}")  # the class docstring's first line
    print()
    for label, text in (("normalizes:", normalizes_over(entry)), ("paper:", entry.paper)):
        print(textwrap.fill(text, LIST_WIDTH, initial_indent=f"{label:<12}",
                            subsequent_indent=" " * 12, break_on_hyphens=False))
    for i, line in enumerate(entry.spec_help()):
        wrapped = textwrap.wrap(line, LIST_WIDTH - 12, subsequent_indent="  ",
                                break_on_hyphens=False)
        for j, part in enumerate(wrapped):
            print(f"{'spec:' if i == j == 0 else '':<12}{part}")
    eq = equation(cls)
    if eq:
        print("\nequation:")
        print(_indented(cli_math.text(eq)))
    print("\narguments (defaults):")
    print("\n".join(explained_defaults(cls, cls.__init__)))
    for key, value in entry.defaults.items():
        print(f"  registry default: {key}={value!r} (what normlab.create({entry.name!r}, C) uses)")
    return 0


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, with the fix (argparse prints the whole usage otherwise)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # "--norm bn" must not pass for "--norms bn": an option is spelled out or rejected
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

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
    add_claims_parser(sub).set_defaults(run=cli_claims.claims)
    cli_bench.add_bench_parser(sub).set_defaults(run=cli_bench.bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for usage errors and unknown names)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help and on usage errors
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except NormlabError as err:
        message = " ".join(str(err).split())
        print(f"normlab: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (``normlab list | head -1``): stop quietly, as cat does. Point
        # stdout at /dev/null so that the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # killed by SIGPIPE, the shell's convention
