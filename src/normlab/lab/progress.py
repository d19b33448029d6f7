"""The sweep's progress bar: runs done/total, the current run, its loss and the time left.

The bar counts training steps, not runs, so that its time-left estimate holds when runs differ
in length (at equal epochs a batch of 2 takes 16x the steps of a batch of 32).

On a terminal the bar redraws itself in place. Anywhere else (stderr redirected to a file, a
pipe, a CI log) a redrawn bar would pile up as one huge line of carriage returns, so the bar is
written as a plain line every `LOG_INTERVAL_S` seconds instead (and once at the start and end).
"""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

from normlab.lab.runner import Progress

LOG_INTERVAL_S = 5.0  # seconds between progress lines when stderr is not a terminal


class _Lines:
    """A text stream for tqdm that turns each redraw (``"\\r" + status``) into a line of its own."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            if line.strip():
                self.stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a stream without isatty, or a closed one
        return False


class SweepProgress:
    """A tqdm bar over every step of the sweep, fed by the runs' `Progress` reports."""

    def __init__(self, total_runs: int, total_steps: int, *, done_runs: int, quiet: bool) -> None:
        self.total_runs = total_runs
        self.done_runs = done_runs
        self._seen: dict[str, int] = {}
        self._finished: set[str] = set()
        terminal = _is_terminal(sys.stderr)
        self._bar = tqdm(
            total=total_steps, unit="step", disable=quiet, desc=self._description(),
            file=sys.stderr if terminal else _Lines(sys.stderr), dynamic_ncols=terminal,
            mininterval=0.1 if terminal else LOG_INTERVAL_S,
            maxinterval=10.0 if terminal else 1e9,  # never a refresh from tqdm's monitor thread
            bar_format="{desc} {percentage:3.0f}%|{bar:20}| {elapsed}<{remaining} {postfix}",
        )

    def _description(self) -> str:
        return f"runs {self.done_runs}/{self.total_runs}"

    def _describe(self) -> None:
        self._bar.set_description_str(self._description(), refresh=False)

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
