"""The lab's report (issue 4): summary statistics, winners, figures and the files of report.md.

Records are written by hand with store.append_record; every expected number is computed here with
numpy from the synthetic errors the test chose, never with the report's own code.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.collections import PolyCollection

from normlab.errors import NormlabError
from normlab.lab import plots, report, store

NORMS = ["bn", "gn", "ln"]
BATCH_SIZES = [2, 8, 32]
# final test errors per (norm, batch size), one per seed; best: gn at 2, ln at 8, bn at 32
ERRORS = {
    ("bn", 2): [0.40, 0.44], ("gn", 2): [0.20, 0.21], ("ln", 2): [0.30, 0.33],
    ("bn", 8): [0.26, 0.25], ("gn", 8): [0.24, 0.23], ("ln", 8): [0.10, 0.12],
    ("bn", 32): [0.10, 0.11], ("gn", 32): [0.18, 0.20], ("ln", 32): [0.22, 0.19],
}  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OUTPUTS = ("report.md", "error_vs_batch_size.png", "training_curves.png", "summary.csv",
           "summary.md")  # fmt: skip


def curve_for(error: float, seed: int, epochs: int = 3) -> list[dict]:
    return [
        {"epoch": e, "step": 10 * e, "train_loss": 2.0 / e + error + 0.01 * seed,
         "test_error": error + 0.1 / e}
        for e in range(1, epochs + 1)
    ]  # fmt: skip


def record(norm: str, batch_size: int, seed: int, error: float | None, **over: object) -> dict:
    diverged = error is None
    rec = {
        "id": f"norm={norm}|batch_size={batch_size}|seed={seed}",
        "config": {"data": "synthetic", "model": "mlp", "norm": norm, "batch_size": batch_size,
                   "seed": seed, "epochs": 3},
        "status": "diverged" if diverged else "ok",
        "curve": [] if diverged else curve_for(error, seed),
        "test_error": error,
        "steps": 30,
        "time_s": 0.1,
        "diverged_at_step": 7 if diverged else None,
    }  # fmt: skip
    rec.update(over)
    return rec


def grid_records(errors: dict = ERRORS) -> list[dict]:
    return [record(n, b, s, e) for (n, b), finals in errors.items() for s, e in enumerate(finals)]


def write_run(run_dir: Path, records: list[dict], meta: dict | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if meta is not None:
        store.write_meta(run_dir, meta)
    for rec in records:
        store.append_record(run_dir, rec)
    return run_dir


def meta_for(total_runs: int) -> dict:
    return {
        "data": "synthetic", "model": "mlp", "norms": NORMS, "batch_sizes": BATCH_SIZES,
        "seeds": 2, "epochs": 3, "protocol": "equal epochs: every run sees the same examples",
        "created": "2026-11-22T03:30:00+00:00", "machine": "Linux x86_64, 2 CPU cores",
        "torch": "2.13.0+cpu", "normlab": "0.1.0", "total_runs": total_runs,
    }  # fmt: skip


# ----------------------------------------------------------------------------- summary


def test_summarize_matches_numpy_in_meta_order():
    order = ["ln", "bn", "gn"]
    rows = report.summarize(grid_records(), order)
    assert [(r.batch_size, r.norm) for r in rows] == [(b, n) for b in BATCH_SIZES for n in order]
    for row in rows:
        finals = np.array(ERRORS[row.norm, row.batch_size], dtype=np.float64)
        assert (row.runs, row.diverged) == (2, 0)
        assert row.mean == pytest.approx(finals.mean(), abs=1e-15)
        assert row.std == pytest.approx(np.std(finals, ddof=1), abs=1e-15)
        assert (row.min, row.max) == (finals.min(), finals.max())


def test_summarize_default_order_is_first_appearance():
    rows = report.summarize(list(reversed(grid_records())))
    assert [r.norm for r in rows if r.batch_size == 2] == ["ln", "gn", "bn"]


def test_diverged_run_is_counted_and_left_out_of_the_mean():
    records = [
        *grid_records(),
        record("bn", 8, 2, None),
        record("gn", 8, 2, 0.9, status="diverged"),
    ]
    row = next(r for r in report.summarize(records) if (r.norm, r.batch_size) == ("bn", 8))
    assert (row.runs, row.diverged, row.ok) == (3, 1, 2)
    assert row.mean == pytest.approx(np.mean(ERRORS["bn", 8]), abs=1e-15)
    gn = next(r for r in report.summarize(records) if (r.norm, r.batch_size) == ("gn", 8))
    assert (gn.runs, gn.diverged) == (3, 1)  # status wins over a stray test_error
    assert gn.max == max(ERRORS["gn", 8])


def test_single_seed_has_no_std_and_all_diverged_has_no_stats():
    rows = report.summarize([record("bn", 4, 0, 0.3), record("gn", 4, 0, None)])
    assert (rows[0].mean, rows[0].std, rows[0].min) == (0.3, None, 0.3)
    assert (rows[1].runs, rows[1].diverged) == (1, 1)
    assert (rows[1].mean, rows[1].std, rows[1].min, rows[1].max) == (None, None, None, None)


def test_duplicate_ids_count_once():
    records = [*grid_records(), record("bn", 2, 0, 0.99)]
    row = next(r for r in report.summarize(records) if (r.norm, r.batch_size) == ("bn", 2))
    assert row.runs == 2
    assert row.mean == pytest.approx(np.mean(ERRORS["bn", 2]))


# ----------------------------------------------------------------------------- winners


def test_winners_pick_the_known_best_with_margin_and_spread():
    found = report.winners(report.summarize(grid_records(), NORMS))
    assert [(w.batch_size, w.best) for w in found] == [(2, "gn"), (8, "ln"), (32, "bn")]
    expected_runner_up = {2: "ln", 8: "gn", 32: "gn"}
    for w in found:
        best, second = (
            np.array(ERRORS[w.best, w.batch_size]),
            np.array(ERRORS[expected_runner_up[w.batch_size], w.batch_size]),
        )
        assert w.runner_up == expected_runner_up[w.batch_size]
        margin = 100 * (second.mean() - best.mean())
        spread = 100 * max(np.std(best, ddof=1), np.std(second, ddof=1))
        assert w.margin == pytest.approx(margin)
        assert w.spread == pytest.approx(spread)
        assert w.verdict == ("clear" if margin > 2 * spread else "within noise")
    assert found[0].verdict == "clear"  # 11.0 points apart, spread 2.12


# spread = half_gap·√2·100 points: 0.71 (margin 5 > 2 × 0.71), 3.54 (spread < margin < 2 × spread)
@pytest.mark.parametrize(
    ("half_gap", "verdict"), [(0.005, "clear"), (0.025, "within noise"), (0.04, "within noise")]
)
def test_verdict_flips_when_the_seed_spread_widens(half_gap, verdict):
    means = {"bn": 0.30, "gn": 0.25}  # margin 5 points
    errors = {(n, 4): [m - half_gap, m + half_gap] for n, m in means.items()}
    (w,) = report.winners(report.summarize(grid_records(errors)))
    spread = 100 * np.std([-half_gap, half_gap], ddof=1)  # half_gap·√2, in points
    assert (w.best, w.runner_up) == ("gn", "bn")
    assert w.margin == pytest.approx(5.0)
    assert w.spread == pytest.approx(spread)
    assert w.verdict == verdict


def test_winner_verdicts_for_degenerate_batch_sizes():
    records = [
        record("bn", 2, 0, None), record("gn", 2, 0, None),  # all diverged
        record("bn", 4, 0, 0.3), record("gn", 4, 0, None),  # one survivor
        record("bn", 8, 0, 0.3), record("bn", 8, 1, 0.31),  # one norm only
        record("bn", 16, 0, 0.3), record("gn", 16, 0, 0.2),  # one seed each
    ]  # fmt: skip
    found = {w.batch_size: w for w in report.winners(report.summarize(records))}
    assert (found[2].best, found[2].verdict) == (None, report.ALL_DIVERGED)
    assert (found[4].best, found[4].runner_up, found[4].verdict) == (
        "bn",
        None,
        report.OTHERS_DIVERGED,
    )
    assert (found[8].best, found[8].verdict) == ("bn", report.ONE_NORM)
    assert (found[16].best, found[16].spread, found[16].verdict) == ("gn", None, report.SINGLE_SEED)
    assert found[16].margin == pytest.approx(10.0)


# ----------------------------------------------------------------------------- tables


def test_summary_csv_and_markdown_hold_the_numbers():
    rows = report.summarize(grid_records(), NORMS)
    parsed = list(csv.DictReader(io.StringIO(report.summary_csv(rows))))
    assert len(parsed) == len(ERRORS)
    for line in parsed:
        finals = np.array(ERRORS[line["norm"], int(line["batch_size"])])
        assert float(line["mean_test_error"]) == pytest.approx(finals.mean(), abs=1e-15)
        assert float(line["std_test_error"]) == pytest.approx(np.std(finals, ddof=1), abs=1e-15)
    table = report.summary_markdown(rows)
    finals = np.array(ERRORS["ln", 8])
    cell = f"{100 * finals.mean():.2f} ± {100 * np.std(finals, ddof=1):.2f}"
    assert f"| 8 | ln | 2 | 0 | {cell} |" in table
    assert table.count("\n") == 2 + len(ERRORS)


# ----------------------------------------------------------------------------- figures


def test_error_figure_has_one_line_per_norm_on_a_log2_axis():
    records = [*grid_records(), record("bn", 2, 2, None)]
    figure = plots.plot_error_vs_batch_size(report.summarize(records), norms=NORMS, title="t")
    (ax,) = figure.axes
    assert len(ax.lines) == len(NORMS)
    assert ax.get_xscale() == "log"
    assert ax.xaxis.get_transform().base == 2
    assert list(ax.get_xticks()) == BATCH_SIZES
    names = {"bn": "BatchNorm", "gn": "GroupNorm", "ln": "LayerNorm"}  # names, not codes
    for norm, line in zip(NORMS, ax.lines, strict=True):
        assert line.get_label().startswith(names[norm])
        assert list(line.get_xdata()) == BATCH_SIZES
        expected = [100 * np.mean(ERRORS[norm, b]) for b in BATCH_SIZES]
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
        assert line.get_marker() not in (None, "None", "")
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(NORMS)
    assert "1 diverged" in ax.lines[0].get_label()
    assert any(t.get_text() == "×1" for t in ax.texts)
    colours = {line.get_label().split()[0]: line.get_color() for line in ax.lines}
    curves = plots.plot_training_curves(records, norms=NORMS)
    assert [line.get_color() for line in curves.axes[0].lines] == [
        colours[names[n]] for n in NORMS
    ]
    (legend,) = curves.legends
    assert [t.get_text() for t in legend.get_texts()] == [names[n] for n in NORMS]


def test_error_figure_leaves_a_gap_where_a_norm_only_diverged():
    records = [*grid_records(), *(record("ln", 64, s, None) for s in range(2))]
    records += [record(n, 64, s, 0.1) for n in ("bn", "gn") for s in range(2)]
    (ax,) = plots.plot_error_vs_batch_size(report.summarize(records)).axes
    ln = ax.lines[2]
    assert list(ln.get_xdata()) == [*BATCH_SIZES, 64]
    assert np.isnan(ln.get_ydata()[-1])


def test_training_curves_have_one_line_per_norm_per_batch_size():
    figure = plots.plot_training_curves(grid_records(), norms=NORMS)
    assert len(figure.axes) == len(BATCH_SIZES)
    for ax, b in zip(figure.axes, BATCH_SIZES, strict=True):
        assert len(ax.lines) == len(NORMS)
        assert str(b) in ax.get_title()
        for norm, line in zip(NORMS, ax.lines, strict=True):
            runs = [curve_for(e, s) for s, e in enumerate(ERRORS[norm, b])]
            expected = np.mean([[p["train_loss"] for p in c] for c in runs], axis=0)
            assert list(line.get_xdata()) == [1, 2, 3]
            np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- write_report


def test_write_report_on_a_partial_run_writes_every_file_idempotently(tmp_path):
    finished = [r for r in grid_records() if r["config"]["batch_size"] != 32]  # 12 of 18
    finished.append(record("ln", 32, 0, None))
    run_dir = write_run(tmp_path / "run", finished, meta_for(total_runs=18))
    path = report.write_report(run_dir)
    assert path == run_dir / "report.md"
    for name in OUTPUTS:
        assert (run_dir / name).stat().st_size > 0, name
    for name in ("error_vs_batch_size.png", "training_curves.png"):
        assert (run_dir / name).read_bytes().startswith(PNG_MAGIC)
    text = path.read_text()
    assert "13 of 18 runs finished" in text
    assert "Partial run" in text
    assert "](error_vs_batch_size.png)" in text
    assert "](training_curves.png)" in text
    assert "equal epochs: every run sees the same examples" in text  # the protocol sentence
    assert "2.13.0+cpu" in text and "2026-11-22" in text
    assert "bn @ 32 (0 of 2)" in text and "ln @ 32 (1 of 2)" in text
    assert "| 32 | – | – | – | – | no winner: every run diverged |" in text
    assert "| 8 | ln (11.00 %) | gn (23.50 %) |" in text
    assert "| 32 | ln | 1 | 1 | diverged |" in text
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    report.write_report(run_dir)
    assert path.read_text() == text
    mask = os.umask(0)
    os.umask(mask)
    for name in (*OUTPUTS, store.META):  # the umask's mode, not mkstemp's 0600
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_report_without_meta_says_the_total_is_unknown(tmp_path):
    run_dir = write_run(tmp_path / "run", grid_records()[:3])
    meta, note, records = report._load(run_dir)
    text = report.report_markdown("run", meta, report.summarize(records), note)
    assert "3 of an unknown number of runs finished" in text
    assert "no meta.json" in text


def test_missing_run_directory_is_a_one_line_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(NormlabError, match=r"does not exist.*normlab sweep --out") as info:
        report.write_report(missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    assert not missing.exists()


def test_directory_without_results_is_a_one_line_error(tmp_path):
    with pytest.raises(NormlabError, match=r"holds no results\.jsonl.*normlab sweep --out"):
        report.write_report(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_results_without_a_finished_run_is_a_one_line_error(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"id": "norm=bn|batch_size=2|seed=0", "con')
    with pytest.raises(NormlabError, match=r"no finished run yet in .*results\.jsonl") as info:
        report.write_report(tmp_path)
    assert "\n" not in str(info.value)


def test_record_without_a_config_is_named(tmp_path):
    write_run(tmp_path, [{"id": "odd", "status": "ok", "test_error": 0.1}])
    with pytest.raises(NormlabError, match=r"record 'odd' in .*results.jsonl has no config"):
        report.write_report(tmp_path)


def test_a_failed_write_is_a_one_line_error_and_leaves_no_temp_file(tmp_path):
    run_dir = write_run(tmp_path / "run", grid_records()[:4], meta_for(total_runs=18))
    (run_dir / "summary.csv").mkdir()  # os.replace onto a directory fails, even for root
    with pytest.raises(NormlabError, match=r"cannot write summary\.csv in .*chmod u\+w") as info:
        report.write_report(run_dir)
    assert "\n" not in str(info.value)
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert not (run_dir / "report.md").exists()  # written last: never links a missing file


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores directory permissions")  # fmt: skip
def test_read_only_run_directory_is_a_one_line_error(tmp_path):
    run_dir = write_run(tmp_path / "run", grid_records()[:4], meta_for(total_runs=18))
    before = sorted(p.name for p in run_dir.iterdir())
    run_dir.chmod(0o555)
    try:
        with pytest.raises(NormlabError, match=r"cannot write .*Permission denied.*\(chmod u\+w\)"):
            report.write_report(run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == before
    finally:
        run_dir.chmod(0o755)


def test_report_cli_one_line_error(tmp_path, capsys):
    from normlab.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "nope") in err[0]
    run = write_run(tmp_path / "run", grid_records(), meta_for(total_runs=18))
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").exists()


def test_winner_table_says_when_the_best_norm_diverged_sometimes():
    records = [record("bn", 4, 0, 0.2), record("bn", 4, 1, None)]
    records += [record("gn", 4, s, e) for s, e in enumerate((0.3, 0.31))]
    summary = report.summarize(records)
    table = report.winners_markdown(report.winners(summary), summary)
    assert "| 4 | bn (20.00 %, 1 of 2 runs diverged) | gn (30.50 %) |" in table


# ----------------------------------------------------------------------------- recommendation

SIZES = [2, 4, 8, 16, 32]


def spread_errors(mean: float, half: float, seeds: int = 3) -> list[float]:
    """``seeds`` errors around ``mean``, evenly from ``mean - half`` to ``mean + half``."""
    return list(np.linspace(mean - half, mean + half, seeds))


def bn_fails_small_batches() -> dict:
    """BN clearly worse at B ≤ 8, GN and LN tied everywhere, all three tied at B ≥ 16."""
    errors = {}
    for b in SIZES:
        errors["gn", b] = spread_errors(0.20, 0.01)
        errors["ln", b] = spread_errors(0.205, 0.01)
        errors["bn", b] = spread_errors(0.40 - 0.02 * b if b <= 8 else 0.21, 0.01)
    return errors


def test_recommendation_groups_batch_sizes_with_the_same_advice():
    errors = bn_fails_small_batches()
    summary = report.summarize(grid_records(errors), NORMS)
    small, large = report.recommendations(summary)
    assert small.batch_sizes == (2, 4, 8) and large.batch_sizes == (16, 32)
    assert small.use == ("gn", "ln") and list(small.avoid) == ["bn"]
    gaps = [100 * (np.mean(errors["bn", b]) - np.mean(errors["gn", b])) for b in (2, 4, 8)]
    assert small.avoid["bn"] == f"+{min(gaps):.1f} to +{max(gaps):.1f} points"
    assert set(large.use) == {"bn", "gn", "ln"} and large.avoid == {}
    text = report.recommendation_markdown(summary, {"seeds": 3}, "synthetic data, mlp model")
    assert "One data set and one model** (synthetic data, mlp model, 3 seeds)" in text
    assert (
        f"- At B ≤ 8 (2, 4, 8): GroupNorm and LayerNorm are tied (within 2 × the seed spread); "
        f"use either; avoid BatchNorm (+{min(gaps):.1f} to +{max(gaps):.1f} points)." in text
    )
    assert "- At B ≥ 16 (16, 32): GroupNorm, LayerNorm and BatchNorm are all tied" in text


def test_tie_is_the_winner_tables_rule_on_the_seed_spread():
    # margin 5 points; the seed spread is 100·half points: tied iff 5 ≤ 2 × spread
    for half, tied in ((0.005, False), (0.03, True)):
        errors = {("gn", 4): spread_errors(0.25, half), ("bn", 4): spread_errors(0.30, half)}
        summary = report.summarize(grid_records(errors))
        (advice,) = report.recommendations(summary)
        spread = 100 * np.std(spread_errors(0.0, half), ddof=1)
        assert (2 * spread >= 5.0) == tied
        assert advice.use == (("gn", "bn") if tied else ("gn",))
        (winner,) = report.winners(summary)
        assert (winner.verdict == "within noise") == tied


def test_a_norm_that_diverged_is_never_recommended():
    errors = {("bn", 4): [0.10, 0.11, 0.12], ("gn", 4): [0.30, 0.31, 0.32]}
    records = [*grid_records(errors), record("bn", 4, 3, None)]
    (advice,) = report.recommendations(report.summarize(records))
    assert advice.use == ()
    assert advice.avoid == {"bn": "diverged in 1 of 4 runs", "gn": "+20.0 points"}
    sentence = report.advice_sentence(advice, [4])
    assert sentence.startswith("At B = 4: no norm is both among the best")


def test_no_recommendation_from_a_single_seed_or_all_diverged():
    records = [record("bn", 2, 0, None), record("gn", 2, 0, None),
               record("bn", 4, 0, 0.3), record("gn", 4, 0, 0.2)]  # fmt: skip
    diverged, single = report.recommendations(report.summarize(records))
    assert diverged.note == "every run diverged" and diverged.use == ()
    assert single.note == "single seed" and single.use == ("gn",)
    sentence = report.advice_sentence(single, [2, 4])
    assert "a single seed" in sentence and "not a recommendation" in sentence


def test_distance_from_the_best_for_every_norm():
    summary = report.summarize(grid_records(), NORMS)
    found = report.distances(summary)
    for (norm, b), gap in found.items():
        best = min(np.mean(ERRORS[n, b]) for n in NORMS)
        assert gap == pytest.approx(100 * (np.mean(ERRORS[norm, b]) - best))
    table = report.distances_markdown(summary)
    third = 100 * (np.mean(ERRORS["bn", 2]) - np.mean(ERRORS["gn", 2]))
    assert f"| BatchNorm | +{third:.2f} | " in table  # the last one, not only the runner-up
    assert "| GroupNorm | best |" in table


def test_report_names_data_and_model_and_plots_steps_in_steps_mode(tmp_path, monkeypatch):
    figures = []
    real_png = plots.figure_png
    monkeypatch.setattr(plots, "figure_png", lambda f, *a: figures.append(f) or real_png(f, *a))
    steps_records = []
    for rec in grid_records():
        rec["config"] = {**rec["config"], "epochs": None, "steps": 30}
        rec["curve"] = [{**p, "epoch": p["step"] / 7} for p in rec["curve"]]  # epochs not whole
        steps_records.append(rec)
    run_dir = write_run(tmp_path / "run", steps_records, {**meta_for(18), "width": 8})
    text = report.write_report(run_dir).read_text()
    error_figure, curves_figure = figures
    assert error_figure.axes[0].get_title() == (
        "Test error vs batch size: synthetic data, mlp model (width 8)"
    )
    assert curves_figure.get_suptitle() == "Training loss: synthetic data, mlp model (width 8)"
    for ax in curves_figure.axes:
        assert ax.get_xlabel() == "step"
        assert list(ax.lines[0].get_xdata()) == [10, 20, 30]
    assert "## Recommendation" in text and "## Distance from the best" in text
    assert "(synthetic data, mlp model (width 8), 2 seeds)" in text
    assert "against the training step" in text
