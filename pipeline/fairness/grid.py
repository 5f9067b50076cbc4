"""Every weighting x every post-processor, fitted and scored on disjoint patients, with intervals.

Protocol. The validation patients are split once (`postprocess.split_fit_score`); for every
weighting, each post-processor is fitted on the fitting patients and decides the scoring patients.
Metrics, 95 % intervals and paired differences with the baseline (uniform weighting, no
post-processing) are computed on the SCORING part only, all combinations on the same patient
resamples (`metrics.compare_methods`).

The bootstrap resamples the scoring patients and does NOT refit the post-processors: the
intervals measure the uncertainty of the evaluation on a finite set of patients, given the
fitted rules, not the variability of the fitting itself (for that, vary the split seed or use
`postprocess.crossfit`). Fitting happens once per configuration, which keeps the grid fast.

AUC and calibration describe a score: they are reported for rules that keep the score
(`none`, `threshold_global`) and are NaN for the others (group thresholds, randomised rules).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.metrics import DECISION, compare_methods, comparison_wide
from pipeline.fairness.postprocess import POSTPROCESSORS, split_fit_score

__all__ = ["KEY_METRICS", "GridResult", "pareto_frontier", "pareto_table", "run_grid"]


KEY_METRICS = ("balanced_accuracy", "auc", "eo_diff", "eopp_diff", "fpr_diff", "dp_diff", "dp_ratio",
               "worst_group_bacc", "worst_group_tpr", "ece_gap")


FRONT_GAPS = ("eo_diff", "eopp_diff")  # gaps with a Pareto front against balanced accuracy


PERFORMANCE = "balanced_accuracy"


SCORE_COL = "kept_score"  # the score a rule keeps (AUC, ECE), NaN when the rule does not keep one


BASELINE = ("uniform", "none")


@dataclass
class GridResult:
    """The grid: `table` has one row per (weighting, postprocessor); see `run_grid`."""

    table: pd.DataFrame
    decisions: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # scoring part + decision
    params: dict[tuple[str, str], dict] = field(default_factory=dict)  # what each rule learnt
    fit_patients: set[str] = field(default_factory=set)
    score_patients: set[str] = field(default_factory=set)
    baseline: tuple[str, str] = BASELINE
    attribute: str = S.SEX
    warnings: list[str] = field(default_factory=list)  # group fallbacks, deduplicated
    timings: dict[str, float] = field(default_factory=dict)

    def frontier(self, x: str = "eo_diff", y: str = PERFORMANCE) -> pd.DataFrame:
        """Rows on the Pareto front of `y` (maximised) against `x` (minimised), by increasing `x`."""
        return pareto_table(self, x, y)

    def best(self, x: str = "eo_diff", y: str = PERFORMANCE) -> list[str]:
        """Names « weighting + postprocessor » of the combinations on the front, by increasing `x`."""
        return self.frontier(x, y)["combination"].tolist()


def pareto_frontier(df: pd.DataFrame, minimise: str, maximise: str) -> pd.Series:
    """True for rows no other row dominates (<= on `minimise` and >= on `maximise`, one strictly).

    Rows with a NaN in either column are never on the front; ties (equal on both) all stay on it.
    """
    a, b = df[minimise].to_numpy(float), df[maximise].to_numpy(float)
    ok = ~(np.isnan(a) | np.isnan(b))
    on = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = ok & (a <= a[i]) & (b >= b[i]) & ((a < a[i]) | (b > b[i]))
        on[i] = not dominated.any()
    return pd.Series(on, index=df.index, name="on_frontier")


def pareto_table(grid: GridResult, x: str = "eo_diff", y: str = PERFORMANCE) -> pd.DataFrame:
    """The grid's rows that no other row beats on both `x` (lower) and `y` (higher), sorted by `x`."""
    on = pareto_frontier(grid.table, minimise=x, maximise=y)
    return grid.table[on].sort_values([x, y], ascending=[True, False])


def _check(valid_preds_by_weighting: dict[str, pd.DataFrame], methods: list[str]) -> list[str]:
    """Methods to run (the baseline 'none' first); the weightings must share the same images."""
    unknown = [m for m in methods if m not in POSTPROCESSORS]
    if unknown:
        raise ValueError(f"unknown post-processing method(s) {unknown}; choose among {sorted(POSTPROCESSORS)} "
                         "(study.yml > postprocessing > methods)")
    if not valid_preds_by_weighting:
        raise ValueError("run_grid needs the validation predictions of at least one weighting")
    images = [frozenset(p[S.IMAGE]) for p in valid_preds_by_weighting.values()]
    if any(i != images[0] for i in images):
        raise ValueError("every weighting must be predicted on the same validation images")
    return list(dict.fromkeys(["none", *methods]))


def _fit_and_decide(fit: pd.DataFrame, score: pd.DataFrame, method: str, attribute: str, seed: int,
                    notes: list[str]) -> tuple[pd.DataFrame, dict]:
    """Fit `method` on the fitting part, decide the scoring part; fallback warnings go to `notes`."""
    pp = POSTPROCESSORS[method]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decider = pp.fit(fit, attribute, seed)
        decision = decider.decide(score)
    notes.extend(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    kept = score[S.PROBA].to_numpy(float) if pp.keeps_score else np.full(len(score), np.nan)
    return score.assign(**{DECISION: decision, SCORE_COL: kept}), decider.params


def _tidy(wide: pd.DataFrame, keys: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """comparison_wide's rows, keyed back to (weighting, postprocessor), with the front flags."""
    table = wide.assign(weighting=[keys[m][0] for m in wide["method"]],
                        postprocessor=[keys[m][1] for m in wide["method"]])
    table["combination"] = table["weighting"] + " + " + table["postprocessor"]
    table["randomised"] = [POSTPROCESSORS[p].randomised for p in table["postprocessor"]]
    first = ["weighting", "postprocessor", "combination", "randomised"]
    table = table[first + [c for c in table.columns if c not in [*first, "method"]]].reset_index(drop=True)
    for gap in FRONT_GAPS:
        table[f"frontier_{gap}"] = pareto_frontier(table, minimise=gap, maximise=PERFORMANCE).to_numpy()
    return table


def run_grid(valid_preds_by_weighting: dict[str, pd.DataFrame], methods: list[str], attribute: str,
             fit_fraction: float, seed: int, n_boot: int, boot_seed: int) -> GridResult:
    """Fit each post-processor on the fitting patients and score it on the others, for each weighting.

    `table` columns: weighting, postprocessor, combination (« weighting + postprocessor »),
    randomised; for each metric m of KEY_METRICS: m, m_low, m_high (95 % patient-bootstrap
    interval on the scoring part), m_diff, m_diff_low, m_diff_high (paired difference with the
    baseline, same resamples); frontier_eo_diff, frontier_eopp_diff (on the Pareto front of
    balanced accuracy against that gap). 'none' is always run: it is the baseline.
    """
    methods = _check(valid_preds_by_weighting, methods)
    t0 = time.perf_counter()
    fit_part, score_part = split_fit_score(next(iter(valid_preds_by_weighting.values())), fit_fraction, seed,
                                           attribute)
    fit_ids, score_ids = set(fit_part[S.PATIENT].astype(str)), set(score_part[S.PATIENT].astype(str))
    baseline = BASELINE if BASELINE[0] in valid_preds_by_weighting else (next(iter(valid_preds_by_weighting)),
                                                                          "none")
    result = GridResult(pd.DataFrame(), fit_patients=fit_ids, score_patients=score_ids, baseline=baseline,
                        attribute=attribute)
    notes: list[str] = []
    for weighting, preds in valid_preds_by_weighting.items():
        in_fit = preds[S.PATIENT].astype(str).isin(fit_ids)
        fit, score = preds[in_fit].reset_index(drop=True), preds[~in_fit].reset_index(drop=True)
        for method in methods:
            decided, params = _fit_and_decide(fit, score, method, attribute, seed, notes)
            result.decisions[(weighting, method)] = decided
            result.params[(weighting, method)] = params
    result.warnings = list(dict.fromkeys(notes))
    result.timings["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys = {f"{w} + {m}": (w, m) for w, m in result.decisions}
    long = compare_methods({k: result.decisions[v] for k, v in keys.items()}, attribute,
                           baseline=f"{baseline[0]} + {baseline[1]}", n_boot=n_boot, seed=boot_seed,
                           decision_col=DECISION, score_col=SCORE_COL)
    result.table = _tidy(comparison_wide(long, KEY_METRICS), keys)
    result.table.attrs.update(long.attrs, n_fit_patients=len(fit_ids), n_score_patients=len(score_ids))
    result.timings["bootstrap"] = time.perf_counter() - t0
    return result
