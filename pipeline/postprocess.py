"""Post-processing registry: rules that turn a trained model's scores into decisions.

Each method is fitted on one set of patients and applied to others (see `split_fit_score`).
`fit(fit_preds, attribute, seed)` returns a Decider whose `decide(preds)` gives the EXPECTED
decision in [0, 1]: 0/1 for deterministic rules, a probability for randomised ones, so that
metrics are expectations over the randomisation rather than one arbitrary draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import TunedThresholdClassifierCV, train_test_split

from . import schema as S

Decider = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class PostProcessor:
    name: str
    fit: Callable[[pd.DataFrame, str, int], Decider]
    label_fr: str
    description_fr: str
    formula: str
    reference: str
    randomised: bool


POSTPROCESSORS: dict[str, PostProcessor] = {}


def register(name: str, label_fr: str, description_fr: str, formula: str, reference: str = "",
             randomised: bool = False) -> Callable:
    def wrap(fn: Callable[[pd.DataFrame, str, int], Decider]) -> Callable:
        POSTPROCESSORS[name] = PostProcessor(name, fn, label_fr, description_fr, formula, reference,
                                             randomised)
        return fn

    return wrap


# ---------------------------------------------------------------- protocol


def split_fit_score(preds: pd.DataFrame, fit_fraction: float, seed: int,
                    attribute: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by PATIENT into a fitting part and a scoring part, stratified on label and group."""
    patients = preds.groupby(S.PATIENT).agg(label=(S.LABEL, "max"),
                                            group=(attribute, lambda s: s.mode().iloc[0] if s.notna().any()
                                                   else "NA"))
    strata = patients["label"].astype(str) + "|" + patients["group"].astype(str)
    if strata.value_counts().min() < 2:
        strata = patients["label"]
    fit_ids, _ = train_test_split(patients.index.to_numpy(), train_size=fit_fraction, random_state=seed,
                                  stratify=strata if strata.value_counts().min() >= 2 else None)
    is_fit = preds[S.PATIENT].isin(set(fit_ids))
    return preds[is_fit].reset_index(drop=True), preds[~is_fit].reset_index(drop=True)


# ---------------------------------------------------------------- helpers


class _ScoreEstimator(ClassifierMixin, BaseEstimator):
    """A 'model' whose input is its own score: lets scikit-learn and fairlearn post-process scores."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> _ScoreEstimator:
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def _X(preds: pd.DataFrame) -> np.ndarray:
    return preds[[S.PROBA]].to_numpy(float)


def _best_threshold(score: np.ndarray, y: np.ndarray) -> float:
    """Threshold maximising balanced accuracy (scikit-learn's TunedThresholdClassifierCV)."""
    if len(np.unique(y)) < 2:
        return 0.5
    tuner = TunedThresholdClassifierCV(FrozenEstimator(_ScoreEstimator().fit(None, None)),
                                       scoring="balanced_accuracy", thresholds=np.unique(score), cv=2,
                                       random_state=0)
    return float(tuner.fit(score[:, None], y).best_threshold_)


def _groups(preds: pd.DataFrame, attribute: str) -> np.ndarray:
    return preds[attribute].astype(str).where(preds[attribute].notna(), "NA").to_numpy()


# ---------------------------------------------------------------- methods


@register("none", "Aucun (seuil 0,5)", "La décision du modèle telle quelle.", r"\hat{y} = 1[s \geq 0{,}5]")
def no_postprocessing(fit: pd.DataFrame, attribute: str, seed: int) -> Decider:
    return lambda p: (p[S.PROBA].to_numpy() >= 0.5).astype(float)


@register("threshold_global", "Seuil global optimisé",
          "Un seul seuil, choisi pour maximiser l'exactitude équilibrée.",
          r"\hat{y} = 1[s \geq t^*], \; t^* = \arg\max_t \mathrm{BA}(t)")
def threshold_global(fit: pd.DataFrame, attribute: str, seed: int) -> Decider:
    t = _best_threshold(fit[S.PROBA].to_numpy(), fit[S.LABEL].to_numpy())
    return lambda p: (p[S.PROBA].to_numpy() >= t).astype(float)


def _threshold_for_tpr(score_pos: np.ndarray, tpr: float) -> float:
    """Largest threshold whose TPR on these positive scores is at least `tpr`."""
    return float(np.quantile(score_pos, 1 - tpr, method="lower")) if len(score_pos) else 0.5


@register("equal_opportunity", "Seuils par groupe (égalité des chances)",
          "Un seuil par groupe, pour que tous les groupes aient la même sensibilité (même sous-diagnostic).",
          r"\hat{y} = 1[s \geq t_a], \; \mathrm{TPR}_a(t_a) = \tau \; \forall a", "hardt2016")
def equal_opportunity(fit: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """Deterministic group thresholds with equal TPR; the common TPR maximises balanced accuracy."""
    y, s, g = fit[S.LABEL].to_numpy(), fit[S.PROBA].to_numpy(), _groups(fit, attribute)
    fallback = _best_threshold(s, y)
    usable = [a for a in np.unique(g) if a != "NA" and len(set(y[g == a])) == 2]
    best: tuple[float, dict[str, float]] = (-1.0, {})
    for tau in np.linspace(0.5, 0.99, 50):
        th = {a: _threshold_for_tpr(s[(g == a) & (y == 1)], tau) for a in usable}
        d = np.array([s[i] >= th.get(g[i], fallback) for i in range(len(s))])
        bacc = (d[y == 1].mean() + 1 - d[y == 0].mean()) / 2
        if bacc > best[0]:
            best = (bacc, th)
    thresholds = best[1]
    _warn_fallback(set(np.unique(g)) - set(usable), "equal_opportunity")

    def decide(p: pd.DataFrame) -> np.ndarray:
        groups = _groups(p, attribute)
        t = np.array([thresholds.get(a, fallback) for a in groups])
        return (p[S.PROBA].to_numpy() >= t).astype(float)

    return decide


def _warn_fallback(groups: set[str], method: str) -> None:
    groups = {a for a in groups if a != "NA"}
    if groups:
        warnings.warn(f"{method}: group(s) {sorted(groups)} lack one class in the fitting part; "
                      "they use the global threshold.", stacklevel=3)


def _threshold_optimizer(constraint: str, tol: float | None = None) -> Callable:
    def fit_to(fit: pd.DataFrame, attribute: str, seed: int) -> Decider:
        g = _groups(fit, attribute)
        y = fit[S.LABEL].to_numpy()
        usable = {a for a in np.unique(g) if len(set(y[g == a])) == 2}
        keep = np.isin(g, list(usable))
        fallback = _best_threshold(fit[S.PROBA].to_numpy(), y)
        _warn_fallback(set(np.unique(g)) - usable, f"ThresholdOptimizer({constraint})")
        opt = ThresholdOptimizer(estimator=_ScoreEstimator().fit(None, None), constraints=constraint,
                                 objective="balanced_accuracy_score", prefit=True,
                                 predict_method="predict_proba", tol=tol)
        opt.fit(_X(fit)[keep], y[keep], sensitive_features=g[keep])

        def decide(p: pd.DataFrame) -> np.ndarray:
            groups = _groups(p, attribute)
            known = np.isin(groups, list(usable))
            out = (p[S.PROBA].to_numpy() >= fallback).astype(float)
            if known.any():
                # Expected decision = probability of predicting 1; fairlearn exposes it only through
                # the private _pmf_predict (tests check it against the average of many random draws).
                out[known] = opt._pmf_predict(_X(p)[known], sensitive_features=groups[known])[:, 1]
            return out

        return decide

    return fit_to


_TO_REF = "weerts2023fairlearn"
register("to_demographic_parity", "ThresholdOptimizer — parité démographique",
         "Seuils par groupe randomisés égalisant le taux de sélection (fairlearn).",
         r"\max \mathrm{BA} \text{ s.c. } \mathrm{SR}_a = \mathrm{SR}_b", _TO_REF,
         randomised=True)(_threshold_optimizer("demographic_parity"))
register("to_equalized_odds", "ThresholdOptimizer — equalized odds",
         "Seuils par groupe randomisés égalisant TPR et FPR (Hardt et al., fairlearn).",
         r"\max \mathrm{BA} \text{ s.c. } \mathrm{TPR}_a = \mathrm{TPR}_b,\ \mathrm{FPR}_a = \mathrm{FPR}_b",
         "hardt2016", randomised=True)(_threshold_optimizer("equalized_odds"))
register("to_tpr_parity", "ThresholdOptimizer — parité des TPR",
         "Seuils par groupe randomisés égalisant la sensibilité (fairlearn).",
         r"\max \mathrm{BA} \text{ s.c. } \mathrm{TPR}_a = \mathrm{TPR}_b", _TO_REF,
         randomised=True)(_threshold_optimizer("true_positive_rate_parity"))


@register("reject_option", "Reject option classification",
          "Près du seuil, là où le modèle hésite, le groupe défavorisé reçoit la décision positive.",
          r"\hat{y} = 1[a = a_{dev}] \text{ si } |s - \theta| \leq m", "kamiran2012roc")
def reject_option(fit: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """Kamiran, Karim & Zhang (2012); written here because AIF360 drags heavy dependencies.

    In the critical band |s - theta| <= m, the group with the lowest TPR gets 1, the others 0;
    theta and m minimise the TPR gap on the fitting part, keeping balanced accuracy within 0.05
    of the best global threshold's.
    """
    y, s, g = fit[S.LABEL].to_numpy(), fit[S.PROBA].to_numpy(), _groups(fit, attribute)
    theta0 = _best_threshold(s, y)
    base = s >= theta0
    tprs = {a: base[(g == a) & (y == 1)].mean() for a in np.unique(g) if a != "NA" and (y[g == a] == 1).any()}
    disadvantaged = min(tprs, key=tprs.get) if tprs else None

    def rule(scores: np.ndarray, groups: np.ndarray, theta: float, margin: float) -> np.ndarray:
        d = scores >= theta
        band = np.abs(scores - theta) <= margin
        return np.where(band, groups == disadvantaged, d).astype(float)

    def bacc(d: np.ndarray) -> float:
        return (d[y == 1].mean() + 1 - d[y == 0].mean()) / 2

    def gap(d: np.ndarray) -> float:
        t = [d[(g == a) & (y == 1)].mean() for a in tprs]
        return max(t) - min(t) if len(t) >= 2 else 0.0

    floor = bacc(base.astype(float)) - 0.05
    best = (gap(base.astype(float)), theta0, 0.0)
    for theta in np.linspace(theta0 - 0.15, theta0 + 0.15, 13):
        for margin in np.linspace(0.0, 0.25, 11):
            d = rule(s, g, theta, margin)
            if bacc(d) >= floor and gap(d) < best[0] - 1e-12:
                best = (gap(d), theta, margin)
    _, theta, margin = best
    return lambda p: rule(p[S.PROBA].to_numpy(), _groups(p, attribute), theta, margin)


@register("calibrated_eq_odds", "Calibrated equalized odds",
          "Scores calibrés par groupe, puis mélange aléatoire avec le taux de base du groupe avantagé "
          "pour égaliser le coût des faux négatifs.",
          r"\tilde{h}_a = (1 - \alpha_a)\, h_a + \alpha_a\, \mu_a,\ \mathrm{gFNR}_a \text{ égaux}",
          "pleiss2017", randomised=True)
def calibrated_eq_odds(fit: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """Pleiss et al. (2017) with the false-negative cost; written here (AIF360 is heavy to install).

    Per group, scores are calibrated (isotonic regression on the fitting part); the group with the
    LOWER generalised FNR has its score replaced, with probability alpha, by its base rate mu, so
    both groups' generalised FNR become equal. Decisions use the global threshold; expected decision
    = (1 - alpha) 1[s >= t] + alpha 1[mu >= t].
    """
    y, s, g = fit[S.LABEL].to_numpy(), fit[S.PROBA].to_numpy(), _groups(fit, attribute)
    t = _best_threshold(s, y)
    usable = [a for a in np.unique(g) if a != "NA" and len(set(y[g == a])) == 2]
    _warn_fallback(set(np.unique(g)) - set(usable), "calibrated_eq_odds")
    calib = {a: IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s[g == a], y[g == a])
             for a in usable}
    mu = {a: y[g == a].mean() for a in usable}
    gfnr = {a: np.mean(1 - calib[a].predict(s[(g == a) & (y == 1)])) for a in usable}
    alpha = dict.fromkeys(usable, 0.0)
    if len(usable) >= 2:
        worst = max(gfnr.values())
        for a in usable:  # mixing with mu moves gFNR from gfnr[a] towards 1 - mu[a]
            room = (1 - mu[a]) - gfnr[a]
            alpha[a] = float(np.clip((worst - gfnr[a]) / room, 0, 1)) if room > 1e-9 else 0.0

    def decide(p: pd.DataFrame) -> np.ndarray:
        groups, scores = _groups(p, attribute), p[S.PROBA].to_numpy()
        out = (scores >= t).astype(float)
        for a in usable:
            m = groups == a
            if m.any():
                hard = (calib[a].predict(scores[m]) >= t).astype(float)
                out[m] = (1 - alpha[a]) * hard + alpha[a] * float(mu[a] >= t)
        return out

    return decide


def tradeoff_curve(fit: pd.DataFrame, score: pd.DataFrame, attribute: str,
                   constraint: str = "equalized_odds", tols: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2,
                                                                                  0.4)) -> pd.DataFrame:
    """ThresholdOptimizer with a relaxed constraint (fairlearn's `tol`): one point per tolerance."""
    from .metrics import point_metrics

    rows = []
    for tol in tols:
        decide = _threshold_optimizer(constraint, tol or None)(fit, attribute, 0)
        m = point_metrics(score.assign(decision=decide(score)), attribute, score_col=None)
        rows.append({"tol": tol, **m})
    return pd.DataFrame(rows)
