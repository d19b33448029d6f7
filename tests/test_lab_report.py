"""The report: summary statistics, winners, the two figures and report.md (also partial runs)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from normlab.errors import NormlabError
from normlab.lab import store
from normlab.lab.plots import plot_error_vs_batch_size, plot_training_curves
from normlab.lab.report import summarize, winners, write_report

NORMS = ("bn", "gn", "ln")
BATCH_SIZES = (2, 8, 32)
# test error by (norm, batch size) for seeds 0 and 1, chosen by the test
ERRORS = {
    ("bn", 2): (0.80, 0.70), ("gn", 2): (0.30, 0.32), ("ln", 2): (0.40, 0.36),
    ("bn", 8): (0.35, 0.37), ("gn", 8): (0.31, 0.33), ("ln", 8): (0.38, 0.40),
    ("bn", 32): (0.20, 0.26), ("gn", 32): (0.25, 0.21), ("ln", 32): (0.45, 0.43),
}


def record(norm: str, batch_size: int, seed: int, error: float | None) -> dict:
    curve = [
        {"epoch": e, "step": e * 10, "train_loss": 2.0 / e + seed, "test_error": error}
        for e in (1, 2, 3)
    ]
    diverged = error is None
    return {
        "id": f"norm={norm}|batch_size={batch_size}|seed={seed}",
        "config": {"norm": norm, "batch_size": batch_size, "seed": seed, "data": "digits"},
        "status": "diverged" if diverged else "ok",
        "curve": curve[:1] if diverged else curve,
        "test_error": error, "steps": 30, "time_s": 0.1,
        "diverged_at_step": 12 if diverged else None,
    }


def records(errors: dict = ERRORS) -> list[dict]:
    return [
        record(norm, bs, seed, errs[seed])
        for (norm, bs), errs in errors.items()
        for seed in range(len(errs))
    ]


def write_run(run_dir: Path, recs: list[dict], total_runs: int | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {"norms": list(NORMS), "protocol": "equal epochs (3)", "machine": "test machine"}
    if total_runs is not None:
        meta["total_runs"] = total_runs
    store.write_meta(run_dir, meta)
    for r in recs:
        store.append_record(run_dir, r)
    return run_dir


def test_summary_matches_numpy() -> None:
    rows = {(r.norm, r.batch_size): r for r in summarize(records())}
    assert set(rows) == set(ERRORS)
    for key, errs in ERRORS.items():
        row = rows[key]
        assert row.runs == 2 and row.diverged == 0
        assert row.mean == pytest.approx(np.mean(errs))
        assert row.std == pytest.approx(np.std(errs, ddof=1))
        assert (row.min, row.max) == (min(errs), max(errs))


def test_diverged_runs_are_counted_not_averaged() -> None:
    recs = [*records(), record("bn", 2, 2, None)]
    row = next(r for r in summarize(recs) if (r.norm, r.batch_size) == ("bn", 2))
    assert row.runs == 3 and row.diverged == 1
    assert row.mean == pytest.approx(0.75)


def test_winner_margin_and_verdict() -> None:
    found = {w.batch_size: w for w in winners(summarize(records()))}
    at2 = found[2]
    assert (at2.best, at2.runner_up) == ("gn", "ln")
    assert at2.margin == pytest.approx(100 * (0.38 - 0.31))
    assert at2.spread == pytest.approx(100 * max(np.std((0.30, 0.32), ddof=1),
                                                 np.std((0.40, 0.36), ddof=1)))
    assert at2.verdict == "clear"
    noisy = dict(ERRORS)
    noisy["ln", 2] = (0.10, 0.66)  # same mean as before, far wider seed spread
    at2_noisy = {w.batch_size: w for w in winners(summarize(records(noisy)))}[2]
    assert at2_noisy.best == "gn" and at2_noisy.verdict == "within noise"


def test_error_figure_has_one_line_per_norm_on_a_log2_axis() -> None:
    figure = plot_error_vs_batch_size(summarize(records()), norms=NORMS)
    (ax,) = figure.axes
    assert len(ax.lines) == len(NORMS)
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.lines]
    assert labels == list(NORMS)
    for line, norm in zip(ax.lines, NORMS, strict=True):
        assert list(line.get_xdata()) == list(BATCH_SIZES)
        expected = [100 * np.mean(ERRORS[norm, b]) for b in BATCH_SIZES]
        np.testing.assert_allclose(line.get_ydata(), expected)


def test_training_curves_one_line_per_norm_per_panel() -> None:
    figure = plot_training_curves(records(), norms=NORMS)
    assert len(figure.axes) == len(BATCH_SIZES)
    for ax in figure.axes:
        assert len(ax.lines) == len(NORMS)
        # mean over seeds 0 and 1 of 2/e + seed
        np.testing.assert_allclose(ax.lines[0].get_ydata(), [2.0 / e + 0.5 for e in (1, 2, 3)])


def test_partial_run_report(tmp_path: Path) -> None:
    recs = [r for r in records() if r["config"]["batch_size"] != 32]
    run = write_run(tmp_path / "run", recs, total_runs=18)
    path = write_report(run)
    assert path == run / "report.md"
    text = path.read_text()
    assert f"{len(recs)} of 18 runs" in text
    assert "(error_vs_batch_size.png)" in text and "(training_curves.png)" in text
    assert "equal epochs (3)" in text
    for name in ("error_vs_batch_size.png", "training_curves.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO((run / "summary.csv").read_text())))
    assert len(rows) == 6
    assert (run / "summary.md").read_text().count("\n|") >= 6
    assert write_report(run).read_text() == text  # idempotent
    assert not list(run.glob(".*tmp"))
    mask = os.umask(0)
    os.umask(mask)
    for name in ("report.md", "summary.csv", "error_vs_batch_size.png", store.META):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_report_errors_name_the_path_and_fix(tmp_path: Path) -> None:
    with pytest.raises(NormlabError, match="does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NormlabError, match=r"results\.jsonl"):
        write_report(tmp_path / "empty")
    (tmp_path / "empty" / store.RESULTS).write_text("")
    with pytest.raises(NormlabError, match="no finished run"):
        write_report(tmp_path / "empty")


def test_report_cli_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from normlab.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]
    run = write_run(tmp_path / "run", records())
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").exists()
