"""The recurrent claims: Layer Norm in LSTMs (C06) and recurrent Batch Norm (C18).

One experiment serves both: MNIST-1D read as a sequence (40 steps of one feature, the lab's
``mnist1d`` data transposed to (N, 40, 1)) by a one-layer `normlab.NormLSTM` with ``norm``
None (plain LSTM), ``"ln"`` (LN-LSTM, Ba et al. 2016) or ``"bn"`` (BN-LSTM with per-time-step
statistics, Cooijmans et al. 2016), whose last hidden state feeds a linear classifier. Every
variant trains with the same seeds, steps, batches and Adam learning rate (`normlab.claims.fit`).
C06 reads the final test errors; C18 reads the training curves (the mean training loss over the
second eighth of the steps, i.e. just before the first quarter ends).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

import normlab
from normlab.claims.fit import deterministic, error, fit, mean_loss
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.rules import clearly_below, mean_std
from normlab.claims.training import cached_data

__all__ = ["C06", "C18"]

VARIANTS = ("lstm", "ln_lstm", "bn_lstm")
_NORM = {"lstm": None, "ln_lstm": "ln", "bn_lstm": "bn"}
# size: (seeds, steps, hidden units, test examples)
_SIZES: dict[str, tuple[int, int, int, int]] = {
    "smoke": (2, 8, 8, 200),
    "quick": (3, 160, 32, 1000),
    "full": (5, 1500, 64, 1000),
}
BATCH = 64
LR = 0.01
CURVE_EVERY = 4  # steps per point of the stored training curve


class SequenceClassifier(nn.Module):
    """NormLSTM over (N, T, 1), then a linear map of the last hidden state to the logits."""

    def __init__(self, hidden: int, norm: str | None, length: int, classes: int) -> None:
        super().__init__()
        self.lstm = normlab.NormLSTM(1, hidden, norm=norm, batch_first=True, max_length=length)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _as_sequence(x: Tensor) -> Tensor:
    """(N, 1, L) → (N, L, 1): one feature per time step."""
    return x.transpose(1, 2).contiguous()


@functools.lru_cache(maxsize=3)
def measure_sequences(size: Size) -> Numbers:
    """Final test error (%) and the training-loss curve of every (variant, seed)."""
    seeds, steps, hidden, n_test = _SIZES[size]
    data = cached_data("mnist1d", None)
    x, y = _as_sequence(data.x_train), data.y_train
    x_test, y_test = _as_sequence(data.x_test[:n_test]), data.y_test[:n_test]
    length = x.shape[1]
    numbers: dict[str, Any] = {
        "steps": steps, "hidden": hidden, "batch_size": BATCH, "lr": LR, "seeds": seeds,
        "curve_every": CURVE_EVERY, "test_error": {}, "early_loss": {}, "curve": {},
    }  # fmt: skip
    early = (steps // 8, steps // 4)
    numbers["early_window"] = list(early)
    for variant in VARIANTS:
        errs, earl, curves = [], [], []
        for seed in range(seeds):
            with deterministic(seed):
                model = SequenceClassifier(hidden, _NORM[variant], length, data.num_classes)
                losses = fit(model, x, y, steps=steps, batch_size=BATCH, lr=LR, seed=seed)
                diverged = len(losses) < steps or losses[-1] != losses[-1]
                errs.append(None if diverged else error(model, x_test, y_test))
            earl.append(mean_loss(losses, *early))
            curves.append([
                round(sum(losses[i : i + CURVE_EVERY]) / len(losses[i : i + CURVE_EVERY]), 5)
                for i in range(0, len(losses), CURVE_EVERY)
            ])
        numbers["test_error"][variant] = errs
        numbers["early_loss"][variant] = earl
        numbers["curve"][variant] = curves
    return numbers


def _figure(n: Mapping[str, Any], title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    ax_curve, ax_err = fig.subplots(1, 2)
    for variant in VARIANTS:
        curves = [c for c in n["curve"][variant] if c]
        length = min(len(c) for c in curves)
        avg = [sum(c[i] for c in curves) / len(curves) for i in range(length)]
        ax_curve.plot([n["curve_every"] * (i + 1) for i in range(length)], avg, label=variant)
    lo, hi = n["early_window"]
    ax_curve.axvspan(lo, hi, color="0.9")
    ax_curve.set(xlabel="step", ylabel="training loss (mean over seeds)", title=title)
    ax_curve.legend()
    for i, variant in enumerate(VARIANTS):
        vals = [v for v in n["test_error"][variant] if v is not None]
        ax_err.scatter([i] * len(vals), vals)
    ax_err.set_xticks(range(len(VARIANTS)), VARIANTS)
    ax_err.set(ylabel="final test error (%)", title="per seed")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- C06: LN in recurrent networks


def decide_c06(n: Mapping[str, Any]) -> str:
    e = n["test_error"]
    if clearly_below(e["lstm"], e["ln_lstm"]):
        return CONTRADICTED
    if clearly_below(e["ln_lstm"], e["lstm"]) and not clearly_below(e["bn_lstm"], e["ln_lstm"]):
        return REPRODUCED
    return NOT_REPRODUCED


C06 = Claim(
    id="C06",
    claim="Layer Norm works well in recurrent networks where BN is awkward",
    source="Ba et al. 2016",
    kind="X",
    rule="MNIST-1D as a sequence (40 steps x 1 feature), one-layer LSTM, LN-LSTM and BN-LSTM "
    "(per-step statistics) + linear head, same seeds / steps / batches / Adam lr. Final test "
    "error per seed. Reproduced if LN-LSTM's mean error is clearly below the plain LSTM's (gap "
    "larger than both spreads) and BN-LSTM's is not clearly below LN-LSTM's; contradicted if "
    "the plain LSTM's is clearly below LN-LSTM's; otherwise not reproduced.",
    measure=measure_sequences,
    decide=decide_c06,
    figure=lambda n: _figure(n, "C06: LSTM / LN-LSTM / BN-LSTM"),
    summarize=lambda n: "test error %: " + "; ".join(
        f"{v} {mean_std(n['test_error'][v])}" for v in VARIANTS
    ) + f" ({n['seeds']} seeds, {n['steps']} steps)",
)


# ------------------------------------------------------- C18: recurrent BN converges faster


def decide_c18(n: Mapping[str, Any]) -> str:
    early = n["early_loss"]
    if clearly_below(early["bn_lstm"], early["lstm"]):
        return REPRODUCED
    if clearly_below(early["lstm"], early["bn_lstm"]):
        return CONTRADICTED
    return NOT_REPRODUCED


C18 = Claim(
    id="C18",
    claim="Recurrent BN (per-time-step statistics) converges faster than a plain LSTM",
    source="Cooijmans et al. 2016",
    kind="X",
    rule="The C06 runs (MNIST-1D as a sequence; LSTM vs BN-LSTM with per-step statistics, "
    "gamma_init 0.1; same seeds / steps / batches / Adam lr). Early training loss = mean "
    "minibatch loss over steps (T/8, T/4] of T. Reproduced if BN-LSTM's early loss is clearly "
    "below the plain LSTM's (gap larger than both spreads over seeds); contradicted if the "
    "plain LSTM's is clearly below BN-LSTM's; otherwise not reproduced.",
    measure=measure_sequences,
    decide=decide_c18,
    figure=lambda n: _figure(n, "C18: training curves"),
    summarize=lambda n: "early training loss: " + "; ".join(
        f"{v} {mean_std(n['early_loss'][v])}" for v in ("lstm", "bn_lstm")
    ) + f" (steps {n['early_window'][0]}-{n['early_window'][1]} of {n['steps']})",
)
