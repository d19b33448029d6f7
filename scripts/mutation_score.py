"""Per-module mutation score of the last `mutmut run` (read from mutants/**/*.py.meta).

Prints, per mutated module: killed (timeouts count as killed), survived, no tests, not
checked, the raw score killed / (killed + survived + no tests), and the score once the
listed survivors are set aside: those judged equivalent, and those killed only by
multi-process tests, where mutmut cannot switch a mutant on.

They are listed, each group with its reason, in ``scripts/equivalent_mutants.toml``:
groups of ``[name, mutated line]`` pairs under one ``why``. An entry counts only if that mutant
exists, survived, and its diff still adds that line (mutmut numbers mutants per function, so an
edit can give a listed name to another mutation); stale entries are printed and not counted.
Usage, from the repository root after `mutmut run`: ``python scripts/mutation_score.py``
(``--lines``: each survivor not set aside is printed with the line its diff adds).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import tomllib

KILLED = {1, 3, 36, -24, 24, 152, 255, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}
EQUIVALENTS = Path(__file__).with_name("equivalent_mutants.toml")


def kind(code: int | None) -> str:
    if code is None:
        return "not checked"
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "other"


def listed_equivalents() -> dict[str, str]:
    """{mutant name: the line its diff must add} from the equivalents file."""
    if not EQUIVALENTS.exists():
        return {}
    groups = tomllib.loads(EQUIVALENTS.read_text())["group"]
    return {name: line for group in groups for name, line in group["mutants"]}


def added_lines(name: str, source: Path) -> list[str]:
    """The lines the mutant's diff adds, stripped (mutmut's own diff of the function)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=source)
    return [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and
            not ln.startswith("+++")]


def verified(name: str, line: str, source: Path) -> bool:
    try:
        return line.strip() in added_lines(name, source)
    except (FileNotFoundError, KeyError, ValueError):
        return False


def main() -> int:
    metas = sorted(Path("mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `make mutate` first")
        return 1
    listed = listed_equivalents()
    seen: set[str] = set()
    stale: list[str] = []
    unexplained: list[tuple[str, Path]] = []
    total: Counter[str] = Counter()
    print(f"{'module':48s} {'killed':>6s} {'surv.':>6s} {'aside':>6s} {'no t.':>6s} "
          f"{'unrun':>6s} {'score':>7s} {'w/o set-aside':>13s}")
    for meta in metas:
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if not codes:
            continue
        source = Path(str(meta.relative_to("mutants"))[: -len(".meta")])
        counts = Counter(kind(c) for c in codes.values())
        for name, code in codes.items():
            if name not in listed:
                if kind(code) in ("survived", "no tests"):
                    unexplained.append((name, source))
                continue
            seen.add(name)
            if kind(code) in ("survived", "no tests") and verified(name, listed[name], source):
                counts["equivalent"] += 1
            elif kind(code) != "not checked":
                stale.append(f"{name} ({kind(code)})")
        total.update(counts)
        print(_row(str(source), counts))
    print(_row("total", total))
    stale += [f"{name} (no such mutant)" for name in sorted(set(listed) - seen)]
    if unexplained:
        print(f"\n{len(unexplained)} survivors not set aside (kill each with a test, or list it "
              f"in {EQUIVALENTS.name} with the reason):")
        for name, source in unexplained:
            added = " | ".join(added_lines(name, source)) if "--lines" in sys.argv else ""
            print(f"  {name}  {added}".rstrip())
    if stale:
        print(f"\n{len(stale)} listed equivalents not counted (killed, renumbered or gone: "
              f"update {EQUIVALENTS.name}):")
        print("\n".join(f"  {entry}" for entry in stale))
    return 0


def _row(label: str, counts: Counter[str]) -> str:
    return (f"{label:48s} {counts['killed']:6d} {counts['survived']:6d} "
            f"{counts['equivalent']:6d} {counts['no tests']:6d} {counts['not checked']:6d} "
            f"{score(counts):>7s} {score(counts, counts['equivalent']):>13s}")


def score(counts: Counter[str], set_aside: int = 0) -> str:
    run = counts["killed"] + counts["survived"] + counts["no tests"] - set_aside
    return f"{100 * counts['killed'] / run:.1f}%" if run else "-"


if __name__ == "__main__":
    sys.exit(main())
