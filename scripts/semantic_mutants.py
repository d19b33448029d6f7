"""Run the semantic mutants of tests/semantic_mutants/gaps.py: each must fail its tests.

For every patch: copy src/ and tests/ (and pyproject.toml, for pytest's configuration) into a
temporary directory, apply the patch there (never in place), run the patch's tests against the
copy, and expect failures; then run all the patches' tests on an unpatched copy and expect
them to pass. Prints one line per patch, e.g.

    gap 3 (variance overflow guard watches the mean, not the variance): broken → 2 failed;
    fixed → passed

and exits 1 if any broken tree passes, the unbroken tree fails, or a patch's text does not
occur exactly once in its file. `make mutate` runs it; alone:
``nice -n 15 .venv/bin/python scripts/semantic_mutants.py [GAP ...]``.
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

from gaps import PATCHES, Patch  # noqa: E402


class PatchRotted(RuntimeError):
    """A patch's target text is not in its file exactly once: the source moved on."""


def copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".hypothesis")
    for name in ("src", "tests"):
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


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """(exit code, pytest's summary line) of ``tests`` against the copy in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", "--tb=no",
         "-o", "addopts=-m 'not slow'"],
        cwd=tree, env=env, capture_output=True, text=True, check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    return proc.returncode, (lines[-1] if lines else proc.stderr.strip()[-200:])


def summary(line: str) -> str:
    failed = re.search(r"(\d+) failed", line)
    errors = re.search(r"(\d+) error", line)
    parts = [f"{m.group(1)} failed" for m in [failed] if m]
    parts += [f"{m.group(1)} errors" for m in [errors] if m]
    return ", ".join(parts) or line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gaps", nargs="*", help="gap ids to run (default: all)")
    args = parser.parse_args(argv)
    patches = [p for p in PATCHES if not args.gaps or p.gap in args.gaps]
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
        suites = dict.fromkeys(p.tests for p in patches)
        fixed = {tests: run_tests(clean, tests) for tests in suites}
        for patch in patches:
            broken = Path(tmp) / f"gap{patch.gap}"
            copy_tree(broken)
            apply(patch, broken)
            code, line = run_tests(broken, patch.tests)
            shutil.rmtree(broken)
            fcode, fline = fixed[patch.tests]
            killed = code == 1 and "failed" in line
            passed = fcode == 0
            ok &= killed and passed
            print(f"gap {patch.gap} ({patch.title}): "
                  f"broken → {summary(line) if killed else 'NOT CAUGHT: ' + line}; "
                  f"fixed → {'passed' if passed else 'FAILED: ' + fline}", flush=True)
    print("all semantic mutants caught" if ok else "SOME SEMANTIC MUTANTS SURVIVED OR FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
