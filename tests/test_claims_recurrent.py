"""The rules of the recurrent claims (C06 LN-LSTM, C18 BN-LSTM) on crafted numbers: each rule
gives each of its verdicts; and the training loop they share is seeded and checks its input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab.claims import CLAIMS, CONTRADICTED, NOT_REPRODUCED, REPRODUCED
from normlab.claims.fit import error, fit, mean_loss


def _errors(lstm: list[float], ln: list[float], bn: list[float]) -> dict:
    return {"test_error": {"lstm": lstm, "ln_lstm": ln, "bn_lstm": bn}}


def test_c06_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C06"].recheck
    assert decide(_errors([40.0, 41.0, 39.0], [30.0, 31.0, 29.0], [30.5, 31.0, 30.0])) == REPRODUCED
    # LN-LSTM beats the LSTM but BN-LSTM clearly beats LN-LSTM: not "works well where BN is awkward"
    assert decide(_errors([40.0, 41.0, 39.0], [30.0, 31.0, 29.0], [20.0, 21.0, 19.0])) == (
        NOT_REPRODUCED
    )
    # the gap is inside the spread over seeds
    assert decide(_errors([40.0, 50.0, 30.0], [35.0, 36.0, 34.0], [35.0, 36.0, 34.0])) == (
        NOT_REPRODUCED
    )
    assert decide(_errors([30.0, 31.0, 29.0], [40.0, 41.0, 39.0], [35.0, 35.0, 35.0])) == (
        CONTRADICTED
    )
    # a diverged LN-LSTM run loses against a finite LSTM
    assert decide(_errors([30.0, 31.0, 29.0], [30.0, None, 29.0], [30.0, 31.0, 29.0])) == (
        CONTRADICTED
    )


def _early(lstm: list[float], bn: list[float]) -> dict:
    return {"early_loss": {"lstm": lstm, "ln_lstm": lstm, "bn_lstm": bn}}


def test_c18_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C18"].recheck
    assert decide(_early([2.3, 2.31, 2.29], [2.0, 2.05, 1.95])) == REPRODUCED
    assert decide(_early([2.0, 2.05, 1.95], [2.3, 2.31, 2.29])) == CONTRADICTED
    assert decide(_early([2.3, 2.0, 2.6], [2.2, 2.21, 2.19])) == NOT_REPRODUCED
    assert decide(_early([2.3, 2.3, 2.3], [2.0, None, 2.0])) == CONTRADICTED  # BN diverged


def _fitted(seed: int) -> tuple[list[float], nn.Module]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=g)
    y = (x[:, 0] > 0).long()
    return fit(model, x, y, steps=30, batch_size=8, lr=0.1, seed=seed), model


def test_fit_is_a_function_of_its_seed_and_learns() -> None:
    a, model = _fitted(1)
    b, _ = _fitted(1)
    c, _ = _fitted(2)
    assert a == b and a != c
    assert sum(a[-5:]) < sum(a[:5])
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=g)
    assert error(model, x, (x[:, 0] > 0).long()) < 20.0


def test_fit_names_a_bad_optimizer_and_mean_loss_sees_divergence() -> None:
    with pytest.raises(ValueError, match=r"optimizer='rmsprop'.*'adam' or 'sgd'"):
        fit(nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), steps=1,
            batch_size=2, lr=0.1, seed=0, optimizer="rmsprop")  # fmt: skip
    assert mean_loss([3.0, 2.0, 1.0, 0.5], 1, 3) == 1.5
    assert mean_loss([3.0, float("nan")], 0, 2) is None
    assert mean_loss([3.0], 0, 2) is None  # stopped before the window ended
