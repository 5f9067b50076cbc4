"""Seed-aware paired differences (pipeline/fairness/inference.py): every source of variance, checked by simulation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as t_dist

from pipeline.data import schema as S
from pipeline.fairness.inference import combine, seed_aware_difference
from pipeline.fairness.metrics import DECISION

# A population where the truth is known: scores N(mu[sex, label], 1), one to three images per patient with
# a patient effect; a rule decides malade above its threshold, and each training seed moves a rule's
# threshold by N(0, SEED_SD) (what another training run does to a model's operating point).
MU = {("F", 0): -0.6, ("F", 1): 0.5, ("M", 0): -0.6, ("M", 1): 0.9}
THRESHOLD = {"reference": 0.0, "treated": -0.25}
SEED_SD, PATIENT_SD = 0.25, 0.5


def _patients(rng: np.random.Generator, n: int) -> pd.DataFrame:
    sizes = rng.integers(1, 4, n)
    sex = np.repeat(rng.choice(["F", "M"], n), sizes)
    label = np.repeat((rng.random(n) < 0.5).astype(int), sizes)
    mu = np.array([MU[(s, y)] for s, y in zip(sex, label, strict=True)])
    score = mu + np.repeat(rng.normal(0, PATIENT_SD, n), sizes) + rng.normal(0, math.sqrt(1 - PATIENT_SD ** 2),
                                                                            len(sex))
    return pd.DataFrame({S.IMAGE: [f"{i}.png" for i in range(len(sex))], S.PATIENT: np.repeat(np.arange(n), sizes),
                         S.LABEL: label, S.SEX: sex, "score": score})


def _decide(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    return frame.assign(**{DECISION: (frame["score"] >= threshold).astype(float)})


def _true_difference(metric: str, n_seed_draws: int = 40_000, thresholds: dict[str, float] = THRESHOLD) -> float:
    """E over training seeds of the population's (treated - reference) metric, scores Gaussian."""
    rng = np.random.default_rng(123)
    phi = NormalDist().cdf

    def value(t: np.ndarray) -> np.ndarray:
        tpr = {s: 1 - np.vectorize(phi)(t - MU[(s, 1)]) for s in "FM"}
        fpr = {s: 1 - np.vectorize(phi)(t - MU[(s, 0)]) for s in "FM"}
        if metric == "tpr_signed":
            return tpr["F"] - tpr["M"]
        return ((tpr["F"] + tpr["M"]) / 2 + 1 - (fpr["F"] + fpr["M"]) / 2) / 2  # balanced accuracy, equal sexes

    draws = {r: thresholds[r] + rng.normal(0, SEED_SD, n_seed_draws) for r in thresholds}
    return float(np.mean(value(draws["treated"]) - value(draws["reference"])))


def _study(rng: np.random.Generator, n_seeds: int, metric: str, thresholds: dict[str, float] = THRESHOLD):
    frame = _patients(rng, 250)
    offsets = {r: rng.normal(0, SEED_SD, n_seeds) for r in thresholds}
    treated = [_decide(frame, thresholds["treated"] + e) for e in offsets["treated"]]
    reference = [_decide(frame, thresholds["reference"] + e) for e in offsets["reference"]]
    return seed_aware_difference(treated, reference, S.SEX, metric, n_boot=200, seed=int(rng.integers(1 << 30)),
                                 score_col=None, min_per_class=5)


@pytest.mark.parametrize("metric", ["balanced_accuracy", "tpr_signed"])
def test_seed_aware_intervals_cover_the_truth_and_patient_only_intervals_do_not(metric: str):
    truth = _true_difference(metric)
    rng = np.random.default_rng(7)
    covered, covered_patients_only = [], []
    for _ in range(150):
        d = _study(rng, 3, metric)
        covered.append(d.low <= truth <= d.high)
        half = NormalDist().inv_cdf(0.975) * math.sqrt(d.bootstrap_variance)
        covered_patients_only.append(abs(d.estimate - truth) <= half)
    coverage, naive = np.mean(covered), np.mean(covered_patients_only)
    assert 0.91 <= coverage <= 0.995, (coverage, naive, truth)
    assert naive < coverage - 0.08, (coverage, naive)  # leaving the training runs out under-covers


def test_the_seed_aware_test_keeps_its_level_when_the_rules_differ_only_by_training_noise():
    """Two rules with the same expected threshold: only the seeds and the patients differ. Rejections at 5 %
    stay near 5 % (a patient-only test rejects far more often: the seeds' differences look like effects)."""
    rng = np.random.default_rng(11)
    null = {"treated": 0.0, "reference": 0.0}
    rejected, rejected_patients_only = [], []
    for _ in range(200):
        d = _study(rng, 3, "balanced_accuracy", null)
        rejected.append(d.p_value < 0.05)
        rejected_patients_only.append(abs(d.estimate) / math.sqrt(d.bootstrap_variance) > NormalDist().inv_cdf(0.975))
    assert np.mean(rejected) <= 0.07, np.mean(rejected)
    assert np.mean(rejected_patients_only) > 2 * 0.05, np.mean(rejected_patients_only)  # measured 0.125 (0.01 above)


def test_the_parts_of_the_variance_and_the_degrees_of_freedom():
    rng = np.random.default_rng(0)
    per_seed = np.array([0.10, 0.02, 0.06])
    replicates = per_seed[:, None] + rng.normal(0, 0.03, (1, 400))  # one resample shifts every seed alike
    estimate, low, high, p, boot, between, df = combine(per_seed, replicates)
    assert estimate == pytest.approx(0.06)
    assert boot == pytest.approx(np.var(replicates.mean(axis=0), ddof=1))
    assert between == pytest.approx(np.var(per_seed, ddof=1))
    total = boot + between / 3
    assert df == pytest.approx(total ** 2 / (boot ** 2 / 399 + (between / 3) ** 2 / 2))  # B - 1 and S - 1 df
    assert high - low > 2 * NormalDist().inv_cdf(0.975) * math.sqrt(total)  # t with few df: wider than normal
    assert 0 < p < 1
    one = combine(per_seed[:1], replicates[:1])  # one seed: the patient bootstrap alone, t with B - 1 df
    assert math.isnan(one[5]) and one[6] == pytest.approx(399)
    assert one[2] - one[1] == pytest.approx(2 * t_dist.ppf(0.975, 399) * math.sqrt(one[4]))
    few = combine(per_seed[:1], replicates[:1, :10])  # ten refits: a t with 9 df, as wide as it must be
    assert few[6] == pytest.approx(9) and few[2] - few[1] > 2.2 * 2 * math.sqrt(few[4])
    same = combine(np.zeros(3), np.zeros((3, 50)))  # identical decisions: no difference, no interval width
    assert same[:4] == (0.0, 0.0, 0.0, 1.0)


def _true_level(threshold: float, seed_sd: float, n_seed_draws: int = 40_000) -> float:
    """E over training seeds of the population's balanced accuracy of a rule at `threshold` (+ the seed's move)."""
    rng = np.random.default_rng(321)
    phi = np.vectorize(NormalDist().cdf)
    t = threshold + rng.normal(0, seed_sd, n_seed_draws)
    tpr = {s: 1 - phi(t - MU[(s, 1)]) for s in "FM"}
    fpr = {s: 1 - phi(t - MU[(s, 0)]) for s in "FM"}
    return float(np.mean(((tpr["F"] + tpr["M"]) / 2 + 1 - (fpr["F"] + fpr["M"]) / 2) / 2))


def test_a_headline_level_over_seeds_covers_the_truth_where_one_runs_bootstrap_does_not():
    """The reference's own balanced accuracy (« level » verdicts, what the headline quotes): mean over five
    seeds with the seed-aware interval covers E_seeds[population BA] about 95 % of the time; one run's
    patient-bootstrap interval (what the headline quoted before) covers it far less often. The operating point
    sits off the optimum, where a seed's move changes the accuracy (as the demo's 0.77-0.90 across seeds)."""
    from pipeline.fairness.inference import level_verdicts, rule_run
    from pipeline.fairness.metrics import _design, draw_counts

    threshold, seed_sd = 0.8, 0.4
    truth = _true_level(threshold, seed_sd)
    rng = np.random.default_rng(5)
    covered, one_run = [], []
    for _ in range(120):
        frame = _patients(rng, 250)
        n_clusters = _design(frame.assign(**{DECISION: 0.0}), S.SEX, DECISION, None).n_clusters
        draws = draw_counts(n_clusters, 200, int(rng.integers(1 << 30)))
        runs = [rule_run(_decide(frame, threshold + e), S.SEX, draws, score_col=None, min_per_class=5)
                for e in rng.normal(0, seed_sd, 5)]
        v = level_verdicts({"reference": runs}, ["reference"], ["balanced_accuracy"], S.SEX)[0]
        assert v.status == "descriptive" and v.estimate == pytest.approx(np.mean(v.per_seed))
        covered.append(v.low <= truth <= v.high)
        low, high = np.percentile(runs[0].replicates["balanced_accuracy"], [2.5, 97.5])
        one_run.append(low <= truth <= high)
    assert 0.90 <= np.mean(covered) <= 0.995, np.mean(covered)
    assert np.mean(one_run) < np.mean(covered) - 0.1, (np.mean(one_run), np.mean(covered))


def test_per_group_rates_over_seeds_cover_the_truth_and_count_the_same_images():
    """The per-group rates the charts and the sentences show (`group_rates_over_seeds`): the women's sensitivity,
    mean over five seeds whose operating points move, covers E_seeds[population TPR of women] about 95 % of the
    time, and its counts are the group's images (the same for every seed)."""
    from pipeline.fairness.inference import group_rates_over_seeds, rule_run
    from pipeline.fairness.metrics import _design, draw_counts, group_metrics

    threshold, seed_sd = 0.8, 0.4
    phi = np.vectorize(NormalDist().cdf)
    truth = float(np.mean(1 - phi(threshold + np.random.default_rng(321).normal(0, seed_sd, 40_000) - MU[("F", 1)])))
    rng = np.random.default_rng(6)
    covered, one_run = [], []
    for _ in range(100):
        frame = _patients(rng, 250)
        n_clusters = _design(frame.assign(**{DECISION: 0.0}), S.SEX, DECISION, None).n_clusters
        draws = draw_counts(n_clusters, 200, int(rng.integers(1 << 30)))
        decided = [_decide(frame, threshold + e) for e in rng.normal(0, seed_sd, 5)]
        runs = [rule_run(d, S.SEX, draws, score_col=None, min_per_class=5) for d in decided]
        rates = group_rates_over_seeds(runs, decided[0], S.SEX, min_per_class=5).set_index(["group", "metric"])
        women = rates.loc[("F", "tpr")]
        per_seed = [group_metrics(d, S.SEX, DECISION, None, min_per_class=5).loc["F", "tpr"] for d in decided]
        assert women["estimate"] == pytest.approx(np.mean(per_seed))
        assert women["n_positive"] == ((frame[S.SEX] == "F") & (frame[S.LABEL] == 1)).sum()
        assert rates.loc[("F", "fnr"), "estimate"] == pytest.approx(1 - women["estimate"])
        covered.append(women["low"] <= truth <= women["high"])
        low, high = np.percentile(runs[0].replicates["group:tpr"][:, runs[0].groups.index("F")], [2.5, 97.5])
        one_run.append(low <= truth <= high)
    assert 0.85 <= np.mean(covered) <= 0.99, np.mean(covered)  # 0.92 over 400 studies
    assert np.mean(one_run) < np.mean(covered) - 0.1, (np.mean(one_run), np.mean(covered))
