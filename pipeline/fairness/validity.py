"""Can the fairness gaps of a study be read as fairness? Degenerate and uninformative results, named.

Three checks, all on the evaluation patients, computed lazily from a study context (`validity(ctx)`):

- decisions of one class for (almost) every image, overall or within a group (`degenerate.one_class`):
  every gap is then near 0 because no one is told apart (levelling down, not fairness);
- a model whose AUC interval contains 0.5: it ranks images no better than chance;
- an image model no better than the attribute-only baseline (age band, sex, view predicting malade,
  fitted on the training patients, scored on the same evaluation patients; paired patient bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cache import code_version, memory, per_study
from pipeline.data import schema as S
from pipeline.fairness.data_bias import attribute_scores, interval, patient_bootstrap, score_auc
from pipeline.fairness.degenerate import OneClass, one_class

CHANCE = 0.5


@dataclass
class Validity:
    """What the checks found. `one_class`: method -> attribute -> OneClass (decisions at the operating
    threshold); `chance`: methods whose AUC interval contains 0.5, with (auc, low, high);
    `baseline`: image vs attribute-only AUC on the evaluation patients (keys image, attributes, diff,
    each with _low/_high, and attributes_used)."""

    one_class: dict[str, dict[str, OneClass]] = field(default_factory=dict)
    chance: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)

    def degenerate_methods(self) -> dict[str, dict[str, str]]:
        """method -> where its decisions are one class: {"all": class}, or {"attribute=group": class, ...}."""
        out: dict[str, dict[str, str]] = {}
        for method, by_attr in self.one_class.items():
            where: dict[str, str] = {}
            for attr, oc in by_attr.items():
                for key, cls in oc.where.items():
                    where["all" if key == "all" else f"{attr}={key}"] = cls
            if "all" in where:  # one class for everyone: its groups say nothing more
                where = {"all": where["all"]}
            if where:
                out[method] = where
        return out

    @property
    def image_not_better(self) -> bool:
        """The image model is not established to beat the attribute-only baseline (paired interval)."""
        low = self.baseline.get("diff_low", np.nan)
        return bool(np.isfinite(low) and low <= 0)

    @property
    def problems(self) -> bool:
        return bool(self.degenerate_methods() or self.chance or self.image_not_better)


def image_vs_attributes(train: pd.DataFrame, evaluation: pd.DataFrame, image_score: np.ndarray,
                        attributes: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """AUC of the image model and of an attribute-only model (fitted on `train`) on `evaluation`, paired.

    Same patient resamples for both, so `diff` (image - attributes) has a paired 95 % interval.
    """
    used = [a for a in attributes if a in train.columns and a in evaluation.columns]
    scores = {"image": np.asarray(image_score, dtype=float),
              "attributes": attribute_scores(train, evaluation, used)}
    aucs = score_auc(evaluation, scores, patient_bootstrap(evaluation, n_boot, seed))
    aucs["diff"] = aucs["image"] - aucs["attributes"]
    out: dict[str, Any] = {"attributes_used": used, "n_images": len(evaluation),
                           "n_patients": int(evaluation[S.PATIENT].nunique())}
    for name, values in aucs.items():
        low, high = interval(values[1:])
        out[name], out[f"{name}_low"], out[f"{name}_high"] = float(values[0]), float(low), float(high)
    return out


def _decisions(preds: pd.DataFrame) -> np.ndarray:
    return (preds[S.PROBA].to_numpy(float) >= float(preds.attrs.get("threshold", 0.5))).astype(float)


def check(ctx: Any) -> Validity:
    """The three checks on a study context (its weightings at their operating thresholds)."""
    out = Validity()
    attributes = list(dict.fromkeys([ctx.config.weighting.attribute, *ctx.config.sensitive_attributes]))
    for method, preds in ctx.valid_predictions.items():
        d = _decisions(preds)
        out.one_class[method] = {a: one_class(d, preds[a] if a in preds.columns else None) for a in attributes}
    if ctx.comparison is not None:
        auc = ctx.comparison[ctx.comparison["metric"] == "auc"]
        for r in auc.itertuples():
            if np.isfinite(r.low) and r.low <= CHANCE <= r.high:
                out.chance[r.method] = (float(r.estimate), float(r.low), float(r.high))
    train = ctx.frame[ctx.frame[S.SPLIT] == "train"]
    uniform = ctx.valid_predictions["uniform"]
    evaluation = ctx.evaluation.set_index(S.IMAGE).loc[uniform[S.IMAGE]].reset_index()
    ev = ctx.config.evaluation
    compute = memory().cache(_baseline)
    out.baseline = compute(train[[S.PATIENT, S.LABEL, *[a for a in ctx.config.sensitive_attributes
                                                        if a in train.columns]]],
                           evaluation[[S.PATIENT, S.LABEL, *[a for a in ctx.config.sensitive_attributes
                                                             if a in evaluation.columns]]],
                           uniform[S.PROBA].to_numpy(float), list(ctx.config.sensitive_attributes), ev.n_bootstrap,
                           ev.seed, code_version("fairness.validity", "fairness.data_bias"))
    return out


def _baseline(train: pd.DataFrame, evaluation: pd.DataFrame, image_score: np.ndarray, attributes: list[str],
              n_boot: int, seed: int, code: str) -> dict[str, Any]:
    """`image_vs_attributes`, cached (`code`: version of the code, part of the cache key)."""
    return image_vs_attributes(train, evaluation, image_score, attributes, n_boot, seed)


@per_study
def validity(ctx: Any) -> Validity:
    """`check(ctx)`, computed once per process and study."""
    return check(ctx)
