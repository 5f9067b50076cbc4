"""Intersectional subgroups: the metrics of each crossing of two sensitive attributes, with small-group rules.

A crossing (sex x age band, sex x view, ...) is a new attribute whose groups are the cells
« F × 60+ ». Its per-group metrics and patient-bootstrap intervals come from
`metrics.bootstrap_group_metrics`; the study's small-group rule then applies: a rate of a class
(TPR, FNR: positives; FPR: negatives) needs at least `min_positives` images of that class in the
subgroup, the AUC and balanced accuracy need both, otherwise the value is « n.d. » with the reason.
The worst subgroup is the one with the highest underdiagnosis (FNR) among those where it is defined.
The maximum of a dozen noisy rates is biased upwards (the winner's curse): `shrunken_rates` gives each
subgroup's empirical-Bayes estimate (a beta prior fitted across the subgroups by the method of
moments, as in Efron & Morris), which the report quotes beside the raw one. It is a few lines; no
maintained library offers beta-binomial empirical Bayes for this.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.metrics import DECISION, bootstrap_group_metrics, group_labels, min_patients

SEPARATOR = " × "


NEEDS = {"tpr": (1,), "fnr": (1,), "fpr": (0,), "auc": (0, 1), "balanced_accuracy": (0, 1)}


METRICS = ("fnr", "fpr", "auc", "balanced_accuracy", "selection_rate")


def crossing(frame: pd.DataFrame, a: str, b: str) -> pd.Series:
    """« F × 60+ » per row (NaN where either value is missing), categories in the attributes' order."""
    la, lb = group_labels(frame[a]), group_labels(frame[b])
    values = (la + SEPARATOR + lb).where(la.notna() & lb.notna())
    order_a = [str(c) for c in frame[a].cat.categories] if isinstance(frame[a].dtype, pd.CategoricalDtype) \
        else sorted(la.dropna().unique())
    order_b = [str(c) for c in frame[b].cat.categories] if isinstance(frame[b].dtype, pd.CategoricalDtype) \
        else sorted(lb.dropna().unique())
    cats = [f"{x}{SEPARATOR}{y}" for x, y in itertools.product(order_a, order_b)]
    return pd.Series(pd.Categorical(values, categories=cats, ordered=True), index=frame.index)


def subgroup_metrics(preds: pd.DataFrame, attributes: list[str], min_positives: int = 10, n_boot: int = 500,
                     seed: int = 0, decision_col: str = DECISION) -> pd.DataFrame:
    """One row per (crossing, subgroup, metric): estimate, low, high, n, n_positive, n_negative, n_patients,
    reason (why « n.d. », empty when defined)."""
    parts = []
    for a, b in itertools.combinations(attributes, 2):
        name = f"{a}{SEPARATOR}{b}"
        crossed = preds.assign(**{name: crossing(preds, a, b)})
        table = bootstrap_group_metrics(crossed, name, n_boot, seed, decision_col=decision_col,
                                        min_per_class=min_positives)
        table = table[table["metric"].isin(METRICS)].copy()
        if "n_positive" not in table.columns:  # the class counts of each subgroup, unless the metrics gave them
            groups = group_labels(crossed[name])
            counts = crossed.groupby(groups)[S.LABEL].agg(n_positive="sum", n="size")
            table = table.join(counts.drop(columns="n"), on="group")
            table["n_negative"] = table["n"] - table["n_positive"]
        table["reason"] = [_reason(m, p, n, min_positives, pp, pn) for m, p, n, pp, pn in
                           zip(table["metric"], table["n_positive"], table["n_negative"],
                               table["n_patients_positive"], table["n_patients_negative"], strict=True)]
        undefined = table["reason"] != ""
        table.loc[undefined, ["estimate", "low", "high"]] = np.nan
        parts.append(table.assign(crossing=name, first=a, second=b))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out.attrs.update(n_boot=n_boot, seed=seed, min_positives=min_positives)
    return out


def _reason(metric: str, positives: float, negatives: float, minimum: int, patients_positive: float = np.inf,
            patients_negative: float = np.inf) -> str:
    """« moins de 10 malades », « malades de moins de 5 patients », or empty (the rate is defined)."""
    needed = NEEDS.get(metric, ())
    short = [word for cls, word in ((1, "malades"), (0, "sains")) if cls in needed
             and (positives if cls == 1 else negatives) < minimum]
    if short:
        return f"moins de {minimum} {' et de '.join(short)}"
    few = [word for cls, word in ((1, "malades"), (0, "sains")) if cls in needed
           and (patients_positive if cls == 1 else patients_negative) < min_patients(minimum)]
    return f"{' et '.join(few)} de moins de {min_patients(minimum)} patients" if few else ""


def worst_subgroup(table: pd.DataFrame, metric: str = "fnr") -> pd.Series | None:
    """The subgroup with the highest `metric` (lowest for AUC, balanced accuracy) among defined ones."""
    part = table[(table["metric"] == metric) & table["estimate"].notna()]
    if part.empty:
        return None
    higher_is_worse = metric in ("fnr", "fpr")
    return part.loc[part["estimate"].idxmax() if higher_is_worse else part["estimate"].idxmin()]


def shrunken_rates(events: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """Empirical-Bayes posterior means of binomial rates events / totals: each rate is pulled towards the pooled
    rate by a beta prior whose spread is the spread of the rates beyond their binomial noise (method of
    moments). Rates that differ no more than noise would make them all get the pooled rate."""
    events, totals = np.asarray(events, dtype=float), np.asarray(totals, dtype=float)
    if len(events) == 0:
        return np.zeros(0)
    pooled = events.sum() / totals.sum()
    rates = events / totals
    weights = totals / totals.sum()
    observed = float(np.sum(weights * (rates - pooled) ** 2))
    noise = float(np.sum(weights * pooled * (1 - pooled) / totals))
    between = observed - noise
    if between <= 0 or pooled in (0.0, 1.0):
        return np.full(len(events), pooled)
    strength = max(pooled * (1 - pooled) / between - 1, 0.0)  # a + b of the beta prior
    return (events + strength * pooled) / (totals + strength)


def shrunken(table: pd.DataFrame, metric: str = "fnr") -> pd.Series:
    """`shrunken_rates` of every subgroup (over every crossing) where `metric` is defined, indexed like `table`."""
    part = table[(table["metric"] == metric) & table["estimate"].notna()]
    totals = (part["n_positive"] if metric in ("fnr", "tpr") else part["n_negative"]).to_numpy(float)
    return pd.Series(shrunken_rates(part["estimate"].to_numpy(float) * totals, totals), index=part.index)
