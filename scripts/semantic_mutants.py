"""Run the semantic mutants of tests/semantic_mutants/: each must fail its tests.

Two sets: ``gaps`` (gaps.py, the gaps of issue 17) and ``review`` (review.py, an independent
set written by a reviewer from the source alone); ``--set all`` (the default) runs both.

First all the selected patches' tests run once on an unpatched copy and must pass. Then, for
every patch: copy src/, tests/ and benchmarks/ (some tests load its eager baselines) and
pyproject.toml (pytest's configuration) into a temporary directory, apply the patch there
(never in place), run the patch's tests against the copy (``-x``: the first failure decides),
and expect failures. Prints one line per patch, e.g.

    gap 3 (variance overflow guard watches the mean, not the variance): broken → 1 failed;
    fixed → passed

then a score line, ``N of M caught (X %)``, and exits 1 if any broken tree passes, the
unbroken tree fails, or a patch's text does not occur exactly once in its file. `make mutate`
runs it; alone: ``nice -n 15 .venv/bin/python scripts/semantic_mutants.py [--set review] [ID ...]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "semantic_mutants"))

import gaps  # noqa: E402
import review  # noqa: E402
from gaps import Patch  # noqa: E402

SETS: dict[str, tuple[Patch, ...]] = {"gaps": gaps.PATCHES, "review": review.PATCHES}
PATCHES: tuple[Patch, ...] = SETS["gaps"] + SETS["review"]


class PatchRotted(RuntimeError):
    """A patch's target text is not in its file exactly once: the source moved on."""


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis")
    for name in ("src", "tests", "benchmarks"):  # some tests load benchmarks/eager baselines
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def target(patch: Patch, tree: Path) -> tuple[Path, str]:
    """The patched file and its text; raises PatchRotted unless ``old`` occurs exactly once."""
    path = tree / patch.path
    if not path.is_file():
        raise PatchRotted(f"gap {patch.gap}: {patch.path} does not exist")
    text = path.read_text()
    found = text.count(patch.old)
    if found != 1:
        raise PatchRotted(
            f"gap {patch.gap}: the text to replace occurs {found} times in {patch.path} "
            f"(expected once): {patch.old!r}. Update tests/semantic_mutants/gaps.py."
        )
    return path, text


def apply(patch: Patch, tree: Path) -> None:
    path, text = target(patch, tree)
    path.write_text(text.replace(patch.old, patch.new))


def run_tests(
    tree: Path, tests: tuple[str, ...], *, first_failure: bool = False
) -> tuple[int, str, list[str]]:
    """(exit code, pytest's summary line, failed node ids) of ``tests`` against the copy in
    ``tree``; ``first_failure`` stops at the first failing test (``-x``)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "--tb=no",
         "-rfE", "-o", "addopts=-m 'not slow'", *(["-x"] if first_failure else [])],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    failed = [ln.split()[1] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return proc.returncode, (lines[-1] if lines else proc.stderr.strip()[-200:]), failed


def covers(tests: tuple[str, ...], node: str) -> bool:
    """``node`` (a failed node id) is one of the tests that ``tests`` selects."""
    return any(node == t or node.startswith(t + "::") or node.startswith(t + "[")
               for t in tests)


def summary(line: str) -> str:
    failed = re.search(r"(\d+) failed", line)
    errors = re.search(r"(\d+) error", line)
    parts = [f"{m.group(1)} failed" for m in [failed] if m]
    parts += [f"{m.group(1)} errors" for m in [errors] if m]
    return ", ".join(parts) or line


def score(caught: int, total: int) -> str:
    """The score line: ``N of M caught (X %)``."""
    return f"{caught} of {total} caught ({100 * caught / max(total, 1):.1f} %)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=(*SETS, "all"), default="all", dest="which",
                        help="which set of mutants to run (default: all)")
    parser.add_argument("gaps", nargs="*", help="patch ids to run (default: all of the set)")
    args = parser.parse_args(argv)
    chosen = PATCHES if args.which == "all" else SETS[args.which]
    patches = [p for p in chosen if not args.gaps or p.gap in args.gaps]
    unknown = set(args.gaps) - {p.gap for p in chosen}
    if unknown:
        parser.error(f"unknown patch ids for --set {args.which}: {sorted(unknown)}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="normlab-semantic-") as tmp:
        clean = Path(tmp) / "clean"
        copy_tree(clean)
        for patch in patches:  # every target checked before anything runs
            try:
                target(patch, clean)
            except PatchRotted as exc:
                print(f"ROTTED {exc}", flush=True)
                ok = False
        if not ok:
            return 1
        # the unbroken tree once, over every selected patch's tests together
        union = tuple(dict.fromkeys(t for p in patches for t in p.tests))
        fcode, fline, ffailed = run_tests(clean, union)
        print(f"unbroken tree, {len(union)} test targets: {fline}", flush=True)
        if fcode not in (0, 1):  # not a test failure: a collection or usage error
            ffailed = list(union)
        caught = 0
        for patch in patches:
            broken = Path(tmp) / f"gap{patch.gap}"
            copy_tree(broken)
            apply(patch, broken)
            code, line, _ = run_tests(broken, patch.tests, first_failure=True)
            shutil.rmtree(broken)
            # a failing test, or a test module that no longer imports (collection error)
            killed = code in (1, 2) and ("failed" in line or "error" in line)
            clean_failures = [n for n in ffailed if covers(patch.tests, n)]
            passed = not clean_failures
            caught += killed
            ok &= killed and passed
            print(f"gap {patch.gap} ({patch.title}): "
                  f"broken → {summary(line) if killed else 'NOT CAUGHT: ' + line}; "
                  f"fixed → {'passed' if passed else 'FAILED: ' + ', '.join(clean_failures)}",
                  flush=True)
    print(score(caught, len(patches)))
    print("all semantic mutants caught" if ok else "SOME SEMANTIC MUTANTS SURVIVED OR FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
