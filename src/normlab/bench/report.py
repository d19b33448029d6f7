"""``normlab bench``'s output: the machine it ran on, the markdown table, the JSON document,
and the atomic write that leaves either the whole file or none.

Markdown: one row per (layer, setting); times are medians over rounds in µs; each ratio cell
is ``forward / forward + backward`` (the layer's time over the baseline's, the median of the
per-round ratios; "–" where there is no such baseline, the JSON says why); saved / input is
the bytes autograd keeps for backward over the input's bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import normlab

SCHEMA = "normlab-bench/1"
RATIO_COLUMNS = {"torch": "÷ torch.nn", "group_norm": "÷ nn.GroupNorm",
                 "composition": "÷ eager composition", "floor": "÷ traffic floor",
                 "compiled": "÷ torch.compile"}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else `platform.processor`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average, None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine(device: str, clock: str) -> dict[str, Any]:
    """What the numbers depend on: versions, threads, CPU (and GPU), clock, date."""
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "normlab": normlab.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "clock": clock,
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def document(config: dict[str, Any], info: dict[str, Any], records: Sequence[dict[str, Any]],
             load_before: float | None, load_after: float | None) -> dict[str, Any]:
    """The JSON document: schema, configuration, machine, load averages, every record."""
    return {"schema": SCHEMA, "config": config,
            "machine": {**info, "load_average_before": load_before,
                        "load_average_after": load_after},
            "results": list(records)}


def _ratio_cell(record: dict[str, Any], role: str) -> str:
    ratios = record["ratios"]
    if role not in ratios["forward"]:
        return "–"
    return f"{ratios['forward'][role]:.2f} / {ratios['forward+backward'][role]:.2f}"


def table(records: Sequence[dict[str, Any]], compiled: bool = False) -> list[str]:
    """The markdown table of the records (see the module docstring)."""
    roles = [r for r in RATIO_COLUMNS if compiled or r != "compiled"]
    head = ["layer", "shape", "layout", "mode", "fwd µs", "fwd+bwd µs",
            *(RATIO_COLUMNS[r] for r in roles), "saved / input", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 5)
             + "---|"]
    for rec in records:
        cells = [rec["layer"], rec["label"], rec["layout"], rec["mode"]]
        if rec["status"] != "ok":
            cells += ["–"] * (len(head) - 5) + [f"skipped: {_one_line(rec['reason'])}"]
        else:
            med = rec["median_s"]
            saved = rec["saved_bytes"]
            cells += [f"{1e6 * med['layer/forward']:.1f}",
                      f"{1e6 * med['layer/forward+backward']:.1f}",
                      *(_ratio_cell(rec, r) for r in roles),
                      f"{saved['layer'] / saved['input']:.2f}",
                      f"spec {rec['spec']}" if rec["spec"] != rec["requested"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _one_line(text: str, most: int = 160) -> str:
    line = " ".join(str(text).split()).replace("|", "\\|")
    return line if len(line) <= most else line[: most - 1] + "…"


def markdown(doc: dict[str, Any]) -> str:
    """A header (machine, load, settings) and the table."""
    m, c = doc["machine"], doc["config"]

    def load(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    header = [
        f"- {m['date']}; torch {m['torch']}, normlab {m['normlab']}, Python {m['python']}",
        f"- {m['cpu']} ({m['cpu_count']} CPUs), {m['threads']} threads, clock: {m['clock']}"
        + (f", GPU {m['gpu']}" if "gpu" in m else "")
        + (f", allocator: {m['allocator']}" if "allocator" in m else ""),
        f"- 1-minute load average: {load(m['load_average_before'])} before, "
        f"{load(m['load_average_after'])} after",
        f"- {c['dtype']} on {c['device']}, {c['rounds']} alternating rounds after "
        f"{c['warmup']} warm-up calls; ratio cells: forward / forward + backward, the layer's "
        "time over the baseline's (median of per-round ratios)",
        "",
    ]
    return "\n".join(header + table(doc["results"], c.get("compile", False))) + "\n"


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and
    `os.replace`: a reader (or a run interrupted midway) sees the old file or the whole new
    one, never a part."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's file is private (0o600); open()'s is not
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(doc: dict[str, Any]) -> str:
    """Strict JSON (a non-finite number, which no ratio should be, becomes null)."""
    return json.dumps(_finite(doc), indent=1, allow_nan=False) + "\n"


__all__ = ["RATIO_COLUMNS", "SCHEMA", "cpu_model", "document", "load_average", "machine",
           "markdown", "table", "to_json", "write_atomic"]
