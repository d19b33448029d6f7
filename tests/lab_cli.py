"""Helpers for the lab's tests that drive ``normlab sweep`` in a fresh interpreter (the entry
point's code path), and compare the records of two sweeps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from normlab.lab import store

TINY = ["--data", "digits", "--max-train", "96", "--seeds", "1", "--quiet"]
TIMING = ("time_s",)
"""The fields of a record that measure wall-clock time, and so differ between two runs of the
same configuration; every other field is a function of the configuration and the seed."""


def sweep_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m normlab sweep ARGS`` in a fresh interpreter (the entry point's code path)."""
    return subprocess.run(
        [sys.executable, "-m", "normlab", "sweep", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def sweep_until_finished_runs(args: list[str], out: Path, runs: int) -> subprocess.Popen[str]:
    """``normlab sweep ARGS`` in the background, returned once ``runs`` runs are recorded in
    ``out`` (the sweep must still be going: the test then interrupts it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "normlab", "sweep", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    results = out / store.RESULTS
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= runs:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be stopped; make it longer"
    return proc


def numbers(out: Path) -> dict[str, str]:
    """Each recorded run's JSON line without its timing fields, by run id (one line per id)."""
    lines = (out / store.RESULTS).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids), f"a run recorded twice: {sorted(ids)}"
    return {r["id"]: _without_timing(r) for r in records}


def _without_timing(record: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in record.items() if k not in TIMING}, sort_keys=True)
