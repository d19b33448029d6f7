"""The sweep's progress bar: runs done/total, the current run, its loss and the time left.

The bar counts training steps, not runs, so that its time-left estimate holds when runs differ
in length (at equal epochs a batch of 2 takes 16x the steps of a batch of 32).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from normlab.lab.runner import Progress


class SweepProgress:
    """A tqdm bar over every step of the sweep, fed by the runs' `Progress` reports."""

    def __init__(self, total_runs: int, total_steps: int, *, done_runs: int, quiet: bool) -> None:
        self.total_runs = total_runs
        self.done_runs = done_runs
        self._seen: dict[str, int] = {}
        self._finished: set[str] = set()
        self._bar = tqdm(
            total=total_steps, unit="step", file=sys.stderr, disable=quiet, dynamic_ncols=True,
            bar_format="{desc} {percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}",
        )
        self._describe()

    def _describe(self) -> None:
        self._bar.set_description_str(f"runs {self.done_runs}/{self.total_runs}", refresh=False)

    def report(self, progress: Progress) -> None:
        if progress.run_id in self._finished:  # a late message from a run already counted
            return
        before = self._seen.get(progress.run_id, 0)
        self._seen[progress.run_id] = progress.steps_done
        self._bar.set_postfix_str(
            f"{progress.run_id.replace('|', ' ')} loss {progress.train_loss:.3f}", refresh=False
        )
        self._bar.update(progress.steps_done - before)

    def finished(self, record: dict[str, Any], steps_total: int) -> None:
        """A run ended (possibly early, when it diverged): count all its steps as done."""
        self.done_runs += 1
        self._finished.add(record["id"])
        before = self._seen.pop(record["id"], 0)
        self._describe()
        if record["status"] != "ok":
            self._bar.set_postfix_str(f"{record['id'].replace('|', ' ')} diverged", refresh=False)
        self._bar.update(steps_total - before)

    def close(self) -> None:
        self._bar.close()
