"""The report of a run directory: summary table, winner per batch size, plots and ``report.md``.

The statistics per (norm, batch size) are `normlab.lab.summary`'s.

Winner per batch size (:func:`winners`): the norm with the lowest mean error, the runner-up, the
margin ``mean(runner-up) - mean(best)`` and the spread ``max(std(best), std(runner-up))``, both in
percentage points. The rule, fixed before any data was looked at: the verdict is ``"clear"`` when
``margin > 2 × spread`` and ``"within noise"`` otherwise; with a single seed (no spread estimate),
a single norm left, or every run diverged, the verdict says so instead of naming a winner by luck.

Distance from the best (:func:`distances`): every norm's ``mean - mean(best)`` in points.

Recommendation (:func:`recommendations`), derived from the numbers by the same rule: at each batch
size a norm is *tied* with the best when its distance is at most ``2 ×`` the larger seed spread
of the two (what makes the winner table say "within noise"); the norms to *use* are the best and
those tied with it that never diverged, the norms to *avoid* every other one (clearly worse, or
diverged at least once). Consecutive batch sizes with the same advice form one range, stated in
plain words with the one data set, one model caveat. With a single seed no tie can be told from
a difference, and the advice says so instead of recommending.

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
    counts_steps,
    data_and_model,
    norm_label,
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


def distances(summary: Sequence[SummaryRow]) -> dict[tuple[str, int], float | None]:
    """``{(norm, batch size): mean - best mean}`` in percentage points (0 for the best), ``None``
    where every run of the norm diverged."""
    best: dict[int, float] = {}
    for r in summary:
        if r.mean is not None:
            best[r.batch_size] = min(best.get(r.batch_size, r.mean), r.mean)
    return {
        (r.norm, r.batch_size): None if r.mean is None else 100.0 * (r.mean - best[r.batch_size])
        for r in summary
    }


@dataclass(frozen=True)
class Advice:
    """What to use over a range of batch sizes (consecutive in the sweep), and what to avoid.

    ``use`` is ordered best first; ``avoid`` maps each other norm to why: its distance from the
    best, e.g. ``"+4.1 to +9.0 points"``, or ``"diverged in 2 of 6 runs"``. ``note`` explains a
    range where the rule cannot decide (a single seed, every run diverged)."""

    batch_sizes: tuple[int, ...]
    use: tuple[str, ...]
    avoid: dict[str, str]
    note: str = ""


def _advice_at(rows: Sequence[SummaryRow], gaps: Mapping[tuple[str, int], float | None]) -> tuple:
    """``(use, avoid, note)`` at one batch size; ``avoid`` as ``{norm: (kind, gap)}``."""
    ranked = sorted((r for r in rows if r.mean is not None), key=lambda r: r.mean or 0.0)
    if not ranked:
        return (), {r.norm: ("diverged", None) for r in rows}, "every run diverged"
    best = ranked[0]
    if any(r.std is None for r in ranked) and len(ranked) > 1:
        return (best.norm,), {}, "single seed"
    use, avoid = [], {}
    for r in rows:
        gap = gaps[r.norm, r.batch_size]
        if r.diverged:
            avoid[r.norm] = ("diverged", gap)
        elif r is best or (
            gap is not None and best.std is not None and r.std is not None
            and gap <= CLEAR_FACTOR * 100.0 * max(best.std, r.std)
        ):
            use.append(r)
        else:
            avoid[r.norm] = ("worse", gap)
    use.sort(key=lambda r: r.mean or 0.0)
    return tuple(r.norm for r in use), avoid, ""


def recommendations(summary: Sequence[SummaryRow]) -> list[Advice]:
    """The advice per range of batch sizes, by the rule of the module docstring."""
    by_batch: dict[int, list[SummaryRow]] = {}
    for row in summary:
        by_batch.setdefault(row.batch_size, []).append(row)
    gaps = distances(summary)
    runs = {(r.norm, r.batch_size): r for r in summary}
    found: list[tuple[int, tuple, dict, str]] = []
    for batch_size in sorted(by_batch):
        use, avoid, note = _advice_at(by_batch[batch_size], gaps)
        found.append((batch_size, use, avoid, note))
    advice: list[Advice] = []
    start = 0
    for i in range(1, len(found) + 1):
        same = i < len(found) and (
            set(found[i][1]) == set(found[start][1])
            and {k: v[0] for k, v in found[i][2].items()}
            == {k: v[0] for k, v in found[start][2].items()}
            and found[i][3] == found[start][3]
        )
        if same:
            continue
        group = found[start:i]
        sizes = tuple(b for b, *_ in group)
        reasons = {}
        for norm, (kind, _) in group[0][2].items():
            if kind == "diverged":
                failed = sum(runs[norm, b].diverged for b in sizes)
                total = sum(runs[norm, b].runs for b in sizes)
                reasons[norm] = f"diverged in {failed} of {total} runs"
            else:
                points = [g for b in sizes if (g := gaps[norm, b]) is not None]
                low, high = min(points), max(points)
                span = f"+{low:.1f}" + ("" if f"{low:.1f}" == f"{high:.1f}" else f" to +{high:.1f}")
                reasons[norm] = f"{span} points"
        # the use list ordered by mean distance over the range
        use = sorted(group[0][1], key=lambda n: sum(gaps[n, b] or 0.0 for b in sizes))
        advice.append(Advice(sizes, tuple(use), reasons, group[0][3]))
        start = i
    return advice


def _names(norms: Sequence[str]) -> str:
    names = [norm_label(n) for n in norms]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _range(sizes: Sequence[int], every: Sequence[int]) -> str:
    listed = ", ".join(str(b) for b in sizes)
    if len(sizes) == 1:
        return f"at B = {sizes[0]}"
    if len(sizes) == len(every):
        return f"at every batch size ({listed})"
    if sizes[0] == every[0]:
        return f"at B ≤ {sizes[-1]} ({listed})"
    if sizes[-1] == every[-1]:
        return f"at B ≥ {sizes[0]} ({listed})"
    return f"at B = {sizes[0]} to {sizes[-1]} ({listed})"


def advice_sentence(advice: Advice, every: Sequence[int]) -> str:
    """One plain-language sentence, e.g. "At B ≤ 8 (2, 4, 8): GroupNorm and LayerNorm are tied
    (within 2 × the seed spread); use either; avoid BatchNorm (+6.1 to +41.9 points)"."""
    where = _range(advice.batch_sizes, every)
    where = where[0].upper() + where[1:]
    if advice.note == "every run diverged":
        return f"{where}: every run diverged; nothing to recommend."
    if advice.note == "single seed":
        return (
            f"{where}: a single seed, so no spread to tell a tie from a difference; lowest error: "
            f"{_names(advice.use)} (not a recommendation: run more --seeds)."
        )
    if not advice.use:
        text = f"{where}: no norm is both among the best and free of divergence"
    elif len(advice.use) == 1 and not advice.avoid:
        text = f"{where}: {_names(advice.use)}, the only norm that ran"
    elif len(advice.use) == 1:
        text = f"{where}: use {_names(advice.use)}, clearly best"
    elif not advice.avoid:
        text = (
            f"{where}: {_names(advice.use)} are all tied (within {CLEAR_FACTOR:g} × the seed "
            "spread): the choice of norm does not matter here"
        )
    else:
        either = "either" if len(advice.use) == 2 else "any of them"
        text = (
            f"{where}: {_names(advice.use)} are tied (within {CLEAR_FACTOR:g} × the seed spread); "
            f"use {either}"
        )
    if advice.avoid:
        avoided = [f"{norm_label(n)} ({why})" for n, why in advice.avoid.items()]
        listed = avoided[0] if len(avoided) == 1 else f"{', '.join(avoided[:-1])} and {avoided[-1]}"
        text += f"; avoid {listed}"
    return text + "."


def recommendation_markdown(
    summary: Sequence[SummaryRow], meta: Mapping[str, Any], setting: str
) -> str:
    """The recommendation section's body: the caveat, then one bullet per range."""
    every = sorted({r.batch_size for r in summary})
    seeds = meta.get("seeds")
    lines = [
        f"Derived from the measured numbers by a rule fixed in code, not written by hand: a norm "
        f"is tied with the best when its distance from it is within {CLEAR_FACTOR:g} × the larger "
        "seed spread of the two (the winner table's rule), and a norm that diverged is never "
        "recommended; distances are in percentage points of test error. **One data set and one "
        f"model** ({setting}"
        + (f", {seeds} seed{'' if seeds == 1 else 's'}" if isinstance(seeds, int) else "")
        + "): evidence about this setting, not a general ranking; another data set, model or "
        "training budget can change it.",
        "",
    ]
    lines += [f"- {advice_sentence(a, every)}" for a in recommendations(summary)]
    return "\n".join(lines) + "\n"


def distances_markdown(summary: Sequence[SummaryRow]) -> str:
    """Each norm's distance from the best at each batch size, in points, as a Markdown table."""
    norms = list(dict.fromkeys(r.norm for r in summary))
    every = sorted({r.batch_size for r in summary})
    gaps = distances(summary)
    rows = {(r.norm, r.batch_size): r for r in summary}

    def cell(norm: str, batch_size: int) -> str:
        if (norm, batch_size) not in rows:
            return "–"
        gap = gaps[norm, batch_size]
        if gap is None:
            return "diverged"
        return "best" if gap == 0.0 else f"+{gap:.2f}"

    lines = [
        "| norm | " + " | ".join(f"B={b}" for b in every) + " |",
        "|---|" + "---:|" * len(every),
    ]
    lines += [
        f"| {norm_label(n)} | " + " | ".join(cell(n, b) for b in every) + " |" for n in norms
    ]
    return "\n".join(lines) + "\n"


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
    *,
    setting: str = "",
    by_steps: bool = False,
) -> str:
    """The text of ``report.md``; deterministic (no clock, no absolute paths).

    ``setting`` names the data and model (`normlab.lab.summary.data_and_model`; by default from
    ``meta``); ``by_steps``: the runs trained for equal steps, so the curves are against steps.
    """
    setting = setting or data_and_model(meta, [])
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
        "## Recommendation",
        "",
        recommendation_markdown(summary, meta, setting),
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
        (
            "Mean training loss against the training step (equal steps: the batch sizes cover "
            "different numbers of epochs)"
            if by_steps
            else "Mean training loss per epoch"
        )
        + " over the seeds that did not diverge, one panel per batch size.",
        "",
        "## Winner per batch size",
        "",
        f"Margin = runner-up's mean error − best's, spread = the larger seed standard deviation of "
        f"the two, both in percentage points. The verdict is *{CLEAR}* when margin > "
        f"{CLEAR_FACTOR:g} × spread, else *{WITHIN_NOISE}* (a rule fixed before looking at the "
        "data); with a single seed there is no spread to judge by.",
        "",
        winners_markdown(winners(summary), summary),
        "## Distance from the best",
        "",
        "Each norm's mean test error minus the best mean at that batch size, in percentage "
        "points (*best* marks the best).",
        "",
        distances_markdown(summary),
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
    setting = data_and_model(meta, records)
    by_steps = counts_steps(records)
    error_figure = plots.plot_error_vs_batch_size(
        summary, norms=norms, title=f"Test error vs batch size: {setting}"
    )
    curves_figure = plots.plot_training_curves(
        records, norms=norms, title=f"Training loss: {setting}"
    )
    files = {  # report.md last: it links the others
        ERROR_PLOT: plots.figure_png(error_figure),
        CURVES_PLOT: plots.figure_png(curves_figure),
        SUMMARY_CSV: summary_csv(summary),
        SUMMARY_MD: f"# Summary: {run_dir.resolve().name}\n\n{summary_markdown(summary)}",
        REPORT_MD: report_markdown(
            run_dir.resolve().name, meta, summary, note, setting=setting, by_steps=by_steps
        ),
    }
    for name, data in files.items():
        try:
            store.write_atomic(run_dir / name, data)
        except OSError as err:
            raise report_not_writable(run_dir, name, err.strerror or err) from None
    return run_dir / REPORT_MD
