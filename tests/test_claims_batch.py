"""The rules of C01, C03, C08, C14, C17, C22 and C25 on crafted numbers: each can say
reproduced, and each can say something else (so a rule is a test that can fail)."""

from __future__ import annotations

from normlab.claims import CLAIMS, CONTRADICTED, NOT_REPRODUCED, REPRODUCED


def _sweep(bn=(30, 10), gn=(12, 12), ln=(15, 15), inn=(16, 16), sn=(12, 11.5)) -> dict:
    """Three seeds per cell around the given means (batch 2, batch 32), spread 0.1."""
    def cell(m):
        return [m - 0.1, m, m + 0.1]
    rows = {"batch_norm": bn, "group_norm": gn, "layer_norm": ln, "instance_norm": inn,
            "switchable_norm": sn}
    return {"test_error_percent": {k: {"2": cell(v[0]), "32": cell(v[1])} for k, v in rows.items()},
            "largest_mixture_distance_between_layers": [0.3, 0.25, 0.4]}


def test_c03_bn_rises_gn_flat() -> None:
    rule = CLAIMS["C03"].decide
    assert rule(_sweep()) == REPRODUCED
    assert rule(_sweep(bn=(11, 10))) == NOT_REPRODUCED  # BN does not rise by 2 points
    assert rule(_sweep(gn=(14, 12))) == NOT_REPRODUCED  # GN is not flat
    assert rule(_sweep(bn=(10, 10), gn=(20, 12))) == CONTRADICTED  # GN rises, BN does not
    assert rule(_sweep(bn=(30, 15), gn=(12, 12))) == NOT_REPRODUCED  # BN worse at batch 32


def test_c25_gn_near_bn_at_32_beats_it_at_2_ln_in_behind() -> None:
    rule = CLAIMS["C25"].decide
    assert rule(_sweep()) == REPRODUCED
    assert rule(_sweep(gn=(12, 13))) == NOT_REPRODUCED  # 3 points behind BN at 32
    assert rule(_sweep(ln=(15, 11))) == NOT_REPRODUCED  # LN ahead of GN at 32
    assert rule(_sweep(bn=(10, 10), gn=(14, 11))) == CONTRADICTED  # BN beats GN at 2


def test_c17_sn_robust_and_layers_differ() -> None:
    rule = CLAIMS["C17"].decide
    assert rule(_sweep()) == REPRODUCED
    same = _sweep()
    same["largest_mixture_distance_between_layers"] = [0.01, 0.02, 0.0]
    assert rule(same) == NOT_REPRODUCED
    assert rule(_sweep(bn=(12, 11), sn=(20, 11))) == CONTRADICTED


def test_c01_bn_trains_at_a_higher_rate() -> None:
    rule = CLAIMS["C01"].decide
    ok, bad = [3.0, 3.1, 2.9], [60.0, 70.0, 65.0]
    plain = {"0.2": ok, "0.8": ok, "3.2": [None, None, None]}
    bn = {"0.2": ok, "0.8": ok, "3.2": ok}
    n = {"test_error_percent": {"none": plain, "batch_norm": bn, "layer_norm": bn}}
    assert rule(n) == REPRODUCED
    n["test_error_percent"]["batch_norm"] = {"0.2": ok, "0.8": bad, "3.2": bad}
    assert rule(n) == CONTRADICTED
    n["test_error_percent"]["batch_norm"] = plain
    assert rule(n) == NOT_REPRODUCED


def test_c08_brn_beats_bn_on_small_or_non_iid_and_equals_it_on_large() -> None:
    rule = CLAIMS["C08"].decide
    def n(small, non_iid, large):
        return {"test_error_percent": {
            case: {"batch_renorm": [b - 0.1, b, b + 0.1], "batch_norm": [m - 0.1, m, m + 0.1]}
            for case, (b, m) in zip(("small_iid", "non_iid", "large_iid"),
                                    (small, non_iid, large), strict=True)}}
    assert rule(n((10, 15), (20, 20), (8, 8.5))) == REPRODUCED
    assert rule(n((10, 15), (20, 20), (8, 11))) == NOT_REPRODUCED  # not equal at large batch
    assert rule(n((15, 10), (20, 20), (8, 8))) == CONTRADICTED


def test_c14_ghost_bn_closes_the_large_batch_gap() -> None:
    rule = CLAIMS["C14"].decide
    def n(ghost, bn):
        return {"test_error_percent": {"bn_small_batch": [10, 10.2, 9.8],
                                       "bn_large_batch": [bn - 0.2, bn, bn + 0.2],
                                       "ghost_bn_large_batch": [ghost - 0.2, ghost, ghost + 0.2]}}
    assert rule(n(11, 14)) == REPRODUCED
    assert rule(n(14, 14.1)) == NOT_REPRODUCED
    assert rule(n(16, 14)) == CONTRADICTED


def test_c22_streaming_norm_learns_at_batch_one() -> None:
    rule = CLAIMS["C22"].decide
    def n(stream, layer, refuses=True):
        return {"test_error_percent": {"streaming_norm": {"1": stream}, "layer_norm": {"1": layer}},
                "batch_norm_refuses_batch_size_1": refuses}
    assert rule(n([40, 42, 41], [40, 41, 42])) == REPRODUCED
    assert rule(n([40, 42, 41], [40, 41, 42], refuses=False)) == NOT_REPRODUCED
    assert rule(n([50, 52, 51], [40, 41, 42])) == NOT_REPRODUCED  # 10 points behind LN
    assert rule(n([88, 89, 87], [40, 41, 42])) == CONTRADICTED  # near chance
    assert rule(n([None, 40, 41], [40, 41, 42])) == CONTRADICTED  # a seed diverged
