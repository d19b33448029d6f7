"""Batch normalization with per-time-step statistics (Cooijmans et al. 2017, §15 of METHODS.md).

One statistic per (time step t, unit c), computed over the sequences of the batch that are still
running at step t; γ and β are shared over time. In training each step normalizes with its own
batch moments (biased variance) and moves running slot t toward them (unbiased variance, the
PyTorch EMA convention of `normlab.core.running`). ``max_length`` slots exist (the paper's
T_max); ``num_steps_tracked`` counts the slots that training has reached. In eval, step t uses
slot ``min(t, num_steps_tracked - 1)`` — the paper's reuse rule: past the longest training
sequence the last step's statistics stand in (the hidden-state distribution has converged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.core import running


@dataclass
class StepMoments:
    """Batch moments of consecutive steps ``first, first + 1, ...``, gathered during a forward
    pass and written into the running slots once, after it (`StepBatchNorm.commit_`)."""

    first: int
    means: list[Tensor] = field(default_factory=list)
    # 1/sqrt(σ² + ε), σ² the biased variance used to normalize (what the native kernel
    # returns; turned into σ² once per pass, in commit_)
    invstds: list[Tensor] = field(default_factory=list)


class StepBatchNorm(nn.Module):
    r"""BN over the batch at each time step, with one running slot per step.

    $$ \mathrm{BN}(x_t) = γ ⊙ \frac{x_t - μ_t}{\sqrt{σ_t^2 + ε}} + β, $$

    μ_t, σ²_t over the running sequences of step t, one per unit (training); the running slot
    ``min(t, num_steps_tracked - 1)`` in eval. ``bias=False`` drops β (BN-LSTM's input and
    recurrent terms, whose β is redundant with the LSTM bias).
    """

    def __init__(
        self,
        num_features: int,
        max_length: int,
        *,
        bias: bool,
        gamma_init: float,
        eps: float,
        momentum: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.max_length = num_features, max_length
        self.gamma_init, self.eps, self.momentum = gamma_init, eps, momentum
        self.weight = nn.Parameter(torch.empty(num_features, **factory))
        self.bias = nn.Parameter(torch.empty(num_features, **factory)) if bias else None
        self.register_buffer("running_mean", torch.empty(max_length, num_features, **factory))
        self.register_buffer("running_var", torch.empty(max_length, num_features, **factory))
        self.register_buffer("num_steps_tracked", torch.zeros((), dtype=torch.long, device=device))
        self.reset_parameters()

    running_mean: Tensor
    running_var: Tensor
    num_steps_tracked: Tensor

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_steps_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.constant_(self.weight, self.gamma_init)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, max_length={self.max_length}, eps={self.eps}, "
            f"momentum={self.momentum}, bias={self.bias is not None}"
        )

    def slot(self, t: int) -> int:
        """The running slot that step t reads in eval (the reuse rule)."""
        return min(t, max(int(self.num_steps_tracked) - 1, 0))

    def _slots(self, first: int, steps: int) -> Tensor:
        """The slots of steps ``first, …, first + steps - 1`` as an index tensor; computed on
        the device under graph capture, where the counter's value is not known."""
        device = self.running_mean.device
        if not torch.compiler.is_compiling():
            return torch.tensor([self.slot(t) for t in range(first, first + steps)],
                                device=device)
        last = self.num_steps_tracked.sub(1).clamp(min=0)
        return torch.arange(first, first + steps, device=device).clamp(max=last)

    # -- a whole sequence at once: the input term W_x x_t, known before the recurrence --------

    def sequence(
        self, x: Tensor, mask: Tensor | None, first: int, moments: StepMoments | None
    ) -> Tensor:
        """Normalize ``x`` of shape (T, N, C) holding steps ``first, ..., first + T - 1``.

        ``mask`` (T, N, 1), 1 where the sequence is still running, or None when all are; the
        statistics use the running entries only. In training the moments are appended to
        ``moments``; in eval (``moments=None``) the running slots are read.
        """
        if moments is None:
            index = self._slots(first, x.shape[0])
            mean = self.running_mean.index_select(0, index).unsqueeze(1)
            var = self.running_var.index_select(0, index).unsqueeze(1)
        elif mask is None:
            # every (t, c) is a channel of the native kernel over (N, T·C): a reduction over
            # the middle dimension of (T, N, C) is several times slower on the CPU
            steps, n, c = x.shape
            xn = x.transpose(0, 1).reshape(n, steps * c)
            bias = None if self.bias is None else self.bias.repeat(steps)
            y, mean, invstd = torch.native_batch_norm(
                xn, self.weight.repeat(steps), bias, None, None, True, 0.0, self.eps
            )
            if moments is not None:
                moments.means.extend(mean.view(steps, c).unbind(0))
                moments.invstds.extend(invstd.view(steps, c).unbind(0))
            return y.view(n, steps, c).transpose(0, 1)
        else:
            count = mask.sum(1, keepdim=True)
            mean = (x * mask).sum(1, keepdim=True) / count
            dev = (x - mean) * mask
            var = (dev * dev).sum(1, keepdim=True) / count
        invstd = torch.rsqrt(var + self.eps)
        if moments is not None:
            moments.means.extend(mean.detach().squeeze(1).unbind(0))
            moments.invstds.extend(invstd.detach().squeeze(1).unbind(0))
        y = (x - mean) * invstd * self.weight
        return y if self.bias is None else y + self.bias

    # -- one step: the recurrent term W_h h_{t-1} and the cell c_t -------------------------------

    def step(self, x: Tensor, t: int, moments: StepMoments | None) -> Tensor:
        """Normalize ``x`` of shape (b, C), the running sequences of step t."""
        if moments is None:
            if torch.compiler.is_compiling():
                index = self._slots(t, 1)
                mean, var = (b.index_select(0, index)[0] for b in (self.running_mean,
                                                                   self.running_var))
            else:
                s = self.slot(t)
                mean, var = self.running_mean[s], self.running_var[s]
            return F.batch_norm(
                x,
                mean,
                var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        y, mean, invstd = torch.native_batch_norm(
            x, self.weight, self.bias, None, None, True, 0.0, self.eps
        )
        moments.means.append(mean)  # the kernel's saved statistics: no autograd history
        moments.invstds.append(invstd)
        return y

    def commit_(self, moments: StepMoments, counts: list[int]) -> None:
        """Move running slots ``first, first + 1, ...`` toward the gathered batch moments.

        ``counts[k]``: the sequences running at step ``first + k`` (non-increasing). A step
        with fewer than 2 of them has no unbiased variance and is not tracked; nor are steps
        from ``max_length`` on. ``num_steps_tracked`` grows to the last tracked step + 1 when
        the update is accepted (every moment finite, `normlab.core.running`'s guard).
        """
        first = moments.first
        k = sum(1 for n in counts if n >= 2)
        k = min(k, self.max_length - first)
        if k <= 0:
            return
        with torch.no_grad():
            n = torch.tensor(
                counts[:k], dtype=self.running_var.dtype, device=self.running_var.device
            )
            means = torch.stack(moments.means[:k])
            variances = torch.stack(moments.invstds[:k]).pow(-2).sub_(self.eps)
            variances *= (n / (n - 1)).unsqueeze(1)
            tracked = self.num_steps_tracked
            if torch.compiler.is_compiling():  # branch-free: the guard is a torch.where
                finite = running.all_finite(means, variances)
                tracked.copy_(torch.where(finite, tracked.clamp(min=first + k), tracked))
            elif not bool(torch.isfinite(means).all() & torch.isfinite(variances).all()):
                return
            running.update_running_ema_(
                [self.running_mean[first : first + k], self.running_var[first : first + k]],
                [means, variances],
                None,
                self.momentum,
            )
            if not torch.compiler.is_compiling():
                tracked.clamp_(min=first + k)
