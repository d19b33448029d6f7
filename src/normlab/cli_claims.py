"""``normlab claims``: run the claims ledger, list its claims, or recheck a ledger's verdicts."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from normlab.cli_lab import _positive_int, add_executor_options, interrupted, make_executor
from normlab.errors import NormlabError

RUNS_ROOT = Path("runs")


def add_claims_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "claims",
        help="put the literature's claims to the test (the claims ledger)",
        description="Run each selected claim's experiment, judge it by its rule (fixed in code "
        "before the run) and write claims.md, claims.json and one figure per empirical claim "
        "into --out. With no IDs, all claims run.",
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="claims to run, e.g. C03 C25 (default all)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", dest="size", action="store_const", const="full",
                      help="the stronger, longer size (more seeds and steps); default: the "
                      "quick size, or on --resume the ledger's own")
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke",
                      help="seconds per claim: checks that the experiments run, decides nothing "
                      "worth reporting")
    p.set_defaults(size=None)
    p.add_argument("--out", default=None, help="ledger directory (default runs/claims-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue the ledger in --out (default: the latest under runs/), "
                   "keeping its finished claims")
    p.add_argument("--list", action="store_true", help="list the claims and their rules; run none")
    p.add_argument("--recheck", metavar="DIR", default=None,
                   help="recompute every verdict in DIR/claims.json by its rule; run none")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes, one claim each (default: the claims run one after "
                   "another in this process, so that the claims reading one sweep train it once)")
    add_executor_options(p)
    return p


def _latest(root: Path) -> Path:
    found = sorted(root.glob("claims-*"), key=lambda p: p.stat().st_mtime) if root.exists() else []
    if not found:
        raise NormlabError(
            f"--resume: no ledger under {root}/ to continue; pass --out DIR of the ledger"
        )
    return found[-1]


def _list() -> int:
    from normlab.claims import CLAIMS

    for claim in CLAIMS.values():
        print(f"{claim.id} [{claim.kind}] {claim.claim} ({claim.source})")
        print(f"    rule: {claim.rule}")
    return 0


def _recheck(run_dir: str) -> int:
    from normlab.claims.run import recheck

    rows = recheck(Path(run_dir))
    differ = [r for r in rows if r[1] != r[2]]
    for claim_id, stored, again in rows:
        mark = "ok" if stored == again else "DIFFERS"
        print(f"{claim_id}: stored {stored!r}, by its rule {again!r}: {mark}")
    print(f"{len(rows)} verdicts rechecked, {len(differ)} differ")
    return 1 if differ else 0


def claims(args: argparse.Namespace) -> int:
    """``normlab claims``."""
    if args.list:
        return _list()
    if args.recheck is not None:
        return _recheck(args.recheck)
    from normlab.claims.run import LEDGER_MD, run_ledger

    if args.resume:
        out = Path(args.out) if args.out is not None else _latest(RUNS_ROOT)
    elif args.out is not None:
        out = Path(args.out)
    else:
        out = RUNS_ROOT / f"claims-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    from normlab.claims.run import compute_claim

    in_process = args.executor == "local" and args.jobs is None
    executor = None if in_process else make_executor(args, out, compute=compute_claim)
    command = shlex.join(["normlab", *sys.argv[1:]]) if sys.argv else "normlab claims"
    try:
        records = run_ledger(args.ids, out, size=args.size, resume=args.resume, command=command,
                             executor=executor)
    except KeyboardInterrupt:
        return interrupted("claims", out, args, "finished claims")
    for r in records:
        print(f"{r['id']}: {r['verdict']}")
    print(f"ledger: {out / LEDGER_MD}")
    return 0
