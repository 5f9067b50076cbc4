"""Calibration per group: intervals that contain their estimate and cover the truth at their level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data import schema as S
from pipeline.fairness.calibration import calibration_by_group, calibration_fit
from pipeline.fairness.metrics import calibration_error


def patients(n_images: int, rng: np.random.Generator, true_logit_scale: float = 1.0,
             shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores and patient ids: two images per patient sharing a patient effect.

    The score is the true risk when `true_logit_scale` is 1 and `shift` 0 (perfect calibration);
    otherwise the true risk is sigmoid(scale * logit(score) + shift).
    """
    ids = np.arange(n_images) // 2
    patient_logit = rng.normal(0, 1.2, n_images // 2 + 1)[ids]
    score = 1 / (1 + np.exp(-(patient_logit + rng.normal(0, 0.5, n_images))))
    logit = np.log(score / (1 - score))
    risk = 1 / (1 + np.exp(-(true_logit_scale * logit + shift)))
    return (rng.random(n_images) < risk).astype(int), score, ids


def test_perfectly_calibrated_scores_are_covered_at_the_stated_level():
    """The old measure: the ECE of calibrated scores is far from 0 at n = 250, so no interval on it reads as
    « calibrated »; the calibration intercept and slope cover 0 and 1 about 95 % of the time."""
    rng = np.random.default_rng(0)
    covered = {"calibration_intercept": 0, "calibration_slope": 0}
    eces, runs = [], 300
    for _ in range(runs):
        y, score, ids = patients(250, rng)
        eces.append(calibration_error(y, score))
        fit = calibration_fit(y, score, ids)
        for metric, truth in (("calibration_intercept", 0.0), ("calibration_slope", 1.0)):
            estimate, low, high = fit[metric]
            assert low <= estimate <= high
            covered[metric] += low <= truth <= high
    assert np.mean(eces) > 0.04  # the biased measure this replaces
    for metric, hits in covered.items():
        assert 0.90 <= hits / runs <= 0.99, (metric, hits / runs)


def test_miscalibration_is_found_in_the_right_direction():
    rng = np.random.default_rng(1)
    y, score, ids = patients(2000, rng, true_logit_scale=0.5)  # scores too extreme: slope < 1
    low, high = calibration_fit(y, score, ids)["calibration_slope"][1:]
    assert high < 1
    y, score, ids = patients(2000, rng, shift=0.8)  # risk under-estimated: intercept > 0
    low, high = calibration_fit(y, score, ids)["calibration_intercept"][1:]
    assert low > 0


def test_clustered_intervals_are_wider_than_independent_ones_when_patients_repeat():
    rng = np.random.default_rng(2)
    y, score, ids = patients(600, rng)
    y, score, ids = np.repeat(y, 3), np.repeat(score, 3), np.repeat(ids, 3)  # each image three times
    one_patient_each = np.arange(len(y))
    clustered = calibration_fit(y, score, ids)["calibration_slope"]
    naive = calibration_fit(y, score, one_patient_each)["calibration_slope"]
    assert clustered[2] - clustered[1] > 1.4 * (naive[2] - naive[1])


def test_groups_too_small_or_one_class_are_undefined_not_crashed():
    rng = np.random.default_rng(3)
    y, score, ids = patients(400, rng)
    frame = pd.DataFrame({S.LABEL: y, S.PROBA: score, S.PATIENT: ids.astype(str),
                          "sex": np.where(np.arange(400) < 380, "M", "F")})
    frame.loc[frame["sex"] == "F", S.LABEL] = 1  # F: 20 images, one class only
    table = calibration_by_group(frame, ["sex"], min_per_class=10).set_index(["group", "metric"])
    assert table.loc[("F", "calibration_slope"), ["estimate", "low", "high"]].isna().all()
    assert table.loc[("M", "calibration_slope"), "low"] < table.loc[("M", "calibration_slope"), "high"]
    assert table.loc[("F", "calibration_intercept"), "n_negative"] == 0
    no_score = calibration_by_group(frame.assign(**{S.PROBA: np.nan}), ["sex"])
    assert no_score["estimate"].isna().all()


@pytest.mark.parametrize("score", [0.0, 1.0])
def test_scores_of_exactly_zero_or_one_do_not_break_the_fit(score):
    rng = np.random.default_rng(4)
    y, s, ids = patients(300, rng)
    s[:5] = score
    fit = calibration_fit(y, s, ids)
    assert all(np.isfinite(v).all() for v in fit.values())
