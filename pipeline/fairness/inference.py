"""How a verdict is decided: seed-aware paired differences (issue 22, first step; docs/VERDICTS.md).

A trained model's metric depends on the patients evaluated AND on the training run (seed, CPU kernels):
an interval from a patient bootstrap of one run covers only the first. For a comparison of two rules
trained with S seeds, the estimate is the mean over seeds of the within-seed paired differences; one
patient resample is applied to every seed's pair, so the bootstrap variance is that of the mean over
seeds; the between-seed variance of the per-seed differences, divided by S, adds the training runs'
part:

    total variance = bootstrap variance + between-seed variance / S

The interval is estimate +- t * sqrt(total), with Welch-Satterthwaite degrees of freedom (the between-seed
part is estimated from S - 1 of them; the bootstrap part is taken as known): with few seeds and a large
seed effect it widens, as it must. `tests/test_inference.py` checks its coverage by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.metrics import (
    DECISION,
    LEVEL,
    MIN_PER_CLASS,
    _align,
    _design,
    draw_counts,
    point_metrics_fast,
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
    differences (S,) and the replicates' differences (S, B) computed on the same patient resamples."""
    per_seed = np.asarray(per_seed, dtype=float)
    replicates = np.atleast_2d(np.asarray(replicates, dtype=float))
    n_seeds = len(per_seed)
    nan = float("nan")
    if n_seeds == 0 or np.isnan(per_seed).any():
        return nan, nan, nan, nan, nan, nan, nan
    mean_reps = replicates.mean(axis=0)  # a replicate's difference, averaged over seeds
    mean_reps = mean_reps[np.isfinite(mean_reps)]
    if len(mean_reps) < 2:
        return float(per_seed.mean()), nan, nan, nan, nan, nan, nan
    boot = float(np.var(mean_reps, ddof=1))
    between = float(np.var(per_seed, ddof=1)) if n_seeds > 1 else nan
    seed_part = 0.0 if math.isnan(between) else between / n_seeds
    total = boot + seed_part
    df = math.inf if seed_part == 0 else total ** 2 * (n_seeds - 1) / seed_part ** 2
    estimate = float(per_seed.mean())
    if total <= 0:
        return estimate, estimate, estimate, (1.0 if estimate == 0 else 0.0), boot, between, df
    half = _t_quantile(0.5 + level / 2, df) * math.sqrt(total)
    return estimate, estimate - half, estimate + half, _t_two_sided(estimate / math.sqrt(total), df), boot, \
        between, df


def seed_aware_difference(treated: list[pd.DataFrame], reference: list[pd.DataFrame], attribute: str,
                          metric: str, n_boot: int, seed: int, decision_col: str = DECISION,
                          score_col: str | None = S.PROBA, min_per_class: int = MIN_PER_CLASS
                          ) -> SeedAwareDifference:
    """Treated minus reference on `metric`, the two lists holding one decided prediction frame per training
    seed (same order), all on the same evaluation images; intervals as the module says."""
    if len(treated) != len(reference) or not treated:
        raise ValueError("one treated and one reference prediction frame per seed are needed")
    anchor = reference[0]
    draws = None
    points, reps = [], []
    for t_preds, r_preds in zip(treated, reference, strict=True):
        pair = [_align(p, anchor) for p in (t_preds, r_preds)]
        designs = [_design(p, attribute, decision_col, score_col, S.PATIENT, min_per_class) for p in pair]
        if draws is None:
            draws = draw_counts(designs[0].n_clusters, n_boot, seed)  # the same resamples for every seed
        t_point, r_point = (point_metrics_fast(p, attribute, decision_col, score_col, min_per_class) for p in pair)
        points.append(t_point[metric] - r_point[metric])
        t_reps, r_reps = (replicates_of(d, draws)[metric] for d in designs)
        reps.append(t_reps - r_reps)
    estimate, low, high, p, boot, between, df = combine(np.array(points), np.array(reps))
    return SeedAwareDifference(metric, estimate, low, high, p, tuple(float(x) for x in points), boot, between, df,
                               len(points), n_boot)
