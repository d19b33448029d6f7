"""The claims ledger: every experiment runs at its smoke size, rules judge numbers (and can
fail), verdicts are recomputable from the JSON, the ledger resumes, and the command works
through its entry point."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from normlab.claims import CLAIMS, CONTRADICTED, NOT_REPRODUCED, REPRODUCED, VERDICTS
from normlab.claims import run as ledger_run
from normlab.claims.rules import clearly_below, exact_verdict, mean, spread
from normlab.errors import ConfigError

EXACT = [c for c in CLAIMS.values() if c.kind == "E"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "normlab", "claims", *args],
        capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
    )


@pytest.mark.parametrize("claim", list(CLAIMS.values()), ids=list(CLAIMS))
def test_every_claim_runs_at_smoke_size_and_its_rule_judges_the_numbers(claim) -> None:
    numbers = claim.measure("smoke")
    again = json.loads(json.dumps(numbers, allow_nan=False))  # what claims.json stores
    assert claim.recheck(again) in VERDICTS
    assert claim.rule and claim.source and claim.kind in {"E", "X", "E/X"}


@pytest.mark.parametrize("claim", EXACT, ids=[c.id for c in EXACT])
def test_exact_claims_hold_in_normlab(claim) -> None:
    """The exact properties are identities of normlab's layers: a unit test each."""
    assert claim.recheck(claim.measure("quick")) == REPRODUCED


def test_exact_rule_gives_each_verdict() -> None:
    assert exact_verdict({"a": 1e-12}, 1e-9, 1e-4, {"c": 1.0}, 1e-3) == REPRODUCED
    assert exact_verdict({"a": 1e-6}, 1e-9, 1e-4) == NOT_REPRODUCED
    assert exact_verdict({"a": 1e-2}, 1e-9, 1e-4) == CONTRADICTED
    assert exact_verdict({"a": math.nan}, 1e-9, 1e-4) == CONTRADICTED
    # a control that does not move: the check could not have failed, so it proves nothing
    assert exact_verdict({"a": 0.0}, 1e-9, 1e-4, {"c": 0.0}, 1e-3) == NOT_REPRODUCED


def test_clearly_below_needs_a_gap_larger_than_the_spread() -> None:
    assert clearly_below([1.0, 1.1, 0.9], [5.0, 5.2, 4.8])
    assert not clearly_below([1.0, 9.0], [5.0, 5.5])  # the gap is inside the spread
    assert not clearly_below([1.0], [1.5], margin=1.0)
    assert clearly_below([1.0, 1.0], [2.0, None])  # a diverged run loses
    assert not clearly_below([None], [2.0])
    assert mean([1.0, None]) == math.inf and spread([2.0, 4.0]) == pytest.approx(math.sqrt(2))


def test_ledger_writes_its_files_and_every_verdict_rechecks(tmp_path: Path) -> None:
    out = tmp_path / "ledger"
    records = ledger_run.run_ledger(["C07", "c4"], out, size="smoke", report=lambda _: None)
    assert [r["id"] for r in records] == ["C04", "C07"]
    stored = json.loads((out / "claims.json").read_text())
    assert [r["id"] for r in stored["claims"]] == ["C04", "C07"]
    assert stored["meta"]["size"] == "smoke"
    table = (out / "claims.md").read_text()
    assert "| C04 |" in table and "| C07 |" in table
    assert all(stored_v == again for _, stored_v, again in ledger_run.recheck(out))


def test_recheck_finds_a_verdict_its_numbers_do_not_support(tmp_path: Path) -> None:
    out = tmp_path / "ledger"
    ledger_run.run_ledger(["C07"], out, size="smoke", report=lambda _: None)
    path = out / "claims.json"
    ledger = json.loads(path.read_text())
    ledger["claims"][0]["numbers"]["instance_norm_per_image_contrast_and_brightness"] = 0.5
    path.write_text(json.dumps(ledger))
    proc = run_cli("--recheck", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DIFFERS" in proc.stdout and "1 differ" in proc.stdout


def test_an_interrupted_ledger_resumes_with_the_claims_it_lacks(tmp_path, monkeypatch) -> None:
    out = tmp_path / "ledger"
    calls: list[str] = []
    real = {cid: CLAIMS[cid].measure for cid in ("C04", "C07")}

    def counting(cid: str, interrupt: bool):
        def measure(size):
            calls.append(cid)
            if interrupt:
                raise KeyboardInterrupt
            return real[cid](size)
        return measure

    from dataclasses import replace

    monkeypatch.setitem(CLAIMS, "C07", replace(CLAIMS["C07"], measure=counting("C07", True)))
    with pytest.raises(KeyboardInterrupt):
        ledger_run.run_ledger(["C04", "C07"], out, size="smoke", report=lambda _: None)
    kept = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert kept == ["C04"]
    monkeypatch.setitem(CLAIMS, "C07", replace(CLAIMS["C07"], measure=counting("C07", False)))
    monkeypatch.setitem(CLAIMS, "C04", replace(CLAIMS["C04"], measure=counting("C04", False)))
    records = ledger_run.run_ledger([], out, size="smoke", resume=True, report=lambda _: None)
    assert calls == ["C07", "C07"]  # C04 was not run again
    assert [r["id"] for r in records] == ["C04", "C07"]


def test_resume_refuses_another_size_and_a_directory_without_a_ledger(tmp_path: Path) -> None:
    out = tmp_path / "ledger"
    ledger_run.run_ledger(["C04"], out, size="smoke", report=lambda _: None)
    with pytest.raises(ConfigError, match="size 'smoke'"):
        ledger_run.run_ledger([], out, size="quick", resume=True, report=lambda _: None)
    with pytest.raises(ConfigError, match="no claims ledger"):
        ledger_run.run_ledger([], tmp_path, size="smoke", resume=True, report=lambda _: None)
    with pytest.raises(ConfigError, match="not empty"):
        ledger_run.run_ledger(["C04"], out, size="smoke", report=lambda _: None)


def test_cli_runs_lists_and_names_unknown_claims(tmp_path: Path) -> None:
    proc = run_cli("C4", "--smoke", "--out", str(tmp_path / "l"))
    assert proc.returncode == 0, proc.stderr
    assert "C04: reproduced" in proc.stdout and (tmp_path / "l" / "claims.md").exists()
    listed = run_cli("--list")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines() if line[:1] == "C"] == list(
        CLAIMS
    )
    wrong = run_cli("C99", "--smoke", "--out", str(tmp_path / "m"))
    assert wrong.returncode == 2
    assert "claim 'C99' is not in the ledger" in wrong.stderr
    assert not (tmp_path / "m").exists()
    typo = run_cli("--ful")
    assert typo.returncode == 2 and "--ful" in typo.stderr
    none = run_cli("--resume", cwd=tmp_path)
    assert none.returncode == 2 and "no ledger under runs/" in none.stderr


def _without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def test_claims_in_worker_processes_equal_the_claims_run_here(tmp_path: Path) -> None:
    from normlab.claims.run import compute_claim
    from normlab.lab.executors.local import LocalExecutor

    ids = ["C04", "C07", "C15"]
    here = ledger_run.run_ledger(ids, tmp_path / "a", size="smoke", report=lambda _: None)
    workers = LocalExecutor(2, compute=compute_claim)
    there = ledger_run.run_ledger(ids, tmp_path / "b", size="smoke", report=lambda _: None,
                                  executor=workers)
    assert _without_time(there) == _without_time(here)
    assert (tmp_path / "b" / "claims.md").read_text().count("| C") == 3


def test_executor_options_of_another_executor_are_refused(tmp_path: Path) -> None:
    proc = run_cli("C04", "--smoke", "--jobs", "2", "--executor", "ray",
                   "--out", str(tmp_path / "l"))
    assert proc.returncode == 2
    assert "--jobs is for --executor local, not --executor ray" in proc.stderr
