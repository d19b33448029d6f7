"""The rules of the batch-statistics claims (C09 BIN, C11 batch mates, C12 frozen fine-tuning,
C13 AdaBN, C24 batch noise) on crafted numbers: each rule gives each of its verdicts."""

from __future__ import annotations

from normlab.claims import CLAIMS, CONTRADICTED, NOT_REPRODUCED, REPRODUCED
from normlab.claims.domain import recovery

CLOSE = [10.0, 10.5, 9.5]
FAR = [20.0, 20.5, 19.5]


def _bin(bn: list[float], bin_: list[float], gates: list[float]) -> dict:
    # 3 seeds, two layers each holding half of ``gates``
    half = len(gates) // 2
    return {"error": {"bn": bn, "bin": bin_}, "gates": [[gates[:half], gates[half:]]] * 3}


def test_c09_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C09"].recheck
    polarized = [1.0] * 14 + [0.0] * 4 + [0.5] * 2  # 90 % polarized, 20 % drifted to 0
    assert decide(_bin(CLOSE, CLOSE, polarized)) == REPRODUCED
    assert decide(_bin(FAR, CLOSE, polarized)) == REPRODUCED  # BIN better is fine
    assert decide(_bin(CLOSE, FAR, polarized)) == CONTRADICTED  # BN clearly better
    assert decide(_bin(CLOSE, CLOSE, [0.5] * 12 + [1.0] * 8)) == CONTRADICTED  # mid-range gates
    # the gates stayed at their init (1): polarized, but nothing drifted
    assert decide(_bin(CLOSE, CLOSE, [1.0] * 20)) == NOT_REPRODUCED
    assert decide(_bin(CLOSE, CLOSE, [1.0] * 10 + [0.0] * 3 + [0.5] * 7)) == NOT_REPRODUCED


def _c11(**changes: float) -> dict:
    numbers = {
        "bn_train_sample_output_vs_batch_mates": 0.6,
        "per_worker_loss_vs_full_batch": 0.01,
        "per_worker_grad_vs_full_batch": 0.3,
        "control_ln_sample_output_vs_batch_mates": 0.0,
        "control_bn_eval_sample_output_vs_batch_mates": 1e-16,
        "sync_loss_vs_full_batch": 0.0,
        "sync_grad_vs_full_batch": 3e-16,
        "ranks_agree": 0.0,
    }
    return {**numbers, **changes}


def test_c11_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C11"].recheck
    assert decide(_c11()) == REPRODUCED
    assert decide(_c11(per_worker_loss_vs_full_batch=1e-5)) == REPRODUCED  # differs, not by much
    assert decide(_c11(bn_train_sample_output_vs_batch_mates=0.0)) == CONTRADICTED
    assert decide(_c11(per_worker_grad_vs_full_batch=1e-12)) == CONTRADICTED
    assert decide(_c11(sync_grad_vs_full_batch=1e-3)) == NOT_REPRODUCED  # the comparison is off
    assert decide(_c11(control_ln_sample_output_vs_batch_mates=1e-6)) == NOT_REPRODUCED
    assert decide(_c11(ranks_agree=1e-2)) == NOT_REPRODUCED
    assert decide(_c11(per_worker_grad_vs_full_batch=1e-4)) == NOT_REPRODUCED  # too small to tell


def test_c12_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C12"].recheck
    assert decide({"live": FAR, "frozen": CLOSE}) == REPRODUCED
    assert decide({"live": CLOSE, "frozen": FAR}) == CONTRADICTED
    assert decide({"live": [10.0, 30.0, 20.0], "frozen": CLOSE}) == NOT_REPRODUCED
    assert decide({"live": [10.0, None, 10.0], "frozen": CLOSE}) == REPRODUCED  # live diverged


def _c13(before: list[float], after: list[float], source: list[float] = CLOSE) -> dict:
    return {"source": source, "target_before": before, "target_after": after}


def test_c13_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C13"].recheck
    assert decide(_c13(FAR, [12.0, 12.5, 11.5])) == REPRODUCED  # recovers 80 %
    assert recovery(_c13(FAR, [12.0, 12.5, 11.5])) == 0.8
    # clearly better, but wins back only 30 % of the loss
    assert decide(_c13(FAR, [17.0, 17.5, 16.5])) == NOT_REPRODUCED
    assert decide(_c13(FAR, [30.0, 30.5, 29.5])) == CONTRADICTED  # AdaBN hurts
    # the shift does not hurt: nothing to recover, whatever AdaBN does
    assert decide(_c13(CLOSE, [5.0, 5.5, 4.5])) == NOT_REPRODUCED
    assert recovery(_c13(CLOSE, CLOSE)) == 0.0


def _c24(gap_bn: list[float], gap_noise: list[float], test_bn: list, test_noise: list) -> dict:
    return {
        "gap": {"bn": gap_bn, "ghost4": gap_noise},
        "test": {"bn": test_bn, "ghost4": test_noise},
    }


def test_c24_rule_gives_each_verdict() -> None:
    decide = CLAIMS["C24"].recheck
    assert decide(_c24(FAR, CLOSE, FAR, CLOSE)) == REPRODUCED
    # smaller gap, but by fitting the training set worse: test error clearly higher
    assert decide(_c24(FAR, CLOSE, CLOSE, FAR)) == NOT_REPRODUCED
    assert decide(_c24(CLOSE, FAR, CLOSE, CLOSE)) == CONTRADICTED
    assert decide(_c24([10.0, 30.0, 20.0], CLOSE, CLOSE, CLOSE)) == NOT_REPRODUCED
