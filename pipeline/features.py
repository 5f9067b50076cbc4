"""Last-layer mode: features once, then one classification head per weighting scheme.

The idea of Deep Feature Reweighting (Kirichenko et al. 2022): train the backbone once without
weights (ERM), extract its penultimate features for every image, then re-fit only the last layer
with each weighting's sample weights. Comparing six weightings then costs one training.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# Fixed L2 strength: choosing it on validation scores would leak into the reported numbers.
HEAD_C = 1.0


def fit_head(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, seed: int) -> np.ndarray:
    """Fit a weighted logistic head on the train rows' features; return its fitted pipeline."""
    head = make_pipeline(StandardScaler(), LogisticRegression(C=HEAD_C, max_iter=5000, random_state=seed))
    head.fit(features, labels, logisticregression__sample_weight=weights)
    return head


def head_proba(features_train: np.ndarray, labels: np.ndarray, weights: np.ndarray,
               features_all: np.ndarray, seed: int) -> np.ndarray:
    """Probability of malade for every image from a head fitted with these weights."""
    return fit_head(features_train, labels, weights, seed).predict_proba(features_all)[:, 1]
