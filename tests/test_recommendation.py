"""The recommended rule: chosen on half of the evaluation patients under constraints fixed in advance, reported
on the other half, and « none » when no rule meets them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data import schema as S
from pipeline.fairness import metrics as M
from pipeline.fairness.recommendation import Constraints, recommend


def _patients(seed: int = 0, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 3, n)
    sex = np.repeat(rng.choice(["F", "M"], n), sizes)
    label = np.repeat((rng.random(n) < 0.5).astype(int), sizes)
    score = np.where(label == 1, np.where(sex == "F", 0.3, 0.9), -0.6) + rng.normal(0, 0.8, len(sex))
    return pd.DataFrame({S.IMAGE: [f"{i}.png" for i in range(len(sex))], S.PATIENT: np.repeat(np.arange(n), sizes)
                         .astype(str), S.LABEL: label, S.SEX: sex, "score": score})


def _rules(frame: pd.DataFrame, rng: np.random.Generator | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """The reference, a rule that lowers the women's threshold (closes the gap), one that lowers everyone's a lot
    (loses accuracy), and a randomised one (half of the decisions drawn at random)."""
    women = (frame[S.SEX] == "F").to_numpy()
    s = frame["score"].to_numpy()
    coin = np.where((rng or np.random.default_rng(1)).random(len(frame)) < 0.5, 0.5, (s >= 0).astype(float))
    decisions = {("uniform", "none"): (s >= 0).astype(float),
                 ("uniform", "women_threshold"): (s >= np.where(women, -0.4, 0.0)).astype(float),
                 ("uniform", "low_threshold"): (s >= -1.5).astype(float),
                 ("uniform", "coin"): coin}
    return {k: frame.assign(**{M.DECISION: d}) for k, d in decisions.items()}


def test_the_rule_that_closes_the_gap_within_the_constraints_is_chosen_and_reported_on_the_other_half():
    frame = _patients()
    rec = recommend(_rules(frame), ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=60)
    assert rec.chosen == "uniform + women_threshold"
    fails = rec.candidates.set_index("rule")["fails"]
    assert "randomised" in fails["uniform + coin"] and "ba" in fails["uniform + low_threshold"]
    selection, report = rec.n_patients["selection"], rec.n_patients["report"]
    assert abs(selection - report) <= 2 and selection + report == frame[S.PATIENT].nunique()
    reported = rec.report.set_index(["method", "metric"])
    assert reported.loc[(rec.chosen, "tpr_signed"), "diff_low"] > 0  # the women's sensitivity catches up


def test_the_choice_never_looks_at_the_patients_it_is_reported_on():
    """Scramble every outcome and decision of the report half: the same rule is chosen (its report changes)."""
    frame = _patients()
    rules = _rules(frame)
    first = recommend(rules, ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=40)
    from pipeline.fairness.postprocess import split_fit_score

    _, held = split_fit_score(rules[("uniform", "none")], 0.5, 0, S.SEX)
    report = frame[S.PATIENT].isin(set(held[S.PATIENT])).to_numpy()
    rng = np.random.default_rng(9)
    scrambled = {k: f.assign(**{M.DECISION: np.where(report, rng.random(len(f)).round(), f[M.DECISION])})
                 for k, f in rules.items()}
    again = recommend(scrambled, ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=40)
    assert again.chosen == first.chosen
    pd.testing.assert_frame_equal(again.candidates, first.candidates)
    assert not again.report.equals(first.report)


@pytest.mark.parametrize("constraints", [Constraints(0.05, 0.10, 0.0), Constraints(0.0, 0.0, 0.05)])
def test_no_rule_meeting_the_constraints_is_an_answer_and_the_text_says_to_keep_the_reference(constraints):
    from types import SimpleNamespace

    from pipeline.report import verdicts

    frame = _patients()
    rules = {k: v for k, v in _rules(frame).items() if k[1] != "women_threshold"}
    rec = recommend(rules, ("uniform", "none"), S.SEX, constraints, seed=0, n_boot=40)
    assert rec.chosen is None and rec.report is None and not rec.candidates["satisfies"].any()
    ctx = SimpleNamespace(analyses={"pipeline.fairness.recommendation.recommendation": rec}, verdicts=None,
                          config=SimpleNamespace(training=SimpleNamespace(seeds=[0])), detail_seed=0)
    text = verdicts.recommendation_text(ctx)
    assert "Aucune règle ne satisfait les contraintes" in text and "garder le modèle de référence" in text


def test_the_recommendation_gives_the_counts_behind_each_groups_underdiagnosis_and_false_positives():
    from types import SimpleNamespace

    from pipeline.report import verdicts

    frame = _patients()
    rec = recommend(_rules(frame), ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=40)
    assert rec.chosen is not None
    ctx = SimpleNamespace(analyses={"pipeline.fairness.recommendation.recommendation": rec}, verdicts=None,
                          config=SimpleNamespace(analysis=SimpleNamespace(attribute=S.SEX),
                                                 training=SimpleNamespace(seeds=[0])), detail_seed=0)
    text = verdicts.recommendation_text(ctx)
    for r in rec.report_fnr.itertuples():
        assert f"({round(r.estimate * r.n_positive)}/{int(r.n_positive)})" in text, r
    for r in rec.report_fpr.itertuples():  # and what the sains pay: their false positives, with their counts
        assert f"({round(r.estimate * r.n_negative)}/{int(r.n_negative)})" in text, r
    assert "Faux positifs (FPR" in text


def test_a_rule_that_decides_as_the_reference_is_never_recommended():
    """A class-only weighting re-thresholded on the inner validation decides as the reference does (issue 24):
    it satisfies every constraint trivially, but recommending it would present « change nothing » as a fix."""
    frame = _patients()
    rules = {k: v for k, v in _rules(frame).items() if k[1] != "women_threshold"}
    rules[("class_balanced", "none")] = rules[("uniform", "none")].copy()
    rec = recommend(rules, ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=40)
    fails = rec.candidates.set_index("rule")["fails"]
    assert fails["class_balanced + none"] == "no_gain"
    assert rec.chosen is None
    rules[("uniform", "women_threshold")] = _rules(frame)[("uniform", "women_threshold")]
    again = recommend(rules, ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=40)
    assert again.chosen == "uniform + women_threshold"


def test_the_choice_reads_every_training_seed_and_the_report_keeps_their_variance():
    """Three training seeds: a rule that meets the constraints on one seed only (a lucky run) is not chosen, the
    one that meets them on average is, and the report half compares it with the reference over the three seeds
    (the intervals include their spread: wider than with one seed)."""
    frame = _patients()
    rng = np.random.default_rng(3)
    shifts = rng.normal(0, 0.1, 3)
    seeds = [frame.assign(score=frame["score"] + e) for e in shifts]
    by_seed = [_rules(f, np.random.default_rng(i)) for i, f in enumerate(seeds)]
    rules = {k: [r[k] for r in by_seed] for k in by_seed[0]}
    lucky = [by_seed[0][("uniform", "women_threshold")], by_seed[1][("uniform", "low_threshold")],
             by_seed[2][("uniform", "low_threshold")]]
    rules[("uniform", "lucky")] = lucky
    rec = recommend(rules, ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=60)
    fails = rec.candidates.set_index("rule")
    assert "ba" in fails.loc["uniform + lucky", "fails"] and (fails["n_seeds"] == 3).all()
    assert rec.chosen == "uniform + women_threshold"
    report = rec.report.set_index(["method", "metric"])
    assert (report["n_seeds"] == 3).all()
    alone = recommend({k: v[0] for k, v in rules.items()}, ("uniform", "none"), S.SEX,
                      Constraints(0.05, 0.10, 0.05), seed=0, n_boot=60).report.set_index(["method", "metric"])
    key = (rec.chosen, "balanced_accuracy")
    assert report.loc[key, "high"] - report.loc[key, "low"] > alone.loc[key, "high"] - alone.loc[key, "low"]
    from pipeline.fairness.postprocess import split_fit_score

    _, held = split_fit_score(rules[("uniform", "none")][0], 0.5, 0, S.SEX)
    sick_women = [f[f[S.PATIENT].isin(set(held[S.PATIENT])) & (f[S.SEX] == "F") & (f[S.LABEL] == 1)]
                  for f in rules[("uniform", "women_threshold")]]
    women = rec.report_fnr.set_index(["rule", "group"]).loc[(rec.chosen, "F")]
    assert women["n_positive"] == len(sick_women[0])  # the report half's sick women, the same on every seed
    assert women["estimate"] == pytest.approx(np.mean([1 - f[M.DECISION].mean() for f in sick_women]))


def test_an_established_rule_that_breaks_a_constraint_is_named_with_what_it_breaks():
    """A rule can close the gap (its primary question answered) by making the men's under-diagnosis worse: the
    text says so, with the value it breaks, instead of leaving « established » and « no rule » side by side."""
    from types import SimpleNamespace

    from pipeline.fairness.inference import Verdict, Verdicts
    from pipeline.report import verdicts

    frame = _patients()
    rules = {k: v for k, v in _rules(frame).items() if k[1] != "women_threshold"}
    s, women = frame["score"].to_numpy(), (frame[S.SEX] == "F").to_numpy()
    rules[("uniform", "men_up")] = frame.assign(**{M.DECISION: (s >= np.where(women, 0.0, 0.9)).astype(float)})
    rec = recommend(rules, ("uniform", "none"), S.SEX, Constraints(0.05, 0.10, 0.05), seed=0, n_boot=40)
    assert rec.chosen is None and "fnr" in rec.candidates.set_index("rule").loc["uniform + men_up", "fails"]
    answered = Verdict("k", "primary", "tpr_signed", S.SEX, "uniform + men_up", "uniform + none", 0.3, 0.1, 0.5,
                       0.05, 0.001, 0.002, "established", 1, "", 0.1, False, 1)
    ctx = SimpleNamespace(analyses={"pipeline.fairness.recommendation.recommendation": rec},
                          verdicts=Verdicts([answered], {"groups": ["F", "M"]}),
                          config=SimpleNamespace(training=SimpleNamespace(seeds=[0])), detail_seed=0)
    text = verdicts.recommendation_text(ctx)
    worse = rec.candidates.set_index("rule").loc["uniform + men_up", "fnr_increase"]
    assert "dont l'effet est établi" in text and "sous-diagnostic aggravé dans un groupe" in text
    from pipeline.report import french as fr

    assert f"{fr.points(worse)} au pire" in text and worse > 0.05
