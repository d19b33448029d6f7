"""Run a selection of claims into a run directory, resumably.

The directory holds ``meta.json`` (size, selection, versions), ``results.jsonl`` (one line per
finished claim, appended whole and synced: `normlab.lab.store`), ``claims.json`` (every record,
with the raw numbers), ``claims.md`` (the table) and one ``CNN.png`` per empirical claim. The
last three are rewritten atomically after every claim, so an interrupted ledger leaves a
readable partial one; ``resume=True`` runs only the claims not yet in ``results.jsonl``.

Claims run in this process by default (one after another, so the claims that read the same
sweep train it once). With an executor (`normlab.lab.executors`: worker processes, Ray tasks or
SLURM jobs) each claim is one item, `compute_claim` of a `ClaimTask`, and this process alone
writes the directory, as the sweep's driver does.
"""

from __future__ import annotations

import difflib
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import normlab
from normlab.claims import CLAIMS
from normlab.claims.ledger import NOT_RUN, SIZES, Claim, Size
from normlab.claims.markdown import ledger_markdown, summarize_numbers
from normlab.errors import ConfigError
from normlab.lab import store

__all__ = [
    "LEDGER_JSON", "LEDGER_MD", "ClaimTask", "compute_claim", "recheck", "run_ledger",
    "select_claims",
]  # fmt: skip

LEDGER_JSON = "claims.json"
LEDGER_MD = "claims.md"

Report = Callable[[str], None]


def select_claims(ids: Sequence[str]) -> list[Claim]:
    """The claims named by ``ids`` (case-insensitive, ``c5`` = ``C05``), all when empty."""
    if not ids:
        return list(CLAIMS.values())
    chosen: list[Claim] = []
    for given in ids:
        key = given.strip().upper()
        if key[1:].isdigit():
            key = f"C{int(key[1:]):02d}"
        if key not in CLAIMS:
            close = difflib.get_close_matches(key, list(CLAIMS), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"claim {given!r} is not in the ledger; {hint}the claims are "
                f"{', '.join(CLAIMS)} (normlab claims --list shows them)"
            )
        if CLAIMS[key] not in chosen:
            chosen.append(CLAIMS[key])
    return chosen


def _meta(claims: Sequence[Claim], size: Size, command: str) -> dict[str, Any]:
    return {
        "kind": "claims",
        "size": size,
        "ids": [c.id for c in claims],
        "command": command,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "threads": torch.get_num_threads(),
        "normlab": normlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _prepare(out: Path, meta: dict[str, Any], resume: bool) -> tuple[dict[str, Any], list[dict]]:
    """Check the directory; on resume keep its finished claims and its size and selection."""
    if resume:
        old = store.read_meta(out)
        if old.get("kind") != "claims":
            raise ConfigError(
                f"--resume {out}: no claims ledger there ({store.META} missing or from another "
                "command); pass the --out of the ledger to continue, or start one without --resume"
            )
        if old["size"] != meta["size"]:
            raise ConfigError(
                f"--resume {out}: that ledger ran at size {old['size']!r}, not {meta['size']!r}; "
                f"resume it with the same size"
            )
        return old, store.repair(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"--out {out} is not empty; choose a new directory, or continue the ledger there "
            "with --resume"
        )
    out.mkdir(parents=True, exist_ok=True)
    store.write_meta(out, meta)
    return meta, []


@dataclass(frozen=True)
class ClaimTask:
    """One claim to run at one size: an executor's item."""

    id: str
    size: Size

    @property
    def run_id(self) -> str:
        return self.id


def compute_claim(task: ClaimTask, progress: Any = None) -> dict[str, Any]:
    """The ledger record of ``task`` (wherever it runs; ``progress`` is not used)."""
    return _record(CLAIMS[task.id], task.size)


def _computed(todo: Sequence[Claim], size: Size, executor: Any) -> Iterator[dict[str, Any]]:
    """Each claim's record as it finishes: here in order, or through ``executor``."""
    if executor is None:
        for claim in todo:
            yield _record(claim, size)
        return
    tasks = [ClaimTask(claim.id, size) for claim in todo]
    for _, record in executor.submit(tasks):
        yield record


def _record(claim: Claim, size: Size) -> dict[str, Any]:
    started = time.perf_counter()
    base = {"id": claim.id, "claim": claim.claim, "source": claim.source, "kind": claim.kind,
            "rule": claim.rule, "size": size}
    if claim.needs is not None:
        return {**base, "numbers": {}, "summary": f"needs {claim.needs}",
                "verdict": f"{NOT_RUN}: needs {claim.needs}", "time_s": 0.0}
    numbers = claim.measure(size)
    json.dumps(numbers, allow_nan=False)  # a number the JSON cannot hold fails here, loudly
    verdict = claim.recheck(numbers)
    summary = claim.summarize(numbers) if claim.summarize else summarize_numbers(numbers)
    return {**base, "numbers": numbers, "summary": summary, "verdict": verdict,
            "time_s": round(time.perf_counter() - started, 3)}


def _write_outputs(out: Path, records: list[dict[str, Any]], meta: Mapping[str, Any]) -> None:
    ordered = sorted(records, key=lambda r: r["id"])
    store.write_atomic(out / LEDGER_JSON, json.dumps(
        {"meta": dict(meta), "claims": ordered}, indent=1, allow_nan=False) + "\n")
    store.write_atomic(out / LEDGER_MD, ledger_markdown(ordered, meta))


def _write_figure(out: Path, claim: Claim, numbers: Mapping[str, Any]) -> None:
    from normlab.lab.plots import figure_png

    store.write_atomic(out / f"{claim.id}.png", figure_png(claim.figure(numbers)))


def run_ledger(
    ids: Sequence[str], out: Path, *, size: Size | None = None, resume: bool = False,
    report: Report | None = None, command: str = "normlab claims", executor: Any = None,
) -> list[dict[str, Any]]:
    """Run the selected claims into ``out``; returns every record of the ledger, by id.

    ``size``: None is the resumed ledger's size, or ``"quick"`` for a new one. ``executor``: None
    runs the claims here, one after another; an executor of `normlab.lab.executors` built with
    ``compute=compute_claim`` runs each claim as one item.
    """
    if size is None:
        size = store.read_meta(Path(out)).get("size", "quick") if resume else "quick"
    if size not in SIZES:
        raise ConfigError(f"size {size!r} is not one of {', '.join(SIZES)}")
    out = Path(out)
    say = report or (lambda line: print(line, file=sys.stderr, flush=True))
    claims = select_claims(ids)
    meta, records = _prepare(out, _meta(claims, size, command), resume)
    if resume:
        claims = select_claims(meta["ids"])
    done = {r["id"] for r in records}
    todo = [c for c in claims if c.id not in done]
    say(f"claims ledger ({size}): {len(done)} done, {len(todo)} to run, in {out}")
    if executor is None and todo:
        say(f"[{len(done) + 1}/{len(claims)}] {todo[0].id}: {todo[0].claim[:70]}")
    for number, record in enumerate(_computed(todo, size, executor), start=len(done) + 1):
        claim = CLAIMS[record["id"]]
        if claim.figure is not None and claim.needs is None:
            _write_figure(out, claim, record["numbers"])
        store.append_record(out, record)
        records.append(record)
        _write_outputs(out, records, meta)
        say(f"        {claim.id} {record['verdict']} ({record['time_s']:.1f} s): "
            f"{record['summary'][:110]}")
        upcoming = todo[number - len(done)] if number - len(done) < len(todo) else None
        if executor is None and upcoming is not None:
            say(f"[{number + 1}/{len(claims)}] {upcoming.id}: {upcoming.claim[:70]}")
    if not todo:
        _write_outputs(out, records, meta)
    return sorted(records, key=lambda r: r["id"])


def recheck(run_dir: Path) -> list[tuple[str, str, str]]:
    """(id, stored verdict, verdict recomputed by the claim's rule) for every run claim."""
    path = Path(run_dir) / LEDGER_JSON
    if not path.exists():
        raise ConfigError(f"--recheck {run_dir}: no {LEDGER_JSON} there; pass a ledger directory")
    rows = []
    for record in json.loads(path.read_text())["claims"]:
        claim = CLAIMS.get(record["id"])
        if claim is None or record["verdict"].startswith(NOT_RUN):
            continue
        rows.append((record["id"], record["verdict"], claim.recheck(record["numbers"])))
    return rows


