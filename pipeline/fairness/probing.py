"""What the model sees: can the sensitive attributes be read from the model's image features?

A linear probe (standardised logistic regression) predicts each sensitive attribute from the
penultimate features of the study's unweighted network, on the evaluation patients, with
out-of-fold scores from a cross-validation grouped by patient (scikit-learn StratifiedGroupKFold:
no patient is both fitted and scored). Three probes per attribute:

- "features": the image features alone (descriptive: how readable the attribute is);
- "others": the OTHER sensitive attributes and the disease label (one-hot), which the features also
  encode: what the attribute's correlates already tell;
- "combined": the image features AND those attributes and the label.

The question « does the image carry the attribute beyond what the other attributes (and the
disease) tell? » is combined − others (Gichoya et al. 2022; Glocker et al. 2023): an image-only
probe compared with an attributes-only probe would credit the image with what the disease label
it encodes already says.

AUC (one-vs-rest macro average for more than two groups) on each scoring fold of N_REPEATS
repetitions of the grouped cross-validation (the same folds for the three probes, so differences
are paired). Estimate: the mean over folds; interval and p-value: the corrected repeated k-fold
t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004), whose variance (1/J + n_test/n_fit) s²
counts what a bootstrap of fixed out-of-fold scores ignores: the probes' own fitting (a difference
of 0.01 AUC between two probes looked established under that bootstrap; tests simulate the level).
No library offers this test for grouped folds; it is a few lines.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pipeline.data import schema as S
from pipeline.fairness.metrics import LEVEL, group_labels

N_SPLITS = 5


PROBE_C = 1.0


def weighted_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Binary AUC of `score` for each row of `weights` (B, images), ties counted one half.

    Per distinct score, the weighted positives and negatives of every replicate (a sparse product),
    then the Mann-Whitney sum: all replicates at once, equal to scikit-learn's with the same weights.
    """
    values, index = np.unique(score, return_inverse=True)
    rows = np.arange(len(score))
    shape = (len(score), len(values))
    pos = weights @ sparse.csr_matrix((positive.astype(float), (rows, index.ravel())), shape=shape)
    neg = weights @ sparse.csr_matrix(((~positive).astype(float), (rows, index.ravel())), shape=shape)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
    return np.where((pos.sum(axis=1) > 0) & (neg.sum(axis=1) > 0), auc, np.nan)


def _auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC per replicate: binary, or the one-vs-rest macro average (as scikit-learn's multi_class="ovr")."""
    classes = score.shape[1]
    if classes == 2:
        return weighted_auc(y == 1, score[:, 1], weights)
    return np.mean([weighted_auc(y == k, score[:, k], weights) for k in range(classes)], axis=0)


def _fold_auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """AUC of one scoring fold (one-vs-rest macro average beyond two classes); nan if a class is absent."""
    present = np.unique(y)
    if len(present) < len(classes):
        return float("nan")
    if len(classes) == 2:
        return float(_auc(y, proba, np.ones((1, len(y))))[0])
    return float(np.mean([weighted_auc(y == k, proba[:, k], np.ones((1, len(y))))[0] for k in range(len(classes))]))


def _probe_auc(x: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, score_rows: np.ndarray, classes: np.ndarray,
               seed: int) -> float:
    """AUC on the scoring rows of a standardised logistic probe fitted on the fitting rows (nan: a class absent)."""
    if len(np.unique(y[fit_rows])) < len(classes):
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x[fit_rows], y[fit_rows])
    proba = np.zeros((len(score_rows), len(classes)))
    proba[:, np.searchsorted(classes, probe.classes_)] = probe.predict_proba(x[score_rows])
    return _fold_auc(y[score_rows], proba, classes)


def fold_aucs(inputs: dict[str, np.ndarray], y: np.ndarray, patients: np.ndarray, seed: int,
              repeats: int = 5) -> tuple[dict[str, np.ndarray], int] | None:
    """Each probe's AUC on every scoring fold of `repeats` grouped cross-validations (the same folds for every
    input), and the number of folds per repetition; None when a class has fewer than two patients."""
    per_class = pd.Series(patients).groupby(y).nunique()
    splits = int(min(N_SPLITS, per_class.min()))
    if len(per_class) < 2 or splits < 2:
        return None
    classes = np.unique(y)
    out: dict[str, list[float]] = {name: [] for name in inputs}
    # one BLAS thread: the same fits (same iterations, same scores), but a multinomial probe on 3,199 images
    # took 3.9 s with OpenBLAS's two threads against 0.26 s with one (thread start-up on tiny products)
    with threadpool_limits(1, user_api="blas"):
        for repeat in range(repeats):
            folds = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed + repeat)
            for fit_rows, score_rows in folds.split(y, y, groups=patients):
                for name, x in inputs.items():
                    out[name].append(_probe_auc(x, y, fit_rows, score_rows, classes, seed))
    return {name: np.array(v) for name, v in out.items()}, splits


def corrected_interval(values: np.ndarray, splits: int, level: float = LEVEL, greater: bool = False,
                       bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float, float, float]:
    """(mean, low, high, p against 0) of per-fold values from repeated k-fold cross-validation, with the
    corrected variance (1/J + 1/(k − 1)) s² of Nadeau & Bengio (n_test / n_fit = 1 / (k − 1)), t with J − 1 df.
    The interval is two-sided and kept within the measure's `bounds` (an AUC never exceeds 1: a t interval
    around 0.99 would); `greater`: the p-value is one-sided (mean > 0)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        mean = float(v.mean()) if len(v) else float("nan")
        return mean, float("nan"), float("nan"), float("nan")
    mean, var = float(v.mean()), float(v.var(ddof=1))
    se = math.sqrt((1 / len(v) + 1 / (splits - 1)) * var)
    if se == 0:
        return mean, mean, mean, (1.0 if mean == 0 else 0.0)
    half = float(t.ppf(0.5 + level / 2, len(v) - 1)) * se
    p = float(t.sf(mean / se, len(v) - 1)) if greater else float(2 * t.sf(abs(mean) / se, len(v) - 1))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), p


PROBES = ("features", "others", "combined")
N_REPEATS = 5


def probe(features: np.ndarray, frame: pd.DataFrame, attributes: list[str], seed: int = 0,
          repeats: int = N_REPEATS) -> pd.DataFrame:
    """One row per attribute: AUC of each probe of `PROBES` and combined − others, with corrected intervals.

    `features` are aligned with the rows of `frame` (which has `patient`, the attribute columns and, when
    present, `label`, added to the other attributes). Columns: attribute, n_groups, n_images, n_patients,
    n_folds, and p, p_low, p_high for p in PROBES and for diff (= combined − others), diff_p (one-sided:
    the image adds to the attributes; a probe made worse by the features is no evidence of anything).
    """
    frame = frame.reset_index(drop=True)
    features = np.asarray(features, dtype=float)
    rows = []
    for attribute in attributes:
        labels = group_labels(frame[attribute])
        keep = labels.notna().to_numpy()
        y = np.unique(labels[keep], return_inverse=True)[1].ravel()
        patients = frame.loc[keep, S.PATIENT].astype(str).to_numpy()
        others = [a for a in attributes if a != attribute] + ([S.LABEL] if S.LABEL in frame.columns else [])
        x_others = (pd.get_dummies(frame.loc[keep, others].astype(str), dtype=float).to_numpy()
                    if others else np.zeros((keep.sum(), 1)))
        row = {"attribute": attribute, "n_groups": len(np.unique(y)), "n_images": int(keep.sum()),
               "n_patients": len(set(patients))}
        found = fold_aucs({"features": features[keep], "others": x_others,
                           "combined": np.hstack([features[keep], x_others])}, y, patients, seed, repeats)
        if found is None:
            row.update({f"{name}{suffix}": np.nan for name in (*PROBES, "diff") for suffix in ("", "_low", "_high")})
            row.update(diff_p=np.nan, n_folds=0)
        else:
            aucs, splits = found
            for name in PROBES:
                row[name], row[f"{name}_low"], row[f"{name}_high"], _ = corrected_interval(aucs[name], splits,
                                                                                           bounds=(0.0, 1.0))
            row["diff"], row["diff_low"], row["diff_high"], row["diff_p"] = corrected_interval(
                aucs["combined"] - aucs["others"], splits, greater=True, bounds=(-1.0, 1.0))  # does the image add?
            row["n_folds"] = int(np.isfinite(aucs["combined"] - aucs["others"]).sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(level=LEVEL, unit="fold", n_splits=N_SPLITS, repeats=repeats, seed=seed)
    return table
