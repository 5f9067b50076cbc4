"""The statistics keep their level: simulations with a known truth (vectorised, a few hundred replicates).

- no true gap: the signed two-group interval contains 0 about 95 % of the time (the old max - min
  interval almost never does), and the Wald test of equal rates rejects about 5 % of the time, for
  two and for three groups;
- a known gap: the signed interval contains it about 95 % of the time;
- no method differs from the baseline: the corrected marks (Benjamini-Hochberg, q = 0.10) fire in at most
  10 % of the tables, and uncorrected tests would fire far more often; with real effects among the
  comparisons, the share of false discoveries among the marks stays under 10 % on average;
- the grid's few refits (10): a normal reference would reject a true null about 9 % of the time, the
  t reference with B - 1 degrees of freedom keeps 5 %.
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


def _table(rng: np.random.Generator, k: int, effects: tuple[float, ...], n_boot: int = N_BOOT,
           normal: bool = False) -> pd.DataFrame:
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
    return M.comparison_table(points, reps, groups, "base", TESTED, normal=normal)


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


def test_with_ten_refits_the_grids_t_reference_keeps_its_level_where_a_normal_one_does_not():
    """The grid's intervals come from 10 refits: a difference over the SD of 10 replicates follows Student's
    t(9), not N(0, 1). A difference and 10 replicates drawn from the same normal law (the truth: no difference)."""
    rng = np.random.default_rng(5)
    draws = rng.normal(0, 0.03, (4000, 11))
    t_level = np.mean([M.difference_p(d[0], d[1:], few=True) < 0.05 for d in draws])
    z_level = np.mean([M.difference_p(d[0], d[1:]) < 0.05 for d in draws])
    assert abs(t_level - 0.05) < 0.012, t_level
    assert z_level > 0.07, z_level  # P(|t9| > 1.96) = 0.082: the grid's stars before
    rng = np.random.default_rng(6)  # and on the grid's own tables (10 replicates), no method differing
    rejects = [_table(rng, k, (0.0,), n_boot=10, normal=True).query("method == 'm0' and metric == "
                                                                     "'balanced_accuracy'")["p"].iloc[0] < 0.05
               for k in range(200)]
    assert np.mean(rejects) <= 0.075, np.mean(rejects)


def test_with_ten_refits_the_test_of_equal_rates_keeps_its_level_with_two_contrasts():
    """The grid's test of equal group rates over TPR and FPR (two contrasts) from 10 refits: the chi-square
    reference rejected a true null about 17 % of the time; Hotelling's F keeps 5 %. Contrasts and 10
    replicates drawn from the same bivariate normal law (no difference between the groups)."""
    rng = np.random.default_rng(7)
    cov = np.array([[1.0, 0.4], [0.4, 1.0]]) * 0.03 ** 2
    rejects, chi2 = [], []
    from scipy import stats
    for _ in range(3000):
        draws = rng.multivariate_normal([0, 0], cov, 11)
        estimate = {"tpr": np.array([0.7, 0.7 + draws[0, 0]]), "fpr": np.array([0.3, 0.3 + draws[0, 1]])}
        reps = {"group:tpr": np.column_stack([np.full(10, 0.7), 0.7 + draws[1:, 0]]),
                "group:fpr": np.column_stack([np.full(10, 0.3), 0.3 + draws[1:, 1]])}
        rejects.append(M.equal_rates_test(estimate, reps, ("tpr", "fpr")) < 0.05)
        diff, boot = draws[0], draws[1:]
        chi2.append(stats.chi2.sf(diff @ np.linalg.inv(np.cov(boot, rowvar=False)) @ diff, 2) < 0.05)
    assert abs(np.mean(rejects) - 0.05) < 0.012, np.mean(rejects)
    assert np.mean(chi2) > 0.12, np.mean(chi2)  # the reference the grid used before
