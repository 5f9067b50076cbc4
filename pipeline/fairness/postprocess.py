"""Post-processing registry and the fit/score protocol: rules that turn scores into decisions.

Protocol. A post-processor learns from labels, so it is fitted on some validation patients and
measured on OTHER patients (`split_fit_score`: a split by patient, stratified on the patient's
label and group). Measuring it on the patients it was fitted on would flatter it. `crossfit`
is the k-fold variant: every patient is decided by a rule fitted without them.

Registry. `POSTPROCESSORS[name].fit(fit_preds, attribute, seed)` returns a `Decider` whose
`decide(preds)` gives the EXPECTED decision in [0, 1] for each image: 0/1 for deterministic rules,
P(decision = 1) for randomised ones, so that every metric is an expectation over the
randomisation instead of one arbitrary draw. Adding a method is one decorated function.

Groups. A group absent from the fitting part, with one class only there, or with a missing
attribute value, uses the global threshold (the one of `threshold_global`), with a
`FallbackWarning`: a method never crashes on a small group.

AIF360 was not used (checked with aif360 0.6.1, scikit-learn 1.9, pandas 3): its
`RejectOptionClassifierCV` cannot be given the privileged group (every fit fails), its
`CalibratedEqualizedOdds` handles exactly two groups and returned a mixing rate above 1, and it
would add matplotlib and five other packages; both methods are written here from their papers.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.data import schema as S

if TYPE_CHECKING:  # scikit-learn and fairlearn are imported where rules are fitted: a document's kernel,
    # which reads the registry's labels only, loads neither
    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.linear_model import LogisticRegression

DECISION = "decision"


FOLD = "fold"


NA_GROUP = "__missing__"  # rows whose sensitive value is missing: always the global threshold


DEFAULT_THRESHOLD = 0.5
# Column of a predictions frame: the model's operating threshold (the weighting's, chosen on train patients'
# scores from a model that did not fit them, `S.TUNING`). The grid copies it from
# `predictions.attrs['threshold']`; 'none' decides at it.
OPERATING_THRESHOLD = "operating_threshold"


class FallbackWarning(UserWarning):
    """A group could not be fitted (absent, one class only, missing value): global threshold used."""


@dataclass(frozen=True)
class Decider:
    """A fitted rule: `decide(preds)` -> expected decisions in [0, 1], one per row.

    `params` holds what was learnt (thresholds, mixing rates), for display; `model` the fitted
    library object when there is one (fairlearn's ThresholdOptimizer).
    """

    rule: Callable[[pd.DataFrame], np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    model: Any = None

    def decide(self, preds: pd.DataFrame) -> np.ndarray:
        d = np.asarray(self.rule(preds), dtype=float).reshape(-1)
        if d.shape != (len(preds),) or not np.all((d >= 0) & (d <= 1)):
            raise ValueError("a post-processor must give one expected decision in [0, 1] per row")
        return d

    __call__ = decide


FitFn = Callable[[pd.DataFrame, str, int], Decider]


@dataclass(frozen=True)
class PostProcessor:
    """A registered method; `keeps_score`: its rule is one global threshold on the unchanged
    score, so the score's AUC and calibration still describe it (NaN otherwise)."""

    name: str
    fit: FitFn
    label_fr: str
    formula: str
    reference: str = ""
    randomised: bool = False
    description_fr: str = ""
    keeps_score: bool = False

    def replace(self, **changes: Any) -> PostProcessor:
        return dataclasses.replace(self, **changes)


POSTPROCESSORS: dict[str, PostProcessor] = {}


def register(name: str, *, label_fr: str, formula: str, reference: str = "", randomised: bool = False,
             description_fr: str = "", keeps_score: bool = False) -> Callable[[FitFn], FitFn]:
    """Decorator adding `fit(fit_preds, attribute, seed) -> Decider` to POSTPROCESSORS as `name`."""

    def wrap(fit: FitFn) -> FitFn:
        POSTPROCESSORS[name] = PostProcessor(name, fit, label_fr, formula, reference, randomised,
                                             description_fr, keeps_score)
        return fit

    return wrap


def _mode(values: pd.Series) -> str:
    present = values.dropna().astype(str)
    return present.mode().iloc[0] if len(present) else NA_GROUP


def patient_table(preds: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per patient: `label` = 1 if any image is positive, other columns = most frequent value."""
    by = preds.groupby(preds[S.PATIENT].astype(str), sort=True)
    return pd.DataFrame({c: by[c].max().astype(str) if c == S.LABEL else by[c].agg(_mode) for c in columns})


def _strata(table: pd.DataFrame, n_min: int) -> pd.Series | None:
    """Joint stratum of each patient; rare strata (< n_min patients) are coarsened column by column."""
    cols = list(table.columns)
    keys = table[cols].agg("|".join, axis=1)
    for k in range(len(cols) - 1, -1, -1):
        rare = keys.map(keys.value_counts()) < n_min
        if not rare.any():
            return keys
        coarse = table[cols[:k]].agg("|".join, axis=1) if k else pd.Series("", index=table.index)
        keys = keys.where(~rare, coarse + "|*")
    return keys if keys.value_counts().min() >= n_min else None


def _strata_columns(strata: str | Sequence[str]) -> list[str]:
    return [S.LABEL, strata] if isinstance(strata, str) else list(strata)


def split_fit_score(valid_preds: pd.DataFrame, fit_fraction: float, seed: int,
                    strata: str | Sequence[str] = (S.LABEL, S.SEX)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by PATIENT into a fitting part (`fit_fraction` of the patients) and a scoring part.

    Stratified on the patient's label and group (`strata`: columns, or one attribute name meaning
    (label, attribute)); strata with a single patient are merged with coarser ones.
    """
    table = patient_table(valid_preds, _strata_columns(strata))
    if len(table) < 2:
        raise ValueError("splitting into fitting and scoring patients needs at least two patients")
    from sklearn.model_selection import train_test_split

    keys = _strata(table, 2)
    try:
        fit_ids, _ = train_test_split(table.index.to_numpy(), train_size=fit_fraction, random_state=seed,
                                      stratify=None if keys is None else keys.to_numpy())
    except ValueError:  # too few patients per stratum for this fraction: plain random split
        fit_ids, _ = train_test_split(table.index.to_numpy(), train_size=fit_fraction, random_state=seed)
    is_fit = valid_preds[S.PATIENT].astype(str).isin(set(fit_ids))
    return valid_preds[is_fit].reset_index(drop=True), valid_preds[~is_fit].reset_index(drop=True)


def patient_folds(valid_preds: pd.DataFrame, k: int, seed: int,
                  strata: str | Sequence[str] = (S.LABEL, S.SEX)) -> np.ndarray:
    """Fold (0..k-1) of each row: patients dealt into k folds, stratified like `split_fit_score`."""
    table = patient_table(valid_preds, _strata_columns(strata))
    k = max(2, min(k, len(table)))
    from sklearn.model_selection import KFold, StratifiedKFold

    keys = _strata(table, k)
    splitter = (KFold(k, shuffle=True, random_state=seed) if keys is None
                else StratifiedKFold(k, shuffle=True, random_state=seed))
    fold = pd.Series(-1, index=table.index)
    for f, (_, held) in enumerate(splitter.split(table.index, None if keys is None else keys)):
        fold.iloc[held] = f
    return valid_preds[S.PATIENT].astype(str).map(fold).to_numpy(int)


def crossfit(valid_preds: pd.DataFrame, method: str, attribute: str, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Cross-fitting: each patient fold is decided by the rule fitted on the other folds.

    Returns `valid_preds` with `decision` (pooled out-of-fold expected decisions) and `fold`. Every
    patient is scored, none by a rule that saw them; the pooled decisions come from k rules.
    """
    fold = patient_folds(valid_preds, k, seed, attribute)
    out = np.empty(len(valid_preds))
    for f in np.unique(fold):
        held = fold == f
        decider = POSTPROCESSORS[method].fit(valid_preds[~held].reset_index(drop=True), attribute, seed)
        out[held] = decider.decide(valid_preds[held].reset_index(drop=True))
    return valid_preds.assign(**{DECISION: out, FOLD: fold})


def _groups(preds: pd.DataFrame, attribute: str) -> np.ndarray:
    values = preds[attribute].astype(object)
    return np.where(values.isna(), NA_GROUP, values.astype(str)).astype(str)


def _present(g: np.ndarray) -> set[str]:
    return {str(a) for a in np.unique(g)}


def _arrays(preds: pd.DataFrame, attribute: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels, groups (as str) of a predictions frame."""
    return preds[S.PROBA].to_numpy(float), preds[S.LABEL].to_numpy(int), _groups(preds, attribute)


def _warn(method: str, groups: set[str], why: str) -> None:
    groups = groups - {NA_GROUP}
    if groups:
        warnings.warn(f"{method}: group(s) {sorted(groups)} {why}; they use the global threshold.",
                      FallbackWarning, stacklevel=3)


def _usable_groups(g: np.ndarray, y: np.ndarray, method: str) -> list[str]:
    """Groups with both classes in the fitting part; the others are warned about."""
    present = _present(g) - {NA_GROUP}
    usable = sorted(str(a) for a in present if len(np.unique(y[g == a])) == 2)
    _warn(method, present - set(usable), "have one class only in the fitting part")
    return usable


def _share_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of `values` >= each threshold (NaN when `values` is empty)."""
    if len(values) == 0:
        return np.full(np.shape(thresholds), np.nan)
    return 1 - np.searchsorted(np.sort(values), thresholds, side="left") / len(values)


def best_threshold(score: np.ndarray, y: np.ndarray) -> float:
    """Threshold t maximising the balanced accuracy of 1[score >= t] (the lowest t among ties).

    Candidates are the distinct scores. This is what scikit-learn's `TunedThresholdClassifierCV(
    FrozenEstimator(ScoreEstimator()), scoring="balanced_accuracy", thresholds=np.unique(score),
    cv="prefit", refit=False)` computes (it evaluates the same scorer at the same candidates on the
    same rows and keeps the first maximum); the direct search gets every balanced accuracy from
    sorted counts in O(n log n) instead of O(n x candidates), 15 s -> 5 ms at 10,000 images. The
    tests check both agree. Without both classes, 0.5.
    """
    score, y = np.asarray(score, float), np.asarray(y, int)
    if len(np.unique(y)) < 2:
        return DEFAULT_THRESHOLD
    candidates = np.unique(score)
    return float(candidates[np.argmax(_bacc_curve(score, y, candidates)[2])])


def _bacc_curve(score: np.ndarray, y: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, ...]:
    """(TPR, FPR, balanced accuracy) of 1[score >= t] for every candidate t, from sorted counts."""
    tpr, fpr = _share_at_least(score[y == 1], candidates), _share_at_least(score[y == 0], candidates)
    return tpr, fpr, (tpr + 1 - fpr) / 2


def stable_threshold(score: np.ndarray, y: np.ndarray, anchor: float = DEFAULT_THRESHOLD) -> float:
    """The threshold closest to `anchor` whose balanced accuracy is within one standard error of the best.

    The one-standard-error rule (Hastie et al. 2009, section 7.10): on a hundred validation images the
    balanced accuracy is flat over a wide range of thresholds, so its exact maximum is mostly noise and
    does worse on new patients. The standard error is the binomial one of (TPR + TNR) / 2 at the maximum.
    `anchor` (the model's own 0.5) is itself a candidate: kept whenever the data cannot beat it.
    """
    score, y = np.asarray(score, float), np.asarray(y, int)
    if len(np.unique(y)) < 2:
        return anchor
    candidates = np.unique(np.append(score, anchor))
    tpr, fpr, bacc = _bacc_curve(score, y, candidates)
    best = int(np.argmax(bacc))
    se = 0.5 * np.sqrt(tpr[best] * (1 - tpr[best]) / (y == 1).sum() + fpr[best] * (1 - fpr[best]) / (y == 0).sum())
    near = np.where(bacc >= bacc[best] - se - 1e-12, np.abs(candidates - anchor), np.inf)
    return float(candidates[np.argmin(near)])


def _global_threshold(score: np.ndarray, y: np.ndarray, method: str) -> float:
    if len(np.unique(y)) < 2:
        warnings.warn(f"{method}: the fitting part has one class only; threshold {DEFAULT_THRESHOLD} used.",
                      FallbackWarning, stacklevel=3)
    return stable_threshold(score, y)


def _group_rule(attribute: str, fitted: Sequence[str], seen: set[str], method: str,
                apply: Callable[[np.ndarray, np.ndarray], np.ndarray],
                fallback: float) -> Callable[[pd.DataFrame], np.ndarray]:
    """Rule applying `apply(scores, groups)` to rows of fitted groups, the global threshold elsewhere."""

    def rule(preds: pd.DataFrame) -> np.ndarray:
        s, g = preds[S.PROBA].to_numpy(float), _groups(preds, attribute)
        _warn(method, _present(g) - seen, "were absent from the fitting part")
        out = (s >= fallback).astype(float)
        known = np.isin(g, list(fitted))
        if known.any():
            out[known] = apply(s[known], g[known])
        return out

    return rule


def _threshold_rule(attribute: str, thresholds: dict[str, float], seen: set[str], method: str,
                    fallback: float) -> Callable[[pd.DataFrame], np.ndarray]:
    def apply(s: np.ndarray, g: np.ndarray) -> np.ndarray:
        return (s >= np.array([thresholds[a] for a in g])).astype(float)

    return _group_rule(attribute, list(thresholds), seen, method, apply, fallback)


@register("none", label_fr="Aucun (seuil de fonctionnement)", formula=r"\hat{y} = 1[s \geq t_0]", keeps_score=True,
          description_fr="La décision du modèle telle quelle, au seuil de fonctionnement $t_0$ du chapitre "
                         "précédent : celui qui maximise l'exactitude équilibrée sur des patients d'apprentissage "
                         "mis de côté (0,5 pour des prédictions qui n'en portent pas).")
def no_postprocessing(fit_preds: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """The model's decision as it is: positive when the score reaches its operating threshold.

    The threshold is the `OPERATING_THRESHOLD` column the grid copies from the predictions (chosen on
    train patients' scores from a model that did not fit them, never on the evaluation patients); 0.5
    when there is none."""
    t = DEFAULT_THRESHOLD
    if OPERATING_THRESHOLD in fit_preds.columns and len(fit_preds):
        t = float(fit_preds[OPERATING_THRESHOLD].iloc[0])
    return Decider(lambda p: (p[S.PROBA].to_numpy(float) >= t).astype(float), {"threshold": t})


@register("threshold_global", label_fr="Seuil global optimisé", keeps_score=True,
          formula=r"\hat{y} = 1[s \geq t^*],\ t^* = \arg\min_{t:\ \mathrm{BA}(t) \geq \max \mathrm{BA} - "
                  r"\mathrm{ET}} |t - 0{,}5|", reference="hastie2009elements",
          description_fr="Un seul seuil pour tous, choisi sur la partie d'ajustement : le plus proche de 0,5 "
                         "parmi ceux dont l'exactitude équilibrée est à moins d'une erreur-type du maximum "
                         "(le maximum exact, sur une centaine d'images, est surtout du bruit).")
def threshold_global(fit_preds: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """One threshold for everyone, tuned for balanced accuracy on the fitting part (`stable_threshold`)."""
    s, y, _ = _arrays(fit_preds, attribute)
    t = _global_threshold(s, y, "threshold_global")
    return Decider(lambda p: (p[S.PROBA].to_numpy(float) >= t).astype(float), {"threshold": t})


TPR_GRID = np.linspace(0, 1, 201)  # common TPRs tried by equal_opportunity


def _thresholds_for_tpr(pos_scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """For each target TPR tau, the largest threshold t with mean(pos_scores >= t) >= tau (inf if tau = 0)."""
    desc = np.sort(pos_scores)[::-1]
    k = np.ceil(taus * len(desc) - 1e-9).astype(int)
    return np.where(k == 0, np.inf, desc[np.clip(k - 1, 0, len(desc) - 1)])


def _common_tpr(s: np.ndarray, y: np.ndarray, g: np.ndarray, groups: list[str],
                fallback: float) -> tuple[float, dict[str, float]]:
    """The common TPR (on TPR_GRID) whose group thresholds maximise overall balanced accuracy."""
    other = ~np.isin(g, groups)
    tp = np.full(len(TPR_GRID), float(((s >= fallback) & other & (y == 1)).sum()))
    fp = np.full(len(TPR_GRID), float(((s >= fallback) & other & (y == 0)).sum()))
    per_group = {}
    for a in groups:
        pos, neg = s[(g == a) & (y == 1)], s[(g == a) & (y == 0)]
        per_group[a] = _thresholds_for_tpr(pos, TPR_GRID)
        tp += len(pos) * _share_at_least(pos, per_group[a])
        fp += len(neg) * _share_at_least(neg, per_group[a])
    bacc = (tp / (y == 1).sum() + 1 - fp / (y == 0).sum()) / 2
    best = int(np.argmax(bacc))
    return float(TPR_GRID[best]), {a: float(t[best]) for a, t in per_group.items()}


@register("equal_opportunity", label_fr="Égalité des chances (seuils par groupe)", reference="hardt2016",
          formula=r"\hat{y} = 1[s \geq t_a],\ \mathrm{TPR}_a(t_a) = \tau\ \forall a,"
                  r"\ \tau = \arg\max \mathrm{BA}",
          description_fr="Un seuil par groupe, pour que tous les groupes aient la même sensibilité (le même "
                         "sous-diagnostic) ; la sensibilité commune maximise l'exactitude équilibrée.")
def equal_opportunity(fit_preds: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """Deterministic group thresholds giving every group the same TPR (Hardt et al. 2016, without
    randomisation); the common TPR maximises balanced accuracy on the fitting part. TPRs are equal
    up to the discreteness of the fitting part (a group with n positives moves in steps of 1/n)."""
    s, y, g = _arrays(fit_preds, attribute)
    fallback = _global_threshold(s, y, "equal_opportunity")
    usable = _usable_groups(g, y, "equal_opportunity")
    tau, thresholds = _common_tpr(s, y, g, usable, fallback) if usable else (np.nan, {})
    rule = _threshold_rule(attribute, thresholds, _present(g), "equal_opportunity", fallback)
    return Decider(rule, {"tpr": tau, "thresholds": thresholds, "fallback_threshold": fallback})


def expected_decisions(optimizer: ThresholdOptimizer, X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """P(decision = 1) of a fitted ThresholdOptimizer: the mean of `predict(..., random_state=k)` over
    infinitely many draws. fairlearn has no public predict_proba; its private `_pmf_predict` gives
    exactly this (tests/test_postprocess.py checks it against the average of many draws)."""
    return optimizer._pmf_predict(X, sensitive_features=groups)[:, 1]


def threshold_optimizer(constraint: str, tol: float | None = None, grid_size: int = 1000) -> FitFn:
    """fit function for fairlearn's ThresholdOptimizer with `constraints=constraint`, maximising
    balanced accuracy on the stored scores (features X = the score column, `prefit=True`,
    `predict_method="predict_proba"`).

    Decisions are randomised between two thresholds per group; `decide` returns their EXPECTED
    value. `tol` relaxes the constraint (the constraint metric may differ by up to `tol` between
    groups; fairlearn does not relax equalized odds). The thresholds ignore sample weights
    (fairlearn passes them to the estimator's fit only), and the AUC of the post-processed rule is
    undefined (NaN): it is a randomised decision, not a score.
    """
    name = f"ThresholdOptimizer({constraint})"
    if constraint == "equalized_odds" and tol is not None:
        raise ValueError("fairlearn does not relax equalized odds: use tol=None, or a single-rate constraint "
                         "such as 'true_positive_rate_parity'")

    def fit(fit_preds: pd.DataFrame, attribute: str, seed: int) -> Decider:
        s, y, g = _arrays(fit_preds, attribute)
        fallback = _global_threshold(s, y, name)
        usable = _usable_groups(g, y, name)
        if not usable:
            return Decider(_threshold_rule(attribute, {}, _present(g), name, fallback),
                           {"fallback_threshold": fallback})
        from fairlearn.postprocessing import ThresholdOptimizer

        from pipeline.fairness.score_model import ScoreEstimator

        keep = np.isin(g, usable)
        opt = ThresholdOptimizer(estimator=ScoreEstimator().fit(), constraints=constraint,
                                 objective="balanced_accuracy_score", prefit=True, grid_size=grid_size,
                                 predict_method="predict_proba", tol=tol)
        opt.fit(s[keep, None], y[keep], sensitive_features=g[keep])

        def apply(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
            return expected_decisions(opt, scores[:, None], groups)

        rule = _group_rule(attribute, usable, _present(g), name, apply, fallback)
        return Decider(rule, {"constraint": constraint, "tol": tol, "fallback_threshold": fallback}, model=opt)

    return fit


_TO = " (ThresholdOptimizer)"  # the constraint first: it is what tells the three apart in a narrow axis


register("to_demographic_parity", label_fr="Parité démographique" + _TO, reference="weerts2023fairlearn",
         formula=r"\max \mathrm{BA}\ \text{s.c.}\ \mathrm{SR}_a = \mathrm{SR}_b", randomised=True,
         description_fr="Seuils par groupe, tirés au hasard entre deux valeurs, qui égalisent le taux de "
                        "décisions « malade » entre groupes.")(threshold_optimizer("demographic_parity"))


register("to_equalized_odds", label_fr="Égalité des erreurs" + _TO, reference="hardt2016", randomised=True,
         formula=r"\max \mathrm{BA}\ \text{s.c.}\ \mathrm{TPR}_a = \mathrm{TPR}_b,\ \mathrm{FPR}_a = \mathrm{FPR}_b",
         description_fr="Seuils par groupe randomisés qui égalisent à la fois la sensibilité et le taux de "
                        "faux positifs (Hardt et al.).")(threshold_optimizer("equalized_odds"))


register("to_tpr_parity", label_fr="Parité des sensibilités" + _TO, reference="weerts2023fairlearn",
         formula=r"\max \mathrm{BA}\ \text{s.c.}\ \mathrm{TPR}_a = \mathrm{TPR}_b", randomised=True,
         description_fr="Seuils par groupe randomisés qui égalisent la sensibilité, donc le sous-diagnostic, "
                        "entre groupes.")(threshold_optimizer("true_positive_rate_parity"))


def tradeoff_curve(fit_preds: pd.DataFrame, score_preds: pd.DataFrame, attribute: str,
                   constraint: str = "true_positive_rate_parity",
                   tols: Sequence[float] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)) -> pd.DataFrame:
    """Performance-fairness trade-off of ThresholdOptimizer: one row per tolerance `tol`.

    Fitted on `fit_preds`, measured on `score_preds` (metrics.point_metrics keys, AUC NaN);
    tol = 0 is the strict constraint, tol = 1 no constraint at all.
    """
    from pipeline.fairness.metrics import point_metrics

    rows = []
    for tol in tols:
        decider = threshold_optimizer(constraint, tol or None)(fit_preds, attribute, 0)
        decided = score_preds.assign(**{DECISION: decider.decide(score_preds)})
        rows.append({"constraint": constraint, "tol": float(tol),
                     **point_metrics(decided, attribute, DECISION, score_col=None)})
    return pd.DataFrame(rows)


ROC_BACC_LOSS = 0.05  # largest drop of balanced accuracy (fitting part) reject option may pay


ROC_SHIFTS = np.linspace(-0.15, 0.15, 13)  # theta - theta_0 tried


ROC_MARGINS = np.linspace(0.0, 0.3, 16)  # half-widths of the critical band tried


def _roc_decisions(s: np.ndarray, g: np.ndarray, deprived: Sequence[str], theta: np.ndarray,
                   margin: np.ndarray) -> np.ndarray:
    """Reject option rule for candidate (theta, margin) columns: rows = images, columns = candidates."""
    band = np.abs(s[:, None] - theta) < margin
    return np.where(band, np.isin(g, deprived)[:, None], s[:, None] >= theta).astype(float)


def _tpr_gap(d: np.ndarray, y: np.ndarray, g: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    tprs = np.stack([d[(g == a) & (y == 1)].mean(axis=0) for a in groups])
    return tprs.max(axis=0) - tprs.min(axis=0)


def _bacc_columns(d: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (d[y == 1].mean(axis=0) + 1 - d[y == 0].mean(axis=0)) / 2


def _roc_search(s: np.ndarray, y: np.ndarray, g: np.ndarray, groups: Sequence[str], deprived: Sequence[str],
                theta0: float) -> tuple[np.ndarray, np.ndarray]:
    """(theta, margin) with the smallest TPR gap among candidates within ROC_BACC_LOSS of theta0's
    balanced accuracy (ties: the higher balanced accuracy); arrays of length 1."""
    theta, margin = (a.ravel() for a in np.meshgrid(np.clip(theta0 + ROC_SHIFTS, 0, 1), ROC_MARGINS))
    d = _roc_decisions(s, g, deprived, theta, margin)
    bacc, base = _bacc_columns(d, y), _bacc_columns((s >= theta0).astype(float)[:, None], y)[0]
    gap = np.where(bacc >= base - ROC_BACC_LOSS, _tpr_gap(d, y, g, groups), np.inf)
    best = np.lexsort((-bacc, gap))[0]
    return theta[best:best + 1], margin[best:best + 1]


@register("reject_option", label_fr="Reject option classification", reference="kamiran2012roc",
          formula=r"\hat{y} = 1[a \in D] \text{ si } |s - \theta| < m,\ \text{sinon } 1[s \geq \theta]",
          description_fr="Là où le modèle hésite (score proche du seuil), les groupes sous-diagnostiqués "
                         "reçoivent la décision « malade », les autres « sain ».")
def reject_option(fit_preds: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """Reject option classification (Kamiran, Karim & Zhang 2012).

    In the critical band |s - theta| < m the deprived groups D get 1 and the others 0; elsewhere
    1[s >= theta]. Deprived = groups whose TPR at the global threshold theta_0 is below the pooled TPR
    (the paper's single deprived group when there are two). theta and m minimise the TPR gap on the
    fitting part among candidates losing at most ROC_BACC_LOSS of balanced accuracy against theta_0.
    """
    s, y, g = _arrays(fit_preds, attribute)
    theta0 = _global_threshold(s, y, "reject_option")
    usable = _usable_groups(g, y, "reject_option")
    pooled = np.mean(s[y == 1] >= theta0) if (y == 1).any() else np.nan
    deprived = [a for a in usable if np.mean(s[(g == a) & (y == 1)] >= theta0) < pooled]
    theta, margin = np.array([theta0]), np.array([0.0])
    if len(usable) >= 2 and deprived:
        keep = np.isin(g, usable)
        theta, margin = _roc_search(s[keep], y[keep], g[keep], usable, deprived, theta0)

    def apply(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return _roc_decisions(scores, groups, deprived, theta, margin)[:, 0]

    rule = _group_rule(attribute, usable, _present(g), "reject_option", apply, theta0)
    return Decider(rule, {"theta": float(theta[0]), "margin": float(margin[0]), "deprived": deprived,
                          "fallback_threshold": theta0})


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))[:, None]


def _platt(s: np.ndarray, y: np.ndarray) -> LogisticRegression:
    """Platt scaling of one group's scores: P(y = 1 | s) = sigmoid(a logit(s) + b) (Newton: one feature)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1e4, solver="newton-cholesky").fit(_logit(s), y)


def mixing_rates(gfnr: dict[str, float], base_rate: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """Pleiss et al. (2017), Algorithm 1, false-negative cost, any number of groups.

    The group with the largest generalised FNR g_a(h_a) = E[1 - h_a | y = 1] is the target; every other
    group withholds information: with probability alpha_a its calibrated score is replaced by its base
    rate mu_a (the trivial classifier, g_a = 1 - mu_a), alpha_a = (target - g_a(h_a)) / ((1 - mu_a) -
    g_a(h_a)). Infeasible when alpha_a > 1 (even the trivial classifier's cost 1 - mu_a is below the
    target): those groups are returned, and get alpha_a = 1, the closest the method can come.
    """
    target = max(gfnr.values())
    alpha, infeasible = {}, []
    for a, cost in gfnr.items():
        room = (1 - base_rate[a]) - cost
        need = target - cost
        if need <= 1e-12:
            alpha[a] = 0.0
        elif room <= need + 1e-12:
            alpha[a] = 1.0
            infeasible += [a] if room < need - 1e-9 else []
        else:
            alpha[a] = float(need / room)
    return alpha, infeasible


@register("calibrated_eq_odds", label_fr="Calibrated equalized odds (adaptation)", reference="pleiss2017",
          randomised=True,
          formula=r"\tilde{h}_a = h_a \text{ avec prob. } 1 - \alpha_a,\ \mu_a \text{ sinon};"
                  r"\ \alpha_a = \frac{\max_b \mathrm{gFNR}_b(h_b) - \mathrm{gFNR}_a(h_a)}{(1 - \mu_a) - "
                  r"\mathrm{gFNR}_a(h_a)}",
          description_fr="Scores recalibrés par groupe ; pour les groupes les mieux servis, une part "
                         "tirée au hasard des scores est remplacée par le taux de base du groupe, ce qui "
                         "égalise le taux généralisé de faux négatifs des scores ; adaptation : le score "
                         "mélangé est seuillé, la part remplacée décide au hasard (cible parfois infaisable : "
                         "signalée).")
def calibrated_eq_odds(fit_preds: pd.DataFrame, attribute: str, seed: int) -> Decider:
    """Calibrated equalized odds as published (Pleiss et al. 2017, Algorithm 1), false-negative cost.

    Each group's scores are calibrated (Platt scaling on the fitting part: h_a); `mixing_rates` gives
    alpha_a, which equalises the generalised FNR E[1 - h~_a | y = 1] of the mixed classifiers
    h~_a (h_a with probability 1 - alpha_a, the base rate mu_a otherwise) and keeps them calibrated;
    `params["infeasible"]` names the groups for which the paper's target cannot be reached.
    Decision: h~_a is a probability; the calibrated score is thresholded at t (the balanced-accuracy
    threshold of the pooled calibrated scores) and the trivial classifier's output mu_a, a
    probability with no information, decides 1 with probability mu_a (thresholding a constant would
    give its whole share one class). Expected decision: (1 - alpha_a) 1[h_a(s) >= t] + alpha_a mu_a.
    """
    s, y, g = _arrays(fit_preds, attribute)
    fallback = _global_threshold(s, y, "calibrated_eq_odds")
    usable = _usable_groups(g, y, "calibrated_eq_odds")
    calib = {a: _platt(s[g == a], y[g == a]) for a in usable}
    h = {a: calib[a].predict_proba(_logit(s[g == a]))[:, 1] for a in usable}
    pooled = np.concatenate([h[a] for a in usable] or [np.zeros(0)])
    y_pooled = np.concatenate([y[g == a] for a in usable] or [np.zeros(0, int)])
    t = best_threshold(pooled, y_pooled)
    mu = {a: float(y[g == a].mean()) for a in usable}
    gfnr = {a: float(np.mean(1 - h[a][y[g == a] == 1])) for a in usable}
    alpha, infeasible = mixing_rates(gfnr, mu) if usable else ({}, [])

    def apply(scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
        out = np.empty(len(scores))
        for a in np.unique(groups):
            m = groups == a
            hard = calib[a].predict_proba(_logit(scores[m]))[:, 1] >= t
            out[m] = (1 - alpha[a]) * hard + alpha[a] * mu[a]
        return out

    rule = _group_rule(attribute, usable, _present(g), "calibrated_eq_odds", apply, fallback)
    return Decider(rule, {"threshold": t, "alpha": alpha, "base_rate": mu, "gfnr": gfnr,
                          "infeasible": infeasible, "fallback_threshold": fallback})
