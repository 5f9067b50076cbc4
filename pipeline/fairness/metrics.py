"""Performance and fairness metrics, with intervals from a bootstrap over patients.

Predictions frame: one row per image with `label` (0/1), `decision` in [0, 1], optionally a score
(`proba`), `patient`, and the sensitive attribute columns.

Soft decisions. A randomised post-processor gives the EXPECTED decision d in [0, 1]; every metric
is then an expectation over its randomisation: TPR = sum(d y) / sum(y), FPR = sum(d (1 - y)) /
sum(1 - y), precision = sum(d y) / sum(d) (a ratio of expected counts). scikit-learn's metrics take
hard predictions only, so each image enters MetricFrame twice: predicted positive with weight d
and predicted negative with weight 1 - d (rows of equal group, label and decision then summed).
With these sample weights, scikit-learn's own `recall_score`, `precision_score`,
`balanced_accuracy_score` compute exactly the expected values. The AUC and the calibration error
(ECE, 10 equal-width bins) depend on the score only: a second MetricFrame, one row per image.

Undefined values. A rate needs at least `min_per_class` images of its class in the group (TPR:
positives, FPR: negatives; `evaluation.min_per_class` in study.yml, default 10) from at least
`min_patients(min_per_class)` distinct patients (half as many: ten images of two patients are two
observations, not ten), the selection rate and the ECE that many images, the precision that many
predicted positives, the AUC and the balanced accuracy both classes; a gap needs two groups where the
rate is defined. Otherwise the value is NaN ("n.d." in the report), never an error. Rows whose sensitive
value is missing count in the overall metrics, not in any group. In a bootstrap replicate a gap is
NaN when a group whose rate is defined in the estimate has no defined rate in the replicate (it is
not silently computed over the remaining groups).

Gaps and tests. max - min over groups is always >= 0, so its percentile interval never contains 0
even when nothing differs. For two groups the report uses the SIGNED difference (`tpr_signed`,
`fpr_signed`, `sr_signed`: first group minus second in display order, e.g. F - M), whose patient-
bootstrap interval has its nominal coverage; for any number of groups, `p_equal` is a Wald test of
equal rates (chi-square on the contrasts, covariance of the group rates from the same patient
bootstrap, i.e. cluster-robust). Paired differences with a baseline get a z-test p-value (bootstrap
standard error; the study's tables, over every training seed, use `inference.comparison_over_seeds`) and a
Benjamini-Hochberg correction over the comparisons of a table (`significant` = adjusted p < 0.10: an
exploratory table controls its false discovery rate; the pre-registered questions are tested apart, in
fairness/inference.py); tests/test_levels.py checks by simulation that these keep their level.

Realised decisions. A randomised rule's gap of EXPECTED rates is smaller than the expected gap of
the decisions it actually makes. `realised=True` scores each bootstrap replicate on one random draw
of the decisions (Bernoulli(d)), and the point estimate is the mean over `REALISED_DRAWS` draws.

Bootstrap. Patients (not images) are resampled with replacement: images of one patient are
correlated, and an image bootstrap would give too narrow intervals. A resample is a vector of
draw counts per patient; per-patient sums (positives, negatives, expected TP and FP, calibration
residuals per bin, per group) make one replicate a matrix product instead of a MetricFrame, and
the AUC is computed for all replicates at once from weighted ranks. The point estimate itself
comes from MetricFrame; the fast path at the unit resample equals it (tests/test_metrics.py).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.data import schema as S

if TYPE_CHECKING:  # imported where used: a document's kernel reads computed results and needs none of them
    from fairlearn.metrics import MetricFrame
    from scipy import sparse

DECISION = "decision"


ECE_BINS = 10


MIN_PER_CLASS = 10  # images of a class a group needs for the rates of that class to be defined (default)
MIN_PATIENT_SHARE = 0.5  # ...from at least this share of that many distinct patients


def min_patients(min_per_class: int) -> int:
    """Distinct patients of a class a group needs, beside `min_per_class` images, for the rates of that class."""
    return math.ceil(MIN_PATIENT_SHARE * min_per_class)


MIN_DEFINED_SHARE = 0.9  # share of bootstrap replicates where a metric must be defined for an interval


LEVEL = 0.95


_NO_GROUP = "__missing__"


MAX_CELLS = 4_000_000  # replicates x images held in memory at once by the bootstrap


GROUP_METRICS = ("tpr", "fpr", "fnr", "selection_rate", "precision", "balanced_accuracy", "auc", "ece")


OVERALL = ("balanced_accuracy", "auc", "tpr", "fpr", "ece")


GAPS = ("dp_diff", "dp_ratio", "eopp_diff", "fpr_diff", "eo_diff", "worst_group_bacc", "worst_group_tpr",
        "ece_gap", "tpr_signed", "fpr_signed", "sr_signed")


SIGNED = {"eopp_diff": "tpr_signed", "fpr_diff": "fpr_signed", "dp_diff": "sr_signed"}  # two groups only


EQUAL_RATES = {"eopp_diff": ("tpr",), "fpr_diff": ("fpr",), "dp_diff": ("selection_rate",),
               "eo_diff": ("tpr", "fpr"), "tpr_signed": ("tpr",), "fpr_signed": ("fpr",),
               "sr_signed": ("selection_rate",)}  # gap -> group rates its test of equality compares


TESTED = ("balanced_accuracy", "auc", "eopp_diff", "eo_diff", "dp_diff", "worst_group_bacc")  # marked


def tested_for(n_groups: int, tested: tuple[str, ...] = TESTED) -> tuple[str, ...]:
    """What a table tests is what it shows: with two groups a gap column shows the signed difference (F − M),
    so the signed change is tested, not the change of the absolute gap (whose test has level 0-0.02 when the
    true gap is 0)."""
    if n_groups != 2:
        return tested
    return tuple(dict.fromkeys(SIGNED.get(m, m) for m in tested))


ALPHA = 0.05


EXPLORATORY_Q = 0.10  # false discovery rate of an exploratory table (its marks; the primary family is apart)


CORRECTION = "fdr_bh"  # statsmodels multipletests method over the comparisons of one table: Benjamini-Hochberg


REALISED_DRAWS = 200  # random draws of a randomised rule's decisions for its realised point estimate


SUMMARY = OVERALL + GAPS


KEY_METRICS = ("balanced_accuracy", "auc", "eo_diff", "eopp_diff", "dp_diff", "worst_group_bacc", "ece_gap",
               "tpr_signed", "sr_signed")


LOWER_IS_BETTER = frozenset({"fpr", "fnr", "ece", "dp_diff", "eopp_diff", "fpr_diff", "eo_diff", "ece_gap"})


METRIC_LABELS_FR = {
    "balanced_accuracy": "Exactitude équilibrée", "auc": "AUC", "tpr": "Sensibilité (TPR)",
    "fpr": "Taux de faux positifs (FPR)", "fnr": "Sous-diagnostic (FNR)", "selection_rate": "Taux de sélection",
    "precision": "Précision (VPP)", "ece": "Erreur de calibration (ECE)",
    "dp_diff": "Écart de parité démographique", "dp_ratio": "Ratio de parité démographique",
    "eopp_diff": "Écart d'égalité des chances (TPR)", "fpr_diff": "Écart de FPR",
    "eo_diff": "Écart d'égalité des erreurs", "worst_group_bacc": "Exactitude équilibrée du pire groupe",
    "worst_group_tpr": "TPR du pire groupe", "ece_gap": "Écart de calibration",
    "tpr_signed": "Différence de sensibilité", "fpr_signed": "Différence de FPR",
    "sr_signed": "Différence de taux de sélection",
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence 'All-NaN slice' and 0/0 warnings: an undefined value is reported as NaN on purpose."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _score(preds: pd.DataFrame, score_col: str | None) -> np.ndarray | None:
    """The score column as floats, or None when absent or incomplete (AUC and ECE undefined)."""
    if not score_col or score_col not in preds.columns:
        return None
    s = preds[score_col].to_numpy(dtype=float)
    return s if np.all(np.isfinite(s)) else None


def _inputs(preds: pd.DataFrame, decision_col: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0/1 ints) and decisions (floats in [0, 1]), validated."""
    for col in (S.LABEL, decision_col):
        if col not in preds.columns:
            raise KeyError(f"predictions frame lacks column '{col}'; it has {list(preds.columns)}")
    y = preds[S.LABEL].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    d = preds[decision_col].to_numpy(dtype=float)
    if not np.all(np.isfinite(d)) or (d < 0).any() or (d > 1).any():
        raise ValueError(f"'{decision_col}' must be a (expected) decision in [0, 1]")
    return y.astype(int), d


def group_labels(values: pd.Series) -> pd.Series:
    """Group of each row as str (so 1 and "1" are one group), NaN where the value is missing."""
    return values.astype(object).map(lambda g: np.nan if pd.isna(g) else str(g))


def group_order(values: pd.Series) -> list[str]:
    """Group names (as str) in display order: the categories' order if categorical, else sorted."""
    present = set(values.dropna().astype(str))
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories if str(c) in present]
    return sorted(present)


def calibration_error(y: np.ndarray, score: np.ndarray, bins: int = ECE_BINS,
                      sample_weight: np.ndarray | None = None) -> float:
    """Expected calibration error: sum over equal-width score bins of |sum w (y - s)| / sum w."""
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if score is None or w.sum() <= 0:
        return float("nan")
    s = np.clip(np.asarray(score, dtype=float), 0, 1)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    residual = np.bincount(idx, weights=w * (np.asarray(y, float) - s), minlength=bins)
    return float(np.abs(residual).sum() / w.sum())


def _has(y: np.ndarray, w: np.ndarray, cls: int, min_n: int) -> bool:
    """At least `min_n` images of class `cls` (weights of an image's two copies sum to 1)."""
    return w[y == cls].sum() >= min_n - 1e-9


def _tpr(y_true, y_pred, sample_weight, min_n: int = MIN_PER_CLASS) -> float:
    if not _has(y_true, sample_weight, 1, min_n):
        return np.nan
    from sklearn.metrics import recall_score

    return recall_score(y_true, y_pred, sample_weight=sample_weight, zero_division=np.nan)


def _fpr(y_true, y_pred, sample_weight, min_n: int = MIN_PER_CLASS) -> float:
    if not _has(y_true, sample_weight, 0, min_n):
        return np.nan
    from sklearn.metrics import recall_score

    return 1 - recall_score(y_true, y_pred, pos_label=0, sample_weight=sample_weight, zero_division=np.nan)


def _fnr(y_true, y_pred, sample_weight, min_n: int = MIN_PER_CLASS) -> float:
    return 1 - _tpr(y_true, y_pred, sample_weight, min_n)


def _precision(y_true, y_pred, sample_weight, min_n: int = MIN_PER_CLASS) -> float:
    if np.sum(np.asarray(sample_weight)[np.asarray(y_pred) == 1]) < min_n - 1e-9:  # predicted positives
        return np.nan
    from sklearn.metrics import precision_score

    return precision_score(y_true, y_pred, sample_weight=sample_weight, zero_division=np.nan)


def _bacc(y_true, y_pred, sample_weight, min_n: int = MIN_PER_CLASS) -> float:
    if not (_has(y_true, sample_weight, 0, min_n) and _has(y_true, sample_weight, 1, min_n)):
        return np.nan
    from sklearn.metrics import balanced_accuracy_score

    return balanced_accuracy_score(y_true, y_pred, sample_weight=sample_weight)


def _selection(y_true, y_pred, sample_weight, min_n: int = MIN_PER_CLASS) -> float:
    if np.sum(sample_weight) < min_n - 1e-9:
        return np.nan
    from fairlearn.metrics import selection_rate

    return selection_rate(y_true, y_pred, sample_weight=sample_weight)


def _auc(y_true, y_score, min_n: int = MIN_PER_CLASS) -> float:
    y = np.asarray(y_true)
    if min((y == 1).sum(), (y == 0).sum()) < max(min_n, 1):
        return np.nan
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, y_score)


def _ece(y_true, y_score, min_n: int = MIN_PER_CLASS) -> float:
    return calibration_error(np.asarray(y_true), np.asarray(y_score)) if len(y_true) >= min_n else np.nan


_DECISION_METRICS: dict[str, Callable] = {"tpr": _tpr, "fpr": _fpr, "fnr": _fnr, "selection_rate": _selection,
                                          "precision": _precision, "balanced_accuracy": _bacc}


_SCORE_METRICS: dict[str, Callable] = {"auc": _auc, "ece": _ece}


def _with_min(metrics: dict[str, Callable], min_n: int) -> dict[str, Callable]:
    return {name: functools.partial(f, min_n=min_n) for name, f in metrics.items()}


def _quiet_frame(**kwargs: object) -> MetricFrame:
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from fairlearn.metrics import MetricFrame

        return MetricFrame(**kwargs)


def metric_frames(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION, score_col: str | None = S.PROBA,
                  min_per_class: int = MIN_PER_CLASS) -> tuple[MetricFrame, MetricFrame | None]:
    """fairlearn MetricFrames of the decision metrics and of the score metrics (None: no score).

    Decisions: each image counts as a positive decision with weight d and a negative one with
    weight 1 - d; rows with the same (group, label, decision) are then summed, which leaves every
    weighted metric unchanged and keeps MetricFrame fast (its per-row work is in Python).
    Scores: one row per image, the score as `y_pred` (AUC, ECE do not use the decision).
    """
    y, d = _inputs(preds, decision_col)
    groups = group_labels(preds[attribute]).fillna(_NO_GROUP).to_numpy()
    n = len(y)
    rows = pd.DataFrame({"group": np.r_[groups, groups], "y": np.r_[y, y], "pred": np.r_[np.ones(n), np.zeros(n)],
                         "w": np.r_[d, 1 - d]}).groupby(["group", "y", "pred"], as_index=False)["w"].sum()
    decisions = _quiet_frame(metrics=_with_min(_DECISION_METRICS, min_per_class), y_true=rows["y"].to_numpy(),
                             y_pred=rows["pred"].to_numpy(), sensitive_features=rows["group"],
                             sample_params={m: {"sample_weight": rows["w"].to_numpy()} for m in _DECISION_METRICS})
    score = _score(preds, score_col)
    if score is None:
        return decisions, None
    scores = _quiet_frame(metrics=_with_min(_SCORE_METRICS, min_per_class), y_true=y, y_pred=score,
                          sensitive_features=pd.Series(groups, name="group"))
    return decisions, scores


def group_metrics(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA,
                  frames: tuple[MetricFrame, MetricFrame | None] | None = None,
                  min_per_class: int = MIN_PER_CLASS) -> pd.DataFrame:
    """Rows = groups (display order); columns = GROUP_METRICS, n, n_positive, n_patients."""
    names = group_order(preds[attribute])
    decisions, scores = frames or metric_frames(preds, attribute, decision_col, score_col, min_per_class)
    table = decisions.by_group
    if scores is not None:
        table = table.join(scores.by_group)
    table = table.reindex(names).reindex(columns=list(GROUP_METRICS)).astype(float)
    labels = group_labels(preds[attribute])
    by_group = preds.groupby(labels, dropna=True)
    counts = by_group.agg(n=(S.LABEL, "size"), n_positive=(S.LABEL, "sum"), n_patients=(S.PATIENT, "nunique"))
    by_class = preds.groupby([labels, preds[S.LABEL].astype(int)], dropna=True)[S.PATIENT].nunique().unstack()
    counts["n_patients_positive"] = by_class.reindex(columns=[1]).iloc[:, 0] if len(by_class) else np.nan
    counts["n_patients_negative"] = by_class.reindex(columns=[0]).iloc[:, 0] if len(by_class) else np.nan
    table = table.join(counts.reindex(names).fillna({"n_patients_positive": 0, "n_patients_negative": 0})
                       .astype(float))
    need = min_patients(min_per_class)
    few_positive, few_negative = table["n_patients_positive"] < need, table["n_patients_negative"] < need
    table.loc[few_positive, ["tpr", "fnr", "balanced_accuracy", "auc"]] = np.nan
    table.loc[few_negative, ["fpr", "balanced_accuracy", "auc"]] = np.nan
    table.index.name = "group"
    table.attrs["attribute"] = attribute
    return table


def _spread(x: np.ndarray) -> np.ndarray:
    """max - min along the last axis; NaN unless two values are defined."""
    with _quiet():
        return np.where(np.sum(~np.isnan(x), axis=-1) >= 2, np.nanmax(x, axis=-1) - np.nanmin(x, axis=-1), np.nan)


def _signed(x: np.ndarray) -> np.ndarray:
    """First group minus second along the last axis; NaN unless there are exactly two groups."""
    return x[..., 0] - x[..., 1] if x.shape[-1] == 2 else np.full(x.shape[:-1], np.nan)


def _gaps(group: dict[str, np.ndarray], required: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Between-group gaps along the last axis (groups) of the per-group arrays.

    `required[m]`: groups whose rate m is defined in the estimate; a replicate where one of them is
    undefined gets NaN gaps from m (not a gap silently computed over the other groups).
    """
    group = dict(group)
    if required is not None:
        for m, need in required.items():
            if need.any():
                missing = np.isnan(group[m][..., need]).any(axis=-1, keepdims=True)
                group[m] = np.where(missing, np.nan, group[m])
    sr = group["selection_rate"]
    two = np.sum(~np.isnan(sr), axis=-1) >= 2
    eopp, fpr_gap = _spread(group["tpr"]), _spread(group["fpr"])
    with _quiet():
        ratio = np.where(two, np.nanmin(sr, axis=-1) / np.nanmax(sr, axis=-1), np.nan)
        return {"dp_diff": _spread(sr), "dp_ratio": ratio, "eopp_diff": eopp, "fpr_diff": fpr_gap,
                "eo_diff": np.where(np.isnan(eopp) | np.isnan(fpr_gap), np.nan, np.fmax(eopp, fpr_gap)),
                "worst_group_bacc": np.nanmin(group["balanced_accuracy"], axis=-1),
                "worst_group_tpr": np.nanmin(group["tpr"], axis=-1), "ece_gap": _spread(group["ece"]),
                "tpr_signed": _signed(group["tpr"]), "fpr_signed": _signed(group["fpr"]),
                "sr_signed": _signed(sr)}


def point_metrics(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA, min_per_class: int = MIN_PER_CLASS) -> dict[str, float]:
    """Overall metrics and between-group gaps for one attribute; keys are `SUMMARY`.

    balanced_accuracy, auc, tpr, fpr, ece (overall); dp_diff, dp_ratio (selection rates),
    eopp_diff (TPR gap), fpr_diff, eo_diff = max(TPR gap, FPR gap), worst_group_bacc,
    worst_group_tpr, ece_gap (max - min of the groups' ECE); tpr_signed, fpr_signed, sr_signed
    (first group minus second, two groups only). Undefined values are NaN.
    """
    frames = metric_frames(preds, attribute, decision_col, score_col, min_per_class)
    overall = pd.concat([f.overall for f in frames if f is not None])  # every row, missing groups included
    out = {m: float(overall[m]) if m in overall.index else np.nan for m in OVERALL}
    groups = group_metrics(preds, attribute, decision_col, score_col, frames, min_per_class)
    gaps = _gaps({m: groups[m].to_numpy(float) for m in GROUP_METRICS})
    out.update({k: float(v) for k, v in gaps.items()})
    return {k: out[k] for k in SUMMARY}


@dataclass
class _Design:
    """What a replicate needs: per-cluster sums per group slot, per-cluster counts by score rank, and the
    per-image arrays that replicates with their own decisions (refits, random draws) use."""

    counts: np.ndarray  # (clusters, groups + 1, 4 + ECE_BINS); last slot = all images
    groups: list[str]
    auc_slots: list[tuple[sparse.csr_matrix, sparse.csr_matrix]] | None  # per slot, see _rank_matrices
    y: np.ndarray
    decision: np.ndarray
    cluster: np.ndarray
    membership: np.ndarray  # (images, groups + 1): 1 where the image is in the slot
    min_per_class: int = MIN_PER_CLASS
    has: np.ndarray | None = None  # (clusters, groups + 1, 2): the cluster has a positive / negative image there
    required: dict[str, np.ndarray] | None = None  # groups defined in the estimate, per group rate

    @property
    def n_clusters(self) -> int:
        return self.counts.shape[0]

    @property
    def randomised(self) -> bool:
        return bool(np.any((self.decision > 0) & (self.decision < 1)))


def _cluster_index(preds: pd.DataFrame, cluster_col: str | None) -> np.ndarray:
    if cluster_col is None:
        return np.arange(len(preds))
    return np.unique(preds[cluster_col].astype(str).to_numpy(), return_inverse=True)[1].ravel()


def _design(preds: pd.DataFrame, attribute: str, decision_col: str, score_col: str | None,
            cluster_col: str | None = S.PATIENT, min_per_class: int = MIN_PER_CLASS) -> _Design:
    y, d = _inputs(preds, decision_col)
    score = _score(preds, score_col)
    names = group_order(preds[attribute])
    lookup = {g: i for i, g in enumerate(names)}
    g_idx = group_labels(preds[attribute]).map(lookup).fillna(-1).to_numpy(dtype=int)
    cluster = _cluster_index(preds, cluster_col)
    n_c, n_slots = int(cluster.max()) + 1, len(names) + 1
    counts = np.zeros((n_c, n_slots, 4 + ECE_BINS))
    s = np.zeros(len(y)) if score is None else np.clip(score, 0, 1)
    bins = np.minimum((s * ECE_BINS).astype(int), ECE_BINS - 1)
    values = [y, 1 - y, d * y, d * (1 - y)]
    for slot, mask in ((g_idx, g_idx >= 0), (np.full(len(y), len(names)), np.ones(len(y), bool))):
        cell = cluster[mask] * n_slots + slot[mask]
        for j, v in enumerate(values):
            counts[:, :, j] += np.bincount(cell, v[mask], n_c * n_slots).reshape(n_c, n_slots)
        cal = np.bincount(cell * ECE_BINS + bins[mask], (y - s)[mask], n_c * n_slots * ECE_BINS)
        counts[:, :, 4:] += cal.reshape(n_c, n_slots, ECE_BINS)
    slots = None
    if score is not None:
        members = [np.flatnonzero(g_idx == k) for k in range(len(names))] + [np.arange(len(y))]
        slots = [_rank_matrices(score[m], y[m], cluster[m], n_c) for m in members]
    membership = np.zeros((len(y), n_slots))
    membership[g_idx >= 0, g_idx[g_idx >= 0]] = 1
    membership[:, -1] = 1
    design = _Design(counts, names, slots, y.astype(float), d, cluster, membership, min_per_class,
                     has=(counts[:, :, :2] > 0).astype(float))
    unit = _replicate(design, np.ones((1, n_c)))
    design.required = {m: ~np.isnan(unit[f"group:{m}"][0]) for m in ("tpr", "fpr", "selection_rate",
                                                                     "balanced_accuracy", "ece")}
    return design


def _rank_matrices(score: np.ndarray, y: np.ndarray, cluster: np.ndarray,
                   n_clusters: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Positives and negatives of each cluster at each distinct score, ascending: (scores, clusters)."""
    from scipy import sparse

    values, rank = np.unique(score, return_inverse=True)
    shape = (len(values), n_clusters)
    pos = sparse.csr_matrix((y.astype(float), (rank.ravel(), cluster)), shape=shape)
    neg = sparse.csr_matrix((1 - y.astype(float), (rank.ravel(), cluster)), shape=shape)
    return pos, neg


def _weighted_auc(draws: np.ndarray, slot: tuple[sparse.csr_matrix, sparse.csr_matrix],
                  min_n: int = MIN_PER_CLASS) -> np.ndarray:
    """AUC of each resample (rows of `draws`): Mann-Whitney on weighted ranks, ties counted half."""
    pos, neg = ((m @ draws.T).T for m in slot)  # (B, distinct scores)
    below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with _quiet():
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
    need = max(min_n, 1) - 1e-9
    return np.where((total_pos >= need) & (total_neg >= need), auc, np.nan)


def _rates(t: np.ndarray, min_n: int = MIN_PER_CLASS, patients: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Metrics from summed counts t[..., k] (k = pos, neg, tp, fp, calibration residual per bin); `patients`
    [..., k] (k = with a positive, with a negative image): the distinct patients behind them (groups)."""
    pos, neg, tp, fp = (t[..., j] for j in range(4))
    need = min_n - 1e-9
    with _quiet():
        pos_ok, neg_ok = pos >= need, neg >= need
        if patients is not None:
            pos_ok &= patients[..., 0] >= min_patients(min_n)
            neg_ok &= patients[..., 1] >= min_patients(min_n)
        tpr = np.where(pos_ok, tp / pos, np.nan)
        fpr = np.where(neg_ok, fp / neg, np.nan)
        n = pos + neg
        enough = (n >= need) & (n > 0)
        return {"tpr": tpr, "fpr": fpr, "fnr": 1 - tpr,
                "selection_rate": np.where(enough, (tp + fp) / n, np.nan),
                "precision": np.where((tp + fp >= need) & (tp + fp > 0), tp / (tp + fp), np.nan),
                "balanced_accuracy": (tpr + 1 - fpr) / 2,
                "ece": np.where(enough, np.abs(t[..., 4:]).sum(axis=-1) / n, np.nan)}


def _replicate(design: _Design, draws: np.ndarray, decisions: np.ndarray | None = None,
               rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Metrics of each resample (rows of `draws`, counts per cluster): SUMMARY keys -> (B,),
    'group:<metric>' -> (B, groups).

    `decisions` (B, images): each replicate's own expected decisions (a rule refitted on that
    resample); `rng`: each replicate scores one random draw of the decisions (realised decisions).
    """
    b, n_slots = draws.shape[0], design.counts.shape[1]
    totals = (draws @ design.counts.reshape(design.n_clusters, -1)).reshape(b, n_slots, design.counts.shape[2])
    if decisions is not None or rng is not None:
        d = np.broadcast_to(design.decision if decisions is None else decisions, (b, len(design.y)))
        if rng is not None:
            d = (rng.random(d.shape) < d).astype(float)
        w = draws[:, design.cluster] * d
        totals[:, :, 2] = (w * design.y) @ design.membership
        totals[:, :, 3] = (w * (1 - design.y)) @ design.membership
    present = None
    if design.has is not None:  # distinct patients drawn with a positive / negative image in each slot
        present = ((draws > 0).astype(float) @ design.has.reshape(design.n_clusters, -1)).reshape(b, n_slots, 2)
    group = _rates(totals[:, :-1], design.min_per_class, None if present is None else present[:, :-1])
    overall = _rates(totals[:, -1], design.min_per_class)
    if design.auc_slots is None:
        group["auc"] = np.full((b, n_slots - 1), np.nan)
        overall["auc"] = np.full(b, np.nan)
        group["ece"], overall["ece"] = np.full_like(group["ece"], np.nan), np.full(b, np.nan)
    else:
        aucs = np.stack([_weighted_auc(draws, s, design.min_per_class) for s in design.auc_slots], axis=1)
        group["auc"], overall["auc"] = aucs[:, :-1], aucs[:, -1]
        if present is not None:
            both = (present[:, :-1] >= min_patients(design.min_per_class)).all(axis=-1)
            group["auc"] = np.where(both, group["auc"], np.nan)
    out = {m: overall[m] for m in OVERALL}
    out.update(_gaps(group, design.required))
    out.update({f"group:{m}": group[m] for m in GROUP_METRICS})
    return out


def draw_counts(n_clusters: int, n_boot: int, seed: int) -> np.ndarray:
    """Patient resamples with replacement as draw counts, (n_boot, n_clusters), reproducible."""
    return np.random.default_rng(seed).multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters),
                                                   size=n_boot).astype(float)


def _draw_chunks(n_clusters: int, n_images: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Resamples of clusters with replacement as draw counts, (chunk, n_clusters), reproducible."""
    rng = np.random.default_rng(seed)
    chunk = int(max(1, min(n_boot, MAX_CELLS // max(n_images, n_clusters, 1))))
    p = np.full(n_clusters, 1 / n_clusters)
    for start in range(0, n_boot, chunk):
        yield rng.multinomial(n_clusters, p, size=min(chunk, n_boot - start)).astype(float)


def replicates_of(design: _Design, draws: np.ndarray, decisions: np.ndarray | None = None,
                  realised: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """`_replicate` over all rows of `draws`, by chunks; `realised`: one random draw of the
    decisions per replicate when the rule is randomised."""
    rng = np.random.default_rng(seed + 7919) if realised and (design.randomised or decisions is not None) else None
    chunk = int(max(1, MAX_CELLS // max(len(design.y), design.n_clusters, 1)))
    parts = [_replicate(design, draws[i:i + chunk], None if decisions is None else decisions[i:i + chunk], rng)
             for i in range(0, len(draws), chunk)] or [_replicate(design, draws[:0])]  # no replicate
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _replicates(designs: list[_Design], n_images: int, n_boot: int, seed: int,
                realised: bool = False) -> list[dict[str, np.ndarray]]:
    """Replicates of several designs on the SAME resamples (designs share their clusters)."""
    draws = draw_counts(designs[0].n_clusters, n_boot, seed)
    return [replicates_of(d, draws, realised=realised, seed=seed) for d in designs]


def realised_point(design: _Design, seed: int = 0, n_draws: int = REALISED_DRAWS) -> dict[str, float]:
    """SUMMARY metrics as the rule acts: mean over `n_draws` random draws of its decisions (the expected
    value of a deterministic rule's metrics is the metric itself)."""
    reps = replicates_of(design, np.ones((n_draws, design.n_clusters)), realised=True, seed=seed + 1)
    with _quiet():
        return {m: float(np.nanmean(reps[m])) if np.isfinite(reps[m]).any() else np.nan for m in SUMMARY}


def point_metrics_fast(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                       score_col: str | None = S.PROBA, min_per_class: int = MIN_PER_CLASS) -> dict[str, float]:
    """The bootstrap's fast path at the unit resample: equals `point_metrics` (tested)."""
    design = _design(preds, attribute, decision_col, score_col, min_per_class=min_per_class)
    reps = _replicate(design, np.ones((1, design.n_clusters)))
    return {m: float(reps[m][0]) for m in SUMMARY}


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(low, high, share of replicates where defined): the percentile interval; NaN bounds when too few are
    defined."""
    ok = ~np.isnan(values)
    share = float(ok.mean()) if len(values) else 0.0
    if share < MIN_DEFINED_SHARE or ok.sum() < 2:
        return float("nan"), float("nan"), share
    alpha = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values[ok], [alpha, 100 - alpha])
    return float(low), float(high), share


WALD_REPLICATES_PER_CONTRAST = 50  # chi-square reference only with this many replicates per contrast tested


def equal_rates_test(estimate: dict[str, np.ndarray], reps: dict[str, np.ndarray],
                     rates: tuple[str, ...]) -> float:
    """p-value of the Wald test that the groups' `rates` are equal (chi-square, G - 1 df per rate).

    `estimate[r]`: the groups' rates (G,); `reps['group:r']`: their bootstrap replicates (B, G), whose
    covariance (over patients: cluster-robust) estimates the estimate's. Groups undefined in the
    estimate are left out; NaN when fewer than two are defined or the replicates do not vary. A chi-square
    reference needs about 50 replicates per contrast; with fewer, Hotelling's F (with 10 refits and two
    contrasts the chi-square rejects a true null about 17 % of the time).
    """
    contrasts, columns = [], []
    for r in rates:
        keep = np.flatnonzero(np.isfinite(estimate[r]))
        if len(keep) < 2:
            return float("nan")
        contrasts.append(estimate[r][keep[1:]] - estimate[r][keep[0]])
        columns.append(reps[f"group:{r}"][:, keep[1:]] - reps[f"group:{r}"][:, keep[:1]])
    diff, boot = np.concatenate(contrasts), np.concatenate(columns, axis=1)
    boot = boot[np.isfinite(boot).all(axis=1)]
    if len(boot) < 10:
        return float("nan")
    cov = np.atleast_2d(np.cov(boot, rowvar=False))
    rank = np.linalg.matrix_rank(cov, tol=1e-12)
    if rank == 0:
        return float("nan")
    stat = float(diff @ np.linalg.pinv(cov, rcond=1e-10, hermitian=True) @ diff)
    from scipy import stats

    n = len(boot)
    if n >= WALD_REPLICATES_PER_CONTRAST * rank:
        return float(stats.chi2.sf(stat, rank))
    if n <= rank:
        return float("nan")
    # few replicates: the covariance is estimated from n values, so the statistic is
    # Hotelling's T^2, (n - k) / (k (n - 1)) T^2 ~ F(k, n - k); with one contrast this is t(n - 1) squared
    return float(stats.f.sf(stat * (n - rank) / (rank * (n - 1)), rank, n - rank))


def _group_estimate(design: _Design, point: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    unit = point or _replicate(design, np.ones((1, design.n_clusters)))
    return {m: unit[f"group:{m}"][0] for m in ("tpr", "fpr", "selection_rate")}


def _attrs(table: pd.DataFrame, **info: object) -> pd.DataFrame:
    table.attrs.update(level=LEVEL, test_equal="Wald (covariance bootstrap par patient)", correction=CORRECTION,
                       **info)
    return table


def summary_rows(point: dict[str, float], reps: dict[str, np.ndarray], groups: dict[str, np.ndarray]) -> list[dict]:
    """metric, estimate, low, high, defined, p_equal (gaps: test of equal group rates)."""
    rows = []
    for m in SUMMARY:
        low, high, share = _interval(reps[m])
        p = equal_rates_test(groups, reps, EQUAL_RATES[m]) if m in EQUAL_RATES else np.nan
        rows.append({"metric": m, "estimate": point[m], "low": low, "high": high, "defined": share, "p_equal": p})
    return rows


def bootstrap_metrics(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                      decision_col: str = DECISION, score_col: str | None = S.PROBA,
                      cluster_col: str | None = S.PATIENT, min_per_class: int = MIN_PER_CLASS) -> pd.DataFrame:
    """Point estimate (MetricFrame) and 95 % percentile interval of each SUMMARY metric.

    Columns: metric, estimate, low, high, defined (share of replicates where it is defined), p_equal.
    `cluster_col=None` resamples images instead of patients (for comparison only).
    """
    point = point_metrics(preds, attribute, decision_col, score_col, min_per_class)
    design = _design(preds, attribute, decision_col, score_col, cluster_col, min_per_class)
    reps = _replicates([design], len(preds), n_boot, seed)[0]
    rows = summary_rows(point, reps, _group_estimate(design))
    return _attrs(pd.DataFrame(rows), n_boot=n_boot, seed=seed, unit=cluster_col or "image",
                  attribute=attribute, n_clusters=design.n_clusters, groups=design.groups,
                  min_per_class=min_per_class)


def bootstrap_group_metrics(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                            decision_col: str = DECISION, score_col: str | None = S.PROBA,
                            cluster_col: str | None = S.PATIENT, min_per_class: int = MIN_PER_CLASS) -> pd.DataFrame:
    """Per group and metric: estimate (MetricFrame), 95 % interval, share defined, n, n_patients,
    n_positive, n_negative (a rate is n.d. below `min_per_class` images of its class)."""
    point = group_metrics(preds, attribute, decision_col, score_col, min_per_class=min_per_class)
    design = _design(preds, attribute, decision_col, score_col, cluster_col, min_per_class)
    reps = _replicates([design], len(preds), n_boot, seed)[0]
    rows = []
    for gi, g in enumerate(design.groups):
        for m in GROUP_METRICS:
            low, high, share = _interval(reps[f"group:{m}"][:, gi])
            rows.append({"attribute": attribute, "group": g, "metric": m, "estimate": point.loc[g, m],
                         "low": low, "high": high, "defined": share, "n": point.loc[g, "n"],
                         "n_patients": point.loc[g, "n_patients"], "n_positive": point.loc[g, "n_positive"],
                         "n_negative": point.loc[g, "n"] - point.loc[g, "n_positive"],
                         "n_patients_positive": point.loc[g, "n_patients_positive"],
                         "n_patients_negative": point.loc[g, "n_patients_negative"]})
    return _attrs(pd.DataFrame(rows), n_boot=n_boot, seed=seed, unit=cluster_col or "image",
                  attribute=attribute, min_per_class=min_per_class)


def undefined_groups(preds: pd.DataFrame, attribute: str, min_per_class: int = MIN_PER_CLASS) -> list[dict]:
    """Groups too small for a rate: group, class ('positifs' / 'négatifs'), count, min and unit ('images', or
    'patients' when the images are enough but come from too few patients); for the « n.d. » notes."""
    out = []
    y = preds[S.LABEL].to_numpy()
    g = group_labels(preds[attribute])
    for name in group_order(preds[attribute]):
        in_group = (g == name).to_numpy()
        for cls, word in ((1, "positifs"), (0, "négatifs")):
            rows = in_group & (y == cls)
            n, patients = int(rows.sum()), int(preds.loc[rows, S.PATIENT].nunique())
            if n < min_per_class:
                out.append({"group": name, "class": word, "count": n, "min": min_per_class, "unit": "images"})
            elif patients < min_patients(min_per_class):
                out.append({"group": name, "class": word, "count": patients, "min": min_patients(min_per_class),
                            "unit": "patients"})
    return out
def _align(other: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """`other` in the row order of `ref` (on `Image Index`), checking they hold the same images."""
    if S.IMAGE in ref.columns and S.IMAGE in other.columns:
        if ref[S.IMAGE].duplicated().any() or other[S.IMAGE].duplicated().any():
            raise ValueError("paired comparisons need one row per image")
        if len(other) != len(ref) or set(other[S.IMAGE]) != set(ref[S.IMAGE]):
            raise ValueError("paired comparisons need predictions on the same images")
        other = other.set_index(S.IMAGE).loc[ref[S.IMAGE].to_numpy()].reset_index()
    elif len(other) != len(ref):
        raise ValueError("paired comparisons need predictions on the same images")
    for col in (S.LABEL, S.PATIENT):
        if col in ref.columns and not np.array_equal(other[col].astype(str), ref[col].astype(str)):
            raise ValueError(f"paired predictions disagree on '{col}' for the same images")
    return other


def difference_p(diff: float, reps: np.ndarray) -> float:
    """Two-sided p-value of a paired difference: diff / bootstrap standard error against a normal reference
    (the tables of one training have hundreds of replicates; the seed-aware tables use `inference.combine`).

    A percentile-count p-value cannot go below 2 / B, which a correction over many comparisons would
    never reach; this form can. 1 when the difference is exactly 0 in every replicate.
    """
    ok = reps[np.isfinite(reps)]
    if not np.isfinite(diff) or len(ok) < 10 or np.mean(np.isfinite(reps)) < MIN_DEFINED_SHARE:
        return float("nan")
    se = float(np.std(ok, ddof=1))
    if se < 1e-12:
        return 1.0 if abs(diff) < 1e-12 and np.all(np.abs(ok) < 1e-12) else float("nan")
    return math.erfc(abs(diff) / se / math.sqrt(2))  # 2 x the normal tail, precise far in the tail


def adjust(p: np.ndarray, method: str = CORRECTION) -> np.ndarray:
    """Multiplicity-adjusted p-values (statsmodels `multipletests`); NaN entries stay NaN, out of the family."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        from statsmodels.stats.multitest import multipletests  # at use: kernels only read the results

        out[ok] = multipletests(p[ok], alpha=ALPHA, method=method)[1]
    return out


def _diff_rows(pa: dict, pb: dict, ra: dict, rb: dict) -> list[dict]:
    rows = []
    for m in SUMMARY:
        diff = pa[m] - pb[m]
        low, high, share = _interval(ra[m] - rb[m])
        rows.append({"metric": m, "diff": diff, "low": low, "high": high, "defined": share,
                     "p": difference_p(diff, ra[m] - rb[m])})
    return rows


def _mark_significant(table: pd.DataFrame, p_col: str, family: pd.Series) -> pd.DataFrame:
    """`p_adjusted` (Benjamini-Hochberg over the rows of `family`) and `significant` (adjusted p < EXPLORATORY_Q)."""
    p = np.where(family.to_numpy(), table[p_col].to_numpy(float), np.nan)
    table["p_adjusted"] = adjust(p)
    table["significant"] = table["p_adjusted"].to_numpy() < EXPLORATORY_Q
    return table


def paired_difference(preds_a: pd.DataFrame, preds_b: pd.DataFrame, attribute: str, n_boot: int = 500,
                      seed: int = 0, decision_col: str = DECISION, score_col: str | None = S.PROBA,
                      cluster_col: str | None = S.PATIENT, min_per_class: int = MIN_PER_CLASS,
                      tested: tuple[str, ...] = TESTED) -> pd.DataFrame:
    """metric(a) - metric(b) with the SAME patient resamples for both: a paired 95 % interval.

    Columns: metric, diff, low, high, defined, p, p_adjusted (Benjamini-Hochberg over the `tested` metrics),
    significant (adjusted p < EXPLORATORY_Q).
    """
    preds_b = _align(preds_b, preds_a)
    pa = point_metrics(preds_a, attribute, decision_col, score_col, min_per_class)
    pb = point_metrics(preds_b, attribute, decision_col, score_col, min_per_class)
    designs = [_design(p, attribute, decision_col, score_col, cluster_col, min_per_class) for p in (preds_a, preds_b)]
    ra, rb = _replicates(designs, len(preds_a), n_boot, seed)
    table = pd.DataFrame(_diff_rows(pa, pb, ra, rb))
    table = _mark_significant(table, "p", table["metric"].isin(tested))
    return _attrs(table, n_boot=n_boot, seed=seed, unit=cluster_col or "image", attribute=attribute,
                  family_size=int(table["p_adjusted"].notna().sum()))


def comparison_table(points: dict[str, dict[str, float]], reps: dict[str, dict[str, np.ndarray]],
                     groups: dict[str, dict[str, np.ndarray]], baseline: str,
                     tested: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The long comparison table from each method's point metrics and replicates (same resamples).

    Columns: method, metric, estimate, low, high, defined, p_equal, diff, diff_low, diff_high, p,
    p_adjusted (Benjamini-Hochberg over every method but the baseline x `tested` metric), significant.
    `tested` defaults to `tested_for` the number of groups (signed gaps for two groups). One training's
    table; the study's tables, over every seed, are `inference.comparison_over_seeds`.
    """
    rows = []
    for method in points:
        diffs = {r["metric"]: r for r in _diff_rows(points[method], points[baseline], reps[method], reps[baseline])}
        for r in summary_rows(points[method], reps[method], groups[method]):
            d = diffs[r["metric"]]
            rows.append({"method": method, **r, "diff": d["diff"], "diff_low": d["low"], "diff_high": d["high"],
                         "p": d["p"]})
    table = pd.DataFrame(rows)
    if tested is None:
        tested = tested_for(len(next(iter(groups.values()))["tpr"]))
    family = (table["method"] != baseline) & table["metric"].isin(tested)
    return _mark_significant(table, "p", family)


def compare_methods(preds_by_method: dict[str, pd.DataFrame], attribute: str, baseline: str = "uniform",
                    n_boot: int = 500, seed: int = 0, decision_col: str = DECISION,
                    score_col: str | None = S.PROBA, cluster_col: str | None = S.PATIENT,
                    min_per_class: int = MIN_PER_CLASS, realised: bool = False) -> pd.DataFrame:
    """One row per (method, metric): estimate, interval, paired difference with the baseline.

    Columns: see `comparison_table`. Every method is evaluated on the same resamples, so its
    interval is the one `bootstrap_metrics` gives with the same seed. `realised`: randomised rules
    are scored as they act (one random draw of their decisions per replicate, the point estimate
    the mean over REALISED_DRAWS draws). `comparison_wide` turns it into one row per method.
    """
    if baseline not in preds_by_method:
        raise ValueError(f"baseline '{baseline}' is not among the methods {list(preds_by_method)}")
    ref = preds_by_method[baseline]
    aligned = {m: _align(p, ref) for m, p in preds_by_method.items()}
    designs = {m: _design(p, attribute, decision_col, score_col, cluster_col, min_per_class)
               for m, p in aligned.items()}
    points = {m: realised_point(designs[m], seed) if realised and designs[m].randomised
              else point_metrics(p, attribute, decision_col, score_col, min_per_class) for m, p in aligned.items()}
    reps = dict(zip(aligned, _replicates(list(designs.values()), len(ref), n_boot, seed, realised), strict=True))
    groups = {m: _group_estimate(d) for m, d in designs.items()}
    table = comparison_table(points, reps, groups, baseline)
    return _attrs(table, n_boot=n_boot, seed=seed, unit=cluster_col or "image", attribute=attribute,
                  baseline=baseline, groups=designs[baseline].groups, min_per_class=min_per_class,
                  family_size=int(table["p_adjusted"].notna().sum()), realised=realised)


WIDE_FIELDS = {"": "estimate", "_low": "low", "_high": "high", "_p_equal": "p_equal", "_diff": "diff",
               "_diff_low": "diff_low", "_diff_high": "diff_high", "_diff_p": "p", "_diff_p_adjusted": "p_adjusted",
               "_significant": "significant"}


def comparison_wide(table: pd.DataFrame, metrics: tuple[str, ...] = KEY_METRICS) -> pd.DataFrame:
    """One row per method: `m`, `m_low`, `m_high`, `m_p_equal`, `m_diff`, `m_diff_low`, `m_diff_high`,
    `m_diff_p`, `m_diff_p_adjusted`, `m_significant` per metric."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        p = part.set_index("metric")
        row: dict[str, object] = {"method": method}
        for m in metrics:
            for suffix, col in WIDE_FIELDS.items():
                if col in p.columns:
                    row[f"{m}{suffix}"] = p.loc[m, col]
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(table.attrs)
    return out
