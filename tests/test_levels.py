"""The statistics keep their level: simulations with a known truth (vectorised, a few hundred replicates).

- no true gap: the signed two-group interval contains 0 about 95 % of the time (the old max - min
  interval almost never does), and the Wald test of equal rates rejects about 5 % of the time, for
  two and for three groups;
- a known gap: the signed interval contains it about 95 % of the time;
- no method differs from the baseline: the corrected marks (Benjamini-Hochberg, q = 0.10) fire in at most
  10 % of the tables, and uncorrected tests would fire far more often; with real effects among the
  comparisons, the share of false discoveries among the marks stays under 10 % on average;
- the grid's few refits per seed: a normal reference would reject a true null about 8 % of the time, the
  seed-aware t reference (the bootstrap's B - 1 and the seeds' S - 1 degrees of freedom) keeps 5 %, and so
  does its test of equal group rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness import metrics as M

N_SIM = 160
N_BOOT = 150


def simulate(rng: np.random.Generator, n_patients: int = 300, groups: tuple[str, ...] = ("F", "M"),
             tpr: dict[str, float] | None = None, fpr: float = 0.3) -> pd.DataFrame:
    """1 or 2 images per patient (a patient effect on the decision); P(decision | label, group) known."""
    tpr = tpr or dict.fromkeys(groups, 0.7)
    per = rng.integers(1, 3, n_patients)
    pat = np.repeat(np.arange(n_patients), per)
    g = rng.choice(groups, n_patients)[pat]
    y = (rng.random(n_patients) < 0.5).astype(int)[pat]
    shift = rng.normal(0, 0.5, n_patients)[pat]  # decisions of one patient's images are correlated
    base = np.where(y == 1, np.array([tpr[a] for a in g]), fpr)
    p = 1 / (1 + np.exp(-(np.log(base / (1 - base)) + shift)))
    d = (rng.random(len(pat)) < p).astype(float)
    return pd.DataFrame({S.IMAGE: [f"{i}.png" for i in range(len(pat))], S.LABEL: y, M.DECISION: d,
                         S.PATIENT: pat.astype(str), S.SEX: g, "p": p})


def _replicates(frame: pd.DataFrame, seed: int) -> tuple[M._Design, dict, dict]:
    design = M._design(frame, S.SEX, M.DECISION, None)
    point = M._replicate(design, np.ones((1, design.n_clusters)))
    reps = M.replicates_of(design, M.draw_counts(design.n_clusters, N_BOOT, seed))
    return design, point, reps


def _population_tpr_gap(tpr: dict[str, float], n: int = 400_000) -> float:
    """F - M TPR of the simulated population (the patient effect makes it differ from tpr[F] - tpr[M])."""
    rng = np.random.default_rng(99)
    shift = rng.normal(0, 0.5, n)
    rate = {a: np.mean(1 / (1 + np.exp(-(np.log(t / (1 - t)) + shift)))) for a, t in tpr.items()}
    return rate["F"] - rate["M"]


def test_no_gap_signed_interval_covers_zero_and_the_wald_test_keeps_its_level():
    rng = np.random.default_rng(0)
    signed_covers, spread_covers, rejects = [], [], []
    for k in range(N_SIM):
        _, point, reps = _replicates(simulate(rng), k)
        low, high, _ = M._interval(reps["tpr_signed"])
        signed_covers.append(low <= 0 <= high)
        low, high, _ = M._interval(reps["eopp_diff"])
        spread_covers.append(low <= 0 <= high)
        estimate = {m: point[f"group:{m}"][0] for m in ("tpr", "fpr", "selection_rate")}
        rejects.append(M.equal_rates_test(estimate, reps, ("tpr",)) < 0.05)
    assert 0.90 <= np.mean(signed_covers) <= 0.99
    assert np.mean(spread_covers) < 0.2  # the max - min interval the report used to show
    assert 0.01 <= np.mean(rejects) <= 0.09


def test_wald_test_of_equal_rates_keeps_its_level_with_three_groups_and_detects_a_gap():
    rng = np.random.default_rng(1)
    null, planted = [], []
    for k in range(N_SIM // 2):
        for out, tpr in ((null, None), (planted, {"a": 0.45, "b": 0.7, "c": 0.7})):
            _, point, reps = _replicates(simulate(rng, groups=("a", "b", "c"), tpr=tpr), k)
            estimate = {m: point[f"group:{m}"][0] for m in ("tpr", "fpr", "selection_rate")}
            out.append(M.equal_rates_test(estimate, reps, ("tpr", "fpr")) < 0.05)
    assert np.mean(null) <= 0.11
    assert np.mean(planted) >= 0.6


def test_a_known_gap_is_covered_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    tpr = {"F": 0.6, "M": 0.75}
    truth = _population_tpr_gap(tpr)
    covers = []
    for k in range(N_SIM):
        _, _, reps = _replicates(simulate(rng, tpr=tpr), k)
        low, high, _ = M._interval(reps["tpr_signed"])
        covers.append(low <= truth <= high)
    assert 0.90 <= np.mean(covers) <= 0.99


def _table(rng: np.random.Generator, k: int, effects: tuple[float, ...], n_boot: int = N_BOOT) -> pd.DataFrame:
    """A comparison table: methods whose decisions are fresh draws from the baseline's distribution, each
    detecting sick patients with probability shifted by its effect (0: no effect)."""
    base = simulate(rng)
    methods = {"base": base}
    for j, effect in enumerate(effects):
        p = np.clip(base["p"] + np.where(base[S.LABEL] == 1, effect, 0.0), 0, 1)
        methods[f"m{j}"] = base.assign(**{M.DECISION: (rng.random(len(base)) < p).astype(float)})
    designs = {m: M._design(p, S.SEX, M.DECISION, None) for m, p in methods.items()}
    draws = M.draw_counts(designs["base"].n_clusters, n_boot, k)
    reps = {m: M.replicates_of(d, draws) for m, d in designs.items()}
    points = {m: {s: float(M._replicate(d, np.ones((1, d.n_clusters)))[s][0]) for s in M.SUMMARY}
              for m, d in designs.items()}
    groups = {m: M._group_estimate(d) for m, d in designs.items()}
    return M.comparison_table(points, reps, groups, "base", TESTED)


TESTED = ("balanced_accuracy", "eopp_diff", "tpr_signed", "dp_diff", "sr_signed")


def test_corrected_marks_fire_in_at_most_10_percent_of_tables_when_nothing_differs():
    """Three methods with no effect: with every null true the false discovery rate is the chance of any mark."""
    rng = np.random.default_rng(3)
    any_mark, any_raw = [], []
    for k in range(N_SIM):
        table = _table(rng, k, (0.0, 0.0, 0.0))
        any_mark.append(bool(table["significant"].any()))
        family = table[(table["method"] != "base") & table["metric"].isin(TESTED)]
        any_raw.append(bool((family["p"] < 0.05).any()))
    assert np.mean(any_mark) <= 0.14  # q = 0.10 plus simulation error (160 tables)
    assert np.mean(any_raw) > 2 * max(np.mean(any_mark), 0.03)  # without the correction: many more


def test_the_false_discovery_rate_stays_under_10_percent_with_real_effects_among_the_comparisons():
    """One method truly detects more sick patients (BA and the TPR change), two do not: among the marks, the
    share that falls on the two null methods averages at most 10 %, and the real effect is found."""
    rng = np.random.default_rng(4)
    shares, found = [], []
    for k in range(N_SIM):
        table = _table(rng, k, (0.3, 0.0, 0.0))
        marked = table[table["significant"].astype(bool)]
        shares.append(float(marked["method"].isin(["m1", "m2"]).mean()) if len(marked) else 0.0)
        found.append(bool(marked["method"].eq("m0").any()))
    assert np.mean(shares) <= 0.12, np.mean(shares)
    assert np.mean(found) >= 0.8, np.mean(found)


def _established(table: pd.DataFrame) -> pd.DataFrame:
    """The rule every exploratory table marks with (fairness.exploratory.established_at) over the family."""
    from pipeline.fairness.exploratory import established_at

    family = table[(table["method"] != "base") & table["metric"].isin(TESTED)].copy()
    family["p_adj"] = M.adjust(family["p"].to_numpy(float))
    family["marked"] = [established_at(p, M.EXPLORATORY_Q, lo, hi) for p, lo, hi in
                        zip(family["p_adj"], family["diff_low"], family["diff_high"], strict=True)]
    return family


def test_the_tables_rule_keeps_the_false_discovery_rate_and_never_marks_an_interval_containing_zero():
    """Benjamini-Hochberg's discoveries kept only where the shown 95 % interval excludes 0: with one real
    effect among three methods the share of false marks averages at most 10 %, the effect is found, and no
    marked cell's interval contains 0 (BH alone at q = 0.10 marks some: p between 0.05 and 0.10)."""
    rng = np.random.default_rng(8)
    shares, found, bh_alone = [], [], 0
    for k in range(N_SIM):
        family = _established(_table(rng, k, (0.3, 0.0, 0.0)))
        marked = family[family["marked"]]
        shares.append(float(marked["method"].isin(["m1", "m2"]).mean()) if len(marked) else 0.0)
        found.append(bool(marked["method"].eq("m0").any()))
        assert not ((marked["diff_low"] <= 0) & (marked["diff_high"] >= 0)).any()
        bh_alone += int(((family["p_adj"] < M.EXPLORATORY_Q) & (family["diff_low"] <= 0)
                         & (family["diff_high"] >= 0)).sum())
    assert np.mean(shares) <= 0.12, np.mean(shares)
    assert np.mean(found) >= 0.8, np.mean(found)
    assert bh_alone > 0  # the case the interval condition removes does occur


def _seed_runs(rng: np.random.Generator, n_seeds: int, n_refit: int, seed_sd: float, patient_sd: float = 0.03):
    """Per-seed point differences and their replicates (S, B) under no true difference: the evaluation patients'
    draw shifts every seed alike, each training adds its own shift, and one resample shifts every seed alike."""
    per_seed = rng.normal(0, patient_sd) + rng.normal(0, seed_sd, n_seeds)
    return per_seed, per_seed[:, None] + rng.normal(0, patient_sd, (1, n_refit))


def test_with_few_refits_the_seed_aware_test_keeps_its_level_where_a_normal_reference_does_not():
    """The grid refits every rule in a few resamples per seed: the bootstrap variance is then estimated from
    B - 1 degrees of freedom, which `combine` counts (Welch-Satterthwaite with the seeds' S - 1). With 10 refits
    and seeds that add nothing, a normal reference rejects a true null about 8 % of the time."""
    from statistics import NormalDist

    from pipeline.fairness.inference import combine

    rng = np.random.default_rng(5)
    rejected, normal = [], []
    for _ in range(4000):
        per_seed, reps = _seed_runs(rng, 5, 10, seed_sd=0.0)
        estimate, _, _, p, boot, between, _ = combine(per_seed, reps)
        rejected.append(p < 0.05)
        normal.append(abs(estimate) / np.sqrt(boot + between / 5) > NormalDist().inv_cdf(0.975))
    assert abs(np.mean(rejected) - 0.05) < 0.012, np.mean(rejected)
    assert np.mean(normal) > 0.07, np.mean(normal)
    rng = np.random.default_rng(6)  # the grid's design: 5 seeds that differ, 20 refits each
    rejected = [combine(*_seed_runs(rng, 5, 20, seed_sd=0.03))[3] < 0.05 for _ in range(3000)]
    assert np.mean(rejected) <= 0.07, np.mean(rejected)


def test_the_seed_aware_test_of_equal_rates_keeps_its_level_with_two_contrasts():
    """The grid's test of equal group rates over TPR and FPR (two contrasts), over 5 seeds with 20 refits each:
    each contrast is tested as `combine` tests a difference, Bonferroni over the two keeps 5 %; and it detects
    a real gap. The groups' rates drawn with no difference between them (then with one)."""
    from pipeline.fairness.inference import RuleRun, equal_rates_over_seeds

    def runs(rng: np.random.Generator, gap: float) -> list[RuleRun]:
        out = []
        shift = rng.normal(0, 0.03, 2)  # the evaluation patients' draw, shared by every seed
        resampled = rng.multivariate_normal([0, 0], [[1, 0.4], [0.4, 1]], 20) * 0.03  # one resample: every seed
        for _ in range(5):
            own = shift + rng.normal(0, 0.02, 2)
            reps = own[None, :] + resampled
            rates = {"tpr": np.array([0.7, 0.7 + gap + own[0]]), "fpr": np.array([0.3, 0.3 + own[1]])}
            replicates = {"group:tpr": np.column_stack([np.full(20, 0.7), 0.7 + gap + reps[:, 0]]),
                          "group:fpr": np.column_stack([np.full(20, 0.3), 0.3 + reps[:, 1]]),
                          "balanced_accuracy": np.zeros(20)}
            out.append(RuleRun({}, rates, replicates, ("F", "M"), np.zeros(1)))
        return out

    rng = np.random.default_rng(7)
    rejects = [equal_rates_over_seeds(runs(rng, 0.0), ("tpr", "fpr")) < 0.05 for _ in range(2000)]
    assert 0.01 < np.mean(rejects) <= 0.06, np.mean(rejects)
    found = [equal_rates_over_seeds(runs(rng, 0.25), ("tpr", "fpr")) < 0.05 for _ in range(200)]
    assert np.mean(found) > 0.8, np.mean(found)
