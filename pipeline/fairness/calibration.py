"""Calibration per group: the calibration intercept and slope, with intervals clustered on patients.

The expected calibration error (ECE) is biased upwards in small groups (perfectly calibrated scores
give about 0.13 on 60 images) and its percentile bootstrap interval can exclude its own estimate,
so no interval on it means what it says. The logistic recalibration of Cox (1958), as recommended
for clinical models (Van Calster et al. 2019), gives two numbers with valid intervals instead:

- the calibration intercept a in logit P(y = 1) = a + logit(p) (the score as an offset): 0 when the
  mean predicted risk matches the observed share; a > 0 when the model under-estimates the risk;
- the calibration slope b in logit P(y = 1) = a' + b logit(p): 1 when the scores are neither too
  extreme (b < 1) nor too timid (b > 1).

Both are fitted by statsmodels' binomial GLM with a covariance clustered on patients (several images
of one patient are not independent), so their Wald intervals contain the estimate by construction and
cover the true value at their level (tests/test_calibration.py simulates it).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.metrics import LEVEL, group_labels, group_order

SCORE_CLIP = 1e-6  # scores of exactly 0 or 1 have an infinite logit
CALIBRATION_METRICS = ("calibration_intercept", "calibration_slope")
IDEAL = {"calibration_intercept": 0.0, "calibration_slope": 1.0}


def _logit(score: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(score, dtype=float), SCORE_CLIP, 1 - SCORE_CLIP)
    return np.log(p / (1 - p))


def _fit(y: np.ndarray, exog: np.ndarray, offset: np.ndarray | None, clusters: np.ndarray) -> tuple[float, float]:
    """Last coefficient of a binomial GLM and its standard error clustered on `clusters` (nan if it fails)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)  # a separated fit has no finite estimate
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            fitted = sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset).fit(
                cov_type="cluster", cov_kwds={"groups": clusters})
        except (PerfectSeparationWarning, np.linalg.LinAlgError, ValueError):
            return float("nan"), float("nan")
    return float(fitted.params[-1]), float(fitted.bse[-1])


def calibration_fit(y: np.ndarray, score: np.ndarray, clusters: np.ndarray,
                    level: float = LEVEL) -> dict[str, tuple[float, float, float]]:
    """Calibration intercept and slope of `score` against the labels `y`: (estimate, low, high) each.

    nan when a class is absent, when fewer than two clusters exist (no clustered variance) or when
    the fit separates the classes perfectly.
    """
    from scipy.stats import norm

    y = np.asarray(y, dtype=float)
    codes = pd.factorize(pd.Series(clusters))[0]
    undefined = {m: (float("nan"),) * 3 for m in CALIBRATION_METRICS}
    if len(np.unique(y)) < 2 or len(np.unique(codes)) < 2:
        return undefined
    z, lp = norm.ppf(0.5 + level / 2), _logit(score)
    out = {}
    intercept, se = _fit(y, np.ones((len(y), 1)), lp, codes)
    out["calibration_intercept"] = (intercept, intercept - z * se, intercept + z * se)
    slope, se = _fit(y, np.column_stack([np.ones(len(y)), lp]), None, codes)
    out["calibration_slope"] = (slope, slope - z * se, slope + z * se)
    return {m: v if np.isfinite(v[1]) and np.isfinite(v[2]) else undefined[m] for m, v in out.items()}


def calibration_by_group(preds: pd.DataFrame, attributes: list[str], score_col: str = S.PROBA,
                         min_per_class: int = 10) -> pd.DataFrame:
    """Per attribute and group: the calibration intercept and slope with 95 % patient-clustered intervals.

    Columns: attribute, group, metric, estimate, low, high, n, n_patients, n_positive, n_negative.
    A group with fewer than `min_per_class` images of either class is left undefined (nan), as the
    rates are. Rows whose score is missing (a rule that keeps no score) give nan throughout.
    """
    rows = []
    score = pd.to_numeric(preds[score_col], errors="coerce") if score_col in preds else None
    for attribute in attributes:
        labels = group_labels(preds[attribute])
        for g in group_order(preds[attribute]):
            part = (labels == g).to_numpy()
            y = preds.loc[part, S.LABEL].to_numpy(int)
            n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
            s = None if score is None else score[part].to_numpy(float)
            usable = s is not None and np.isfinite(s).all() and min(n_pos, n_neg) >= min_per_class
            fits = (calibration_fit(y, s, preds.loc[part, S.PATIENT].to_numpy()) if usable
                    else {m: (float("nan"),) * 3 for m in CALIBRATION_METRICS})
            for metric, (estimate, low, high) in fits.items():
                rows.append({"attribute": attribute, "group": g, "metric": metric, "estimate": estimate,
                             "low": low, "high": high, "n": int(part.sum()),
                             "n_patients": int(preds.loc[part, S.PATIENT].nunique()),
                             "n_positive": n_pos, "n_negative": n_neg})
    return pd.DataFrame(rows)
