"""What the model sees: can the sensitive attributes be read from the model's image features?

A linear probe (standardised logistic regression) predicts each sensitive attribute from the
penultimate features of the study's unweighted network, on the evaluation patients, with
out-of-fold scores from a cross-validation grouped by patient (scikit-learn StratifiedGroupKFold:
no patient is both fitted and scored). Beside it, the same probe from the OTHER sensitive
attributes alone (one-hot): if the features predict an attribute far better than the other
attributes do, the image itself carries it (Gichoya et al. 2022; Glocker et al. 2023).

AUC (one-vs-rest macro average for more than two groups) with a 95 % percentile bootstrap over
patients of the out-of-fold scores (the probes are not refitted per replicate: the interval is the
evaluation's, given the fitted probes), and the paired difference features - attributes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.data import schema as S
from pipeline.fairness.data_bias import patient_bootstrap
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


def out_of_fold(x: np.ndarray, y: np.ndarray, patients: np.ndarray, seed: int) -> np.ndarray | None:
    """Out-of-fold class probabilities (images, classes) of a logistic probe, folds grouped by patient.

    None when a class has fewer than two patients (no fold could both fit and score it).
    """
    per_class = pd.Series(patients).groupby(y).nunique()
    splits = int(min(N_SPLITS, per_class.min()))
    if len(per_class) < 2 or splits < 2:
        return None
    classes = np.unique(y)
    out = np.zeros((len(y), len(classes)))
    folds = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
    for fit_rows, score_rows in folds.split(x, y, groups=patients):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(x[fit_rows], y[fit_rows])
        proba = probe.predict_proba(x[score_rows])
        out[np.ix_(score_rows, np.searchsorted(classes, probe.classes_))] = proba
    return out


def probe(features: np.ndarray, frame: pd.DataFrame, attributes: list[str], n_boot: int = 500,
          seed: int = 0) -> pd.DataFrame:
    """One row per attribute: AUC from the image features and from the other attributes, with intervals.

    `features` are aligned with the rows of `frame` (which has `patient` and the attribute columns).
    Columns: attribute, n_groups, n_images, n_patients, features, features_low, features_high,
    others, others_low, others_high, diff, diff_low, diff_high.
    """
    frame = frame.reset_index(drop=True)
    boot = patient_bootstrap(frame, n_boot, seed)
    draws = boot.weights[:, boot.codes(frame)].astype(float)  # (B, images): draws of each image's patient
    alpha = (1 - LEVEL) / 2 * 100
    rows = []
    for attribute in attributes:
        labels = group_labels(frame[attribute])
        keep = labels.notna().to_numpy()
        y = np.unique(labels[keep], return_inverse=True)[1].ravel()
        patients = frame.loc[keep, S.PATIENT].astype(str).to_numpy()
        others = [a for a in attributes if a != attribute]
        x_others = (pd.get_dummies(frame.loc[keep, others].astype(str), dtype=float).to_numpy()
                    if others else np.zeros((keep.sum(), 1)))
        n_classes = len(np.unique(y))
        scores = {"features": out_of_fold(np.asarray(features)[keep], y, patients, seed),
                  "others": out_of_fold(x_others, y, patients, seed)}
        row = {"attribute": attribute, "n_groups": n_classes, "n_images": int(keep.sum()),
               "n_patients": len(set(patients))}
        reps = {}
        for name, score in scores.items():
            if score is None:
                row[name] = row[f"{name}_low"] = row[f"{name}_high"] = np.nan
                reps[name] = np.full(n_boot, np.nan)
                continue
            row[name] = float(_auc(y, score, np.ones((1, len(y))))[0])
            reps[name] = _auc(y, score, draws[:, keep])
        for name, values in (*reps.items(), ("diff", reps["features"] - reps["others"])):
            ok = values[np.isfinite(values)]
            low, high = np.percentile(ok, [alpha, 100 - alpha]) if len(ok) > 1 else (np.nan, np.nan)
            row[f"{name}_low"], row[f"{name}_high"] = float(low), float(high)
        row["diff"] = row["features"] - row["others"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(n_boot=n_boot, seed=seed, level=LEVEL, unit="patient", n_splits=N_SPLITS)
    return table
