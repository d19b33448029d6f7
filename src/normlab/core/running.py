"""The only code in normlab that writes running statistics.

Convention (PyTorch's): with momentum m, the weight of the *new* batch,

$$ \\hat μ ← (1 - m)\\,\\hat μ + m\\,μ_B, \\qquad
   \\hat σ^2 ← (1 - m)\\,\\hat σ^2 + m\\,σ^2_B \\frac{n}{n - 1}, $$

where σ²_B is the biased batch variance used to normalize and n the number of values per
statistic: layers normalize with the biased variance and store the unbiased one. With
``momentum=None`` the factor is 1/t at step t (``num_batches_tracked`` after the increment), an
equal-weight cumulative average of the batch statistics. TF/Keras' decay d is m = 1 − d.

A batch whose statistics are not finite leaves every buffer, ``num_batches_tracked`` included,
unchanged: one overflowing batch must not poison the statistics of a whole training run. The
update is branch-free (``torch.where``), so it neither synchronizes with the GPU nor breaks a
``torch.compile`` graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from normlab.core.moments import Moments


@torch.no_grad()
def update_running_stats_(
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor | None,
    batch: Moments,
    momentum: float | None,
) -> None:
    """Fold one batch's moments into the running buffers, in place."""
    finite = batch.is_finite()
    if num_batches_tracked is not None:
        num_batches_tracked.add_(finite.to(num_batches_tracked.dtype))
    if momentum is None:
        if num_batches_tracked is None:
            raise ValueError("momentum=None (cumulative average) needs num_batches_tracked.")
        factor: Tensor | float = 1.0 / num_batches_tracked.clamp(min=1).to(torch.float64)
    else:
        factor = momentum
    mean = batch.mean.to(running_mean.dtype)
    var = batch.unbiased_var.to(running_var.dtype)
    new_mean = running_mean * (1 - factor) + mean * factor
    new_var = running_var * (1 - factor) + var * factor
    running_mean.copy_(torch.where(finite, new_mean, running_mean))
    running_var.copy_(torch.where(finite, new_var, running_var))
