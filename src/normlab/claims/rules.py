"""The building blocks of the decision rules, each a pure function of measured numbers.

Empirical rules compare means over seeds and demand that a difference is larger than the spread
(`clearly_below`); exact rules compare a deviation with a tolerance (`exact_verdict`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED

__all__ = ["clearly_below", "exact_verdict", "mean", "mean_std", "spread"]


def mean(values: Sequence[float]) -> float:
    """The mean over seeds; ``inf`` when any value is missing (a diverged run) or not finite."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return math.inf
    return statistics.fmean(values)


def spread(values: Sequence[float]) -> float:
    """The sample standard deviation over seeds (0 for one seed; ``inf`` for a missing value)."""
    if any(v is None or not math.isfinite(v) for v in values):
        return math.inf
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: Sequence[float]) -> str:
    """``"12.3 ± 0.4"`` (how the ledger shows a quantity measured over seeds)."""
    m, s = mean(values), spread(values)
    return "diverged" if not math.isfinite(m) else f"{m:.4g} ± {s:.2g}"


def clearly_below(a: Sequence[float], b: Sequence[float], margin: float = 0.0) -> bool:
    """mean(a) + margin < mean(b), with the gap larger than either spread over seeds.

    A diverged or missing value makes its side's mean infinite: a finite ``a`` is clearly below
    an infinite ``b``, and an infinite ``a`` is never below anything.
    """
    ma, mb = mean(a), mean(b)
    if not math.isfinite(ma):
        return False
    if not math.isfinite(mb):
        return True
    gap = mb - ma
    return gap > margin and gap > max(spread(a), spread(b))


def exact_verdict(
    holds: Mapping[str, float], tolerance: float, gross: float,
    controls: Mapping[str, float] | None = None, control_min: float = 0.0,
) -> str:
    """The verdict of an exact property.

    ``holds`` maps each checked identity to its measured deviation: all within ``tolerance`` →
    reproduced; any beyond ``gross`` → contradicted; otherwise not reproduced. ``controls`` map
    each control (a case where the property must *not* hold, showing the check can fail) to its
    deviation: a control at or below ``control_min`` means the experiment cannot tell, so the
    verdict is at best not reproduced.
    """
    worst = max(holds.values())
    if not math.isfinite(worst) or worst > gross:
        return CONTRADICTED
    if worst > tolerance:
        return NOT_REPRODUCED
    if controls and min(controls.values()) <= control_min:
        return NOT_REPRODUCED
    return REPRODUCED
