"""The vocabulary of normalization: which elements share a statistic, the statistic itself, and
the one place running statistics are written. No ``nn.Module`` lives here."""

from normlab.core.axes import Axes as Axes
from normlab.core.moments import Moments as Moments
from normlab.core.moments import accumulation_dtype as accumulation_dtype
from normlab.core.running import update_running_stats_ as update_running_stats_

__all__ = ["Axes", "Moments", "accumulation_dtype", "update_running_stats_"]
