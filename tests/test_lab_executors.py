"""The executor options of ``normlab sweep``: each belongs to one ``--executor``, bad values and
missing extras are one-line errors with exit status 2, and the core never imports Ray or
submitit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

from lab_cli import TINY
from normlab.cli import main
from normlab.lab import store

ROOT = Path(__file__).resolve().parents[1]
BASE = ["sweep", *TINY, "--norms", "bn", "--batch-sizes", "4", "--steps", "5"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ray-address", "auto"], "--ray-address is for --executor ray, not --executor local"),
        (["--executor", "ray", "--jobs", "2"],
         "--jobs is for --executor local, not --executor ray"),
        (["--executor", "ray", "--slurm-time", "5", "--slurm-gpus", "1"],
         "--slurm-time, --slurm-gpus are for --executor slurm, not --executor ray"),
        (["--executor", "slurm", "--gpus-per-run", "1"], "--gpus-per-run is for --executor ray"),
        (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time: '0' must be a positive"),
        (["--executor", "ray", "--cpus-per-run", "-1"], "--cpus-per-run: '-1' must be a positive"),
        (["--executor", "ray", "--gpus-per-run", "x"], "--gpus-per-run: 'x' is not a number"),
        (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
    ],
)
def test_executor_options_errors_are_one_line_exit_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*BASE, "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize(
    ("executor", "module", "expected"),
    [
        ("ray", "ray", "--executor ray needs Ray: pip install 'normlab[ray]'"),
        ("slurm", "submitit", "--executor slurm needs submitit: pip install 'normlab[slurm]'"),
    ],
)
def test_a_missing_extra_is_named_with_its_install_command(
    executor: str, module: str, expected: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    out = tmp_path / "run"
    assert main([*BASE, "--out", str(out), "--executor", executor]) == 2
    assert capsys.readouterr().err.strip() == f"normlab: error: {expected}"
    assert not (out / store.RESULTS).exists()


def test_the_package_imports_neither_ray_nor_submitit() -> None:
    code = (
        "import sys, normlab, normlab.cli, normlab.lab.sweep; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'submitit')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_dev_extra_installs_the_executors_so_ci_runs_their_tests() -> None:
    """The Ray and submitit tests skip only where the package is absent: CI's venv (`make
    venv`: the lab and dev extras) must have both, or those tests would skip there unseen."""
    text = (ROOT / "pyproject.toml").read_text()
    dev = re.search(r"^dev = \[(.*?)^\]", text, re.M | re.S)
    assert dev is not None
    assert '"ray>=' in dev.group(1) and '"submitit>=' in dev.group(1)
    assert re.search(r'^ray = \["ray>=', text, re.M)
    assert re.search(r'^slurm = \["submitit>=', text, re.M)
    assert "'.[lab,dev]'" in (ROOT / "Makefile").read_text()
