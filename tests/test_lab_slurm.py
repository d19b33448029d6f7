"""``normlab sweep --executor slurm`` through submitit's local executor (``--slurm-cluster
local``: each run a job in a process of its own, as on a SLURM node).

submitit is the ``slurm`` extra; the ``dev`` extra installs it, so CI runs these tests (they skip
only where submitit is absent).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("submitit")

from lab_cli import TINY, numbers, sweep_until_finished_runs
from normlab.cli import main
from normlab.lab import store

pytestmark = pytest.mark.cluster

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


def _running_with(text: str) -> list[str]:
    """The command lines of the live processes that name ``text`` (zombies, reparented to a
    PID 1 that never reaps them, count as ended)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):  # not a process, or one that just ended
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_cancels_the_jobs_and_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    slurm = ["--executor", "slurm", "--slurm-cluster", "local"]
    # 2 short runs (batch 64: 100 steps) and 2 long ones (batch 4: 2400), all started at once
    args = [*TINY, "--seeds", "2", "--norms", "bn", "--batch-sizes", "4,64", "--epochs", "100",
            "--model", "mlp", "--width", "32", "--no-report", "--out", str(out), *slurm]
    proc = sweep_until_finished_runs(args, out, 1)
    assert len(list((out / "slurm").glob("*_submitted.pkl"))) == 4
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    # (submitit's local job controllers, which share this stderr, print the KeyboardInterrupt
    # that cancelling them raises; on a SLURM cluster a job's output goes to its log)
    ours = [line for line in err.splitlines() if line.startswith("normlab:")]
    assert len(ours) == 1, err
    assert f"--resume --out {out} --executor slurm --slurm-cluster local" in ours[0]
    assert 1 <= len(store.read_records(out)) < 4
    # the jobs cancelled: no process of theirs (controller or task) is left running
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running_with(str(out / "slurm")):
        time.sleep(0.2)
    assert _running_with(str(out / "slurm")) == []


def test_claims_through_submitit_equal_the_claims_run_here(tmp_path: Path, capsys) -> None:
    """``normlab claims --executor slurm``: each claim one job; the driver writes the ledger."""
    from normlab.claims import run as ledger_run

    here = tmp_path / "here"
    assert main(["claims", "C07", "C15", "--smoke", "--out", str(here)]) == 0
    out = tmp_path / "slurm"
    assert main(["claims", "C07", "C15", "--smoke", "--out", str(out), "--executor", "slurm",
                 "--slurm-cluster", "local", "--slurm-time", "5"]) == 0
    capsys.readouterr()
    def kept(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time_s"}
                for r in json.loads((path / ledger_run.LEDGER_JSON).read_text())["claims"]]
    assert kept(out) == kept(here)
    assert len(list((out / "slurm").glob("*_log.out"))) == 2
