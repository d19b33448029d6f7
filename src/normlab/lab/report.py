"""The report of a run directory: summary table, winner per batch size, plots and ``report.md``.

The statistics per (norm, batch size) are `normlab.lab.summary`'s.

Winner per batch size (:func:`winners`): the norm with the lowest mean error, the runner-up, the
margin ``mean(runner-up) - mean(best)`` and the spread ``max(std(best), std(runner-up))``, both in
percentage points. The rule, fixed before any data was looked at: the verdict is ``"clear"`` when
``margin > 2 × spread`` and ``"within noise"`` otherwise; with a single seed (no spread estimate),
a single norm left, or every run diverged, the verdict says so instead of naming a winner by luck.

:func:`write_report` renders every file in memory first, then writes each one atomically
(``store.write_atomic``), ``report.md`` last so that it never links to a plot not yet written.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from normlab.errors import ConfigError
from normlab.lab import store
from normlab.lab.config import Sweep
from normlab.lab.summary import (
    SummaryRow,
    config_of,
    norm_order,
    summarize,
    unique_records,
)

# -- errors raised here ----------------------------------------------------------------------------


def no_run_to_report(run_dir: object, problem: str) -> ConfigError:
    """``normlab report RUN_DIR`` on a directory that holds no sweep (yet)."""
    return ConfigError(
        f"normlab report: {problem}. Run `normlab sweep --out {run_dir}` first, or pass the "
        "directory a sweep wrote (the one holding meta.json and results.jsonl)."
    )


def no_finished_run(results: object) -> ConfigError:
    """``results.jsonl`` exists but holds no complete line: the sweep's first run is not done."""
    return ConfigError(
        f"normlab report: no finished run yet in {results}: every run appends its line when "
        "it ends. Wait for the first run to finish, then run `normlab report` again."
    )


def report_not_writable(run_dir: object, name: str, reason: object) -> ConfigError:
    """A report file could not be written; the files already in the directory are untouched."""
    return ConfigError(
        f"normlab report: cannot write {name} in {run_dir} ({reason}). Make the directory "
        "writable (chmod u+w) or copy the run directory somewhere writable and report there."
    )


ERROR_PLOT = "error_vs_batch_size.png"
CURVES_PLOT = "training_curves.png"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
REPORT_MD = "report.md"

CLEAR_FACTOR = 2.0  # "clear" when margin > CLEAR_FACTOR × spread

CLEAR = "clear"
WITHIN_NOISE = "within noise"
SINGLE_SEED = "no spread estimate (a single seed)"
ONE_NORM = "no contest: only one norm has run"
OTHERS_DIVERGED = "no contest: every other norm diverged"
ALL_DIVERGED = "no winner: every run diverged"


@dataclass(frozen=True)
class Winner:
    """The best norm at one batch size; ``margin`` and ``spread`` in percentage points."""

    batch_size: int
    best: str | None
    runner_up: str | None
    margin: float | None
    spread: float | None
    verdict: str


def winners(summary: Sequence[SummaryRow]) -> list[Winner]:
    """The best norm per batch size (ascending), judged by the rule in the module docstring."""
    by_batch: dict[int, list[SummaryRow]] = {}
    for row in summary:
        by_batch.setdefault(row.batch_size, []).append(row)
    result = []
    for batch_size in sorted(by_batch):
        rows = by_batch[batch_size]
        # sorted() is stable: a tie keeps the norm order
        ranked = sorted(((r.mean, r) for r in rows if r.mean is not None), key=lambda m: m[0])
        if not ranked:
            result.append(Winner(batch_size, None, None, None, None, ALL_DIVERGED))
            continue
        best_mean, best = ranked[0]
        if len(ranked) == 1:
            verdict = ONE_NORM if len(rows) == 1 else OTHERS_DIVERGED
            result.append(Winner(batch_size, best.norm, None, None, None, verdict))
            continue
        second_mean, second = ranked[1]
        margin = 100.0 * (second_mean - best_mean)
        if best.std is None or second.std is None:
            spread, verdict = None, SINGLE_SEED
        else:
            spread = 100.0 * max(best.std, second.std)
            verdict = CLEAR if margin > CLEAR_FACTOR * spread else WITHIN_NOISE
        result.append(Winner(batch_size, best.norm, second.norm, margin, spread, verdict))
    return result


# -- tables ----------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "norm",
    "batch_size",
    "runs",
    "diverged",
    "mean_test_error",
    "std_test_error",
    "min_test_error",
    "max_test_error",
)


def summary_csv(summary: Sequence[SummaryRow]) -> str:
    """The summary as CSV: errors as fractions at full precision, an empty cell for ``None``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in summary:
        stats = (r.mean, r.std, r.min, r.max)
        writer.writerow(
            [
                r.norm,
                r.batch_size,
                r.runs,
                r.diverged,
                *("" if s is None else repr(s) for s in stats),
            ]
        )
    return buffer.getvalue()


def write_summary_csv(summary: Sequence[SummaryRow], path: Path) -> None:
    store.write_atomic(Path(path), summary_csv(summary))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.2f}"


def _mean_std(row: SummaryRow) -> str:
    if row.mean is None:
        return "diverged"
    if row.std is None:
        return f"{_percent(row.mean)} (1 run)"
    return f"{_percent(row.mean)} ± {_percent(row.std)}"


def summary_markdown(summary: Sequence[SummaryRow]) -> str:
    """The summary as a Markdown table, test errors in %."""
    lines = [
        "| batch size | norm | runs | diverged | test error % (mean ± std) | min % | max % |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.batch_size} | {r.norm} | {r.runs} | {r.diverged} | {_mean_std(r)} "
        f"| {_percent(r.min)} | {_percent(r.max)} |"
        for r in summary
    ]
    return "\n".join(lines) + "\n"


def _points(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def winners_markdown(found: Sequence[Winner], summary: Sequence[SummaryRow]) -> str:
    """The winner per batch size as a Markdown table.

    Each named norm shows its mean error in % and how many of its runs diverged: a norm that
    diverges now and then can still have the best mean over the runs that did not.
    """
    rows = {(r.norm, r.batch_size): r for r in summary}

    def named(norm: str | None, batch_size: int) -> str:
        if norm is None:
            return "–"
        row = rows[norm, batch_size]
        failed = f", {row.diverged} of {row.runs} runs diverged" if row.diverged else ""
        return f"{norm} ({_percent(row.mean)} %{failed})"

    lines = [
        "| batch size | best | runner-up | margin (points) | spread (points) | verdict |",
        "|---:|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {w.batch_size} | {named(w.best, w.batch_size)} | {named(w.runner_up, w.batch_size)} "
        f"| {_points(w.margin)} | {_points(w.spread)} | {w.verdict} |"
        for w in found
    ]
    return "\n".join(lines) + "\n"


# -- report.md -------------------------------------------------------------------------------------

# meta.json keys listed in the report, when present: every field of a sweep, in declaration order
_LABELS = {"order": "batch order"}
_SETTINGS = tuple((f.name, _LABELS.get(f.name, f.name.replace("_", " "))) for f in fields(Sweep))


def _text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _progress(meta: Mapping[str, Any], summary: Sequence[SummaryRow]) -> list[str]:
    """'k of n runs finished', and which configurations miss seeds when meta says how many."""
    done = sum(r.runs for r in summary)
    diverged = sum(r.diverged for r in summary)
    total = meta.get("total_runs")
    known = isinstance(total, int) and not isinstance(total, bool)
    of = f"{done} of {total}" if known else f"{done} of an unknown number of"
    line = f"- progress: **{of} runs finished**, {diverged} of them diverged"
    if isinstance(total, int) and done < total:
        line += ". **Partial run**: the statistics below cover the finished runs only"
    lines = [line + "."]
    seeds, norms, sizes = meta.get("seeds"), meta.get("norms"), meta.get("batch_sizes")
    if isinstance(seeds, int) and isinstance(norms, list) and isinstance(sizes, list):
        runs = {(r.norm, r.batch_size): r.runs for r in summary}
        missing = [
            f"{n} @ {b} ({runs.get((n, b), 0)} of {seeds})"
            for b in sorted(sizes)
            for n in norms
            if runs.get((n, b), 0) < seeds
        ]
        if missing:
            lines.append(f"- configurations still missing seeds: {'; '.join(missing)}.")
    return lines


def report_markdown(
    title: str,
    meta: Mapping[str, Any],
    summary: Sequence[SummaryRow],
    meta_note: str = "",
) -> str:
    """The text of ``report.md``; deterministic (no clock, no absolute paths)."""
    about = [
        f"{label} {meta[key]}"
        for key, label in (
            ("created", "created"),
            ("machine", "machine:"),
            ("torch", "torch"),
            ("normlab", "normlab"),
        )
        if key in meta
    ]
    settings = [
        f"{label}: {_text(meta[key])}" for key, label in _SETTINGS if meta.get(key) is not None
    ]
    lines = [f"# normlab report: {title}", ""]
    if meta_note:
        lines.append(f"- {meta_note}")
    if about:
        lines.append(f"- {' · '.join(about)}")
    if settings:
        lines.append(f"- sweep: {'; '.join(settings)}")
    if meta.get("protocol"):
        lines.append(f"- protocol: {meta['protocol']}")
    if meta.get("command"):
        lines.append(f"- command: `{meta['command']}`")
    lines += _progress(meta, summary)
    lines += [
        "",
        "## Test error vs batch size",
        "",
        f"![test error vs batch size]({ERROR_PLOT})",
        "",
        "Final test error in %, mean over the seeds that did not diverge (line) with ± one sample "
        "standard deviation (band, drawn where at least 2 seeds finished); × marks diverged runs, "
        "which are counted but never averaged in.",
        "",
        "## Training curves",
        "",
        f"![training curves]({CURVES_PLOT})",
        "",
        "Mean training loss per epoch over the seeds that did not diverge, one panel per batch "
        "size.",
        "",
        "## Winner per batch size",
        "",
        f"Margin = runner-up's mean error − best's, spread = the larger seed standard deviation of "
        f"the two, both in percentage points. The verdict is *{CLEAR}* when margin > "
        f"{CLEAR_FACTOR:g} × spread, else *{WITHIN_NOISE}* (a rule fixed before looking at the "
        "data); with a single seed there is no spread to judge by.",
        "",
        winners_markdown(winners(summary), summary),
        "## Summary",
        "",
        summary_markdown(summary),
        f"Also in [{SUMMARY_CSV}]({SUMMARY_CSV}) (errors as fractions) and "
        f"[{SUMMARY_MD}]({SUMMARY_MD}).",
    ]
    return "\n".join(lines) + "\n"


def _load(run_dir: Path) -> tuple[dict[str, Any], str, list[Mapping[str, Any]]]:
    """meta (``{}`` when missing or unreadable), a note about it, and the finished records."""
    if not run_dir.is_dir():
        problem = "is not a directory" if run_dir.exists() else "does not exist"
        raise no_run_to_report(run_dir, f"the run directory {run_dir} {problem}")
    results = run_dir / store.RESULTS
    if not results.is_file():
        raise no_run_to_report(run_dir, f"{run_dir} holds no {store.RESULTS}")
    records = unique_records(store.read_records(run_dir))
    if not records:
        raise no_finished_run(results)
    for record in records:
        config_of(record, results)
    note = ""
    try:
        meta = store.read_meta(run_dir)
    except (OSError, ValueError) as err:
        meta, note = {}, f"{store.META} is unreadable ({type(err).__name__}): settings unknown"
    if not isinstance(meta, dict):
        meta, note = {}, f"{store.META} is not a JSON object: settings unknown"
    if not note and not meta:
        note = f"no {store.META}: settings and the total number of runs are unknown"
    return meta, note, records


def write_report(run_dir: Path) -> Path:
    """Write the report files into ``run_dir`` and return the path of ``report.md``.

    Works on a partial run (a sweep still going, or killed): it reports the finished runs and
    says how many of the planned ones that is.
    """
    from normlab.lab import plots  # matplotlib only when a report is written

    run_dir = Path(run_dir)
    meta, note, records = _load(run_dir)
    meta_norms = meta.get("norms")
    norms = norm_order(records, meta_norms if isinstance(meta_norms, list) else ())
    summary = summarize(records, norms)
    error_figure = plots.plot_error_vs_batch_size(
        summary, norms=norms, title="Test error vs batch size"
    )
    curves_figure = plots.plot_training_curves(records, norms=norms)
    files = {  # report.md last: it links the others
        ERROR_PLOT: plots.figure_png(error_figure),
        CURVES_PLOT: plots.figure_png(curves_figure),
        SUMMARY_CSV: summary_csv(summary),
        SUMMARY_MD: f"# Summary: {run_dir.resolve().name}\n\n{summary_markdown(summary)}",
        REPORT_MD: report_markdown(run_dir.resolve().name, meta, summary, note),
    }
    for name, data in files.items():
        try:
            store.write_atomic(run_dir / name, data)
        except OSError as err:
            raise report_not_writable(run_dir, name, err.strerror or err) from None
    return run_dir / REPORT_MD
