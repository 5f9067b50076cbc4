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

Undefined values. A rate needs at least `MIN_PER_CLASS` images of its class in the group (TPR:
positives, FPR: negatives); the AUC needs both classes; a gap needs two groups where the rate is
defined. Otherwise the value is NaN ("n.d." in the report), never an error. Rows whose sensitive
value is missing count in the overall metrics, not in any group.

Bootstrap. Patients (not images) are resampled with replacement: images of one patient are
correlated, and an image bootstrap would give too narrow intervals. A resample is a vector of
draw counts per patient; per-patient sums (positives, negatives, expected TP and FP, calibration
residuals per bin, per group) make one replicate a matrix product instead of a MetricFrame, and
the AUC is computed for all replicates at once from weighted ranks. The point estimate itself
comes from MetricFrame; the fast path at the unit resample equals it (tests/test_metrics.py).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate
from scipy import sparse
from sklearn.metrics import balanced_accuracy_score, precision_score, recall_score, roc_auc_score

from pipeline.data import schema as S

DECISION = "decision"


ECE_BINS = 10


MIN_PER_CLASS = 1  # images of a class a group needs for the rates of that class to be defined


MIN_DEFINED_SHARE = 0.9  # share of bootstrap replicates where a metric must be defined for an interval


LEVEL = 0.95


_NO_GROUP = "__missing__"


MAX_CELLS = 4_000_000  # replicates x images held in memory at once by the bootstrap


GROUP_METRICS = ("tpr", "fpr", "fnr", "selection_rate", "precision", "balanced_accuracy", "auc", "ece")


OVERALL = ("balanced_accuracy", "auc", "tpr", "fpr", "ece")


GAPS = ("dp_diff", "dp_ratio", "eopp_diff", "fpr_diff", "eo_diff", "worst_group_bacc", "worst_group_tpr",
        "ece_gap")


SUMMARY = OVERALL + GAPS


KEY_METRICS = ("balanced_accuracy", "auc", "eo_diff", "eopp_diff", "dp_diff", "worst_group_bacc", "ece_gap")


LOWER_IS_BETTER = frozenset({"fpr", "fnr", "ece", "dp_diff", "eopp_diff", "fpr_diff", "eo_diff", "ece_gap"})


METRIC_LABELS_FR = {
    "balanced_accuracy": "Exactitude équilibrée", "auc": "AUC", "tpr": "Sensibilité (TPR)",
    "fpr": "Taux de faux positifs (FPR)", "fnr": "Sous-diagnostic (FNR)", "selection_rate": "Taux de sélection",
    "precision": "Précision (VPP)", "ece": "Erreur de calibration (ECE)",
    "dp_diff": "Écart de parité démographique", "dp_ratio": "Ratio de parité démographique",
    "eopp_diff": "Écart d'égalité des chances (TPR)", "fpr_diff": "Écart de FPR",
    "eo_diff": "Écart d'égalité des cotes (equalized odds)", "worst_group_bacc": "Exactitude équilibrée du pire groupe",
    "worst_group_tpr": "TPR du pire groupe", "ece_gap": "Écart de calibration",
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


def _has(y: np.ndarray, w: np.ndarray, cls: int) -> bool:
    """At least MIN_PER_CLASS images of class `cls` (weights of an image's two copies sum to 1)."""
    return w[y == cls].sum() >= MIN_PER_CLASS - 1e-9


def _tpr(y_true, y_pred, sample_weight) -> float:
    if not _has(y_true, sample_weight, 1):
        return np.nan
    return recall_score(y_true, y_pred, sample_weight=sample_weight, zero_division=np.nan)


def _fpr(y_true, y_pred, sample_weight) -> float:
    if not _has(y_true, sample_weight, 0):
        return np.nan
    return 1 - recall_score(y_true, y_pred, pos_label=0, sample_weight=sample_weight, zero_division=np.nan)


def _fnr(y_true, y_pred, sample_weight) -> float:
    return 1 - _tpr(y_true, y_pred, sample_weight)


def _precision(y_true, y_pred, sample_weight) -> float:
    return precision_score(y_true, y_pred, sample_weight=sample_weight, zero_division=np.nan)


def _bacc(y_true, y_pred, sample_weight) -> float:
    if not (_has(y_true, sample_weight, 0) and _has(y_true, sample_weight, 1)):
        return np.nan
    return balanced_accuracy_score(y_true, y_pred, sample_weight=sample_weight)


def _selection(y_true, y_pred, sample_weight) -> float:
    return selection_rate(y_true, y_pred, sample_weight=sample_weight)


def _auc(y_true, y_score) -> float:
    y = np.asarray(y_true)
    if min((y == 1).sum(), (y == 0).sum()) < MIN_PER_CLASS:
        return np.nan
    return roc_auc_score(y, y_score)


def _ece(y_true, y_score) -> float:
    return calibration_error(np.asarray(y_true), np.asarray(y_score))


_DECISION_METRICS: dict[str, Callable] = {"tpr": _tpr, "fpr": _fpr, "fnr": _fnr, "selection_rate": _selection,
                                          "precision": _precision, "balanced_accuracy": _bacc}


_SCORE_METRICS: dict[str, Callable] = {"auc": _auc, "ece": _ece}


def _quiet_frame(**kwargs: object) -> MetricFrame:
    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return MetricFrame(**kwargs)


def metric_frames(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA) -> tuple[MetricFrame, MetricFrame | None]:
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
    decisions = _quiet_frame(metrics=_DECISION_METRICS, y_true=rows["y"].to_numpy(),
                             y_pred=rows["pred"].to_numpy(), sensitive_features=rows["group"],
                             sample_params={m: {"sample_weight": rows["w"].to_numpy()} for m in _DECISION_METRICS})
    score = _score(preds, score_col)
    if score is None:
        return decisions, None
    scores = _quiet_frame(metrics=_SCORE_METRICS, y_true=y, y_pred=score,
                          sensitive_features=pd.Series(groups, name="group"))
    return decisions, scores


def group_metrics(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA,
                  frames: tuple[MetricFrame, MetricFrame | None] | None = None) -> pd.DataFrame:
    """Rows = groups (display order); columns = GROUP_METRICS, n, n_positive, n_patients."""
    names = group_order(preds[attribute])
    decisions, scores = frames or metric_frames(preds, attribute, decision_col, score_col)
    table = decisions.by_group
    if scores is not None:
        table = table.join(scores.by_group)
    table = table.reindex(names).reindex(columns=list(GROUP_METRICS)).astype(float)
    by_group = preds.groupby(group_labels(preds[attribute]), dropna=True)
    counts = by_group.agg(n=(S.LABEL, "size"), n_positive=(S.LABEL, "sum"), n_patients=(S.PATIENT, "nunique"))
    table = table.join(counts.reindex(names).astype(float))
    table.index.name = "group"
    table.attrs["attribute"] = attribute
    return table


def _spread(x: np.ndarray) -> np.ndarray:
    """max - min along the last axis; NaN unless two values are defined."""
    with _quiet():
        return np.where(np.sum(~np.isnan(x), axis=-1) >= 2, np.nanmax(x, axis=-1) - np.nanmin(x, axis=-1), np.nan)


def _gaps(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Between-group gaps along the last axis (groups) of the per-group arrays."""
    sr = group["selection_rate"]
    two = np.sum(~np.isnan(sr), axis=-1) >= 2
    eopp, fpr_gap = _spread(group["tpr"]), _spread(group["fpr"])
    with _quiet():
        ratio = np.where(two, np.nanmin(sr, axis=-1) / np.nanmax(sr, axis=-1), np.nan)
        return {"dp_diff": _spread(sr), "dp_ratio": ratio, "eopp_diff": eopp, "fpr_diff": fpr_gap,
                "eo_diff": np.where(np.isnan(eopp) | np.isnan(fpr_gap), np.nan, np.fmax(eopp, fpr_gap)),
                "worst_group_bacc": np.nanmin(group["balanced_accuracy"], axis=-1),
                "worst_group_tpr": np.nanmin(group["tpr"], axis=-1), "ece_gap": _spread(group["ece"])}


def point_metrics(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA) -> dict[str, float]:
    """Overall metrics and between-group gaps for one attribute; keys are `SUMMARY`.

    balanced_accuracy, auc, tpr, fpr, ece (overall); dp_diff, dp_ratio (selection rates),
    eopp_diff (TPR gap), fpr_diff, eo_diff = max(TPR gap, FPR gap), worst_group_bacc,
    worst_group_tpr, ece_gap (max - min of the groups' ECE). Undefined values are NaN.
    """
    frames = metric_frames(preds, attribute, decision_col, score_col)
    overall = pd.concat([f.overall for f in frames if f is not None])  # every row, missing groups included
    out = {m: float(overall[m]) if m in overall.index else np.nan for m in OVERALL}
    groups = group_metrics(preds, attribute, decision_col, score_col, frames)
    gaps = _gaps({m: groups[m].to_numpy(float) for m in GROUP_METRICS})
    out.update({k: float(v) for k, v in gaps.items()})
    return {k: out[k] for k in SUMMARY}


@dataclass
class _Design:
    """What a replicate needs: per-cluster sums per group slot, per-cluster counts by score rank."""

    counts: np.ndarray  # (clusters, groups + 1, 4 + ECE_BINS); last slot = all images
    groups: list[str]
    auc_slots: list[tuple[sparse.csr_matrix, sparse.csr_matrix]] | None  # per slot, see _rank_matrices

    @property
    def n_clusters(self) -> int:
        return self.counts.shape[0]


def _cluster_index(preds: pd.DataFrame, cluster_col: str | None) -> np.ndarray:
    if cluster_col is None:
        return np.arange(len(preds))
    return np.unique(preds[cluster_col].astype(str).to_numpy(), return_inverse=True)[1].ravel()


def _design(preds: pd.DataFrame, attribute: str, decision_col: str, score_col: str | None,
            cluster_col: str | None = S.PATIENT) -> _Design:
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
    return _Design(counts, names, slots)


def _rank_matrices(score: np.ndarray, y: np.ndarray, cluster: np.ndarray,
                   n_clusters: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Positives and negatives of each cluster at each distinct score, ascending: (scores, clusters)."""
    values, rank = np.unique(score, return_inverse=True)
    shape = (len(values), n_clusters)
    pos = sparse.csr_matrix((y.astype(float), (rank.ravel(), cluster)), shape=shape)
    neg = sparse.csr_matrix((1 - y.astype(float), (rank.ravel(), cluster)), shape=shape)
    return pos, neg


def _weighted_auc(draws: np.ndarray, slot: tuple[sparse.csr_matrix, sparse.csr_matrix]) -> np.ndarray:
    """AUC of each resample (rows of `draws`): Mann-Whitney on weighted ranks, ties counted half."""
    pos, neg = ((m @ draws.T).T for m in slot)  # (B, distinct scores)
    below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with _quiet():
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
    ok = (total_pos >= MIN_PER_CLASS - 1e-9) & (total_neg >= MIN_PER_CLASS - 1e-9)
    return np.where(ok, auc, np.nan)


def _rates(t: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from summed counts t[..., k] (k = pos, neg, tp, fp, calibration residual per bin)."""
    pos, neg, tp, fp = (t[..., j] for j in range(4))
    with _quiet():
        tpr = np.where(pos >= MIN_PER_CLASS - 1e-9, tp / pos, np.nan)
        fpr = np.where(neg >= MIN_PER_CLASS - 1e-9, fp / neg, np.nan)
        n = pos + neg
        return {"tpr": tpr, "fpr": fpr, "fnr": 1 - tpr,
                "selection_rate": np.where(n > 0, (tp + fp) / n, np.nan),
                "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
                "balanced_accuracy": (tpr + 1 - fpr) / 2,
                "ece": np.where(n > 0, np.abs(t[..., 4:]).sum(axis=-1) / n, np.nan)}


def _replicate(design: _Design, draws: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics of each resample (rows of `draws`, counts per cluster): SUMMARY keys -> (B,),
    'group:<metric>' -> (B, groups)."""
    b, n_slots = draws.shape[0], design.counts.shape[1]
    totals = (draws @ design.counts.reshape(design.n_clusters, -1)).reshape(b, n_slots, -1)
    group, overall = _rates(totals[:, :-1]), _rates(totals[:, -1])
    if design.auc_slots is None:
        group["auc"] = np.full((b, n_slots - 1), np.nan)
        overall["auc"] = np.full(b, np.nan)
        group["ece"], overall["ece"] = np.full_like(group["ece"], np.nan), np.full(b, np.nan)
    else:
        aucs = np.stack([_weighted_auc(draws, s) for s in design.auc_slots], axis=1)
        group["auc"], overall["auc"] = aucs[:, :-1], aucs[:, -1]
    out = {m: overall[m] for m in OVERALL}
    out.update(_gaps(group))
    out.update({f"group:{m}": group[m] for m in GROUP_METRICS})
    return out


def _draw_chunks(n_clusters: int, n_images: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Resamples of clusters with replacement as draw counts, (chunk, n_clusters), reproducible."""
    rng = np.random.default_rng(seed)
    chunk = int(max(1, min(n_boot, MAX_CELLS // max(n_images, n_clusters, 1))))
    p = np.full(n_clusters, 1 / n_clusters)
    for start in range(0, n_boot, chunk):
        yield rng.multinomial(n_clusters, p, size=min(chunk, n_boot - start)).astype(float)


def _replicates(designs: list[_Design], n_images: int, n_boot: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Replicates of several designs on the SAME resamples (designs share their clusters)."""
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in designs]
    for draws in _draw_chunks(designs[0].n_clusters, n_images, n_boot, seed):
        for part, design in zip(parts, designs, strict=True):
            part.append(_replicate(design, draws))
    return [{k: np.concatenate([c[k] for c in part]) for k in part[0]} for part in parts]


def point_metrics_fast(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                       score_col: str | None = S.PROBA) -> dict[str, float]:
    """The bootstrap's fast path at the unit resample: equals `point_metrics` (tested)."""
    design = _design(preds, attribute, decision_col, score_col)
    reps = _replicate(design, np.ones((1, design.n_clusters)))
    return {m: float(reps[m][0]) for m in SUMMARY}


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(low, high, share of replicates where defined); NaN bounds when too few are defined."""
    ok = ~np.isnan(values)
    share = float(ok.mean()) if len(values) else 0.0
    if share < MIN_DEFINED_SHARE or ok.sum() < 2:
        return float("nan"), float("nan"), share
    alpha = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(values[ok], [alpha, 100 - alpha])
    return float(low), float(high), share


def _attrs(table: pd.DataFrame, **info: object) -> pd.DataFrame:
    table.attrs.update(level=LEVEL, **info)
    return table


def bootstrap_metrics(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                      decision_col: str = DECISION, score_col: str | None = S.PROBA,
                      cluster_col: str | None = S.PATIENT) -> pd.DataFrame:
    """Point estimate (MetricFrame) and 95 % percentile interval of each SUMMARY metric.

    Columns: metric, estimate, low, high, defined (share of replicates where it is defined).
    `cluster_col=None` resamples images instead of patients (for comparison only).
    """
    point = point_metrics(preds, attribute, decision_col, score_col)
    design = _design(preds, attribute, decision_col, score_col, cluster_col)
    reps = _replicates([design], len(preds), n_boot, seed)[0]
    rows = [{"metric": m, "estimate": point[m], **dict(zip(("low", "high", "defined"), _interval(reps[m]),
                                                            strict=True))} for m in SUMMARY]
    return _attrs(pd.DataFrame(rows), n_boot=n_boot, seed=seed, unit=cluster_col or "image",
                  attribute=attribute, n_clusters=design.n_clusters)


def bootstrap_group_metrics(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                            decision_col: str = DECISION, score_col: str | None = S.PROBA,
                            cluster_col: str | None = S.PATIENT) -> pd.DataFrame:
    """Per group and metric: estimate (MetricFrame), 95 % interval, share defined, n, n_patients."""
    point = group_metrics(preds, attribute, decision_col, score_col)
    design = _design(preds, attribute, decision_col, score_col, cluster_col)
    reps = _replicates([design], len(preds), n_boot, seed)[0]
    rows = []
    for gi, g in enumerate(design.groups):
        for m in GROUP_METRICS:
            low, high, share = _interval(reps[f"group:{m}"][:, gi])
            rows.append({"attribute": attribute, "group": g, "metric": m, "estimate": point.loc[g, m],
                         "low": low, "high": high, "defined": share, "n": point.loc[g, "n"],
                         "n_patients": point.loc[g, "n_patients"]})
    return _attrs(pd.DataFrame(rows), n_boot=n_boot, seed=seed, unit=cluster_col or "image",
                  attribute=attribute)


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


def _significant(low: float, high: float) -> bool:
    return bool(low > 0 or high < 0)


def _diff_rows(pa: dict, pb: dict, ra: dict, rb: dict) -> list[dict]:
    rows = []
    for m in SUMMARY:
        low, high, share = _interval(ra[m] - rb[m])
        rows.append({"metric": m, "diff": pa[m] - pb[m], "low": low, "high": high, "defined": share,
                     "significant": _significant(low, high)})
    return rows


def paired_difference(preds_a: pd.DataFrame, preds_b: pd.DataFrame, attribute: str, n_boot: int = 500,
                      seed: int = 0, decision_col: str = DECISION, score_col: str | None = S.PROBA,
                      cluster_col: str | None = S.PATIENT) -> pd.DataFrame:
    """metric(a) - metric(b) with the SAME patient resamples for both: a paired 95 % interval.

    Columns: metric, diff, low, high, defined, significant (the interval excludes 0).
    """
    preds_b = _align(preds_b, preds_a)
    pa = point_metrics(preds_a, attribute, decision_col, score_col)
    pb = point_metrics(preds_b, attribute, decision_col, score_col)
    designs = [_design(p, attribute, decision_col, score_col, cluster_col) for p in (preds_a, preds_b)]
    ra, rb = _replicates(designs, len(preds_a), n_boot, seed)
    return _attrs(pd.DataFrame(_diff_rows(pa, pb, ra, rb)), n_boot=n_boot, seed=seed,
                  unit=cluster_col or "image", attribute=attribute)


def compare_methods(preds_by_method: dict[str, pd.DataFrame], attribute: str, baseline: str = "uniform",
                    n_boot: int = 500, seed: int = 0, decision_col: str = DECISION,
                    score_col: str | None = S.PROBA, cluster_col: str | None = S.PATIENT) -> pd.DataFrame:
    """One row per (method, metric): estimate, interval, paired difference with the baseline.

    Columns: method, metric, estimate, low, high, defined, diff, diff_low, diff_high, significant.
    Every method is evaluated on the same resamples, so its interval is the one `bootstrap_metrics`
    gives with the same seed. `comparison_wide` turns it into one row per method.
    """
    if baseline not in preds_by_method:
        raise ValueError(f"baseline '{baseline}' is not among the methods {list(preds_by_method)}")
    ref = preds_by_method[baseline]
    aligned = {m: _align(p, ref) for m, p in preds_by_method.items()}
    points = {m: point_metrics(p, attribute, decision_col, score_col) for m, p in aligned.items()}
    designs = [_design(p, attribute, decision_col, score_col, cluster_col) for p in aligned.values()]
    reps = dict(zip(aligned, _replicates(designs, len(ref), n_boot, seed), strict=True))
    rows = []
    for method in aligned:
        diffs = {r["metric"]: r for r in _diff_rows(points[method], points[baseline], reps[method],
                                                    reps[baseline])}
        for m in SUMMARY:
            low, high, share = _interval(reps[method][m])
            d = diffs[m]
            rows.append({"method": method, "metric": m, "estimate": points[method][m], "low": low,
                         "high": high, "defined": share, "diff": d["diff"], "diff_low": d["low"],
                         "diff_high": d["high"], "significant": d["significant"]})
    return _attrs(pd.DataFrame(rows), n_boot=n_boot, seed=seed, unit=cluster_col or "image",
                  attribute=attribute, baseline=baseline)


def comparison_wide(table: pd.DataFrame, metrics: tuple[str, ...] = KEY_METRICS) -> pd.DataFrame:
    """One row per method: `m`, `m_low`, `m_high`, `m_diff`, `m_diff_low`, `m_diff_high` per metric."""
    rows = []
    for method, part in table.groupby("method", sort=False):
        p = part.set_index("metric")
        row: dict[str, object] = {"method": method}
        for m in metrics:
            row[m], row[f"{m}_low"], row[f"{m}_high"] = p.loc[m, ["estimate", "low", "high"]]
            row[f"{m}_diff"], row[f"{m}_diff_low"], row[f"{m}_diff_high"] = p.loc[m, ["diff", "diff_low",
                                                                                       "diff_high"]]
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(table.attrs)
    return out
