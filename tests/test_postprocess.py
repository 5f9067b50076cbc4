"""Post-processing: disjoint fit/score patients, a planted TPR gap shrinks, expected decisions, full grid."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import TunedThresholdClassifierCV

from pipeline.fairness import postprocess as P
from pipeline.fairness.grid import pareto_frontier, pareto_table, run_grid
from pipeline.fairness.metrics import point_metrics
from pipeline.fairness.score_model import ScoreEstimator

TO_METHODS = ("to_demographic_parity", "to_equalized_odds", "to_tpr_parity")
GROUP_AWARE = tuple(m for m in P.POSTPROCESSORS if m not in ("none", "threshold_global"))


def planted(seed: int = 0, n_patients: int = 400, gap: float = 1.5) -> pd.DataFrame:
    """1 to 4 images per patient; sick women's scores are shifted down by `gap` (a planted TPR gap)."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), rng.integers(1, 5, n_patients))
    sex = np.where(rng.random(n_patients) < 0.5, "F", "M")[patient]
    y = (rng.random(n_patients) < 0.45).astype(int)[patient]
    logit = rng.normal(0, 1, len(patient)) + np.where(y == 1, 1.5 - gap * (sex == "F"), -1.0)
    return pd.DataFrame({"Image Index": [f"{i:05d}.png" for i in range(len(patient))], "split": "valid",
                         "label": y, "proba": 1 / (1 + np.exp(-logit)), "patient": patient.astype(str),
                         "sex": sex, "age_band": "40-59", "view": "PA"})


def _quiet_fit(method: str, fit: pd.DataFrame) -> P.Decider:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", P.FallbackWarning)
        return P.POSTPROCESSORS[method].fit(fit, "sex", 0)


def _tprs(preds: pd.DataFrame, decision: np.ndarray) -> pd.Series:
    sick = preds["label"] == 1
    return pd.Series(decision[sick.to_numpy()]).groupby(preds.loc[sick, "sex"].to_numpy()).mean()


def _bacc(y: np.ndarray, d: np.ndarray) -> float:
    return (d[y == 1].mean() + 1 - d[y == 0].mean()) / 2


# ---------------------------------------------------------------- protocol


def test_the_split_is_by_patient_disjoint_complete_and_stratified():
    preds = planted()
    fit, score = P.split_fit_score(preds, 0.5, 0, "sex")
    assert not set(fit["patient"]) & set(score["patient"])
    assert len(fit) + len(score) == len(preds)
    table = P.patient_table(preds, ["label", "sex"])
    fit_table = table.loc[sorted(set(fit["patient"]))]
    assert len(fit_table) == pytest.approx(len(table) / 2, abs=1)
    shares = table.value_counts(normalize=True)
    assert (fit_table.value_counts(normalize=True) - shares).abs().max() < 0.02  # label x sex strata kept


def test_a_rare_stratum_does_not_prevent_the_split():
    preds = planted(n_patients=40)
    preds.loc[preds["patient"] == "0", "sex"] = "X"  # a stratum of one patient
    fit, score = P.split_fit_score(preds, 0.3, 1, ("label", "sex"))
    assert len(fit) and len(score) and not set(fit["patient"]) & set(score["patient"])


def _spy_on_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, set[str]]]:
    """Replace every registered fit by one recording (method, patients it receives)."""
    calls: list[tuple[str, set[str]]] = []
    for name, pp in list(P.POSTPROCESSORS.items()):
        def spy(fit, attribute, seed, _fit=pp.fit, _name=name):
            calls.append((_name, set(fit["patient"])))
            return _fit(fit, attribute, seed)
        monkeypatch.setitem(P.POSTPROCESSORS, name, pp.replace(fit=spy))
    return calls


def test_the_grid_cross_fits_every_patient_and_refits_without_the_scored_patients(monkeypatch: pytest.MonkeyPatch):
    calls = _spy_on_fits(monkeypatch)
    base = planted(1, n_patients=120)
    preds = {"uniform": base, "jtt": base.assign(proba=base["proba"] ** 0.8)}
    grid = run_grid(preds, list(P.POSTPROCESSORS), "sex", 3, 0, n_refit=2, boot_seed=0, n_jobs=1)  # spies in-process
    assert grid.n_folds == 3
    # a rule that learns: (point fit + 2 refits) x 3 folds; 'none' learns nothing: its 3 folds once
    assert len(calls) == len(preds) * ((len(P.POSTPROCESSORS) - 1) * 3 * (1 + 2) + 3)
    every = set(base["patient"])
    rest = [every - set(base["patient"][grid.fold == f]) for f in range(3)]
    for name, patients in calls:  # each rule saw only the other folds' patients (a resample of them: refits)
        assert any(patients <= other for other in rest), name
    assert sum(any(patients == other for other in rest) for _, patients in calls) >= len(preds) * len(
        P.POSTPROCESSORS) * 3
    for decided in grid.decisions.values():
        assert set(decided["patient"]) == every == grid.patients


def test_crossfit_decides_every_patient_with_a_rule_fitted_without_them(monkeypatch: pytest.MonkeyPatch):
    calls = _spy_on_fits(monkeypatch)
    preds = planted(2, n_patients=150)
    out = P.crossfit(preds, "to_tpr_parity", "sex", k=4, seed=0)
    assert len(calls) == 4 and out["decision"].between(0, 1).all()
    folds = out.groupby("fold")["patient"].agg(set)
    assert len(folds) == 4 and set().union(*folds) == set(preds["patient"])
    for (_, seen), held in zip(calls, folds, strict=True):
        assert not seen & held and seen | held == set(preds["patient"])


# ---------------------------------------------------------------- what the methods do


@pytest.mark.parametrize("method", ["to_equalized_odds", "equal_opportunity", "to_tpr_parity", "reject_option"])
def test_equalising_methods_shrink_the_planted_tpr_gap_on_the_scoring_part(method: str):
    fit, score = P.split_fit_score(planted(), 0.5, 0, "sex")

    def gap(name: str) -> float:
        decided = score.assign(decision=_quiet_fit(name, fit).decide(score))
        return point_metrics(decided, "sex", score_col=None)["eopp_diff"]

    before = min(gap("none"), gap("threshold_global"))
    assert before > 0.2
    assert gap(method) < before / 2


def test_equal_opportunity_gives_every_group_the_same_tpr_on_the_fitting_part():
    fit, _ = P.split_fit_score(planted(3), 0.5, 0, "sex")
    decider = _quiet_fit("equal_opportunity", fit)
    tprs = _tprs(fit, decider.decide(fit))
    step = 1 / (fit["label"] == 1).groupby(fit["sex"]).sum().min()
    assert tprs.max() - tprs.min() <= step + 1e-9
    assert tprs.min() >= decider.params["tpr"] - 1e-9


def test_equal_opportunity_picks_the_common_tpr_with_the_best_balanced_accuracy():
    fit, _ = P.split_fit_score(planted(3), 0.5, 0, "sex")
    s, y, g = fit["proba"].to_numpy(), fit["label"].to_numpy(), fit["sex"].to_numpy()

    def rule_for(tau: float) -> np.ndarray:  # naive: per group, the highest threshold reaching TPR tau
        t = {a: max(v for v in np.unique(s[(g == a) & (y == 1)]) if np.mean(s[(g == a) & (y == 1)] >= v) >= tau)
             for a in ("F", "M")}
        return (s >= np.array([t[a] for a in g])).astype(float)

    chosen = _bacc(y, _quiet_fit("equal_opportunity", fit).decide(fit))
    others = [_bacc(y, rule_for(tau)) for tau in np.linspace(0.05, 1, 20)]
    assert chosen >= max(others) - 1e-12


def test_best_threshold_matches_brute_force_and_scikit_learn():
    fit, _ = P.split_fit_score(planted(4), 0.5, 0, "sex")
    s, y = fit["proba"].to_numpy(), fit["label"].to_numpy()
    brute = max(np.unique(s), key=lambda t: _bacc(y, (s >= t).astype(float)))
    tuned = TunedThresholdClassifierCV(FrozenEstimator(ScoreEstimator().fit()), scoring="balanced_accuracy",
                                       thresholds=np.unique(s), cv="prefit", refit=False).fit(s[:, None], y)
    assert P.best_threshold(s, y) == pytest.approx(brute) == pytest.approx(tuned.best_threshold_)


def test_global_threshold_is_the_one_standard_error_rule():
    fit, score = P.split_fit_score(planted(4), 0.5, 0, "sex")
    s, y = fit["proba"].to_numpy(), fit["label"].to_numpy()
    decider = P.POSTPROCESSORS["threshold_global"].fit(fit, "sex", 0)
    t = decider.params["threshold"]
    np.testing.assert_array_equal(decider.decide(score), score["proba"] >= t)
    best = P.best_threshold(s, y)
    tpr, fpr = (s[y == 1] >= best).mean(), (s[y == 0] >= best).mean()
    se = 0.5 * np.sqrt(tpr * (1 - tpr) / (y == 1).sum() + fpr * (1 - fpr) / (y == 0).sum())
    within = [c for c in np.append(np.unique(s), 0.5) if _bacc(y, (s >= c).astype(float)) >= _bacc(y, s >= best) - se]
    assert _bacc(y, (s >= t).astype(float)) >= _bacc(y, (s >= best).astype(float)) - se - 1e-12
    assert abs(t - 0.5) == pytest.approx(min(abs(c - 0.5) for c in within))


def test_one_standard_error_rule_keeps_0_5_on_a_flat_curve_and_moves_on_a_clear_shift():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 60)
    calibrated = np.clip(0.5 + np.where(y == 1, 0.15, -0.15) + rng.normal(0, 0.25, 120), 0, 1)
    assert P.stable_threshold(calibrated, y) == 0.5  # the exact argmax is elsewhere, by noise alone
    assert P.best_threshold(calibrated, y) != 0.5
    shifted = np.clip(calibrated + 0.35, 0, 1)  # every score 0.35 too high: 0.5 is clearly wrong
    assert P.stable_threshold(shifted, y) > 0.7
    gain = []  # on new patients from the same model, the rule does at least as well as the exact maximum
    for k in range(200):
        draw = np.random.default_rng(k)
        fit_s, new_s = (np.clip(0.5 + np.where(y == 1, 0.15, -0.15) + draw.normal(0, 0.25, 120), 0, 1)
                        for _ in range(2))
        gain.append(_bacc(y, new_s >= P.stable_threshold(fit_s, y)) - _bacc(y, new_s >= P.best_threshold(fit_s, y)))
    assert np.mean(gain) > 0


@pytest.mark.parametrize("method", TO_METHODS)
def test_threshold_optimizer_expected_decisions_match_the_average_of_random_draws(method: str):
    fit, score = P.split_fit_score(planted(5), 0.5, 0, "sex")
    decider = _quiet_fit(method, fit)
    expected = decider.decide(score)
    X, groups = score[["proba"]].to_numpy(), score["sex"].to_numpy()
    draws = np.mean([decider.model.predict(X, sensitive_features=groups, random_state=k) for k in range(400)],
                    axis=0)
    assert np.abs(draws - expected).max() < 0.1  # 400 Bernoulli draws: sd <= 0.025
    assert np.abs(draws - expected).mean() < 0.01
    assert ((expected > 0.01) & (expected < 0.99)).any()  # randomised somewhere: not hard decisions


def test_tradeoff_curve_relaxes_the_constraint_as_tol_grows():
    fit, score = P.split_fit_score(planted(6), 0.5, 0, "sex")
    tols = (0.0, 0.02, 0.05, 1.0)
    on_fit = P.tradeoff_curve(fit, fit, "sex", "true_positive_rate_parity", tols)
    assert on_fit["tol"].tolist() == list(tols)
    assert (on_fit["eopp_diff"] <= on_fit["tol"] + 1e-9).all()  # the relaxed constraint holds where fitted
    assert on_fit["eopp_diff"].iloc[1] > 0.01  # tol = 0.02 did relax it
    assert on_fit["balanced_accuracy"].is_monotonic_increasing  # a larger feasible set never loses accuracy
    assert len(P.tradeoff_curve(fit, score, "sex", tols=(0.0, 0.5))) == 2
    with pytest.raises(ValueError, match="equalized odds"):
        P.tradeoff_curve(fit, score, "sex", "equalized_odds", (0.1,))


def test_reject_option_flips_decisions_in_the_band_by_group_and_respects_the_accuracy_bound():
    fit, _ = P.split_fit_score(planted(7), 0.5, 0, "sex")
    decider = _quiet_fit("reject_option", fit)
    p = decider.params
    assert p["deprived"] == ["F"] and p["margin"] > 0
    s, g, d = fit["proba"].to_numpy(), fit["sex"].to_numpy(), decider.decide(fit)
    band = np.abs(s - p["theta"]) < p["margin"]
    np.testing.assert_array_equal(d[band], g[band] == "F")
    np.testing.assert_array_equal(d[~band], s[~band] >= p["theta"])
    glob = _quiet_fit("threshold_global", fit).decide(fit)
    y = fit["label"].to_numpy()
    assert _bacc(y, d) >= _bacc(y, glob) - P.ROC_BACC_LOSS - 1e-9
    assert np.ptp(_tprs(fit, d)) < np.ptp(_tprs(fit, glob))


def test_calibrated_eq_odds_equalises_the_generalised_fnr_of_the_groups():
    fit, score = P.split_fit_score(planted(8, gap=0.7), 0.5, 0, "sex")
    decider = _quiet_fit("calibrated_eq_odds", fit)
    p = decider.params
    mixed = {a: (1 - p["alpha"][a]) * p["gfnr"][a] + p["alpha"][a] * (1 - p["base_rate"][a]) for a in ("F", "M")}
    assert p["gfnr"]["F"] > p["gfnr"]["M"] + 0.05  # the planted gap, in generalised FNR
    assert p["alpha"]["F"] == 0 and 0 < p["alpha"]["M"] < 1  # only the better-served group is mixed
    assert mixed["F"] == pytest.approx(mixed["M"])
    d = decider.decide(score)
    assert ((d > 0) & (d < 1)).any() and np.all((d >= 0) & (d <= 1))


# ---------------------------------------------------------------- robustness


def test_decisions_are_expected_decisions_in_0_1_hard_for_deterministic_rules():
    fit, score = P.split_fit_score(planted(9), 0.5, 0, "sex")
    for name, pp in P.POSTPROCESSORS.items():
        d = _quiet_fit(name, fit).decide(score)
        assert d.shape == (len(score),) and np.all((d >= 0) & (d <= 1)), name
        if not pp.randomised:
            assert set(np.unique(d)) <= {0.0, 1.0}, name


@pytest.mark.parametrize("method", GROUP_AWARE)
def test_a_group_with_one_class_or_absent_from_the_fit_falls_back_to_the_global_threshold(method: str):
    preds = planted(10)
    one_class = preds["patient"].astype(int) < 40
    preds.loc[one_class, "sex"] = "X"
    preds.loc[one_class, "label"] = 0
    fit, score = P.split_fit_score(preds, 0.5, 0, "sex")
    score.loc[score.index[:10], "sex"] = "Z"  # never seen when fitting
    score.loc[score.index[10:15], "sex"] = None  # missing value
    with pytest.warns(P.FallbackWarning, match="one class"):
        decider = P.POSTPROCESSORS[method].fit(fit, "sex", 0)
    with pytest.warns(P.FallbackWarning, match="absent"):
        d = decider.decide(score)
    t = _quiet_fit("threshold_global", fit).params["threshold"]
    other = ~score["sex"].isin(["F", "M"]).to_numpy()
    assert other.sum() > 15
    np.testing.assert_array_equal(d[other], score["proba"].to_numpy()[other] >= t)
    assert np.all((d >= 0) & (d <= 1))


def test_a_fitting_part_with_one_class_only_does_not_crash():
    fit, score = P.split_fit_score(planted(11), 0.5, 0, "sex")
    fit = fit[fit["label"] == 0]
    for name in P.POSTPROCESSORS:
        d = _quiet_fit(name, fit).decide(score)
        np.testing.assert_array_equal(d, score["proba"] >= 0.5)


# ---------------------------------------------------------------- grid


def test_the_grid_has_every_combination_with_intervals_and_paired_differences():
    preds = {w: planted(12).assign(proba=lambda d, k=k: d["proba"] ** (1 + k / 4))
             for k, w in enumerate(("uniform", "reweighing", "jtt"))}
    methods = ["threshold_global", "to_equalized_odds", "reject_option", "calibrated_eq_odds"]
    grid = run_grid(preds, methods, "sex", 5, 0, 10, 0)
    t = grid.table
    assert set(zip(t["weighting"], t["postprocessor"], strict=True)) == {(w, m) for w in preds
                                                                         for m in ["none", *methods]}
    assert len(t) == len(preds) * (len(methods) + 1) == len(grid.decisions)
    for m in ("balanced_accuracy", "eo_diff", "eopp_diff"):
        assert ((t[f"{m}_low"] <= t[m] + 1e-12) & (t[m] <= t[f"{m}_high"] + 1e-12)).all(), m
    base = t[(t["weighting"] == "uniform") & (t["postprocessor"] == "none")].iloc[0]
    assert base["eo_diff_diff"] == 0 and base["balanced_accuracy_diff_low"] == 0
    assert not t["eo_diff_significant"].iloc[0] and not base["eo_diff_significant"]
    assert (t.loc[t["randomised"], "randomised_share"] > 0).all() and (t.loc[~t["randomised"] & (t["postprocessor"]
            != "reject_option"), "randomised_share"] == 0).all()
    realised = t[t["postprocessor"] == "to_equalized_odds"]
    assert (realised["eo_diff"] >= realised["eo_diff_expected"] - 1e-9).all()  # realised >= gap of expectations
    assert t.loc[t["postprocessor"] == "none", "auc"].notna().all()
    assert t.loc[t["postprocessor"].isin(["to_equalized_odds", "calibrated_eq_odds"]), "auc"].isna().all()
    for gap in ("eo_diff", "eopp_diff"):
        flagged = t[t[f"frontier_{gap}"]]
        assert len(flagged) and set(pareto_table(grid, gap).index) == set(flagged.index)
        assert grid.best(gap) == pareto_table(grid, gap)["combination"].tolist()


def test_the_grid_refuses_unknown_methods_and_mismatched_images():
    preds = planted(13, n_patients=60)
    with pytest.raises(ValueError, match="unknown post-processing"):
        run_grid({"uniform": preds}, ["magic"], "sex", 5, 0, 2, 0)
    with pytest.raises(ValueError, match="same validation images"):
        run_grid({"uniform": preds, "jtt": preds.iloc[5:]}, ["none"], "sex", 5, 0, 2, 0)


def test_pareto_frontier_keeps_exactly_the_non_dominated_rows():
    table = pd.DataFrame({"gap": [0.1, 0.2, 0.05, 0.3, np.nan, 0.1],
                          "bacc": [0.8, 0.85, 0.7, 0.8, 0.99, 0.8]})
    assert pareto_frontier(table, "gap", "bacc").tolist() == [True, True, True, False, False, True]


# ---------------------------------------------------------------- calibrated equalized odds as published


def _calibrated_toy(groups: dict[str, list[tuple[float, int, int]]]) -> pd.DataFrame:
    """Images with exactly calibrated scores: per group, (score, images, positives) cells."""
    rows = []
    for g, cells in groups.items():
        for score, n, pos in cells:
            rows += [{"proba": score, "label": int(i < pos), "sex": g} for i in range(n)]
    frame = pd.DataFrame(rows)
    return frame.assign(**{"Image Index": [f"{i}.png" for i in range(len(frame))],
                           "patient": [str(i) for i in range(len(frame))]})


def test_calibrated_eq_odds_matches_the_papers_formula_on_a_toy_case():
    """Pleiss et al. (2017), Alg. 1: alpha = (gFNR_1(h_1) - gFNR_2(h_2)) / (gFNR_2(mu_2) - gFNR_2(h_2)),
    gFNR(h) = E[1 - h | y = 1], gFNR(mu) = 1 - mu; computed here by hand from the calibrated cells."""
    toy = _calibrated_toy({"F": [(0.8, 100, 80), (0.2, 100, 20)], "M": [(0.9, 100, 90), (0.3, 100, 30)]})
    gfnr_f = (80 * 0.2 + 20 * 0.8) / 100  # 0.32: the worse-served group, the target
    gfnr_m = (90 * 0.1 + 30 * 0.7) / 120  # 0.25
    mu_m = 120 / 200
    alpha_m = (gfnr_f - gfnr_m) / ((1 - mu_m) - gfnr_m)  # 0.4667
    p = _quiet_fit("calibrated_eq_odds", toy).params
    assert p["gfnr"]["F"] == pytest.approx(gfnr_f, abs=1e-3) and p["gfnr"]["M"] == pytest.approx(gfnr_m, abs=1e-3)
    assert p["alpha"]["F"] == 0 and p["alpha"]["M"] == pytest.approx(alpha_m, abs=5e-3)
    assert p["infeasible"] == []


def test_calibrated_eq_odds_names_an_infeasible_target():
    """M's base rate is 0.9: even its trivial classifier has gFNR 0.1 < F's 0.32, so no mixing can equalise."""
    toy = _calibrated_toy({"F": [(0.8, 100, 80), (0.2, 100, 20)], "M": [(0.95, 100, 95), (0.85, 100, 85)]})
    p = _quiet_fit("calibrated_eq_odds", toy).params
    assert p["infeasible"] == ["M"] and p["alpha"]["M"] == 1
    assert P.mixing_rates({"F": 0.32, "M": 0.25}, {"F": 0.5, "M": 0.6}) == (
        {"F": 0.0, "M": pytest.approx(0.07 / 0.15)}, [])


# ---------------------------------------------------------------- intervals include the refitting


def test_refit_intervals_match_the_spread_over_new_patients():
    """Over independent samples of patients, the SD of the cross-fitted estimate (the truth) matches the
    mean SD of the refitting replicates; replicates that keep the rules fixed are narrower."""
    from pipeline.fairness import metrics as M
    from pipeline.fairness.grid import crossfit_decisions

    estimates, refit_sd, fixed_sd = [], [], []
    for k in range(60):
        preds = planted(100 + k, n_patients=100, gap=1.0)
        fold = P.patient_folds(preds, 5, 0, "sex")
        cluster = M._cluster_index(preds, "patient")
        draws = M.draw_counts(int(cluster.max()) + 1, 10, k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d, _, _ = crossfit_decisions(preds, "equal_opportunity", "sex", fold, 0)
            refits = np.stack([crossfit_decisions(preds, "equal_opportunity", "sex", fold, 0, c[cluster])[0]
                               for c in draws])
        design = M._design(preds.assign(decision=d), "sex", "decision", None)
        estimates.append(M._replicate(design, np.ones((1, design.n_clusters)))["balanced_accuracy"][0])
        refit_sd.append(np.std(M.replicates_of(design, draws, refits)["balanced_accuracy"], ddof=1))
        fixed_sd.append(np.std(M.replicates_of(design, M.draw_counts(design.n_clusters, 200, k))
                               ["balanced_accuracy"], ddof=1))
    truth = np.std(estimates, ddof=1)
    assert 0.75 * truth <= np.mean(refit_sd) <= 1.45 * truth, (truth, np.mean(refit_sd), np.mean(fixed_sd))
    assert np.mean(fixed_sd) < np.mean(refit_sd)


def test_a_degenerate_rule_is_flagged_and_never_on_the_front_nor_the_best():
    """Scores all above 0.5: 'none' calls every image malade, a gap of 0 by levelling down."""
    from pipeline.fairness.grid import best_row

    base = planted(14, n_patients=80)
    preds = {"uniform": base.assign(proba=0.51 + 0.49 * base["proba"])}
    grid = run_grid(preds, ["equal_opportunity"], "sex", 4, 0, 0, 0, n_jobs=1)
    t = grid.table.set_index("postprocessor")
    assert t.loc["none", "degenerate"] and t.loc["none", "degenerate_where"].startswith("tous : malade")
    assert t.loc["none", "eo_diff"] == 0  # the flattering gap the front must not pick
    assert not t.loc["none", "frontier_eo_diff"] and not t.loc["equal_opportunity", "degenerate"]
    assert "uniform + none" not in grid.best("eo_diff")
    assert best_row(grid.table)["postprocessor"] == "equal_opportunity"


def test_no_postprocessing_decides_at_the_operating_threshold_the_predictions_carry():
    """'none' starts where chapter 3 does: the weighting's threshold chosen on inner-validation patients."""
    base = planted(15, n_patients=80)
    carried = base.copy()
    carried.attrs["threshold"] = 0.3
    grid = run_grid({"uniform": carried, "reweighing": base}, ["threshold_global"], "sex", 4, 0, 0, 0, n_jobs=1)
    decided = grid.decisions[("uniform", "none")]
    assert np.array_equal(decided["decision"], (decided["proba"] >= 0.3).astype(float))
    assert {p["threshold"] for p in grid.params[("uniform", "none")]} == {0.3}  # every fold
    plain = grid.decisions[("reweighing", "none")]  # predictions without a threshold: 0.5
    assert np.array_equal(plain["decision"], (plain["proba"] >= 0.5).astype(float))
    assert not np.array_equal(decided["decision"], (decided["proba"] >= 0.5).astype(float))


def test_the_grid_names_a_rule_that_loses_the_separation_only_where_the_reference_has_it(monkeypatch):
    """A rule deciding men by a coin (P(malade) 0.6 whatever the image) is named for men: the reference separates
    them. When the reference's scores say nothing about men either, nobody is named: that is not the rule's doing."""
    def coin_for_men(fit_preds: pd.DataFrame, attribute: str, seed: int) -> P.Decider:
        return P.Decider(lambda p: np.where(p["sex"] == "M", 0.6, (p["proba"] >= 0.5).astype(float)))

    monkeypatch.setitem(P.POSTPROCESSORS, "coin_for_men", P.PostProcessor(
        "coin_for_men", coin_for_men, "Pile ou face (hommes)", "", randomised=True))
    preds = planted(21, gap=0.0)
    rows = run_grid({"uniform": preds}, ["coin_for_men"], "sex", 3, 0, 2, 0, n_jobs=1,
                    attributes=["sex", "view"]).table.set_index("postprocessor")
    assert rows.loc["coin_for_men", "coin_flip_groups"] == "sex=M" and not rows.loc["none", "coin_flip"]
    rng = np.random.default_rng(22)
    blind = preds.assign(proba=np.where(preds["sex"] == "M", rng.random(len(preds)), preds["proba"]))
    rows = run_grid({"uniform": blind}, ["coin_for_men"], "sex", 3, 0, 2, 0, n_jobs=1,
                    attributes=["sex"]).table.set_index("postprocessor")
    assert not rows["coin_flip"].any()
