"""Every weighting x every post-processor, fitted and scored on disjoint patients, with intervals.

The bootstrap resamples the SCORING patients only and does not refit the post-processors: the
intervals measure the uncertainty of the evaluation, not of the fitting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import schema as S
from .metrics import DECISION, bootstrap_metrics, paired_difference
from .postprocess import POSTPROCESSORS, split_fit_score

KEY_METRICS = ("balanced_accuracy", "auc", "eo_diff", "eopp_diff", "dp_diff", "worst_group_bacc",
               "worst_group_tpr")


@dataclass
class GridResult:
    table: pd.DataFrame  # one row per (weighting, postprocessor): estimates, intervals, paired diffs
    decisions: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # scoring part
    fit_patients: set[str] = field(default_factory=set)
    score_patients: set[str] = field(default_factory=set)
    baseline: tuple[str, str] = ("uniform", "none")
    attribute: str = "sex"

    def frontier(self, x: str = "eo_diff", y: str = "balanced_accuracy") -> pd.DataFrame:
        """Rows on the Pareto front: no other row has a smaller gap AND a higher balanced accuracy."""
        return self.table[pareto_frontier(self.table, minimise=x, maximise=y)]


def pareto_frontier(table: pd.DataFrame, minimise: str, maximise: str) -> pd.Series:
    """True for rows that no other row dominates (<= on `minimise`, >= on `maximise`, one strict)."""
    a, b = table[minimise].to_numpy(float), table[maximise].to_numpy(float)
    ok = ~(np.isnan(a) | np.isnan(b))
    on = np.zeros(len(table), bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (a <= a[i]) & (b >= b[i]) & ((a < a[i]) | (b > b[i]))
        on[i] = not dominated.any()
    return pd.Series(on, index=table.index)


def _row(weighting: str, post: str, boot: pd.DataFrame, diff: pd.DataFrame) -> dict:
    row: dict = {"weighting": weighting, "postprocessor": post}
    b, d = boot.set_index("metric"), diff.set_index("metric")
    for m in KEY_METRICS:
        row[m] = b.loc[m, "estimate"]
        row[f"{m}_low"], row[f"{m}_high"] = b.loc[m, "low"], b.loc[m, "high"]
        if m in d.index:
            row[f"{m}_diff"] = d.loc[m, "diff"]
            row[f"{m}_diff_low"], row[f"{m}_diff_high"] = d.loc[m, "low"], d.loc[m, "high"]
    return row


def run_grid(valid_preds_by_weighting: dict[str, pd.DataFrame], methods: list[str], attribute: str,
             fit_fraction: float, seed: int, n_boot: int, boot_seed: int) -> GridResult:
    """Fit each post-processor on the fitting patients, score it on the others, for each weighting."""
    unknown = [m for m in methods if m not in POSTPROCESSORS]
    if unknown:
        raise ValueError(f"unknown post-processing method(s) {unknown}; choose among "
                         f"{sorted(POSTPROCESSORS)} (study.yml > postprocessing > methods)")
    methods = list(dict.fromkeys(["none", *methods]))
    first = next(iter(valid_preds_by_weighting.values()))
    fit_ids, score_ids = (set(p[S.PATIENT]) for p in split_fit_score(first, fit_fraction, seed, attribute))
    result = GridResult(pd.DataFrame(), fit_patients=fit_ids, score_patients=score_ids, attribute=attribute)
    for weighting, preds in valid_preds_by_weighting.items():
        fit = preds[preds[S.PATIENT].isin(fit_ids)].reset_index(drop=True)
        score = preds[preds[S.PATIENT].isin(score_ids)].reset_index(drop=True)
        for name in methods:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                decide = POSTPROCESSORS[name].fit(fit, attribute, seed)
            result.decisions[(weighting, name)] = score.assign(**{DECISION: decide(score)})
    base = result.decisions[result.baseline] if result.baseline in result.decisions else None
    rows = []
    for (weighting, name), decided in result.decisions.items():
        score_col = S.PROBA if name == "none" else None  # AUC is a property of the score, not of a rule
        boot = bootstrap_metrics(decided, attribute, n_boot, boot_seed, score_col=score_col)
        ref = base if base is not None else decided
        diff = paired_difference(decided, ref, attribute, n_boot, boot_seed, score_col=None)
        rows.append(_row(weighting, name, boot, diff))
    result.table = pd.DataFrame(rows)
    for gap in ("eo_diff", "eopp_diff"):
        result.table[f"frontier_{gap}"] = pareto_frontier(result.table, gap, "balanced_accuracy")
    return result
