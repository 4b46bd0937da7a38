"""ODIR-2019 official score against hand-computed cases, plus per-class and tuning."""

from __future__ import annotations

import numpy as np
import pytest

from dms_net_core.metrics import (
    format_official_table,
    full_report,
    odir_official_score,
    paper_columns,
    per_class_metrics,
    tune_thresholds,
)


def _hand_case():
    y = np.zeros((2, 8), np.uint8)
    y[0, 0] = 1  # flat index 0
    y[1, 1] = 1  # flat index 9
    y[1, 7] = 1  # flat index 15
    p = np.full((2, 8), 0.1)
    p[0, 0] = 0.9  # TP
    p[1, 1] = 0.5  # exactly 0.5: must count as NEGATIVE -> FN
    p[1, 7] = 0.7  # TP
    p[0, 3] = 0.6  # FP
    return y, p


def test_official_score_hand_computed_with_exact_half_negative():
    y, p = _hand_case()
    s = odir_official_score(y, p)
    # TP=2, FP=1, FN=1, TN=12 over 16 cells
    assert s["f1"] == pytest.approx(14 / 16)
    po, pe = 14 / 16, (3 / 16) * (3 / 16) + (13 / 16) * (13 / 16)
    assert s["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert s["kappa"] == pytest.approx(23 / 39)
    # AUC: 3 positives x 13 negatives; only 0.5 < 0.6 is mis-ordered
    assert s["auc"] == pytest.approx(38 / 39)
    assert s["final"] == pytest.approx((23 / 39 + 14 / 16 + 38 / 39) / 3)


def test_half_is_negative_but_just_above_is_positive():
    y, p = _hand_case()
    p2 = p.copy()
    p2[1, 1] = np.nextafter(0.5, 1.0)
    assert odir_official_score(y, p2)["f1"] == pytest.approx(15 / 16)
    assert odir_official_score(y, p)["f1"] == pytest.approx(14 / 16)


def test_perfect_prediction_scores_one():
    y, _ = _hand_case()
    s = odir_official_score(y, y.astype(float))
    assert s == {"kappa": 1.0, "f1": 1.0, "auc": 1.0, "final": 1.0}


def test_all_zero_prediction_on_realistic_prevalence():
    # 10 patients, 12 positive cells of 80 (15 %, ODIR's flat prevalence is ~14.7 %)
    y = np.zeros((10, 8), np.uint8)
    y[:6, 0] = 1
    y[6:, 1] = 1
    y[0, 7] = 1
    y[3, 2] = 1
    assert y.sum() == 12
    s = odir_official_score(y, np.zeros((10, 8)))
    assert s["f1"] == pytest.approx(68 / 80)  # element accuracy = 0.85
    assert s["kappa"] == pytest.approx(0.0)
    assert s["auc"] == pytest.approx(0.5)
    assert s["final"] == pytest.approx((0.85 + 0.5) / 3)  # 0.45


def test_f1_equals_element_accuracy_on_random_data():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 8)) < 0.2).astype(np.uint8)
    p = rng.random((50, 8))
    s = odir_official_score(y, p)
    assert s["f1"] == pytest.approx(((p > 0.5) == y).mean())
    assert paper_columns(y, p)["acc_element"] == pytest.approx(s["f1"])


def test_per_class_metrics_hand_case():
    y, p = _hand_case()
    per = per_class_metrics(y, p)
    assert per["N"]["sensitivity"] == 1.0 and per["N"]["specificity"] == 1.0 and per["N"]["auc"] == 1.0
    assert per["D"]["sensitivity"] == 0.0  # 0.5 is negative
    assert per["C"]["specificity"] == 0.5 and per["C"]["precision"] == 0.0  # one FP, one TN, no positives
    assert np.isnan(per["C"]["auc"])  # undefined, not 0.5
    cols = paper_columns(y, p)
    assert cols["precision_micro"] == pytest.approx(2 / 3)
    assert cols["recall_micro"] == pytest.approx(2 / 3)
    assert cols["acc_exact_match"] == 0.0
    assert cols["kappa_flat"] == pytest.approx(23 / 39)


def test_threshold_tuning_maximises_per_class_f1():
    rng = np.random.default_rng(1)
    y = np.zeros((40, 8), np.uint8)
    y[:10, 5] = 1  # rare class: probabilities well below 0.5 but separable
    p = rng.uniform(0.0, 0.1, (40, 8))
    p[:10, 5] = rng.uniform(0.25, 0.35, 10)
    t = tune_thresholds(y, p)
    assert t.dtype == np.float32 and t.shape == (8,)
    assert 0.1 <= t[5] < 0.25
    assert per_class_metrics(y, p, t)["H"]["f1"] == 1.0
    assert per_class_metrics(y, p)["H"]["f1"] == 0.0  # at 0.5 the class is never predicted
    assert t[2] == pytest.approx(0.5)  # class without positives keeps the default


def test_full_report_and_table():
    y, p = _hand_case()
    r = full_report(y, p, thresholds=np.full(8, 0.4))
    assert r["official"]["final"] == pytest.approx(odir_official_score(y, p)["final"])
    assert r["per_class_at_thresholds"]["D"]["sensitivity"] == 1.0  # 0.5 > 0.4
    table = format_official_table({"run": r["official"]})
    assert "| run |" in table and "0.5897" in table


def test_shape_errors_are_one_line():
    with pytest.raises(ValueError, match="differ in shape"):
        odir_official_score(np.zeros((2, 8)), np.zeros((3, 8)))
    with pytest.raises(ValueError, match="8 class columns"):
        odir_official_score(np.zeros((2, 7)), np.zeros((2, 7)))
    with pytest.raises(ValueError, match="NaN"):
        odir_official_score(np.zeros((1, 8)), np.full((1, 8), np.nan))


def test_fast_kappa_and_auc_equal_scikit_learn():
    """The numpy kappa/AUC behind every score agree with scikit-learn's, ties included."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from dms_net_core.metrics import _safe_auc, _safe_kappa

    rng = np.random.default_rng(7)
    for n, prevalence in ((40, 0.1), (800, 0.3), (3000, 0.6)):
        y = (rng.random(n) < prevalence).astype(np.int64)
        p = np.round(rng.random(n) * 0.5 + 0.4 * y, 2)  # rounded: many tied scores
        pred = (p > 0.5).astype(np.int64)
        assert _safe_auc(y, p) == pytest.approx(sklearn_metrics.roc_auc_score(y, p), abs=1e-12)
        assert _safe_kappa(y, pred) == pytest.approx(sklearn_metrics.cohen_kappa_score(y, pred), abs=1e-12)


def test_decision_thresholds_tuned_under_the_rule_never_score_below_their_start():
    from dms_net_core.metrics import odir_decision_score, tune_decision_thresholds, tune_thresholds
    from dms_net_core.postprocess import coherent_positive

    rng = np.random.default_rng(11)
    y = (rng.random((300, 8)) < 0.2).astype(np.uint8)
    y[:, 0] = y[:, 1:].sum(1) == 0
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.2, y.shape))))
    start = tune_thresholds(y, p)
    tuned = tune_decision_thresholds(y, p, start)
    before = odir_decision_score(y, p, coherent_positive(p, start))["final"]
    after = odir_decision_score(y, p, coherent_positive(p, tuned))["final"]
    assert tuned.shape == (8,) and tuned.dtype == np.float32 and after >= before
