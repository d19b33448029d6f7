"""The summary of a sweep's records that the report's tables and figures share.

Statistics per (norm, batch size), over the seeds that finished:

- ``runs`` counts every finished record of the configuration, ``diverged`` those that diverged
  (status ``"diverged"``, or a ``test_error`` that is missing or not finite).
- ``mean``, ``min``, ``max`` of the final test error over the ``runs - diverged`` runs that did not
  diverge; a diverged run has no test error and is never averaged in. All four are fractions in
  [0, 1] and ``None`` when every run diverged.
- ``std`` is the sample standard deviation over those runs, ``sqrt(Σ(e - mean)² / (k - 1))``
  (ddof=1), and ``None`` when fewer than 2 runs are left: one seed gives no spread estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from normlab import registry
from normlab.errors import ConfigError, NormlabError

# -- errors raised here ----------------------------------------------------------------------------


def bad_run_record(results: object, record_id: object, problem: str) -> ConfigError:
    """A line of ``results.jsonl`` that is complete JSON but not a run record the report reads."""
    return ConfigError(
        f"normlab report: the record {record_id!r} in {results} {problem}. The file was edited "
        "or written by another tool; remove that line (the sweep's --resume redoes the run)."
    )


@dataclass(frozen=True)
class SummaryRow:
    """Test error of one (norm, batch size) over its seeds; errors are fractions, see the module."""

    norm: str
    batch_size: int
    runs: int
    diverged: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None

    @property
    def ok(self) -> int:
        """Runs that did not diverge: the ones the statistics are taken over."""
        return self.runs - self.diverged


# -- reading records -------------------------------------------------------------------------------


def unique_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One record per run id, the first that finished (what ``--resume`` counts as done)."""
    seen: dict[object, Mapping[str, Any]] = {}
    for record in records:
        seen.setdefault(record.get("id"), record)
    return list(seen.values())


def config_of(record: Mapping[str, Any], source: object = "results.jsonl") -> tuple[str, int]:
    """``(norm, batch_size)`` of a record, or a clear error naming the record."""
    config = record.get("config")
    norm = config.get("norm") if isinstance(config, Mapping) else None
    batch_size = config.get("batch_size") if isinstance(config, Mapping) else None
    if not isinstance(norm, str) or isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise bad_run_record(
            source, record.get("id"), "has no config.norm (a str) and config.batch_size (an int)"
        )
    return norm, batch_size


def final_error(record: Mapping[str, Any]) -> float | None:
    """The final test error of a run that did not diverge, else ``None``."""
    error = record.get("test_error")
    if record.get("status") == "diverged" or isinstance(error, bool):
        return None
    if not isinstance(error, (int, float)) or not math.isfinite(error):
        return None
    return float(error)


def norm_order(records: Iterable[Mapping[str, Any]], norms: Sequence[str] = ()) -> list[str]:
    """``norms`` (meta.json's order) first, then any other norm in order of first appearance."""
    order = list(dict.fromkeys(norms))
    for record in records:
        norm = config_of(record)[0]
        if norm not in order:
            order.append(norm)
    return order


def norm_label(spec: str) -> str:
    """A norm spec as people name it: ``"bn"`` -> ``"BatchNorm"``, ``"gn:8"`` -> ``"GroupNorm
    (num_groups=8)"``, ``"none"`` -> ``"no norm"``; a spec the registry does not know is kept.

    >>> norm_label("ln"), norm_label("gn:8"), norm_label("none")
    ('LayerNorm', 'GroupNorm (num_groups=8)', 'no norm')
    """
    if spec == "none":
        return "no norm"
    name, _, value = spec.partition(":")
    try:
        entry = registry.lookup(name)
    except NormlabError:
        return spec
    label = entry.cls.__name__
    return f"{label} ({entry.spec_arg}={value})" if value and entry.spec_arg else label


def data_and_model(meta: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    """``"digits data, mlp model (width 8)"``: what the sweep trained on (meta.json's settings,
    else the first record's); a data set's path is shortened to its last part."""
    config = records[0].get("config") if records else None
    known = {**(config if isinstance(config, Mapping) else {}), **meta}
    data, model, width = known.get("data"), known.get("model"), known.get("width")
    parts = []
    if isinstance(data, str):
        kind, _, path = data.partition(":")
        name = path.rstrip("/").rsplit("/", 1)[-1]
        parts.append(f"{kind} data ({name})" if name else f"{kind} data")
    if isinstance(model, str):
        parts.append(f"{model} model" + (f" (width {width})" if isinstance(width, int) else ""))
    return ", ".join(parts) or "data and model unknown"


def counts_steps(records: Iterable[Mapping[str, Any]]) -> bool:
    """True when every run trained for a number of steps (``--steps``), not of epochs."""
    configs = [r.get("config") for r in records]
    return bool(configs) and all(
        isinstance(c, Mapping) and isinstance(c.get("steps"), int) for c in configs
    )


# -- statistics ------------------------------------------------------------------------------------


def summarize(records: Iterable[Mapping[str, Any]], norms: Sequence[str] = ()) -> list[SummaryRow]:
    """One row per (norm, batch size) that has a finished run: batch size ascending, then norm.

    Norms follow ``norms`` (e.g. ``meta["norms"]``) when given, then first appearance.
    """
    records = unique_records(records)
    order = norm_order(records, norms)
    groups: dict[tuple[str, int], list[float | None]] = {}
    for record in records:
        groups.setdefault(config_of(record), []).append(final_error(record))
    rows = []
    for (norm, batch_size), finals in sorted(
        groups.items(), key=lambda item: (item[0][1], order.index(item[0][0]))
    ):
        ok = np.array([e for e in finals if e is not None], dtype=np.float64)
        rows.append(
            SummaryRow(
                norm=norm,
                batch_size=batch_size,
                runs=len(finals),
                diverged=len(finals) - ok.size,
                mean=float(ok.mean()) if ok.size else None,
                std=float(ok.std(ddof=1)) if ok.size >= 2 else None,
                min=float(ok.min()) if ok.size else None,
                max=float(ok.max()) if ok.size else None,
            )
        )
    return rows


