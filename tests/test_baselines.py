"""The attribute-only baseline is out of sample: no signal gives 0.5, the in-sample version is biased up."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.fairness.data_bias import (
    attribute_baseline,
    attribute_only_auc,
    attribute_scores,
    attribute_scores_oof,
    patient_bootstrap,
    score_auc,
    tables,
)

ATTRS = ["sex", "age_band", "view"]


def _frame(rng: np.random.Generator, n_patients: int = 200, signal: float = 0.0) -> pd.DataFrame:
    """Two images per patient; attributes drawn per patient; malade depends on sex by `signal` only."""
    sex = rng.choice(["M", "F"], n_patients)
    band = rng.choice(["0-39", "40-59", "60+"], n_patients)
    view = rng.choice(["PA", "AP"], n_patients)
    p = 0.5 + signal * np.where(sex == "F", 1, -1)
    label = (rng.random(n_patients) < p).astype(int)
    f = pd.DataFrame({"patient": np.arange(n_patients).astype(str), "sex": sex, "age_band": band, "view": view,
                      "label": label})
    return pd.concat([f, f], ignore_index=True)


def test_without_signal_the_cross_validated_auc_is_chance_and_the_in_sample_one_is_not():
    rng = np.random.default_rng(0)
    in_sample, out_of_sample = [], []
    for _ in range(20):
        f = _frame(rng)
        boot = patient_bootstrap(f, 50, seed=0)
        t = tables(f, [*ATTRS, "label"], boot)
        in_sample.append(float(np.median(attribute_only_auc(t.replicates.reshape(50, -1, 2)))))
        out_of_sample.append(attribute_baseline(f, ATTRS, boot)["auc"])
    assert np.mean(in_sample) > 0.57, in_sample  # the bias the issue measured (0.62)
    assert abs(np.mean(out_of_sample) - 0.5) < 0.03, out_of_sample


def test_a_real_attribute_effect_is_found_out_of_sample():
    f = _frame(np.random.default_rng(1), n_patients=300, signal=0.25)
    result = attribute_baseline(f, ATTRS, patient_bootstrap(f, 100, seed=0))
    assert result["auc_low"] > 0.55 and result["auc_low"] <= result["auc"] <= result["auc_high"]


def test_folds_keep_patients_whole_and_scores_match_sklearn():
    f = _frame(np.random.default_rng(2), signal=0.2)
    scores = attribute_scores_oof(f, ATTRS, seed=0)
    assert np.isfinite(scores).all()
    # both images of a patient have the same attributes, so the same out-of-fold model scored them
    assert np.allclose(scores[: len(f) // 2], scores[len(f) // 2:])
    boot = patient_bootstrap(f, 20, seed=0)
    auc = score_auc(f, {"oof": scores}, boot)["oof"]
    assert auc[0] == roc_auc_score(f["label"], scores) and auc.shape == (21,)
    other = attribute_scores(f.iloc[:200], f.iloc[200:], ATTRS)
    assert other.shape == (len(f) - 200,) and np.isfinite(other).all()
