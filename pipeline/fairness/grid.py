"""Every weighting x every post-processor, cross-fitted on the evaluation patients, with intervals that
include the refitting.

Protocol. The evaluation patients are dealt into `folds` patient folds (`postprocess.patient_folds`,
stratified on label and group); every post-processor is cross-fitted: the images of a fold are
decided by the rule fitted on the other folds. So every evaluation patient is scored (the same
patients as the weighting chapter), none by a rule that saw them.

Intervals. A post-processing result varies with the patients it is scored on, with the patients its rule
was fitted on AND with the training run whose scores it decides. Every combination is run on every training
seed; each of `n_refit` replicates resamples the evaluation patients with replacement, REFITS every fold's
rule on the resampled fitting patients (a patient's copies stay in one fold), decides and scores the
resample. The resamples are the first of the primary family's (same count of draws, same seed), so a rule
that learns nothing ('none': the weighting's own operating threshold) is scored on all of them and its row
is the weighting table's. Each cell is the mean over seeds, its 95 % interval and the paired differences
with the baseline (uniform weighting, no post-processing) seed-aware (`inference.combine`: bootstrap
variance with B - 1 degrees of freedom plus the seeds' spread); the differences' tests are corrected by
Benjamini-Hochberg over the grid (exploratory, q = 0.10; the pre-registered questions are in
fairness/primary.py).

Randomised rules are scored as they act: each replicate scores one random draw of their decisions
and the point estimate is the mean over `metrics.REALISED_DRAWS` draws (`{m}_expected`: the gap of
expected rates, smaller); `randomised_share` is the share of images whose decision is random.

Degenerate rules (one class for >= 95 % of the images, overall or in a group:
`degenerate.one_class`) are flagged (`degenerate`, `degenerate_where`) and never on a Pareto front.

AUC and calibration describe a score: they are reported for rules that keep the score
(`none`, `threshold_global`) and are NaN for the others (group thresholds, randomised rules).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from pipeline.data import schema as S
from pipeline.fairness import metrics as M
from pipeline.fairness.degenerate import coin_flips, one_class_everywhere, over_seeds
from pipeline.fairness.metrics import DECISION, MIN_PER_CLASS, comparison_wide

__all__ = ["KEY_METRICS", "GridResult", "pareto_frontier", "pareto_table", "run_grid"]


KEY_METRICS = ("balanced_accuracy", "auc", "eo_diff", "eopp_diff", "fpr_diff", "dp_diff", "dp_ratio",
               "worst_group_bacc", "worst_group_tpr", "ece_gap", "tpr_signed", "fpr_signed", "sr_signed")


EXPECTED_GAPS = ("eo_diff", "eopp_diff", "dp_diff")  # also kept as gaps of expected rates, for randomised rules


FRONT_GAPS = ("eo_diff", "eopp_diff")  # gaps with a Pareto front against balanced accuracy


PERFORMANCE = "balanced_accuracy"


SCORE_COL = "kept_score"  # the score a rule keeps (AUC, ECE), NaN when the rule does not keep one


BASELINE = ("uniform", "none")


N_JOBS = -1  # processes for the refits (joblib; -1: every core): the refits are the grid's cost


@dataclass
class GridResult:
    """The grid: `table` has one row per (weighting, postprocessor); see `run_grid`."""

    table: pd.DataFrame
    decisions: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # evaluation rows + decision
    params: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # what each fold's rule learnt
    fold: np.ndarray | None = None  # fold of each evaluation image
    baseline: tuple[str, str] = BASELINE
    attribute: str = S.SEX
    n_folds: int = 5
    n_refit: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    detail_seed: int = 0  # whose decisions `decisions` holds
    decisions_by_seed: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (seeds, images), `fold` order
    kept_scores_by_seed: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # as decisions_by_seed
    # per post-processor of the baseline weighting: per-group rates over every seed (chapter 4's rates chart)
    group_rates: dict[str, pd.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # group fallbacks, deduplicated
    timings: dict[str, float] = field(default_factory=dict)

    def seed_frames(self, key: tuple[str, str]) -> list[pd.DataFrame]:
        """Rule `key`'s decided evaluation rows for every training seed (in `seeds` order): the detail frame
        with each seed's decisions and kept score (NaN for a rule that keeps none)."""
        frame = self.decisions[key]
        return [frame.assign(**{DECISION: self.decisions_by_seed[key][i], SCORE_COL: self.kept_scores_by_seed[key][i]})
                for i in range(len(self.seeds))]

    @property
    def patients(self) -> set[str]:
        """The evaluation patients, every one of them scored (cross-fitting)."""
        first = next(iter(self.decisions.values()))
        return set(first[S.PATIENT].astype(str))

    def frontier(self, x: str = "eo_diff", y: str = PERFORMANCE) -> pd.DataFrame:
        """Rows on the Pareto front of `y` (maximised) against `x` (minimised), by increasing `x`;
        degenerate rules are never on it."""
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


def _eligible(table: pd.DataFrame) -> pd.Series:
    """Rows a front or a « best » pick may use: not degenerate (levelling down is not fairness)."""
    return ~table["degenerate"].astype(bool) if "degenerate" in table.columns else pd.Series(True, table.index)


def front_flags(table: pd.DataFrame, x: str, y: str = PERFORMANCE) -> pd.Series:
    """Pareto front of `y` against `x` among the non-degenerate rows (False for the degenerate ones)."""
    ok = _eligible(table)
    on = pd.Series(False, index=table.index, name="on_frontier")
    on[ok] = pareto_frontier(table[ok], minimise=x, maximise=y)
    return on


def pareto_table(grid: GridResult, x: str = "eo_diff", y: str = PERFORMANCE) -> pd.DataFrame:
    """The grid's non-degenerate rows that no other beats on both `x` (lower) and `y` (higher), sorted by `x`."""
    on = front_flags(grid.table, x, y)
    return grid.table[on].sort_values([x, y], ascending=[True, False])


def best_row(table: pd.DataFrame, x: str = "eo_diff") -> pd.Series | None:
    """The non-degenerate row with the smallest `x` (None when every rule is degenerate)."""
    ok = table[_eligible(table) & table[x].notna()]
    return None if ok.empty else ok.sort_values([x, PERFORMANCE], ascending=[True, False]).iloc[0]


def _check(valid_preds_by_weighting: dict[str, pd.DataFrame], methods: list[str]) -> list[str]:
    """Methods to run (the baseline 'none' first); the weightings must share the same images."""
    from pipeline.fairness.postprocess import POSTPROCESSORS  # here: unpickling a grid imports no scikit-learn

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


def crossfit_decisions(preds: pd.DataFrame, method: str, attribute: str, fold: np.ndarray, seed: int,
                       counts: np.ndarray | None = None) -> tuple[np.ndarray, list[dict], list[str]]:
    """Out-of-fold expected decisions: each fold decided by the rule fitted on the other folds.

    `counts` (one per row): the fitting rows are repeated that many times (a patient resample, whose
    copies of a patient share a fold). Returns the decisions, each fold's learnt params, the warnings.
    """
    from pipeline.fairness.postprocess import POSTPROCESSORS

    pp = POSTPROCESSORS[method]
    out = np.empty(len(preds))
    params = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for f in np.unique(fold):
            held = fold == f
            rows = np.flatnonzero(~held)
            if counts is not None:
                rows = np.repeat(rows, counts[rows].astype(int))
            decider = pp.fit(preds.iloc[rows].reset_index(drop=True), attribute, seed)
            out[held] = decider.decide(preds[held].reset_index(drop=True))
            params.append(decider.params)
    notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return out, params, notes


def _crossfit_and_refits(preds: pd.DataFrame, method: str, attribute: str, fold: np.ndarray, seed: int,
                         row_draws: np.ndarray) -> tuple[np.ndarray, list[dict], list[str], np.ndarray, int]:
    """The cross-fitted decisions and, for each resample (rows of `row_draws`, counts per image), the
    decisions of the rules refitted on it; and how many refits had to fall back (a group with one class,
    or absent, in a fitting part: the global threshold decided it), counted rather than dropped."""
    decision, params, notes = crossfit_decisions(preds, method, attribute, fold, seed)
    done = [crossfit_decisions(preds, method, attribute, fold, seed, counts) for counts in row_draws]
    refits = [d for d, _, _ in done]
    fallbacks = sum(bool(caught) for _, _, caught in done)
    return decision, params, notes, np.stack(refits) if refits else np.zeros((0, len(preds))), fallbacks


def _describe(where: dict[str, str]) -> str:
    return "; ".join(f"{'tous' if g == 'all' else g} : {cls}" for g, cls in where.items())


def _describe_flips(flips: dict[str, tuple[float, float, float]]) -> str:
    """« sex=M : TPR − FPR +0.05 [−0.08 ; +0.17] » for each group decided as by a coin."""
    return "; ".join(f"{g} : TPR − FPR {j:+.2f} [{low:+.2f} ; {high:+.2f}]" for g, (j, low, high) in flips.items())


def _tidy(wide: pd.DataFrame, keys: dict[str, tuple[str, str]], extra: dict[str, dict]) -> pd.DataFrame:
    """comparison_wide's rows, keyed back to (weighting, postprocessor), with the front flags."""
    from pipeline.fairness.postprocess import POSTPROCESSORS

    table = wide.assign(weighting=[keys[m][0] for m in wide["method"]],
                        postprocessor=[keys[m][1] for m in wide["method"]])
    table["combination"] = table["weighting"] + " + " + table["postprocessor"]
    table["randomised"] = [POSTPROCESSORS[p].randomised for p in table["postprocessor"]]
    for col in next(iter(extra.values())):
        table[col] = [extra[m][col] for m in wide["method"]]
    first = ["weighting", "postprocessor", "combination", "randomised"]
    table = table[first + [c for c in table.columns if c not in [*first, "method"]]].reset_index(drop=True)
    for gap in FRONT_GAPS:
        table[f"frontier_{gap}"] = front_flags(table, gap).to_numpy()
    return table


def _by_seed(preds: dict) -> dict[int, dict[str, pd.DataFrame]]:
    """{seed: {weighting: predictions}}; one training's {weighting: predictions} is seed 0's."""
    first = next(iter(preds.values()), None)
    return {0: preds} if isinstance(first, pd.DataFrame) or first is None else preds


def _decide(preds: pd.DataFrame, method: str, attribute: str, fold: np.ndarray, seed: int, row_draws: np.ndarray
            ) -> tuple[np.ndarray, list[dict], list[str], np.ndarray | None, int]:
    """`_crossfit_and_refits`, except for 'none', which learns nothing: its decisions are the same in every
    resample (the operating threshold), so it is scored on every resample without refitting."""
    if method == "none":
        decision, params, notes = crossfit_decisions(preds, method, attribute, fold, seed)
        return decision, params, notes, None, 0
    return _crossfit_and_refits(preds, method, attribute, fold, seed, row_draws)


def _degenerate_where(decisions: dict[int, pd.DataFrame], every: list[str], detail: int) -> str:
    """Where a rule gives one class on more than half of the seeds (`degenerate.over_seeds`); "" if it does not."""
    where, seeds = over_seeds({s: one_class_everywhere(d[DECISION].to_numpy(), d, every)
                               for s, d in decisions.items()}, detail)
    return _describe(where) + seeds if where else ""


def run_grid(valid_preds_by_weighting: dict, methods: list[str], attribute: str,
             folds: int, seed: int, n_refit: int, boot_seed: int,
             min_per_class: int = MIN_PER_CLASS, n_jobs: int = N_JOBS,
             attributes: list[str] | None = None, n_resamples: int | None = None,
             detail_seed: int | None = None) -> GridResult:
    """Cross-fit each post-processor on the evaluation patients, for each weighting and training seed; refit it
    in each of `n_refit` patient resamples.

    `valid_preds_by_weighting`: {seed: {weighting: evaluation predictions}} (or one training's {weighting:
    predictions}), each carrying its operating threshold. One set of `n_resamples` patient resamples (drawn
    with `boot_seed`, as the primary family and the weighting table draw theirs) serves every rule: 'none'
    is scored on all of them, a rule that learns is refitted on the first `n_refit`, and its paired
    differences use those. Every cell is the mean over seeds with a seed-aware interval
    (`inference.comparison_over_seeds`).

    `table` columns: weighting, postprocessor, combination (« weighting + postprocessor »),
    randomised; for each metric m of KEY_METRICS: m (realised for randomised rules), m_low, m_high,
    m_p_equal (gaps: test of equal group rates), m_diff, m_diff_low, m_diff_high, m_diff_p, m_diff_p_adjusted
    (Benjamini-Hochberg over the grid), m_significant (paired difference with the baseline); m_expected
    (EXPECTED_GAPS: the gap of expected rates); randomised_share; degenerate, degenerate_where (one class, on
    `attribute` and every one of `attributes`, on more than half of the seeds); coin_flip, coin_flip_where (on
    the detail training: a group where the baseline's decisions separate malades from sains but the rule's TPR − FPR
    interval contains 0: it lost the separation there); refit_fallbacks; frontier_eo_diff, frontier_eopp_diff
    (on the non-degenerate Pareto front). 'none' is always run: it is the baseline. `decisions` and `params`
    are the detail training's (`detail_seed`, else the first seed); `decisions_by_seed` every seed's.
    """
    from pipeline.fairness.inference import comparison_over_seeds, group_rates_over_seeds, rule_run
    from pipeline.fairness.postprocess import DEFAULT_THRESHOLD, OPERATING_THRESHOLD, POSTPROCESSORS, patient_folds

    by_seed = _by_seed(valid_preds_by_weighting)
    seeds = sorted(by_seed)
    detail = detail_seed if detail_seed in by_seed else seeds[0]
    methods = _check(by_seed[detail], methods)
    if any(set(by_seed[s]) != set(by_seed[detail]) for s in seeds):
        raise ValueError("every training seed must predict the same weightings")
    t0 = time.perf_counter()
    first = next(iter(by_seed[detail].values())).reset_index(drop=True)
    # each weighting's operating threshold travels as a column, so that 'none' decides where chapter 3 does
    aligned = {(s, w): M._align(p, first).assign(**{OPERATING_THRESHOLD: float(p.attrs.get("threshold",
                                                                                          DEFAULT_THRESHOLD))})
               for s in seeds for w, p in by_seed[s].items()}
    weightings = list(by_seed[detail])
    fold = patient_folds(first, folds, seed, attribute)
    cluster = M._cluster_index(first, S.PATIENT)
    draws = M.draw_counts(int(cluster.max()) + 1, max(n_resamples or 0, n_refit), boot_seed)
    baseline = BASELINE if BASELINE[0] in weightings else (weightings[0], "none")
    result = GridResult(pd.DataFrame(), fold=fold, baseline=baseline, attribute=attribute,
                        n_folds=len(np.unique(fold)), n_refit=n_refit)
    result.seeds, result.detail_seed = seeds, detail
    jobs = [(s, w, m) for s in seeds for w in weightings for m in methods]
    row_draws = draws[:n_refit, cluster]
    done = Parallel(n_jobs=n_jobs)(delayed(_decide)(aligned[(s, w)], m, attribute, fold, seed, row_draws)
                                   for s, w, m in jobs)
    result.timings["fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    every = list(dict.fromkeys([attribute, *(attributes or [])]))
    notes: list[str] = []
    runs: dict[str, list] = {}
    decided_by_seed: dict[tuple[str, str], dict[int, pd.DataFrame]] = {}
    extra: dict[str, dict] = {}
    for (s, w, m), (decision, params, caught, refitted, fell) in zip(jobs, done, strict=True):
        preds = aligned[(s, w)]
        notes.extend(caught)
        kept = preds[S.PROBA].to_numpy(float) if POSTPROCESSORS[m].keeps_score else np.nan
        decided = preds.assign(**{DECISION: decision, SCORE_COL: kept})
        decided_by_seed.setdefault((w, m), {})[s] = decided
        if s == detail:
            result.decisions[(w, m)], result.params[(w, m)] = decided, params
        used = draws if refitted is None else draws[:n_refit]
        name = f"{w} + {m}"
        runs.setdefault(name, []).append(rule_run(decided, attribute, used, refitted, boot_seed, DECISION,
                                                  SCORE_COL, min_per_class))
        expected = M.point_metrics(decided, attribute, DECISION, SCORE_COL, min_per_class)
        d = decided[DECISION].to_numpy()
        row = extra.setdefault(name, {"fallbacks": 0, "expected": [], "random": []})
        row["fallbacks"] += fell
        row["expected"].append([expected[g] for g in EXPECTED_GAPS])
        row["random"].append(float(np.mean((d > 1e-9) & (d < 1 - 1e-9))))
    result.warnings = list(dict.fromkeys(notes))
    result.decisions_by_seed, result.kept_scores_by_seed = ({k: np.stack([v[s][c].to_numpy(float) for s in seeds])
                                                             for k, v in decided_by_seed.items()}
                                                            for c in (DECISION, SCORE_COL))
    keys = {f"{w} + {m}": (w, m) for w, m in result.decisions}
    reference = result.decisions[tuple(baseline)]
    # groups where the baseline itself does not separate malades from sains: a rule is not named for them
    unseparated = set(coin_flips(reference[DECISION].to_numpy(), reference, every, min_per_class, seed=boot_seed))
    columns = {}
    for name, key in keys.items():
        decided = result.decisions[key]
        d = decided[DECISION].to_numpy()
        where = _degenerate_where(decided_by_seed[key], every, detail)
        one_class = one_class_everywhere(d, decided, every)
        flips = {} if "all" in one_class or key == tuple(baseline) else coin_flips(
            d, decided, every, min_per_class, seed=boot_seed, skip={**one_class, **dict.fromkeys(unseparated, "")})
        expected = np.mean(np.array(extra[name]["expected"], dtype=float), axis=0)  # NaN on a seed: NaN, as combine
        columns[name] = {**{f"{g}_expected": float(e) for g, e in zip(EXPECTED_GAPS, expected, strict=True)},
                         "randomised_share": float(np.mean(extra[name]["random"])),
                         "degenerate": bool(where), "degenerate_where": where,
                         "coin_flip": bool(flips), "coin_flip_where": _describe_flips(flips),
                         "coin_flip_groups": "|".join(flips),
                         "refit_fallbacks": extra[name]["fallbacks"]}
    base_name = f"{baseline[0]} + {baseline[1]}"
    result.group_rates = {m: group_rates_over_seeds(runs[f"{baseline[0]} + {m}"],
                                                    decided_by_seed[(baseline[0], m)][detail], attribute,
                                                    min_per_class) for m in methods}
    long = comparison_over_seeds(runs, base_name)
    groups = list(runs[base_name][0].groups)
    n_groups = len(groups)
    long = M._mark_significant(long, "p", (long["method"] != base_name) & long["metric"].isin(M.tested_for(n_groups)))
    result.table = _tidy(comparison_wide(long, KEY_METRICS), keys, columns)
    result.table.attrs.update(n_refit=n_refit, n_resamples=len(draws), n_seeds=len(seeds), seeds=seeds,
                              detail_seed=detail, n_folds=result.n_folds, seed=boot_seed, attribute=attribute,
                              baseline=base_name, unit="patient", correction=M.CORRECTION,
                              family_size=int(long["p_adjusted"].notna().sum()), min_per_class=min_per_class,
                              groups=groups, n_patients=len(np.unique(cluster)),
                              test_equal="Bonferroni des contrastes, chacun sur toutes les graines")
    result.timings["bootstrap"] = time.perf_counter() - t0
    return result



