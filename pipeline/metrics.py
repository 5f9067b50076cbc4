"""Performance and fairness metrics, with intervals from a bootstrap over patients.

Decisions may be soft (the expected decision of a randomised post-processor, in [0, 1]): rates are
then expectations, e.g. TPR = sum(decision * y) / sum(y). Per-group point estimates go through
fairlearn's MetricFrame; the bootstrap uses per-patient confusion counts, so one replicate is a
matrix product instead of a MetricFrame (500 replicates of dozens of configurations in seconds).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import roc_auc_score

from . import schema as S

DECISION = "decision"
RATES = ("tpr", "fpr", "fnr", "selection_rate", "precision", "balanced_accuracy")
SUMMARY = ("balanced_accuracy", "auc", "tpr", "fpr", "dp_diff", "dp_ratio", "eopp_diff", "fpr_diff",
           "eo_diff", "worst_group_bacc", "worst_group_tpr", "ece_gap")
# Groups with fewer positives or negatives than this have undefined rates (reported as NaN).
MIN_PER_CLASS = 1


# ---------------------------------------------------------------- rates from (expected) counts


def _rates(pos: np.ndarray, neg: np.ndarray, tp: np.ndarray, fp: np.ndarray) -> dict[str, np.ndarray]:
    """Rates from positive/negative counts and expected true/false positives (any array shape)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.where(pos >= MIN_PER_CLASS, tp / pos, np.nan)
        fpr = np.where(neg >= MIN_PER_CLASS, fp / neg, np.nan)
        n = pos + neg
        return {"tpr": tpr, "fpr": fpr, "fnr": 1 - tpr,
                "selection_rate": np.where(n > 0, (tp + fp) / n, np.nan),
                "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
                "balanced_accuracy": (tpr + 1 - fpr) / 2}


def _gaps(group_rates: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Between-group gaps along the last axis (groups); NaN unless two groups are defined."""
    def spread(x: np.ndarray) -> np.ndarray:
        defined = np.sum(~np.isnan(x), axis=-1)
        with _quiet():
            return np.where(defined >= 2, np.nanmax(x, axis=-1) - np.nanmin(x, axis=-1), np.nan)

    sr = group_rates["selection_rate"]
    with _quiet():
        dp_ratio = np.nanmin(sr, axis=-1) / np.nanmax(sr, axis=-1)
        worst_bacc = np.nanmin(group_rates["balanced_accuracy"], axis=-1)
        worst_tpr = np.nanmin(group_rates["tpr"], axis=-1)
    eopp, fpr_gap = spread(group_rates["tpr"]), spread(group_rates["fpr"])
    return {"dp_diff": spread(sr), "dp_ratio": dp_ratio, "eopp_diff": eopp, "fpr_diff": fpr_gap,
            "eo_diff": np.fmax(eopp, fpr_gap) * np.where(np.isnan(eopp) | np.isnan(fpr_gap), np.nan, 1),
            "worst_group_bacc": worst_bacc, "worst_group_tpr": worst_tpr}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence 'All-NaN slice' warnings: an undefined group is reported as NaN on purpose."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# ---------------------------------------------------------------- point estimates


def _safe_auc(y: np.ndarray, score: np.ndarray | None, weight: np.ndarray | None = None) -> float:
    if score is None or len(np.unique(y[weight > 0] if weight is not None else y)) < 2:
        return float("nan")
    if np.isnan(score).any():
        return float("nan")
    return float(roc_auc_score(y, score, sample_weight=weight))


def calibration_error(y: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: mean |observed rate - mean score| over equal-width score bins."""
    if len(y) == 0 or score is None or np.isnan(score).any():
        return float("nan")
    idx = np.minimum((score * bins).astype(int), bins - 1)
    err = 0.0
    for b in np.unique(idx):
        m = idx == b
        err += m.mean() * abs(y[m].mean() - score[m].mean())
    return float(err)


def _expected_metric(name: str):
    def metric(y_true, y_pred) -> float:
        y, d = np.asarray(y_true, float), np.asarray(y_pred, float)
        pos, neg = y.sum(), (1 - y).sum()
        return float(_rates(np.array(pos), np.array(neg), np.array((d * y).sum()),
                            np.array((d * (1 - y)).sum()))[name])

    metric.__name__ = name
    return metric


def group_metrics(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA) -> pd.DataFrame:
    """Per-group rates (fairlearn MetricFrame), AUC, calibration error, image and patient counts."""
    known = preds[preds[attribute].notna()]
    y = known[S.LABEL].to_numpy(int)
    frame = MetricFrame(metrics={m: _expected_metric(m) for m in RATES}, y_true=y,
                        y_pred=known[decision_col].to_numpy(float),
                        sensitive_features=known[attribute].astype(str).to_numpy())
    table = frame.by_group.copy()
    table.index.name = "group"
    score = known[score_col].to_numpy(float) if score_col and score_col in known else None
    groups = known[attribute].astype(str).to_numpy()
    extra = {}
    for g in table.index:
        m = groups == g
        extra[g] = {"auc": _safe_auc(y[m], score[m] if score is not None else None),
                    "ece": calibration_error(y[m], score[m]) if score is not None else np.nan,
                    "n": int(m.sum()), "n_positive": int(y[m].sum()),
                    "n_patients": int(known.loc[m, S.PATIENT].nunique())}
    return table.join(pd.DataFrame(extra).T).astype(float)


def point_metrics(preds: pd.DataFrame, attribute: str, decision_col: str = DECISION,
                  score_col: str | None = S.PROBA) -> dict[str, float]:
    """Overall balanced accuracy, AUC, TPR, FPR and the between-group gaps for one attribute."""
    y = preds[S.LABEL].to_numpy(int)
    d = preds[decision_col].to_numpy(float)
    overall = _rates(np.array(y.sum()), np.array((1 - y).sum()), np.array((d * y).sum()),
                     np.array((d * (1 - y)).sum()))
    groups = group_metrics(preds, attribute, decision_col, score_col)
    gaps = _gaps({k: groups[k].to_numpy()[None, :] for k in RATES})
    score = preds[score_col].to_numpy(float) if score_col and score_col in preds else None
    out = {"balanced_accuracy": float(overall["balanced_accuracy"]), "auc": _safe_auc(y, score),
           "tpr": float(overall["tpr"]), "fpr": float(overall["fpr"])}
    out.update({k: float(v[0]) for k, v in gaps.items()})
    ece = groups["ece"].to_numpy()
    out["ece_gap"] = float(np.nanmax(ece) - np.nanmin(ece)) if np.sum(~np.isnan(ece)) >= 2 else np.nan
    return out


# ---------------------------------------------------------------- patient bootstrap


def _patient_counts(preds: pd.DataFrame, attribute: str, decision_col: str) -> tuple:
    """Per patient and group: positives, negatives, expected TP and FP; plus group names."""
    y = preds[S.LABEL].to_numpy(float)
    d = preds[decision_col].to_numpy(float)
    patients, p_idx = np.unique(preds[S.PATIENT].astype(str).to_numpy(), return_inverse=True)
    groups_known = preds[attribute].notna().to_numpy()
    names = np.array(sorted(preds.loc[groups_known, attribute].astype(str).unique()))
    g_idx = np.searchsorted(names, preds[attribute].astype(str).to_numpy())
    counts = np.zeros((len(patients), len(names) + 1, 4))  # last group slot: all images
    for slot, mask in ((g_idx, groups_known), (np.full(len(y), len(names)), np.ones(len(y), bool))):
        for k, values in enumerate((y, 1 - y, d * y, d * (1 - y))):
            np.add.at(counts[:, :, k], (p_idx[mask], slot[mask]), values[mask])
    return counts, names, p_idx, len(patients)


def _draws(n_patients: int, n_boot: int, seed: int) -> np.ndarray:
    """How many times each patient is drawn in each replicate, shape (n_boot, n_patients)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_patients, np.full(n_patients, 1 / n_patients), size=n_boot).astype(float)


def _replicate_metrics(counts: np.ndarray, draws: np.ndarray, y: np.ndarray, score: np.ndarray | None,
                       p_idx: np.ndarray) -> dict[str, np.ndarray]:
    totals = np.einsum("bp,pgk->bgk", draws, counts)
    group = _rates(*(totals[:, :-1, k] for k in range(4)))
    overall = _rates(*(totals[:, -1, k] for k in range(4)))
    out = {"balanced_accuracy": overall["balanced_accuracy"], "tpr": overall["tpr"], "fpr": overall["fpr"]}
    out.update(_gaps(group))
    if score is not None:
        out["auc"] = np.array([_safe_auc(y, score, w[p_idx]) for w in draws])
    return out


def _interval(values: np.ndarray) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if len(v) < 10:
        return float("nan"), float("nan")
    low, high = np.percentile(v, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_metrics(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                      decision_col: str = DECISION, score_col: str | None = S.PROBA) -> pd.DataFrame:
    """Point estimate and 95 % percentile interval of each summary metric, resampling patients."""
    point = point_metrics(preds, attribute, decision_col, score_col)
    counts, _, p_idx, n_patients = _patient_counts(preds, attribute, decision_col)
    score = preds[score_col].to_numpy(float) if score_col and score_col in preds else None
    reps = _replicate_metrics(counts, _draws(n_patients, n_boot, seed), preds[S.LABEL].to_numpy(int),
                              score, p_idx)
    rows = [{"metric": m, "estimate": point.get(m, np.nan),
             **dict(zip(("low", "high"), _interval(reps[m]) if m in reps else (np.nan, np.nan),
                        strict=True))} for m in SUMMARY]
    table = pd.DataFrame(rows)
    table.attrs.update(n_boot=n_boot, seed=seed, unit="patient")
    return table


def bootstrap_group_metrics(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                            decision_col: str = DECISION) -> pd.DataFrame:
    """Per-group TPR, FPR, selection rate and balanced accuracy with patient-bootstrap intervals."""
    counts, names, _, n_patients = _patient_counts(preds, attribute, decision_col)
    point = _rates(*(counts[:, :-1, k].sum(axis=0) for k in range(4)))
    totals = np.einsum("bp,pgk->bgk", _draws(n_patients, n_boot, seed), counts)
    reps = _rates(*(totals[:, :-1, k] for k in range(4)))
    rows = []
    for gi, g in enumerate(names):
        for m in ("tpr", "fpr", "selection_rate", "balanced_accuracy"):
            low, high = _interval(reps[m][:, gi])
            rows.append({"group": g, "metric": m, "estimate": float(point[m][gi]), "low": low, "high": high})
    return pd.DataFrame(rows)


def paired_difference(preds_a: pd.DataFrame, preds_b: pd.DataFrame, attribute: str, n_boot: int = 500,
                      seed: int = 0, decision_col: str = DECISION,
                      score_col: str | None = S.PROBA) -> pd.DataFrame:
    """Metric(a) - metric(b) with the SAME patient resamples for both (a paired interval)."""
    a = preds_a.sort_values(S.IMAGE).reset_index(drop=True)
    b = preds_b.sort_values(S.IMAGE).reset_index(drop=True)
    if not a[S.IMAGE].equals(b[S.IMAGE]):
        raise ValueError("paired differences need predictions on the same images")
    pa, pb = point_metrics(a, attribute, decision_col, score_col), point_metrics(b, attribute, decision_col,
                                                                                score_col)
    ca, _, p_idx, n_patients = _patient_counts(a, attribute, decision_col)
    cb, _, _, _ = _patient_counts(b, attribute, decision_col)
    draws = _draws(n_patients, n_boot, seed)
    y = a[S.LABEL].to_numpy(int)

    def scores(p: pd.DataFrame) -> np.ndarray | None:
        return p[score_col].to_numpy(float) if score_col and score_col in p else None

    ra = _replicate_metrics(ca, draws, y, scores(a), p_idx)
    rb = _replicate_metrics(cb, draws, y, scores(b), p_idx)
    rows = []
    for m in SUMMARY:
        if m in ra and m in rb:
            low, high = _interval(ra[m] - rb[m])
            rows.append({"metric": m, "diff": pa[m] - pb[m], "low": low, "high": high})
    table = pd.DataFrame(rows)
    table["significant"] = (table["low"] > 0) | (table["high"] < 0)
    return table


def compare_methods(preds_by_method: dict[str, pd.DataFrame], attribute: str, baseline: str = "uniform",
                    n_boot: int = 500, seed: int = 0, decision_col: str = DECISION,
                    score_col: str | None = S.PROBA) -> pd.DataFrame:
    """One row per method and metric: estimate, interval, and paired difference with the baseline."""
    rows = []
    for method, preds in preds_by_method.items():
        boot = bootstrap_metrics(preds, attribute, n_boot, seed, decision_col, score_col)
        diff = paired_difference(preds, preds_by_method[baseline], attribute, n_boot, seed, decision_col,
                                 score_col).set_index("metric")
        for r in boot.itertuples():
            d = diff.loc[r.metric] if r.metric in diff.index else None
            rows.append({"method": method, "metric": r.metric, "estimate": r.estimate, "low": r.low,
                         "high": r.high, "diff": d["diff"] if d is not None else np.nan,
                         "diff_low": d["low"] if d is not None else np.nan,
                         "diff_high": d["high"] if d is not None else np.nan,
                         "significant": bool(d["significant"]) if d is not None else False})
    table = pd.DataFrame(rows)
    table.attrs.update(n_boot=n_boot, seed=seed, baseline=baseline, attribute=attribute)
    return table
