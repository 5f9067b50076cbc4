"""Post-processing: fitted and scored on disjoint patients, shrinks a planted TPR gap, full grid."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from pipeline import postprocess as P
from pipeline.grid import pareto_frontier, run_grid
from pipeline.metrics import point_metrics


def planted(seed: int = 0, n_patients: int = 400, gap: float = 1.5) -> pd.DataFrame:
    """Predictions with several images per patient where sick women get lower scores (a TPR gap)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, n_patients)
    patient = np.repeat(np.arange(n_patients), sizes)
    sex = np.where(rng.random(n_patients) < 0.5, "F", "M")[patient]
    y = (rng.random(len(patient)) < 0.5).astype(int)
    logit = rng.normal(0, 1, len(patient)) + np.where(y == 1, 1.5 - gap * (sex == "F"), -1.0)
    return pd.DataFrame({"Image Index": [f"{i:05d}.png" for i in range(len(patient))],
                         "patient": patient.astype(str), "sex": sex, "label": y,
                         "proba": 1 / (1 + np.exp(-logit))})


def _tpr_gap(preds: pd.DataFrame, method: str) -> float:
    fit, score = P.split_fit_score(preds, 0.5, 0, "sex")
    decided = score.assign(decision=P.POSTPROCESSORS[method].fit(fit, "sex", 0)(score))
    return point_metrics(decided, "sex", score_col=None)["eopp_diff"]


@pytest.mark.parametrize("method", ["to_equalized_odds", "equal_opportunity", "to_tpr_parity"])
def test_equalising_methods_shrink_the_planted_tpr_gap_on_the_scoring_part(method: str):
    preds = planted()
    before = min(_tpr_gap(preds, "none"), _tpr_gap(preds, "threshold_global"))
    assert before > 0.2
    assert _tpr_gap(preds, method) < before / 2


def test_fit_and_score_parts_are_patient_disjoint_and_stratified():
    preds = planted()
    fit, score = P.split_fit_score(preds, 0.5, 0, "sex")
    assert not set(fit["patient"]) & set(score["patient"])
    assert len(fit) + len(score) == len(preds)
    assert abs(fit["label"].mean() - score["label"].mean()) < 0.1


def test_no_postprocessor_sees_its_scoring_patients(monkeypatch: pytest.MonkeyPatch):
    seen: dict[str, set[str]] = {}
    for name, pp in list(P.POSTPROCESSORS.items()):
        def spy(fit, attribute, seed, _fit=pp.fit, _name=name):
            seen.setdefault(_name, set()).update(fit["patient"])
            return _fit(fit, attribute, seed)
        monkeypatch.setitem(P.POSTPROCESSORS, name, pp.__class__(**{**pp.__dict__, "fit": spy}))
    preds = {"uniform": planted(1), "class_balanced": planted(1).assign(proba=lambda d: d["proba"] ** 0.8)}
    grid = run_grid(preds, list(P.POSTPROCESSORS), "sex", 0.5, 0, n_boot=20, boot_seed=0)
    assert set(seen) == set(P.POSTPROCESSORS)
    for name, patients in seen.items():
        assert patients <= grid.fit_patients and not patients & grid.score_patients, name
    scored = {p for d in grid.decisions.values() for p in d["patient"]}
    assert scored == grid.score_patients


def test_the_grid_has_every_combination_with_intervals():
    preds = {w: planted(2) for w in ("uniform", "reweighing", "jtt")}
    grid = run_grid(preds, ["threshold_global", "to_equalized_odds", "reject_option"], "sex", 0.5, 0, 50, 0)
    combos = set(zip(grid.table["weighting"], grid.table["postprocessor"], strict=True))
    assert combos == {(w, p) for w in preds for p in ("none", "threshold_global", "to_equalized_odds",
                                                        "reject_option")}
    assert (grid.table["balanced_accuracy_low"] <= grid.table["balanced_accuracy"]).all()
    base = grid.table[(grid.table["weighting"] == "uniform") & (grid.table["postprocessor"] == "none")]
    assert float(base["eo_diff_diff"].iloc[0]) == 0.0  # the baseline against itself
    assert grid.table["frontier_eo_diff"].any()


def test_threshold_optimizer_expected_decisions_match_the_average_of_draws():
    preds = planted(3)
    fit, score = P.split_fit_score(preds, 0.5, 0, "sex")
    expected = P.POSTPROCESSORS["to_equalized_odds"].fit(fit, "sex", 0)(score)
    from fairlearn.postprocessing import ThresholdOptimizer

    opt = ThresholdOptimizer(estimator=P._ScoreEstimator().fit(None, None), constraints="equalized_odds",
                             objective="balanced_accuracy_score", prefit=True, predict_method="predict_proba")
    opt.fit(fit[["proba"]].to_numpy(), fit["label"].to_numpy(), sensitive_features=fit["sex"].to_numpy())
    draws = np.mean([opt.predict(score[["proba"]].to_numpy(), sensitive_features=score["sex"].to_numpy(),
                                 random_state=k) for k in range(300)], axis=0)
    assert np.abs(draws - expected).mean() < 0.03
    assert ((expected > 0) & (expected < 1)).any()  # randomised somewhere


def test_global_threshold_maximises_balanced_accuracy_on_the_fitting_part():
    fit, _ = P.split_fit_score(planted(4), 0.5, 0, "sex")
    s, y = fit["proba"].to_numpy(), fit["label"].to_numpy()
    brute = max(np.unique(s), key=lambda t: ((s >= t)[y == 1].mean() + 1 - (s >= t)[y == 0].mean()) / 2)
    assert P._best_threshold(s, y) == pytest.approx(brute)


def test_a_group_with_one_class_in_the_fitting_part_falls_back_without_crashing():
    preds = planted(5)
    preds.loc[preds.index[:30], "sex"] = "X"
    preds.loc[preds["sex"] == "X", "label"] = 0
    fit, score = P.split_fit_score(preds, 0.5, 0, "sex")
    for name, pp in P.POSTPROCESSORS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = pp.fit(fit, "sex", 0)(score)
        assert d.shape == (len(score),) and np.all((d >= 0) & (d <= 1)), name


def test_pareto_frontier_keeps_exactly_the_non_dominated_rows():
    table = pd.DataFrame({"gap": [0.1, 0.2, 0.05, 0.3], "bacc": [0.8, 0.85, 0.7, 0.8]})
    assert pareto_frontier(table, "gap", "bacc").tolist() == [True, True, True, False]
