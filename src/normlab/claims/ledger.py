"""A claim of the literature, the experiment that tests it, and the rule that judges it.

A `Claim` holds everything in one place: the claim's words and source, its kind (``E`` an exact
property checked to floating-point precision, ``X`` an empirical claim measured over seeds), the
decision rule in words (printed with the result) and in code (`Claim.decide`, a pure function of
the measured numbers), and the experiment (`Claim.measure`, a pure function of the size). The
rule is fixed in code before the experiment runs; `recheck` recomputes a stored verdict from the
stored numbers, so every verdict in a ledger can be verified by its printed rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "CONTRADICTED", "NOT_REPRODUCED", "NOT_RUN", "REPRODUCED", "SIZES", "VERDICTS", "Claim",
    "Numbers", "Size",
]  # fmt: skip

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced at this scale"
CONTRADICTED = "contradicted"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, CONTRADICTED)

Size = Literal["smoke", "quick", "full"]
"""``smoke``: seconds, for the tests; ``quick``: the default ledger (minutes on 2 cores);
``full``: a stronger answer (more seeds, longer runs)."""
SIZES: tuple[Size, ...] = ("smoke", "quick", "full")

Numbers = dict[str, Any]
"""What an experiment measured: JSON-serializable (numbers, lists, nested dicts)."""


@dataclass(frozen=True)
class Claim:
    """One claim of the normalization literature and its test.

    ``measure(size)`` runs the experiment and returns its numbers; ``decide(numbers)`` applies
    the rule and returns one of `VERDICTS`; ``rule`` says the same in words. ``figure`` (empirical
    claims) draws the numbers as a matplotlib figure; ``summarize`` says the key numbers in one
    line for the table (default: the first few); ``needs`` names what a claim is waiting for
    when it cannot run yet (the ledger then reports ``not run: needs ...``, no verdict).
    """

    id: str
    claim: str
    source: str
    kind: str
    rule: str
    measure: Callable[[Size], Numbers]
    decide: Callable[[Mapping[str, Any]], str]
    figure: Callable[[Mapping[str, Any]], Any] | None = None
    summarize: Callable[[Mapping[str, Any]], str] | None = None
    needs: str | None = None

    def recheck(self, numbers: Mapping[str, Any]) -> str:
        """The verdict of ``numbers`` by this claim's rule (one of `VERDICTS`)."""
        verdict = self.decide(numbers)
        if verdict not in VERDICTS:
            raise ValueError(f"{self.id}: its rule returned {verdict!r}, not one of {VERDICTS}")
        return verdict
