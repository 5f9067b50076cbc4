"""Bias amplification: does the model widen the data's gap in `malade` between groups?

For a sensitive attribute A and the task T (malade / sain), on the same evaluation patients:

- data gap  = P(T = malade | A = g_hi) - P(T = malade | A = g_lo), where g_hi and g_lo are the groups
  with the highest and the lowest prevalence in the TRAINING data (`reference`): the bias the model
  learnt from, so the direction does not flip with a small evaluation sample;
- model gap = the same difference of predicted-malade rates, P(T̂ = malade | A = g);
- amplification = model gap - data gap (> 0: the model widens the data's gap, < 0: it narrows it);
- directional bias amplification A -> T (Wang & Russakovsky 2021, after Zhao et al. 2017): the mean
  over groups a and classes t of y_at Δ_at + (1 - y_at)(-Δ_at), with y_at = [P(a, t) > P(a) P(t)]
  and Δ_at = P(T̂ = t | a) - P(T = t | a). With two classes it reduces to the mean over groups of
  s_a (P(T̂ = 1 | a) - P(T = 1 | a)), s_a = +1 where the group's prevalence exceeds the overall one.
  y_at is fixed from the training data too, so every replicate measures the same direction.

Decisions may be soft (expected decisions of randomised post-processors). The study decides each
weighting's model at Wang & Russakovsky's threshold (`prevalence_matched_threshold`: the predicted
rate reproduces the training prevalence; at another operating point both measures mostly read the
global shift of the predicted rate) for every training seed, and averages over seeds
(`amplification_over_seeds`, intervals of `inference.combine`). One run: 95 % percentile bootstrap
over patients (`data_bias.patient_bootstrap`), one set of resamples for the data and the model, so
their difference is paired. No library computes these (fairlearn, AIF360
compare rates, not the model's rates with the data's); hence the few lines below.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.data_bias import patient_bootstrap
from pipeline.fairness.metrics import DECISION, LEVEL, group_labels, group_order

MEASURES = ("data_gap", "model_gap", "amplification", "bias_amp")


def _per_patient_sums(preds: pd.DataFrame, attribute: str, groups: list[str], patients: pd.Index,
                      decision_col: str) -> np.ndarray:
    """(patients, groups, 3): images, malade labels and expected malade decisions of each patient in each group."""
    g = group_labels(preds[attribute]).map({name: i for i, name in enumerate(groups)})
    keep = g.notna().to_numpy()
    cell = patients.get_indexer(preds.loc[keep, S.PATIENT].astype(str)) * len(groups) + g[keep].astype(int)
    values = [np.ones(keep.sum()), preds.loc[keep, S.LABEL].to_numpy(float), preds.loc[keep, decision_col]
              .to_numpy(float)]
    size = len(patients) * len(groups)
    return np.stack([np.bincount(cell, v, size) for v in values], axis=-1).reshape(len(patients), len(groups), 3)


def _measures(sums: np.ndarray, hi: int, lo: int, sign: np.ndarray) -> dict[str, np.ndarray]:
    """The measures of summed counts `sums` (..., groups, 3)."""
    n, y, d = sums[..., 0], sums[..., 1], sums[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence, predicted = y / n, d / n
    data_gap = prevalence[..., hi] - prevalence[..., lo]
    model_gap = predicted[..., hi] - predicted[..., lo]
    return {"data_gap": data_gap, "model_gap": model_gap, "amplification": model_gap - data_gap,
            "bias_amp": np.nanmean(sign * (predicted - prevalence), axis=-1)}


def _direction(preds: pd.DataFrame, attribute: str, reference: pd.DataFrame | None
               ) -> tuple[list[str], int, int, np.ndarray] | None:
    """The groups present, the indices of the highest- and lowest-prevalence groups of `reference` (default
    `preds`) and each group's sign (+1 above the overall prevalence); None with fewer than two groups."""
    labels = group_labels(preds[attribute])
    groups = [g for g in group_order(preds[attribute]) if (labels == g).any()]
    if len(groups) < 2:
        return None
    ref = preds if reference is None else reference
    ref_groups = group_labels(ref[attribute])
    by_group = ref[S.LABEL].groupby(ref_groups).mean().reindex(groups)
    prevalence = by_group.fillna(float(ref[S.LABEL].mean())).to_numpy(float)
    hi, lo = int(np.argmax(prevalence)), int(np.argmin(prevalence))
    sign = np.where(prevalence > float(ref.loc[ref_groups.notna(), S.LABEL].mean()), 1.0, -1.0)
    return groups, hi, lo, sign


def _undefined(out: dict) -> dict:
    return {**out, "high_group": None, "low_group": None,
            **{m: {"estimate": np.nan, "low": np.nan, "high": np.nan} for m in MEASURES}}


def amplification(preds: pd.DataFrame, attribute: str, n_boot: int = 500, seed: int = 0,
                  decision_col: str = DECISION, reference: pd.DataFrame | None = None) -> dict:
    """The data's gap, the model's gap and their difference for one attribute, with patient-bootstrap intervals.

    Returns {"attribute", "high_group", "low_group", "groups", "n_patients", and for each measure of
    MEASURES: estimate, low, high}. Groups without images are left out; fewer than two groups: NaN.
    `reference` (rows with `label` and the attribute; default `preds`) sets the direction.
    """
    patients = pd.Index(pd.unique(preds[S.PATIENT].astype(str)))
    direction = _direction(preds, attribute, reference)
    out: dict = {"attribute": attribute, "groups": direction[0] if direction else [], "n_patients": len(patients)}
    if direction is None:
        return _undefined(out)
    groups, hi, lo, sign = direction
    sums = _per_patient_sums(preds, attribute, groups, patients, decision_col)
    point = _measures(sums.sum(axis=0), hi, lo, sign)
    boot = patient_bootstrap(preds, n_boot, seed)  # its columns: the patients in the order of `patients`
    reps = _measures(np.einsum("bp,pgk->bgk", boot.weights.astype(float), sums), hi, lo, sign)
    alpha = (1 - LEVEL) / 2 * 100
    for m in MEASURES:
        values = reps[m][np.isfinite(reps[m])]
        low, high = np.percentile(values, [alpha, 100 - alpha]) if len(values) > 1 else (np.nan, np.nan)
        out[m] = {"estimate": float(point[m]), "low": float(low), "high": float(high)}
    return {**out, "high_group": groups[hi], "low_group": groups[lo]}


def prevalence_matched_threshold(inner_proba: np.ndarray, prevalence: float) -> float:
    """Wang & Russakovsky's threshold: the score above which the share of held-out train images predicted
    *malade* equals the training prevalence (so the model's overall rate reproduces the data's)."""
    inner_proba = np.asarray(inner_proba, dtype=float)
    if len(inner_proba) == 0:
        return 0.5
    return float(np.quantile(inner_proba, 1 - float(prevalence), method="higher"))


def amplification_over_seeds(runs: list[pd.DataFrame], attribute: str, n_boot: int = 500, seed: int = 0,
                             decision_col: str = DECISION, reference: pd.DataFrame | None = None) -> dict:
    """`amplification` of one model trained with several seeds, all decided on the same evaluation patients:
    each measure is the mean over the runs, with the interval and p-value of `inference.combine` (patient
    resamples shared by the runs, plus the variance between runs), as the primary family's."""
    from pipeline.fairness.inference import combine

    first = runs[0]
    patients = pd.Index(pd.unique(first[S.PATIENT].astype(str)))
    direction = _direction(first, attribute, reference)
    out: dict = {"attribute": attribute, "groups": direction[0] if direction else [], "n_patients": len(patients),
                 "n_seeds": len(runs)}
    if direction is None:
        return _undefined(out)
    groups, hi, lo, sign = direction
    boot = patient_bootstrap(first, n_boot, seed)
    points: dict[str, list[float]] = {m: [] for m in MEASURES}
    replicates: dict[str, list[np.ndarray]] = {m: [] for m in MEASURES}
    for preds in runs:
        if set(preds[S.PATIENT].astype(str)) != set(patients):
            raise ValueError("amplification_over_seeds: every run must be decided on the same patients")
        sums = _per_patient_sums(preds, attribute, groups, patients, decision_col)
        point = _measures(sums.sum(axis=0), hi, lo, sign)
        reps = _measures(np.einsum("bp,pgk->bgk", boot.weights.astype(float), sums), hi, lo, sign)
        for m in MEASURES:
            points[m].append(float(point[m]))
            replicates[m].append(reps[m])
    for m in MEASURES:
        estimate, low, high, p_value, *_ = combine(np.array(points[m]), np.stack(replicates[m]))
        out[m] = {"estimate": estimate, "low": low, "high": high, "p_value": p_value,
                  "per_seed": tuple(points[m])}
    return {**out, "high_group": groups[hi], "low_group": groups[lo]}


def amplification_table(decided: dict[str, pd.DataFrame], attributes: list[str], n_boot: int = 500,
                        seed: int = 0, decision_col: str = DECISION,
                        reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (method, attribute): groups compared and every measure with its interval.

    `decided`: method name -> predictions with a decision column, all on the same patients, or a list of
    them (one per training seed: `amplification_over_seeds`). Columns: method, attribute, high_group,
    low_group, n_patients, n_seeds, and m, m_low, m_high, m_p (NaN for one run), m_per_seed for m in MEASURES.
    """
    rows = []
    for method, preds in decided.items():
        runs = preds if isinstance(preds, list) else None
        for attribute in attributes:
            r = (amplification_over_seeds(runs, attribute, n_boot, seed, decision_col, reference) if runs
                 else amplification(preds, attribute, n_boot, seed, decision_col, reference))
            row = {"method": method, "attribute": attribute, "high_group": r["high_group"],
                   "low_group": r["low_group"], "n_patients": r["n_patients"], "n_seeds": r.get("n_seeds", 1)}
            for m in MEASURES:
                row[m], row[f"{m}_low"], row[f"{m}_high"] = (r[m][k] for k in ("estimate", "low", "high"))
                row[f"{m}_p"] = r[m].get("p_value", np.nan)
                row[f"{m}_per_seed"] = r[m].get("per_seed", ())
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(n_boot=n_boot, seed=seed, level=LEVEL, unit="patient")
    return table
