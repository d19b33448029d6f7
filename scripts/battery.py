"""Count the reliability battery: catalogue entries × checks run over them, and its failures.

A check is a test function parametrized over the catalogue's cases (tests/catalogue.py
``CASES``); a layer is a catalogue case. Runs the battery files with pytest and prints

    N layers × M checks, F failures (T test runs; S skipped)

where N counts the cases that the checks ran on and M the checks that ran on every one of them
(the other checks, which run on a subset, e.g. only the layers with running statistics, are
listed by how many layers they cover). Exit status: pytest's. Usage (from the repository root):
``PYTHONPATH=src python scripts/battery.py [pytest files or options]``.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

import pytest

BATTERY = (
    "tests/test_contract.py",
    "tests/test_state.py",
    "tests/test_functional_validation.py",
    "tests/test_parity_torch.py",
    "tests/test_double_backward.py",
    "tests/test_saved_memory.py",
)


class Count:
    """Pytest plugin: which case each test run covers, and its outcome."""

    def __init__(self) -> None:
        self.cases_by_check: dict[str, set[str]] = defaultdict(set)
        self.failed: list[str] = []
        self.runs = self.skipped = 0

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            case = self.case_of.get(report.nodeid)
            if case is None:
                return
            self.runs += report.when == "call" or report.skipped
            if report.skipped:
                self.skipped += 1
            elif report.failed:
                self.failed.append(report.nodeid)
            else:
                check = report.nodeid.split("[")[0]
                self.cases_by_check[check].add(case)

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        self.case_of = {}
        for item in items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            case = params.get("case")
            if case is not None and hasattr(case, "id"):
                self.case_of[item.nodeid] = case.id


def main(argv: list[str]) -> int:
    plugin = Count()
    code = pytest.main([*(argv or BATTERY), "-q", "-p", "no:cacheprovider"], plugins=[plugin])
    layers = set().union(*plugin.cases_by_check.values()) if plugin.cases_by_check else set()
    full = [c for c, cs in plugin.cases_by_check.items() if cs == layers]
    partial = sorted((len(cs), c) for c, cs in plugin.cases_by_check.items() if cs != layers)
    print(f"\n{len(layers)} layers × {len(full)} checks, {len(plugin.failed)} failures "
          f"({plugin.runs} test runs; {plugin.skipped} skipped)")
    if partial:
        print(f"plus {len(partial)} checks on a subset of the layers:")
        for n, check in partial:
            print(f"  {n:3d} layers  {check}")
    for nodeid in plugin.failed:
        print(f"FAILED {nodeid}")
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
