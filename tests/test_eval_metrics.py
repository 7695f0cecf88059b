"""Metrics of the downstream protocols against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from facepcl.heads import metrics


def test_accuracy_from_indices_and_scores():
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert metrics.accuracy(scores, [0, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="length mismatch"):
        metrics.accuracy([0, 1], [0])


def test_per_class_accuracy_marks_absent_classes_nan():
    out = metrics.per_class_accuracy([0, 0, 1, 1], [0, 1, 1, 1], 3)
    assert out[:2] == [1.0, pytest.approx(2 / 3)]
    assert np.isnan(out[2])


def test_f1_per_label_by_hand():
    target = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    pred = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]])
    # F1 = 2TP / (2TP + FP + FN)
    # label 0: TP 2 (rows 0, 3), FP 1 (row 2), FN 1 (row 1) -> 4 / 6
    # label 1: TP 1 (row 1), FP 1 (row 3), FN 0 -> 2 / 3; label 2: TP 0, FN 2 -> 0
    f1 = metrics.multilabel_f1(pred, target, ["AU1", "AU2", "AU4"])
    assert f1["AU1"] == pytest.approx(4 / 6)
    assert f1["AU2"] == pytest.approx(2 / 3)
    assert f1["AU4"] == 0.0
    assert f1["mean"] == pytest.approx(4 / 9)


def test_f1_label_never_present_nor_predicted_is_zero():
    assert metrics.f1_scores(np.zeros((3, 1)), np.zeros((3, 1))) == [0.0]


def test_pose_mae_degrees_per_angle():
    pred = np.array([[10.0, 0.0, -5.0], [0.0, 20.0, 5.0]])
    true = np.array([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
    out = metrics.pose_mae(pred, true)
    assert out == {"yaw": 5.0, "pitch": 5.0, "roll": 5.0, "mean": 5.0}
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        metrics.pose_mae(pred[:, :2], true[:, :2])


def test_best_threshold_on_known_similarities():
    scores = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])
    same = np.array([1, 1, 0, 1, 0, 0], bool)
    thr, acc = metrics.best_threshold(scores, same)
    # Cutting below 0.8 (threshold midway to 0.7) gets 5/6: only the 0.4 positive is missed.
    assert thr == pytest.approx(0.75)
    assert acc == pytest.approx(5 / 6)
    # Perfectly separable: the threshold lands between the classes.
    thr, acc = metrics.best_threshold([0.2, 0.9, 0.1, 0.8], [0, 1, 0, 1])
    assert acc == 1.0
    assert thr == pytest.approx(0.5)


def test_best_threshold_ties_cannot_be_split():
    # Two pairs with the same score, one same and one different: no threshold separates them.
    _, acc = metrics.best_threshold([0.5, 0.5], [1, 0])
    assert acc == 0.5


def test_verification_threshold_is_chosen_on_the_other_folds():
    # Fold 0 alone would prefer a threshold near 0.35; the training folds (1, 2) put it at 0.55.
    scores = np.array([0.4, 0.3, 0.6, 0.5, 0.7, 0.4, 0.6, 0.5])
    same = np.array([1, 0, 1, 0, 1, 0, 1, 0], bool)
    folds = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    res = metrics.verification_accuracy(scores, same, folds)
    # fold 0: training folds 1+2 -> separable with threshold midway 0.5..0.6 = 0.55; fold 0 scores 0.4, 0.3 are
    # both called "different" -> 1 / 2 correct.
    assert res.thresholds[0] == pytest.approx(0.55)
    assert res.fold_accuracy[0] == 0.5
    # folds 1 and 2 are classified perfectly by thresholds from the others
    assert res.fold_accuracy[1:] == [1.0, 1.0]
    assert res.accuracy == pytest.approx(2.5 / 3)


def test_verification_lfw_layout_ten_folds_of_600():
    rng = np.random.default_rng(0)
    same = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    folds = np.repeat(np.arange(10), 600)
    scores = np.where(same, rng.normal(0.6, 0.1, same.size), rng.normal(0.2, 0.1, same.size))
    res = metrics.verification_accuracy(scores, same, folds)
    assert len(res.fold_accuracy) == 10
    assert 0.95 < res.accuracy <= 1.0  # classes are 4 sigma apart
    assert all(0.3 < t < 0.5 for t in res.thresholds)
