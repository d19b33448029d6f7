"""``claims.md``: the ledger as a table (id, claim, source, measured numbers, rule, verdict)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ledger_markdown", "summarize_numbers"]

MAX_ITEMS = 6


def _flat(numbers: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flat(value, f"{name}."))
        else:
            items.append((name, value))
    return items


def _shown(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list) and len(value) > 4:
        return f"[{len(value)} values]"
    return str(value)


def summarize_numbers(numbers: Mapping[str, Any]) -> str:
    """The first `MAX_ITEMS` measured quantities as ``name = value``; the JSON has them all."""
    items = _flat(numbers)
    shown = "; ".join(f"{k} = {_shown(v)}" for k, v in items[:MAX_ITEMS])
    if len(items) > MAX_ITEMS:
        shown += f"; … ({len(items) - MAX_ITEMS} more in claims.json)"
    return shown


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def ledger_markdown(records: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The ledger page: when and where it ran, the verdict counts, and one row per claim."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines = [
        "# The claims ledger",
        "",
        f"- size: {meta.get('size')}; started {meta.get('started')}; machine: "
        f"{meta.get('machine')}",
        f"- normlab {meta.get('normlab')}, torch {meta.get('torch')}, "
        f"{meta.get('threads')} threads",
        "- verdicts: " + (", ".join(f"{v} {n}" for v, n in sorted(counts.items())) or "none yet"),
        "",
        "Each rule was fixed in code before its experiment ran; `normlab claims --recheck DIR` "
        "recomputes every verdict from claims.json by its rule.",
        "",
        "| id | claim | source | measured | rule | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['id']} | {_cell(r['claim'])} | {_cell(r['source'])} | "
            f"{_cell(r['summary'])} | {_cell(r['rule'])} | **{r['verdict']}** |"
        )
    return "\n".join(lines) + "\n"
