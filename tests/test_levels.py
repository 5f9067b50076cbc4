"""The statistics keep their level: simulations with a known truth (vectorised, a few hundred replicates).

- no true gap: the signed two-group interval contains 0 about 95 % of the time (the old max - min
  interval almost never does), and the Wald test of equal rates rejects about 5 % of the time, for
  two and for three groups;
- a known gap: the signed interval contains it about 95 % of the time;
- no method differs from the baseline: the Holm-corrected stars fire in about 5 % of the tables
  (family-wise), and uncorrected z-tests would fire far more often.
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


def test_holm_corrected_stars_fire_in_about_5_percent_of_tables_when_nothing_differs():
    """Three methods whose decisions are fresh draws from the baseline's distribution (no effect)."""
    rng = np.random.default_rng(3)
    any_star, any_raw = [], []
    tested = ("balanced_accuracy", "eopp_diff", "tpr_signed", "dp_diff", "sr_signed")
    for k in range(N_SIM):
        base = simulate(rng)
        methods = {"base": base}
        for j in range(3):
            methods[f"m{j}"] = base.assign(**{M.DECISION: (rng.random(len(base)) < base["p"]).astype(float)})
        designs = {m: M._design(p, S.SEX, M.DECISION, None) for m, p in methods.items()}
        draws = M.draw_counts(designs["base"].n_clusters, N_BOOT, k)
        reps = {m: M.replicates_of(d, draws) for m, d in designs.items()}
        points = {m: {s: float(M._replicate(d, np.ones((1, d.n_clusters)))[s][0]) for s in M.SUMMARY}
                  for m, d in designs.items()}
        groups = {m: M._group_estimate(d) for m, d in designs.items()}
        table = M.comparison_table(points, reps, groups, "base", tested)
        any_star.append(bool(table["significant"].any()))
        family = table[(table["method"] != "base") & table["metric"].isin(tested)]
        any_raw.append(bool((family["p"] < 0.05).any()))
    assert np.mean(any_star) <= 0.09
    assert np.mean(any_raw) > 2 * max(np.mean(any_star), 0.03)  # without the correction: many more
