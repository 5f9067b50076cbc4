"""How a verdict is decided: seed-aware paired differences, families, corrections, power (docs/VERDICTS.md).

A trained model's metric depends on the patients evaluated AND on the training run (seed, CPU kernels):
an interval from a patient bootstrap of one run covers only the first. For a comparison of two rules
trained with S seeds, the estimate is the mean over seeds of the within-seed paired differences; one
patient resample is applied to every seed's pair, so the bootstrap variance is that of the mean over
seeds; the between-seed variance of the per-seed differences, divided by S, adds the training runs'
part:

    total variance = bootstrap variance + between-seed variance / S

The interval is estimate +- t * sqrt(total), with Welch-Satterthwaite degrees of freedom: the between-seed
part is estimated from S - 1 of them, the bootstrap part from B - 1 (B resamples; a few tens when every
rule is refitted in each): with few seeds, a large seed effect or few resamples it widens, as it must.
`tests/test_inference.py` checks its coverage by simulation.

Every table of rules (the weighting table, the post-processing grid) is built the same way
(`comparison_over_seeds`): each rule is a list of `RuleRun`, one per seed, on one set of patient resamples,
so a rule shown in two tables (the reference first) has the same numbers in both.

A family of such comparisons (the pre-registered primary family of study.yml > analysis) is tested with
Holm's correction at family-wise level `alpha`; each comparison's verdict (established or not, its
direction, the smallest change the study could detect) is a `Verdict`, and the texts read them from one
`Verdicts` object instead of comparing intervals with 0 themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.metrics import (
    DECISION,
    GROUP_METRICS,
    LEVEL,
    MIN_PER_CLASS,
    SUMMARY,
    _align,
    _Design,
    _design,
    adjust,
    draw_counts,
    realised_point,
    replicates_of,
)


@dataclass(frozen=True)
class SeedAwareDifference:
    metric: str
    estimate: float  # mean over seeds of (treated - reference) on the evaluation patients
    low: float
    high: float
    p_value: float  # two-sided, against no difference, on the same t reference as the interval
    per_seed: tuple[float, ...]  # each seed's paired difference
    bootstrap_variance: float  # patient resampling of the mean over seeds
    between_seed_variance: float  # variance of the per-seed differences (NaN with one seed)
    df: float  # Welch-Satterthwaite degrees of freedom (inf when the seeds add nothing or S = 1)
    n_seeds: int
    n_boot: int

    @property
    def total_variance(self) -> float:
        between = 0.0 if math.isnan(self.between_seed_variance) else self.between_seed_variance / self.n_seeds
        return self.bootstrap_variance + between


def _t_quantile(q: float, df: float) -> float:
    if not math.isfinite(df):
        return NormalDist().inv_cdf(q)
    from scipy.stats import t

    return float(t.ppf(q, df))


def _t_two_sided(z: float, df: float) -> float:
    if not math.isfinite(df):
        return math.erfc(abs(z) / math.sqrt(2))
    from scipy.stats import t

    return float(2 * t.sf(abs(z), df))


def combine(per_seed: np.ndarray, replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float, float,
                                                                                          float, float, float, float]:
    """(estimate, low, high, p, bootstrap variance, between-seed variance, df) from the per-seed point
    differences (S,) and the replicates' differences (S, B) computed on the same patient resamples.

    The seeds' observed spread also holds patient noise that is specific to each run (images near one run's
    threshold but not another's), which the bootstrap of the mean already counts; as in a random-effects
    meta-analysis, that part (mean bootstrap variance of a seed's difference minus the mean covariance
    between seeds) is subtracted, and the between-seed variance is what remains (>= 0). The degrees of
    freedom use the observed spread, as its S - 1 degrees of freedom bound how well the remainder is known.
    """
    per_seed = np.asarray(per_seed, dtype=float)
    replicates = np.atleast_2d(np.asarray(replicates, dtype=float))
    n_seeds = len(per_seed)
    nan = float("nan")
    if n_seeds == 0 or np.isnan(per_seed).any():
        return nan, nan, nan, nan, nan, nan, nan
    defined = np.isfinite(replicates).all(axis=0)
    replicates = replicates[:, defined]
    if replicates.shape[1] < 2:
        return float(per_seed.mean()), nan, nan, nan, nan, nan, nan
    boot = float(np.var(replicates.mean(axis=0), ddof=1))
    boot_df = replicates.shape[1] - 1  # the bootstrap variance is estimated too: from B resamples
    between, observed = nan, 0.0
    if n_seeds > 1:
        observed = float(np.var(per_seed, ddof=1))
        cov = np.cov(replicates)
        own = float(np.mean(np.diag(cov)) - (cov.sum() - np.trace(cov)) / (n_seeds * (n_seeds - 1)))
        between = max(observed - max(own, 0.0), 0.0)
    total = boot + (0.0 if math.isnan(between) else between / n_seeds)
    parts = boot ** 2 / boot_df + ((observed / n_seeds) ** 2 / (n_seeds - 1) if observed > 0 else 0.0)
    df = total ** 2 / parts if parts > 0 else math.inf
    if df > 10_000:
        df = math.inf  # the normal reference, exactly
    estimate = float(per_seed.mean())
    if total <= 0:
        return estimate, estimate, estimate, (1.0 if estimate == 0 else 0.0), boot, between, df
    half = _t_quantile(0.5 + level / 2, df) * math.sqrt(total)
    return estimate, estimate - half, estimate + half, _t_two_sided(estimate / math.sqrt(total), df), boot, \
        between, df


@dataclass(frozen=True)
class RuleRun:
    """One rule's decisions on the evaluation patients for one training seed, scored on every resample."""

    point: dict[str, float]  # SUMMARY metrics as the rule acts (realised for a randomised rule)
    groups_point: dict[str, np.ndarray]  # each of metrics.GROUP_METRICS -> (groups,)
    replicates: dict[str, np.ndarray]  # SUMMARY -> (B,), 'group:<rate>' -> (B, groups)
    groups: tuple[str, ...]
    decision: np.ndarray  # the expected decisions (identical rules are recognised by them)


def rule_run(decided: pd.DataFrame, attribute: str, draws: np.ndarray, refits: np.ndarray | None = None,
             boot_seed: int = 0, decision_col: str = DECISION, score_col: str | None = S.PROBA,
             min_per_class: int = MIN_PER_CLASS) -> RuleRun:
    """Score `decided` (evaluation rows in the anchor's order) at the unit resample and on each row of
    `draws`; `refits` (B, images): the decisions of the rule refitted on each resample."""
    design: _Design = _design(decided, attribute, decision_col, score_col, S.PATIENT, min_per_class)
    unit = replicates_of(design, np.ones((1, design.n_clusters)))
    point = realised_point(design, boot_seed) if design.randomised else {m: float(unit[m][0]) for m in SUMMARY}
    reps = replicates_of(design, draws, refits, realised=True, seed=boot_seed)
    groups_point = {r: unit[f"group:{r}"][0] for r in GROUP_METRICS}
    return RuleRun(point, groups_point, reps, tuple(design.groups), design.decision)


def _difference(points: list[float], reps: list[np.ndarray], metric: str, n_boot: int) -> SeedAwareDifference:
    estimate, low, high, p, boot, between, df = combine(np.array(points), np.array(reps))
    return SeedAwareDifference(metric, estimate, low, high, p, tuple(float(x) for x in points), boot, between, df,
                               len(points), n_boot)


def compare_runs(treated: list[RuleRun], reference: list[RuleRun], metric: str) -> SeedAwareDifference:
    """Treated minus reference on `metric`, one run of each per training seed (same resamples throughout)."""
    if len(treated) != len(reference) or not treated:
        raise ValueError("one treated and one reference run per seed are needed")
    points = [t.point[metric] - r.point[metric] for t, r in zip(treated, reference, strict=True)]
    reps = [t.replicates[metric] - r.replicates[metric] for t, r in zip(treated, reference, strict=True)]
    return _difference(points, reps, metric, len(reps[0]))


def compare_group_rate(treated: list[RuleRun], reference: list[RuleRun], rate: str, group: int
                       ) -> SeedAwareDifference:
    """Treated minus reference on one group's `rate` (e.g. the women's TPR), seed-aware like `compare_runs`."""
    points = [t.groups_point[rate][group] - r.groups_point[rate][group] for t, r in zip(treated, reference,
                                                                                        strict=True)]
    reps = [t.replicates[f"group:{rate}"][:, group] - r.replicates[f"group:{rate}"][:, group]
            for t, r in zip(treated, reference, strict=True)]
    return _difference(points, reps, f"{rate}:{group}", len(reps[0]))


def _common(runs: list[RuleRun], key: str, length: int) -> np.ndarray:
    """The runs' replicates of `key` on their first `length` resamples, (S, length, ...)."""
    return np.stack([r.replicates[key][:length] for r in runs]).astype(float)


def _n_resamples(runs: list[RuleRun]) -> int:
    return min(len(r.replicates["balanced_accuracy"]) for r in runs)


def bounds_of(metric: str) -> tuple[float, float]:
    """The values a metric can take: signed differences in [-1, 1], rates, gaps and AUC in [0, 1]."""
    return (-1.0, 1.0) if metric.endswith("_signed") else (0.0, 1.0)


def clipped(low: float, high: float, metric: str) -> tuple[float, float]:
    """An interval of a metric's level kept within the values it can take (NaN stays NaN)."""
    lo, hi = bounds_of(metric)
    return (max(low, lo) if np.isfinite(low) else low), (min(high, hi) if np.isfinite(high) else high)


def equal_rates_over_seeds(runs: list[RuleRun], rates: tuple[str, ...]) -> float:
    """p-value that the groups' `rates` are equal, over seeds: each contrast (group k minus the first defined
    group, per rate) is tested as `combine` tests a difference; the smallest p times the number of contrasts
    (Bonferroni: the family of contrasts keeps its level). NaN when fewer than two groups are defined."""
    p_values = []
    length = _n_resamples(runs)
    for r in rates:
        points = np.stack([run.groups_point[r] for run in runs]).astype(float)  # (S, G)
        keep = np.flatnonzero(np.isfinite(points).all(axis=0))
        if len(keep) < 2:
            return float("nan")
        reps = _common(runs, f"group:{r}", length)  # (S, B, G)
        for k in keep[1:]:
            p_values.append(combine(points[:, k] - points[:, keep[0]], reps[:, :, k] - reps[:, :, keep[0]])[3])
    p_values = [p for p in p_values if np.isfinite(p)]
    return float(min(1.0, len(p_values) * min(p_values))) if p_values else float("nan")


def group_rates_over_seeds(runs: list[RuleRun], decided: pd.DataFrame, attribute: str,
                           min_per_class: int = MIN_PER_CLASS) -> pd.DataFrame:
    """Per group and metric, the rates of one rule run on every training seed: the mean over seeds with its
    seed-aware 95 % interval (`combine`), in `metrics.bootstrap_group_metrics`' columns; the counts (the same
    images for every seed) from `decided`, any seed's decisions on those images."""
    from pipeline.fairness.metrics import group_metrics

    counts = group_metrics(decided, attribute, DECISION, None, min_per_class=min_per_class)
    length = _n_resamples(runs)
    rows = []
    for gi, g in enumerate(runs[0].groups):
        c = counts.loc[g]
        for m in GROUP_METRICS:
            points = np.array([r.groups_point[m][gi] for r in runs], dtype=float)
            reps = _common(runs, f"group:{m}", length)[:, :, gi]
            estimate, low, high, *_ = combine(points, reps)
            low, high = clipped(low, high, m)
            rows.append({"attribute": attribute, "group": g, "metric": m, "estimate": estimate, "low": low,
                         "high": high, "defined": float(np.isfinite(reps).all(axis=0).mean()), "n": c["n"],
                         "n_patients": c["n_patients"], "n_positive": c["n_positive"],
                         "n_negative": c["n"] - c["n_positive"], "n_patients_positive": c["n_patients_positive"],
                         "n_patients_negative": c["n_patients_negative"]})
    out = pd.DataFrame(rows)
    out.attrs.update(n_boot=length, unit=S.PATIENT, attribute=attribute, min_per_class=min_per_class,
                     n_seeds=len(runs))
    return out


def comparison_over_seeds(runs: Mapping[str, list[RuleRun]], baseline: str) -> pd.DataFrame:
    """The long comparison table of rules run on every training seed (`runs[rule]`: one `RuleRun` per seed,
    the same seeds and resamples for all; a rule refitted in fewer resamples is paired on the first ones).

    Columns as `metrics.comparison_table`: method, metric, estimate (mean over seeds, as the rule acts),
    low, high (95 % seed-aware interval, `combine`), defined (share of resamples where it is), p_equal (gaps:
    the groups' rates equal, `equal_rates_over_seeds`), diff, diff_low, diff_high, p (paired difference with
    `baseline`, seed-aware); and n_seeds, n_resamples. Corrections and marks are the verdicts' business
    (`fairness.exploratory`)."""
    from pipeline.fairness.metrics import EQUAL_RATES

    rows = []
    for method, treated in runs.items():
        reference = runs[baseline]
        length = min(_n_resamples(treated), _n_resamples(reference))
        for m in SUMMARY:
            points = np.array([r.point[m] for r in treated], dtype=float)
            reps = _common(treated, m, _n_resamples(treated))
            estimate, low, high, *_ = combine(points, reps)
            low, high = clipped(low, high, m)
            diffs = points - np.array([r.point[m] for r in reference], dtype=float)
            d, d_low, d_high, p, *_ = combine(diffs, _common(treated, m, length) - _common(reference, m, length))
            rows.append({"method": method, "metric": m, "estimate": estimate, "low": low, "high": high,
                         "defined": float(np.isfinite(reps).mean()) if reps.size else 0.0,
                         "p_equal": equal_rates_over_seeds(treated, EQUAL_RATES[m]) if m in EQUAL_RATES else np.nan,
                         "diff": d, "diff_low": d_low, "diff_high": d_high,
                         "p": np.nan if method == baseline else p,
                         "n_seeds": len(treated), "n_resamples": reps.shape[1]})
    return pd.DataFrame(rows)


def seed_aware_difference(treated: list[pd.DataFrame], reference: list[pd.DataFrame], attribute: str,
                          metric: str, n_boot: int, seed: int, decision_col: str = DECISION,
                          score_col: str | None = S.PROBA, min_per_class: int = MIN_PER_CLASS
                          ) -> SeedAwareDifference:
    """Treated minus reference on `metric`, the two lists holding one decided prediction frame per training
    seed (same order), all on the same evaluation images; intervals as the module says."""
    if len(treated) != len(reference) or not treated:
        raise ValueError("one treated and one reference prediction frame per seed are needed")
    anchor = reference[0]
    n_clusters = _design(anchor, attribute, decision_col, score_col, S.PATIENT, min_per_class).n_clusters
    draws = draw_counts(n_clusters, n_boot, seed)  # the same resamples for every seed and both rules
    runs = [[rule_run(_align(p, anchor), attribute, draws, None, seed, decision_col, score_col, min_per_class)
             for p in frames] for frames in (treated, reference)]
    return compare_runs(runs[0], runs[1], metric)


POWER = 0.80


def minimum_detectable(variance: float, df: float, alpha: float, power: float = POWER) -> float:
    """Smallest true change a two-sided test at level `alpha` detects with probability `power`:
    (t_{1 - alpha/2} + t_{power}) x standard error, on the interval's own reference distribution."""
    if not (math.isfinite(variance) and variance > 0) or math.isnan(df):
        return float("nan")
    return (_t_quantile(1 - alpha / 2, df) + _t_quantile(power, df)) * math.sqrt(variance)


Status = Literal["established", "not_established", "not_testable", "descriptive"]


@dataclass(frozen=True)
class Verdict:
    """One comparison's answer: what every sentence, mark, title and note stating it reads."""

    key: str
    family: str  # "primary" | "exploratory:<table>" | "descriptive"
    quantity: str  # metric name of fairness.metrics
    attribute: str | None
    treated: str | None  # « weighting + postprocessor »
    reference: str | None
    estimate: float
    low: float
    high: float
    level: float  # the family's error rate: FWER (Holm) for the primary family
    p_value: float | None
    p_adjusted: float | None
    status: Status
    direction: int  # +1 / -1 when established, 0 otherwise
    reason: str  # why not testable, or what limits it (identical decisions, a degenerate rule)
    mde: float | None  # smallest change detectable with 80 % power at the family's level
    levelling_down: bool  # a gap closed by worsening the better-off group (established fall of its rate)
    n_seeds: int
    variance: dict[str, float] = field(default_factory=dict)  # {"bootstrap": ..., "between_seeds": ...}
    per_seed: tuple[float, ...] = ()
    df: float = math.inf
    n_resamples: int = 0
    reference_value: float = math.nan  # the quantity itself, mean over seeds: the reference rule's
    treated_value: float = math.nan  # and the treated rule's (a gap's move towards or away from 0)

    @property
    def established(self) -> bool:
        return self.status == "established"


def verdict_key(family: str, quantity: str, attribute: str | None, treated: str | None,
                reference: str | None) -> str:
    pair = f"/{treated} vs {reference}" if treated and reference else (f"/{treated}" if treated else "")
    return f"{family}/{quantity}/{attribute or 'all'}{pair}"


class Verdicts(Mapping[str, Verdict]):
    """Every verdict of the study by key, with what its families share (`meta`: level, seeds, groups...)."""

    def __init__(self, verdicts: Iterable[Verdict] = (), meta: dict | None = None) -> None:
        self._items = {v.key: v for v in verdicts}
        self.meta = dict(meta or {})

    def __getitem__(self, key: str) -> Verdict:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def family(self, name: str) -> list[Verdict]:
        return [v for v in self._items.values() if v.family == name]

    def established(self, family: str | None = None) -> list[Verdict]:
        return [v for v in self._items.values() if v.established and (family is None or v.family == family)]

    def find(self, family: str, quantity: str, treated: str, reference: str | None = None) -> Verdict | None:
        """The verdict of `treated` (vs `reference`, any when None) on `quantity` in `family`, if any."""
        return next((v for v in self.family(family) if v.quantity == quantity and v.treated == treated
                     and (reference is None or v.reference == reference)), None)

    def to_frame(self) -> pd.DataFrame:
        rows = [{**{k: getattr(v, k) for k in ("key", "family", "quantity", "attribute", "treated", "reference",
                                               "estimate", "low", "high", "level", "p_value", "p_adjusted",
                                               "status", "direction", "reason", "mde", "levelling_down",
                                               "n_seeds", "df", "n_resamples")},
                 "variance_bootstrap": v.variance.get("bootstrap", math.nan),
                 "variance_between_seeds": v.variance.get("between_seeds", math.nan)} for v in self.values()]
        return pd.DataFrame(rows)


GAP_RATES = {"tpr_signed": ("tpr", +1), "fpr_signed": ("fpr", -1)}  # gap -> its rate, +1: higher is better


def _levelling_down(treated: list[RuleRun], reference: list[RuleRun], metric: str, alpha: float) -> bool:
    """The gap narrowed while the better-off group's rate got worse, by an established amount."""
    if metric not in GAP_RATES:
        return False
    rate, better = GAP_RATES[metric]
    before = float(np.mean([r.point[metric] for r in reference]))
    after = float(np.mean([t.point[metric] for t in treated]))
    if not (np.isfinite(before) and np.isfinite(after)) or abs(after) >= abs(before) or before == 0:
        return False
    better_off = 0 if better * before > 0 else 1  # the gap is first group minus second
    moved = compare_group_rate(treated, reference, rate, better_off)
    return bool(np.isfinite(moved.p_value) and moved.p_value < alpha and better * moved.estimate < 0)


def _reason(diff: SeedAwareDifference, treated: list[RuleRun], reference: list[RuleRun]) -> str:
    if all(np.array_equal(t.decision, r.decision) for t, r in zip(treated, reference, strict=True)):
        return "identical"  # the same decisions on every seed: nothing can change
    if not np.isfinite(diff.estimate):
        return "undefined"  # a group has too few images of a class for the rate
    if not np.isfinite(diff.p_value):
        return "no_interval"  # too few resamples where the metric is defined
    return ""


LEVEL_FAMILY = "level"


def level_verdicts(runs: Mapping[str, list[RuleRun]], rules: Iterable[str], metrics: Iterable[str],
                   attribute: str) -> list[Verdict]:
    """Each rule's metric itself (not a difference), mean over training seeds with the seed-aware interval of
    `combine`: what a headline « AUC 0,83 [0,79 ; 0,87] » quotes. Descriptive: no test, no correction."""
    out = []
    for rule in rules:
        for metric in metrics:
            points = np.array([r.point[metric] for r in runs[rule]], dtype=float)
            reps = np.array([r.replicates[metric] for r in runs[rule]], dtype=float)
            estimate, low, high, _, boot, between, df = combine(points, reps)
            low, high = clipped(low, high, metric)
            out.append(Verdict(
                key=verdict_key(LEVEL_FAMILY, metric, attribute, rule, None), family=LEVEL_FAMILY, quantity=metric,
                attribute=attribute, treated=rule, reference=None, estimate=estimate, low=low, high=high,
                level=LEVEL, p_value=None, p_adjusted=None, status="descriptive", direction=0, reason="level",
                mde=None, levelling_down=False, n_seeds=len(points), variance={"bootstrap": boot,
                                                                               "between_seeds": between},
                per_seed=tuple(float(x) for x in points), df=df, n_resamples=reps.shape[-1]))
    return out


def family_verdicts(runs: Mapping[str, list[RuleRun]], comparisons: Iterable[tuple[str, str]],
                    metrics: Iterable[str], attribute: str, family: str = "primary", alpha: float = 0.05,
                    degenerate: Mapping[str, str] | None = None) -> list[Verdict]:
    """The verdicts of a family of comparisons (treated vs reference on each metric), Holm at FWER `alpha`.

    `runs[rule]`: one `RuleRun` per training seed (same seeds and resamples for every rule). The power is
    stated at Holm's first step (alpha / m, the level the smallest p-value must reach): conservative.
    """
    degenerate = degenerate or {}
    cells = [(t, r, m) for t, r in comparisons for m in metrics]
    diffs = [compare_runs(runs[t], runs[r], m) for t, r, m in cells]
    reasons = [_reason(d, runs[t], runs[r]) for d, (t, r, _) in zip(diffs, cells, strict=True)]
    p = np.array([d.p_value if reason in ("", "identical") else np.nan for d, reason in zip(diffs, reasons,
                                                                                             strict=True)])
    adjusted = adjust(p, "holm")
    n_tests = max(int(np.isfinite(p).sum()), 1)
    out = []
    for (treated, reference, metric), d, reason, p_adj in zip(cells, diffs, reasons, adjusted, strict=True):
        testable = np.isfinite(p_adj)
        established = bool(testable and p_adj < alpha and reason == "")
        if not reason and degenerate.get(treated):
            reason = f"degenerate: {degenerate[treated]}"
        out.append(Verdict(
            key=verdict_key(family, metric, attribute, treated, reference), family=family, quantity=metric,
            attribute=attribute, treated=treated, reference=reference, estimate=d.estimate, low=d.low, high=d.high,
            level=alpha, p_value=None if not np.isfinite(d.p_value) else d.p_value,
            p_adjusted=float(p_adj) if testable else None,
            status="established" if established else ("not_established" if testable else "not_testable"),
            direction=int(np.sign(d.estimate)) if established else 0, reason=reason,
            mde=minimum_detectable(d.total_variance, d.df, alpha / n_tests) if testable else None,
            levelling_down=established and _levelling_down(runs[treated], runs[reference], metric, alpha),
            n_seeds=d.n_seeds, variance={"bootstrap": d.bootstrap_variance, "between_seeds": d.between_seed_variance},
            per_seed=d.per_seed, df=d.df, n_resamples=d.n_boot,
            reference_value=float(np.mean([r.point[metric] for r in runs[reference]])),
            treated_value=float(np.mean([t.point[metric] for t in runs[treated]]))))
    return out
