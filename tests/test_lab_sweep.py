"""``normlab sweep``: one run, the grid, resume after a kill, and its errors (through the CLI)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import normlab
from lab_cli import TINY, sweep_cli, sweep_until_finished_runs
from normlab.cli import main
from normlab.lab import store
from normlab.lab.data import load_data
from normlab.lab.progress import LOG_INTERVAL_S
from normlab.lab.runner import RunConfig, train_run
from normlab.lab.sweep import Sweep, run_sweep


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", max_train=96)


def test_tiny_sweep_through_the_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = sweep_cli(*TINY, "--norms", "bn,gn", "--batch-sizes", "4,8", "--steps", "6",
                     "--model", "resnet", "--width", "8", "--jobs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    records = store.read_records(out)
    assert sorted(r["id"] for r in records) == sorted(
        f"norm={n}|batch_size={b}|seed=0" for n in ("bn", "gn") for b in (4, 8)
    )
    for r in records:
        assert r["status"] == "ok" and r["steps"] == 6
        assert 0.0 <= r["test_error"] <= 1.0
        assert r["curve"][-1]["step"] == 6
    meta = store.read_meta(out)
    assert meta["total_runs"] == 4 and meta["steps"] == 6 and meta["epochs"] is None
    assert "equal steps" in meta["protocol"]
    for name in ("report.md", "error_vs_batch_size.png", "training_curves.png", "summary.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "runs in" in proc.stdout and "report.md" in proc.stdout


def test_progress_off_a_terminal_is_a_line_at_a_time(tmp_path: Path) -> None:
    """stderr is a pipe here: the bar prints whole lines (no carriage returns), a few of them."""
    out = tmp_path / "run"
    start = time.monotonic()
    proc = sweep_cli("--data", "digits", "--max-train", "96", "--seeds", "1", "--norms", "bn,ln",
                     "--batch-sizes", "4", "--steps", "6", "--model", "mlp", "--width", "8",
                     "--jobs", "1", "--out", str(out))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    # the start, the end, and between them one line per LOG_INTERVAL_S at most
    assert 2 <= len(lines) <= 2 + elapsed / LOG_INTERVAL_S, lines
    assert lines[0].startswith("runs 0/2") and lines[-1].startswith("runs 2/2 100%")
    assert all(len(line) < 150 for line in lines), lines
    text = (out / "report.md").read_text()  # --steps: the curves are against steps
    assert "against the training step" in text and "digits data, mlp model (width 8)" in text


def test_same_seed_same_numbers_and_seeds_differ(digits) -> None:
    config = RunConfig("digits", "mlp", "bn", 8, seed=0, epochs=None, steps=12, width=32)
    first, second = train_run(config, digits), train_run(config, digits)
    strip = lambda r: {k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
    assert strip(first) == strip(second)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    other = train_run(RunConfig(**{**config.as_dict(), "seed": 1}), digits)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's process is left as it was
    assert torch.get_num_threads() == threads
    assert other["curve"][-1]["train_loss"] != first["curve"][-1]["train_loss"]


def test_parallel_workers_give_the_serial_numbers(tmp_path: Path) -> None:
    plan = Sweep(data="digits", norms=("bn", "ln"), batch_sizes=(8,), seeds=1, model="mlp",
                 epochs=None, steps=8, width=32, max_train=96)
    serial = run_sweep(plan, tmp_path / "serial", jobs=1, quiet=True)
    parallel = run_sweep(plan, tmp_path / "parallel", jobs=2, quiet=True)
    by_id = {r["id"]: r["curve"] for r in serial}
    assert {r["id"]: r["curve"] for r in parallel} == by_id


def test_every_registered_norm_trains_in_the_lab(digits) -> None:
    """What the demo used to check: each method (with its paper's extras) trains and evaluates."""
    for name in [*normlab.available(), "none"]:
        record = train_run(
            RunConfig("digits", "resnet", name, 8, 0, epochs=None, steps=5, width=8), digits
        )
        assert record["status"] == "ok", name
        assert 0.0 <= record["test_error"] <= 1.0, name


def test_divergence_is_recorded_not_raised(digits, tmp_path: Path) -> None:
    plan = Sweep(data="digits", norms=("none",), batch_sizes=(8,), seeds=1, model="mlp",
                 epochs=None, steps=30, lr=1e6, width=32, max_train=96)
    (record,) = run_sweep(plan, tmp_path / "run", quiet=True)
    assert record["status"] == "diverged"
    assert record["test_error"] is None and record["diverged_at_step"] >= 1
    assert store.read_records(tmp_path / "run")[0]["status"] == "diverged"


def test_resume_after_a_kill_keeps_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--norms", "bn,gn,ln,none", "--batch-sizes", "4,8", "--steps", "150",
            "--model", "mlp", "--width", "32", "--jobs", "1", "--out", str(out)]
    proc = sweep_until_finished_runs(args, out, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    results = out / store.RESULTS
    with open(results, "ab") as f:  # what a kill during a write leaves behind
        f.write(b'{"id": "norm=ln|batch_size=8|se')
    before = store.read_records(out)
    assert 2 <= len(before) < 8

    again = sweep_cli(*args, "--resume")
    assert again.returncode == 0, again.stderr
    after = store.read_records(out)
    assert len(after) == 8 and len({r["id"] for r in after}) == 8
    assert after[: len(before)] == before  # finished runs kept as they were, not redone
    json.loads(results.read_text().splitlines()[-1])  # the torn line is gone


def test_out_with_a_sweep_needs_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    store.write_meta(out, {"data": "digits"})
    code = main(["sweep", *TINY, "--norms", "bn", "--batch-sizes", "4", "--steps", "5",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1


def test_resume_with_other_settings_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    base = ["sweep", *TINY, "--norms", "bn", "--batch-sizes", "4", "--out", str(out)]
    assert main([*base, "--steps", "5", "--model", "mlp"]) == 0
    capsys.readouterr()
    assert main([*base, "--steps", "6", "--model", "mlp", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "steps=5 (now 6)" in err and len(err.strip().splitlines()) == 1


def test_resume_needs_no_options_and_checks_those_given(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["sweep", *TINY, "--norms", "bn,ln", "--batch-sizes", "4", "--steps", "5",
                 "--model", "mlp", "--width", "8", "--jobs", "1", "--out", str(out),
                 "--no-report"]) == 0
    first, _ = store.read_records(out)
    (out / store.RESULTS).write_text(json.dumps(first, sort_keys=True) + "\n")  # as if killed
    before = store.read_meta(out)
    capsys.readouterr()

    again = sweep_cli("--resume", "--out", str(out), "--quiet", "--no-report", "--jobs", "1")
    assert again.returncode == 0, again.stderr
    after = store.read_records(out)
    assert after[0] == first and len(after) == 2
    assert after[1]["id"] == "norm=ln|batch_size=4|seed=0"
    assert after[1]["config"] == {**first["config"], "norm": "ln"}  # the stored settings
    meta = store.read_meta(out)
    assert meta["max_train"] == 96
    assert (meta["command"], meta["created"]) == (before["command"], before["created"])

    # typed again: agreeing options are fine (norms as a set), others are named
    assert main(["sweep", "--resume", "--out", str(out), "--norms", "ln,bn", "--steps", "5",
                 "--quiet", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["sweep", "--resume", "--out", str(out), "--steps", "6", "--seeds", "2",
                 "--batch-sizes", "4", "--width", "8"]) == 2
    err = capsys.readouterr().err
    assert "steps=5 (now 6), seeds=1 (now 2)" in err and len(err.strip().splitlines()) == 1
    assert "width" not in err and "batch_sizes" not in err
    assert main(["sweep", "--resume", "--out", str(out), "--epochs", "2"]) == 2
    assert "steps=5, not epochs (now epochs=2)" in capsys.readouterr().err
    assert len(store.read_records(out)) == 2


@pytest.mark.parametrize("made", [False, True])
def test_resume_without_a_sweep_is_an_error_not_a_new_sweep(
    made: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    if made:
        out.mkdir()
    assert main(["sweep", *TINY, "--norms", "bn", "--batch-sizes", "4", "--steps", "5",
                 "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and str(out) in err
    assert len(err.strip().splitlines()) == 1
    assert out.exists() == made and (not made or list(out.iterdir()) == [])
    with pytest.raises(normlab.errors.ConfigError, match="no sweep there to resume"):
        plan = Sweep(data="digits", norms=("bn",), batch_sizes=(4,), seeds=1, model="mlp",
                     epochs=None, steps=5, width=8, max_train=96)
        run_sweep(plan, tmp_path / "empty", resume=True, quiet=True)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--norms", "bn,gnn"], "Did you mean 'gn'"),
        (["--data", "digts"], "Did you mean 'digits'"),
        (["--model", "resnt"], "Did you mean 'resnet'"),
        (["--batch-sizes", "4,4096"], "4096"),
        (["--batch-sizes", "4,x"], "'x' is not an integer"),
        (["--steps", "5", "--epochs", "2"], "not allowed with"),
        (["--data", "cifar10:/nonexistent/cifar"], "/nonexistent/cifar"),
        (["--order", "sortd"], "Did you mean 'sorted'"),
        (["--norms", "in", "--model", "mlp"], "--norms in"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["sweep", *TINY, "--out", str(tmp_path / "run"), "--steps", "5", *args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "run" / store.RESULTS).exists()


def test_errors_through_the_entry_point_are_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = sweep_cli(*TINY, "--norms", "bnn", "--batch-sizes", "4", "--steps", "5",
                     "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("normlab: error: Unknown norm 'bnn'. Did you mean 'bn'")
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = sweep_cli(*TINY, "--norms", "bn", "--batch-sizes", "4", "--steps", "5",
                     "--out", str(blocker / "run"))
    assert proc.returncode == 2
    assert "is not a writable directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_core_never_imports_the_lab() -> None:
    code = (
        "import sys, normlab, normlab.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'matplotlib', 'mnist1d') or m.startswith('normlab.lab')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_ctrl_c_stops_workers_and_says_how_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*TINY, "--norms", "bn,gn,ln,none", "--batch-sizes", "4,8", "--steps", "150",
            "--model", "mlp", "--width", "32", "--jobs", "2", "--out", str(out)]
    proc = sweep_until_finished_runs(args, out, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0], err
    kept = store.read_records(out)
    assert 1 <= len(kept) < 8


def test_a_run_too_short_for_the_schedule_is_refused_before_any_work(tmp_path: Path) -> None:
    """4 updates divide by zero in torch's one-cycle schedule; fewer have no warm-up step."""
    out = tmp_path / "run"
    proc = sweep_cli(*TINY, "--norms", "bn", "--batch-sizes", "4", "--steps", "4",
                     "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert "--steps 4 gives 4 updates" in proc.stderr and "--steps 5 or more" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    proc = sweep_cli(*TINY, "--norms", "bn", "--batch-sizes", "32", "--epochs", "1",
                     "--out", str(out))
    assert proc.returncode == 2 and "1 epoch(s) of 3 batches of 32" in proc.stderr
    assert sweep_cli(*TINY, "--norms", "bn", "--batch-sizes", "4", "--steps", "5",
                     "--out", str(out)).returncode == 0
