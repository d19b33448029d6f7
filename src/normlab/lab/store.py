"""The run directory's files: ``meta.json`` and one JSON line per finished run in ``results.jsonl``.

A line is appended whole and flushed to disk before the run counts as done, so a sweep killed at
any moment leaves at worst one truncated last line; :func:`read_records` drops it (and
:func:`repair` cuts it off the file) so that ``--resume`` redoes exactly the unfinished runs.
Every other file is written atomically: a temporary file in the same directory, then
``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"
META = "meta.json"


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would not
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    write_atomic(Path(run_dir) / META, json.dumps(meta, indent=2) + "\n")


def read_meta(run_dir: Path) -> dict[str, Any]:
    """``meta.json`` of a run directory, or ``{}`` when it has none."""
    path = Path(run_dir) / META
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _complete_lines(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of ``raw`` and the byte length of its valid prefix."""
    records: list[dict[str, Any]] = []
    valid = 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a line cut off by a kill: the run did not finish
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not isinstance(record, dict) or "id" not in record:
            break
        records.append(record)
        valid += len(line)
    return records, valid


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every finished run's record, in the order they finished; ``[]`` when there are none."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return []
    return _complete_lines(path.read_bytes())[0]


def repair(run_dir: Path) -> list[dict[str, Any]]:
    """Cut a truncated or corrupt tail off ``results.jsonl`` and return the records kept."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, valid = _complete_lines(raw)
    if valid < len(raw):
        with open(path, "r+b") as f:
            f.truncate(valid)
    return records


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one finished run as one line, flushed and synced before returning."""
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with open(Path(run_dir) / RESULTS, "ab") as f:
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())
