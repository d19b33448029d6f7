"""The import-linter contracts of pyproject.toml hold, and a back-import breaks them (issue 9).

Each bad edge is injected into a temporary copy of the package, which import-linter analyses in a
fresh interpreter (so that it finds the copy, not the installed package), with the project's own
contracts: the test fails if the contract stops catching that edge.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "normlab"
LAYERS = "core <- norms, reparam <- registry <- surgery <- distributed <- lab <- cli"
LAB_REPORT = "lab: report <- plots <- summary"

# Runs import-linter on the package found first on sys.path (the copy), after checking that it
# is the copy; exits with lint_imports' status (0: every contract kept, 1: one broken).
LINT = """
import importlib.util, sys
from importlinter.cli import lint_imports
origin = importlib.util.find_spec("normlab").origin
if not origin.startswith(sys.argv[1]):
    sys.exit(f"analysed {origin}, not the copy under {sys.argv[1]}")
sys.exit(lint_imports(config_filename=sys.argv[2], no_cache=True, no_logo=True))
"""


def lint(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT, str(src), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=src.parent,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
    )


def copy_package(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "normlab", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_the_package_keeps_its_layers(tmp_path: Path) -> None:
    proc = lint(copy_package(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{LAYERS} KEPT" in proc.stdout
    assert "0 broken" in proc.stdout


# (file of the copy, the import appended to it, the contract it breaks, the edge reported)
BAD_EDGES = {
    "core imports norms": (
        "core/moments.py", "from normlab.norms import batch_norm", LAYERS,
        "normlab.core.moments -> normlab.norms.batch_norm",
    ),
    "errors imports core": (
        "errors.py", "import normlab.core.axes", LAYERS, "normlab.errors -> normlab.core.axes",
    ),
    "norms imports the registry": (
        "norms/group_norm.py", "from normlab import registry", LAYERS,
        "normlab.norms.group_norm -> normlab.registry",
    ),
    "norms imports surgery": (
        "norms/layer_norm.py", "import normlab.surgery.walker", LAYERS,
        "normlab.norms.layer_norm -> normlab.surgery.walker",
    ),
    "registry imports surgery": (
        "registry.py", "from normlab.surgery import convert", LAYERS,
        "normlab.registry -> normlab.surgery.convert",
    ),
    "reparam imports norms (siblings)": (
        "reparam/weight_norm.py", "import normlab.norms.batch_norm", LAYERS,
        "normlab.reparam.weight_norm -> normlab.norms.batch_norm",
    ),
    "surgery imports distributed": (
        "surgery/recalibrate.py", "import normlab.distributed.sync", LAYERS,
        "normlab.surgery.recalibrate -> normlab.distributed.sync",
    ),
    "surgery imports the lab": (
        "surgery/fold.py", "from normlab.lab import runner", LAYERS,
        "normlab.surgery.fold -> normlab.lab.runner",
    ),
    "the lab imports the CLI, inside a function": (
        "lab/sweep.py", "def _late():\n    from normlab import cli_lab\n    return cli_lab", LAYERS,
        "normlab.lab.sweep -> normlab.cli_lab",
    ),
    "cli_lab imports cli": (
        "cli_lab.py", "import normlab.cli", LAYERS, "normlab.cli_lab -> normlab.cli",
    ),
    "plots imports the report": (
        "lab/plots.py", "from normlab.lab import report", LAB_REPORT,
        "normlab.lab.plots -> normlab.lab.report",
    ),
    "summary imports plots": (
        "lab/summary.py", "import normlab.lab.plots", LAB_REPORT,
        "normlab.lab.summary -> normlab.lab.plots",
    ),
}


@pytest.mark.parametrize("case", list(BAD_EDGES))
def test_a_back_import_breaks_the_contract(tmp_path: Path, case: str) -> None:
    path, line, contract, edge = BAD_EDGES[case]
    src = copy_package(tmp_path)
    target = src / "normlab" / path
    target.write_text(target.read_text() + f"\n\n{line}\n")
    proc = lint(src)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{contract}" in proc.stdout and "BROKEN" in proc.stdout, proc.stdout
    assert edge in proc.stdout, proc.stdout
    assert "1 broken" in proc.stdout, proc.stdout
