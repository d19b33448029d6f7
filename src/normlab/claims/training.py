"""Training runs for the empirical claims, through the lab's runner (one protocol for all).

`final_errors` trains one model per (norm, batch size, seed) with `normlab.lab.runner.train_run`
(deterministic on CPU: a run is a pure function of its configuration) and returns the final test
errors in percent, ``None`` for a run that diverged. Results are cached in the process, so claims
that read the same sweep (C03, C25, C17) train it once per ledger.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from torch import nn

from normlab.lab.config import RunConfig
from normlab.lab.runner import train_model
from normlab.lab.work import cached_data

__all__ = ["Errors", "final_errors", "run_records", "trained"]

Errors = dict[str, dict[str, list[float | None]]]
"""``errors[norm][str(batch_size)]``: the final test error (%) of each seed; None: diverged."""


@functools.lru_cache(maxsize=64)
def trained(config: RunConfig) -> tuple[dict[str, Any], nn.Module]:
    """The lab's record of ``config``'s run and its trained model (cached per process)."""
    return train_model(config, cached_data(config.data, config.max_train))


def _record(config: RunConfig) -> dict[str, Any]:
    return trained(config)[0]


def run_records(
    data: str, model: str, norms: Sequence[str], batch_sizes: Sequence[int], seeds: int,
    **settings: Any,
) -> list[dict[str, Any]]:
    """The lab's record of every (norm, batch size, seed) run, norm-major."""
    return [
        _record(RunConfig(data, model, norm, bs, seed, **settings))
        for norm in norms for bs in batch_sizes for seed in range(seeds)
    ]


def final_errors(
    data: str, model: str, norms: Sequence[str], batch_sizes: Sequence[int], seeds: int,
    **settings: Any,
) -> Errors:
    """Final test error in percent per norm, batch size and seed (see the module docstring)."""
    errors: Errors = {norm: {str(bs): [] for bs in batch_sizes} for norm in norms}
    for record in run_records(data, model, norms, batch_sizes, seeds, **settings):
        config = record["config"]
        error = record["test_error"]
        errors[config["norm"]][str(config["batch_size"])].append(
            None if error is None else round(100.0 * error, 4)
        )
    return errors
