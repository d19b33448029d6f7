"""``normlab sweep --executor slurm`` through submitit's local executor (``--slurm-cluster
local``: each run a job in a process of its own, as on a SLURM node).

submitit is the ``slurm`` extra; the ``dev`` extra installs it, so CI runs these tests (they skip
only where submitit is absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("submitit")

from lab_cli import TINY, numbers
from normlab.cli import main
from normlab.lab import store

SMALL = [*TINY, "--norms", "bn,ln", "--batch-sizes", "4", "--steps", "6", "--model", "mlp",
         "--width", "8", "--no-report"]


def test_a_slurm_sweep_gives_the_local_numbers_and_resumes(tmp_path: Path) -> None:
    local = tmp_path / "local"
    assert main(["sweep", *SMALL, "--jobs", "1", "--out", str(local)]) == 0
    out = tmp_path / "slurm"
    slurm = ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "5",
             "--slurm-cpus", "1"]
    assert main(["sweep", *SMALL, *slurm, "--out", str(out)]) == 0
    assert numbers(out) == numbers(local)
    assert len(numbers(out)) == 2
    logs = list((out / "slurm").glob("*_log.out"))  # submitit's folder: OUT/slurm by default
    assert len(logs) == 2, sorted(p.name for p in (out / "slurm").iterdir())

    # a run lost (its line never written) is rerun on resume, the others are kept
    lines = (out / store.RESULTS).read_text().splitlines(keepends=True)
    (out / store.RESULTS).write_text(lines[0])
    folder = tmp_path / "logs"
    assert main(["sweep", "--resume", "--out", str(out), "--quiet", "--no-report", *slurm,
                 "--slurm-folder", str(folder)]) == 0
    assert numbers(out) == numbers(local)
    assert len(list(folder.glob("*_log.out"))) == 1
