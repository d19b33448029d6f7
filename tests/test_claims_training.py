"""The rules of the training claims (C02, C10, C16, C19, C20, C21, C23) judge crafted numbers:
each can give reproduced and can fail; the exact parts of C16 and C20 are unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from normlab.claims import CLAIMS, CONTRADICTED, NOT_REPRODUCED, REPRODUCED
from normlab.claims.propagation import selu_moments
from normlab.claims.weight_decay import TOLERANCE, _exact_checks


def verdict(claim_id: str, numbers: dict[str, Any]) -> str:
    return CLAIMS[claim_id].recheck(numbers)


# ---------------------------------------------------------------- C02


def c02(plain: list[float], bn: list[float], plain_grad: float, bn_grad: float) -> dict:
    def side(losses: list[float], first: float) -> dict:
        return {"loss": [[2.3, v] for v in losses],
                "grad_norm_per_layer": [[first, 1.0, 1.0] for _ in losses]}
    return {"depth": 2, "plain": side(plain, plain_grad), "batch_norm": side(bn, bn_grad)}


def test_c02_rule() -> None:
    stalls, trains = [2.30, 2.31, 2.29], [0.3, 0.35, 0.25]
    assert verdict("C02", c02(stalls, trains, 1e-10, 1.0)) == REPRODUCED
    # no vanishing gradient in the plain net: the mechanism is not shown
    assert verdict("C02", c02(stalls, trains, 1.0, 1.0)) == NOT_REPRODUCED
    # the plain net trains too
    assert verdict("C02", c02([0.5, 0.6, 0.55], trains, 1e-10, 1.0)) == NOT_REPRODUCED
    # BN stalls as well, or does worse than plain
    assert verdict("C02", c02(stalls, [2.2, 2.25, 2.3], 1e-10, 1.0)) == CONTRADICTED
    assert verdict("C02", c02([0.2, 0.21, 0.2], [0.9, 0.95, 0.9], 1e-10, 1.0)) == CONTRADICTED


# ---------------------------------------------------------------- C16


def c16(selu_mean: float, selu_var: float, fixed_point: float = 1e-16) -> dict:
    def runs(mu: float, var: float) -> list[dict]:
        return [{"mean": [0.0, mu], "var": [1.0, var]} for _ in range(3)]
    return {
        "exact": {"selu_mean_minus_0": fixed_point, "selu_var_minus_1": 1e-16,
                  "torch_selu_minus_formula": 0.0, "control_relu_mean_minus_0": 0.4},
        "selu": runs(selu_mean, selu_var), "relu_lecun": runs(0.0, 1e-9),
        "relu_he": runs(0.5, 1.0),
    }


def test_c16_rule() -> None:
    assert verdict("C16", c16(0.02, 1.1)) == REPRODUCED
    assert verdict("C16", c16(0.15, 1.1)) == NOT_REPRODUCED  # out of Theorem 1's band
    assert verdict("C16", c16(0.02, 3.0)) == CONTRADICTED  # the variance explodes
    assert verdict("C16", c16(0.02, 1.1, fixed_point=1e-2)) == CONTRADICTED
    flat = c16(0.02, 1.1)
    flat["relu_he"] = flat["selu"]  # a control that stays in the band: the check proves nothing
    assert verdict("C16", flat) == NOT_REPRODUCED


def test_selu_fixed_point_is_mean_0_variance_1() -> None:
    moments = selu_moments()
    assert abs(moments["mean"]) < 1e-12 and abs(moments["var"] - 1) < 1e-12


# ---------------------------------------------------------------- C20


def c20(decay_norm: float, plain_norm: float, trajectory: float = 1e-12) -> dict:
    return {
        "lr": 0.1,
        "exact": {"output_change_w_times_4": 1e-13, "w1_dot_grad": 1e-13,
                  "control_output_layer_times_4": 2.0},
        "runs": [
            {"matched_deviation": trajectory, "no_decay_deviation": 0.05,
             "norm": {"decay": [[decay_norm + d, decay_norm]],
                      "no_decay": [[plain_norm + d, plain_norm]]}}
            for d in (0.0, 0.01, 0.02)
        ],
    }


def test_c20_rule() -> None:
    assert verdict("C20", c20(3.0, 8.0)) == REPRODUCED
    assert verdict("C20", c20(3.0, 3.001)) == NOT_REPRODUCED  # decay barely changes ‖w‖
    assert verdict("C20", c20(3.0, 8.0, trajectory=1e-5)) == NOT_REPRODUCED
    assert verdict("C20", c20(3.0, 8.0, trajectory=1e-2)) == CONTRADICTED
    assert verdict("C20", c20(8.0, 3.0)) == CONTRADICTED  # decay made the weights larger


def test_c20_exact_part_holds() -> None:
    checks = _exact_checks(0)
    assert max(v for k, v in checks.items() if not k.startswith("control")) < TOLERANCE
    assert checks["control_output_layer_times_4"] > 1e-3


# ---------------------------------------------------------------- C19, C21, C23


def curves(values: list[float]) -> list[dict]:
    return [{"loss": [v, v]} for v in values]


def test_c19_rule() -> None:
    plain, fast = [1.0, 1.05, 0.95], [0.5, 0.52, 0.48]
    assert verdict("C19", {"plain": curves(plain), "weight_norm": curves(fast)}) == REPRODUCED
    assert verdict("C19", {"plain": curves(fast), "weight_norm": curves(plain)}) == CONTRADICTED
    same = {"plain": curves(plain), "weight_norm": curves([1.0, 1.2, 0.8])}
    assert verdict("C19", same) == NOT_REPRODUCED


def c21(norm_prop: list[float], bn: list[float], deviation: float = 0.0) -> dict:
    return {"norm_prop": curves(norm_prop), "batch_norm": curves(bn),
            "per_sample_deviation": {"norm_prop": deviation, "control_batch_norm": 0.5}}


def test_c21_rule() -> None:
    bn = [0.5, 0.52, 0.48]
    assert verdict("C21", c21([0.53, 0.54, 0.52], bn)) == REPRODUCED
    assert verdict("C21", c21([0.65, 0.66, 0.64], bn)) == NOT_REPRODUCED  # 30% slower
    assert verdict("C21", c21([1.2, 1.25, 1.15], bn)) == CONTRADICTED
    assert verdict("C21", c21([0.5, 0.5, 0.5], bn, deviation=0.1)) == CONTRADICTED


def c23(cos_errors: list[float], bound: float = 1.0, bn_bound: float = 6.0) -> dict:
    return {"cosine": [{"test_error": e, "inspect": bound} for e in cos_errors],
            "batch_norm": [{"test_error": e, "inspect": bn_bound} for e in (4.0, 4.5, 3.5)]}


def test_c23_rule() -> None:
    assert verdict("C23", c23([4.5, 5.0, 4.0])) == REPRODUCED
    assert verdict("C23", c23([5.5, 9.0, 3.0])) == NOT_REPRODUCED  # 1.7 points, within spreads
    assert verdict("C23", c23([9.0, 9.5, 8.5])) == CONTRADICTED
    assert verdict("C23", c23([4.0, 4.0, 4.0], bound=1.01)) == CONTRADICTED
    assert verdict("C23", c23([4.0, 4.0, 4.0], bn_bound=0.9)) == NOT_REPRODUCED  # no control


# ---------------------------------------------------------------- C10


def gan(plain_modes: list[int], sn_modes: list[int], sn_quality: float = 80.0) -> dict:
    return {
        "plain": [{"modes": [m] * 4, "quality": [80.0 + d]} for d, m in enumerate(plain_modes)],
        "spectral_norm": [{"modes": [m] * 4, "quality": [sn_quality + d]}
                          for d, m in enumerate(sn_modes)],
    }


def test_c10_rule() -> None:
    assert verdict("C10", gan([3, 4, 2], [8, 8, 7])) == REPRODUCED
    assert verdict("C10", gan([8, 8, 8], [8, 8, 8])) == NOT_REPRODUCED
    assert verdict("C10", gan([3, 4, 2], [8, 8, 7], sn_quality=20.0)) == NOT_REPRODUCED
    assert verdict("C10", gan([8, 8, 7], [3, 4, 2])) == CONTRADICTED


def test_rules_are_printed_with_their_thresholds() -> None:
    for claim_id in ("C02", "C10", "C16", "C19", "C20", "C21", "C23"):
        rule = CLAIMS[claim_id].rule
        assert "Reproduced if" in rule or "reproduced if" in rule.lower()
        assert "ontradicted if" in rule and any(ch.isdigit() for ch in rule)


@pytest.mark.parametrize("claim_id", ["C02", "C10", "C20"])
def test_smoke_numbers_are_a_pure_function_of_the_size(claim_id: str) -> None:
    claim = CLAIMS[claim_id]
    assert claim.measure("smoke") == claim.measure("smoke")
