"""examples/ddp_batch_size.py under torchrun (2 CPU processes, gloo): per-worker BN ends far
from one process on the whole batch, normlab.sync at rounding level."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^\s+(?P<label>per-worker BN|normlab\.sync)\s+batches\s+(?P<split>[\d +]+):"
    r"\s+max\|Δ param\| (?P<param>\S+)\s+\|Δ loss\| (?P<loss>\S+)$"
)


def test_example_shows_the_batch_size_pitfall_and_its_fix() -> None:
    env = dict(os.environ, PYTHONIOENCODING="utf-8", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "examples" / "ddp_batch_size.py"),
    ]  # fmt: skip  (--standalone: a free port, so concurrent runs do not collide)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [m.groupdict() for m in map(LINE.match, done.stdout.splitlines()) if m]
    assert [(r["label"], r["split"].strip()) for r in rows] == [
        ("per-worker BN", "16 + 16"),
        ("per-worker BN", "4 + 28"),
        ("normlab.sync", "4 + 28"),
    ], done.stdout
    for row in rows:
        param, loss = float(row["param"]), float(row["loss"])
        if row["label"] == "normlab.sync":  # float64: rounding level
            assert param < 1e-12 and loss < 1e-12, row
        else:
            assert param > 1e-4 and loss > 1e-4, row
