"""The primary family's verdicts (fairness/inference.py): Holm keeps the family's level, the power stated is the
power a simulation measures, and each verdict says why it is what it is."""

from __future__ import annotations

import math
from statistics import NormalDist
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_inference import _patients, _true_difference

from pipeline.cli import REGISTRIES, registered_names
from pipeline.config import ConfigError, load_config
from pipeline.data import schema as S
from pipeline.fairness.inference import family_verdicts, minimum_detectable, rule_run
from pipeline.fairness.metrics import DECISION, _design, draw_counts

SEED_SD = 0.25


def _family(rng: np.random.Generator, thresholds: dict[str, float], n_seeds: int = 5, n_patients: int = 250,
            metrics: tuple[str, ...] = ("balanced_accuracy", "tpr_signed"), n_boot: int = 200,
            seed_sd: float = SEED_SD, image_noise: float = 0.0):
    """One simulated study: rules deciding above their threshold, each seed moving every threshold (and, with
    `image_noise`, adding its own noise to each image's score: rules that disagree on images, not on average)."""
    frame = _patients(rng, n_patients)
    n_clusters = _design(frame.assign(**{DECISION: 0.0}), S.SEX, DECISION, None).n_clusters
    draws = draw_counts(n_clusters, n_boot, int(rng.integers(1 << 30)))
    runs = {}
    for rule, t in thresholds.items():
        offsets = rng.normal(0, seed_sd, n_seeds)
        scores = [frame["score"] + rng.normal(0, image_noise, len(frame)) for _ in offsets]
        runs[rule] = [rule_run(frame.assign(**{DECISION: (score >= t + e).astype(float)}), S.SEX, draws,
                               score_col=None, min_per_class=5) for score, e in zip(scores, offsets, strict=True)]
    comparisons = [(rule, "reference") for rule in thresholds if rule != "reference"]
    return family_verdicts(runs, comparisons, metrics, S.SEX, alpha=0.05)


def test_holm_keeps_the_family_wise_error_rate_of_four_null_hypotheses():
    """Two rules no better or worse than the reference, two metrics each: the chance that the family declares
    anything established stays at or under 5 %, where four uncorrected tests would declare something far more
    often. One training run whose rules disagree image by image (not on average): each test is then at its
    nominal level (with several seeds the seed-aware test is conservative on its own, level 0.01-0.03)."""
    rng = np.random.default_rng(13)
    null = {"reference": 0.0, "a": 0.0, "b": 0.0}
    any_family, any_raw = [], []
    for _ in range(400):
        verdicts = _family(rng, null, n_seeds=1, seed_sd=0.0, image_noise=0.4)
        any_family.append(any(v.established for v in verdicts))
        any_raw.append(any(v.p_value is not None and v.p_value < 0.05 for v in verdicts))
    assert np.mean(any_family) <= 0.07, np.mean(any_family)  # 0.05 + 2 simulation SE; measured 0.048 (500 studies)
    assert np.mean(any_raw) > 0.1, np.mean(any_raw)  # measured 0.154


def test_the_minimum_detectable_change_is_the_change_found_80_percent_of_the_time():
    """The formula on a normal estimate: a true change equal to it is detected in 80 % of studies."""
    rng = np.random.default_rng(0)
    se, alpha = 0.03, 0.05 / 4
    mde = minimum_detectable(se ** 2, math.inf, alpha)
    estimates = mde + se * rng.standard_normal(20_000)
    power = np.mean(np.abs(estimates / se) > NormalDist().inv_cdf(1 - alpha / 2))
    assert power == pytest.approx(0.80, abs=0.015)
    assert minimum_detectable(se ** 2, 4, alpha) > mde  # few degrees of freedom: a larger change is needed


def test_the_stated_power_matches_the_power_measured_in_simulated_studies():
    """Studies with five seeds and a true change of the BA: the share of studies that establish it is what the
    reported minimum detectable changes predict (normal approximation), within simulation error."""
    rng = np.random.default_rng(5)
    thresholds = {"reference": 0.0, "treated": 0.8}
    truth = _true_difference("balanced_accuracy", thresholds=thresholds)
    found, mdes = [], []
    for _ in range(120):
        v = _family(rng, thresholds, metrics=("balanced_accuracy",))[0]
        found.append(v.established and v.direction == int(np.sign(truth)))
        mdes.append(v.mde)
    z_a, z_p = NormalDist().inv_cdf(1 - 0.05 / 2), NormalDist().inv_cdf(0.8)
    predicted = float(np.mean([NormalDist().cdf(abs(truth) / m * (z_a + z_p) - z_a) for m in mdes]))
    assert 0.2 < np.mean(found) < 0.9, np.mean(found)  # a design where power is neither 0 nor 1 (measured 0.53)
    assert abs(np.mean(found) - predicted) < 0.15, (np.mean(found), predicted, truth, np.median(mdes))


def _runs_of(frames: dict[str, list[pd.DataFrame]], n_boot: int = 100):
    n_clusters = _design(next(iter(frames.values()))[0], S.SEX, DECISION, None).n_clusters
    draws = draw_counts(n_clusters, n_boot, 0)
    return {rule: [rule_run(f, S.SEX, draws, score_col=None, min_per_class=5) for f in fs]
            for rule, fs in frames.items()}


def test_identical_decisions_are_not_established_and_say_why():
    frame = _patients(np.random.default_rng(1), 200)
    decided = frame.assign(**{DECISION: (frame["score"] >= 0).astype(float)})
    runs = _runs_of({"reference": [decided, decided], "same": [decided, decided]})
    for v in family_verdicts(runs, [("same", "reference")], ("balanced_accuracy", "tpr_signed"), S.SEX):
        assert (v.status, v.direction, v.reason, v.estimate) == ("not_established", 0, "identical", 0.0)


def test_an_undefined_metric_is_not_testable_and_leaves_the_family():
    frame = _patients(np.random.default_rng(2), 200)
    frame.loc[(frame[S.SEX] == "F") & (frame[S.LABEL] == 1), S.LABEL] = 0  # no sick woman: her TPR is undefined
    runs = _runs_of({"reference": [frame.assign(**{DECISION: (frame["score"] >= 0).astype(float)})],
                     "lower": [frame.assign(**{DECISION: (frame["score"] >= -0.8).astype(float)})]})
    ba, tpr = family_verdicts(runs, [("lower", "reference")], ("balanced_accuracy", "tpr_signed"), S.SEX)
    assert (tpr.status, tpr.reason, tpr.p_adjusted, tpr.mde) == ("not_testable", "undefined", None, None)
    assert ba.status == "established" and ba.p_adjusted == pytest.approx(ba.p_value)  # a family of one test


def test_closing_the_gap_by_lowering_the_better_off_group_is_flagged_as_levelling_down():
    """Men are detected more often; a rule that raises only the men's threshold closes the gap by missing more
    sick men: established, and levelling down. Raising the women's sensitivity instead is not."""
    frame = _patients(np.random.default_rng(4), 400)
    men = (frame[S.SEX] == "M").to_numpy()
    base = frame.assign(**{DECISION: (frame["score"] >= 0).astype(float)})
    down = frame.assign(**{DECISION: (frame["score"] >= np.where(men, 0.45, 0.0)).astype(float)})
    up = frame.assign(**{DECISION: (frame["score"] >= np.where(men, 0.0, -0.45)).astype(float)})
    runs = _runs_of({"reference": [base], "down": [down], "up": [up]}, n_boot=200)
    verdicts = family_verdicts(runs, [("down", "reference"), ("up", "reference")], ("tpr_signed",), S.SEX)
    by = {v.treated: v for v in verdicts}
    assert by["down"].established and by["down"].direction == 1 and by["down"].levelling_down
    assert by["up"].established and by["up"].direction == 1 and not by["up"].levelling_down


@pytest.mark.parametrize(("lines", "message"), [
    ("analysis:\n  primary: [group_balanced]\n", "write a rule as 'weighting + postprocessor'"),
    ("analysis:\n  primary: [group_balance + none]\n", "'group_balance' is not a weighting. Did you mean "
                                                     "'group_balanced'?"),
    ("analysis:\n  primary: [uniform + equal_oportunity]\n", "Did you mean 'equal_opportunity'?"),
    ("analysis:\n  metrics: [tpr_gap]\n", "analysis.metrics = 'tpr_gap': not a tested quantity"),
    ("analysis:\n  attribute: ethnicity\n", "not among sensitive_attributes"),
    ("analysis:\n  primary: [uniform + none]\n", "a rule compared with itself"),
    ("analysis:\n  n_resamples: 5\n", "analysis.n_resamples = 5: must be at least 20"),
])
def test_a_primary_family_the_study_cannot_answer_is_refused_with_the_fix(tmp_path, lines: str, message: str):
    config = tmp_path / "study.yml"
    config.write_text(lines, encoding="utf-8")
    choices = {key: registered_names(module) for key, module in REGISTRIES.items()}  # as the command line does
    with pytest.raises(ConfigError, match="analysis") as err:
        load_config(config, choices=choices)
    assert message in str(err.value)


def test_the_study_refuses_an_unknown_rule_before_training_and_trains_the_rules_the_family_needs(tmp_path):
    """Without the command line's registries the study itself refuses a misspelt rule, at once; a method list
    that leaves out a primary weighting still gets it trained (the family is answered whatever the lists)."""
    from pipeline import study
    from pipeline.config import StudyConfig

    config = tmp_path / "study.yml"
    config.write_text("analysis:\n  primary: [group_balance + none]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'group_balance' is not a weighting"):
        study._check_primary(SimpleNamespace(config=load_config(config), evaluation=pd.DataFrame()))
    trimmed = StudyConfig().replace(weighting=StudyConfig().weighting.__class__(methods=("uniform", "jtt")))
    assert study.study_weightings(trimmed) == ["uniform", "jtt", "group_balanced"]
