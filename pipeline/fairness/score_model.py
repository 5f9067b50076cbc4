"""The stored score as a fitted scikit-learn classifier, for libraries that post-process a model's scores
(fairlearn's ThresholdOptimizer). A module of its own: importing scikit-learn's base classes costs about
0.7 s, which `postprocess`'s registry (read by the report) does without."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from pipeline.fairness.postprocess import DEFAULT_THRESHOLD


class ScoreEstimator(ClassifierMixin, BaseEstimator):
    """A fitted 'model' whose single feature is its own score: lets libraries post-process stored scores."""

    def fit(self, X: Any = None, y: Any = None) -> ScoreEstimator:
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        p = np.asarray(X, dtype=float).reshape(len(X), -1)[:, 0]
        return np.column_stack([1 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= DEFAULT_THRESHOLD).astype(int)
