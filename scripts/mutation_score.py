"""Per-module mutation score of the last `mutmut run` (read from mutants/**/*.py.meta).

Prints, per mutated module: killed (timeouts count as killed), survived, no tests, not
checked, and the score killed / (killed + survived + no tests). The surviving mutants judged
equivalent, with their reasons, are in benchmarks/results/mutation.md. Usage, from the
repository root after `mutmut run`: ``python scripts/mutation_score.py``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 36, -24, 24, 152, 255, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


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


def main() -> int:
    metas = sorted(Path("mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutmut results under mutants/: run `make mutate` first")
        return 1
    total: Counter[str] = Counter()
    print(f"{'module':48s} {'killed':>6s} {'surv.':>6s} {'no t.':>6s} {'unrun':>6s} {'score':>7s}")
    for meta in metas:
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if not codes:
            continue
        counts = Counter(kind(c) for c in codes.values())
        total.update(counts)
        module = str(meta.relative_to("mutants"))[: -len(".meta")]
        print(f"{module:48s} {counts['killed']:6d} {counts['survived']:6d} "
              f"{counts['no tests']:6d} {counts['not checked']:6d} {score(counts):>7s}")
    print(f"{'total':48s} {total['killed']:6d} {total['survived']:6d} {total['no tests']:6d} "
          f"{total['not checked']:6d} {score(total):>7s}")
    return 0


def score(counts: Counter[str]) -> str:
    run = counts["killed"] + counts["survived"] + counts["no tests"]
    return f"{100 * counts['killed'] / run:.1f}%" if run else "-"


if __name__ == "__main__":
    sys.exit(main())
