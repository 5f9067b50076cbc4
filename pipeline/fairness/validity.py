"""Can the fairness gaps of a study be read as fairness? Degenerate and uninformative results, named.

Three checks, all on the evaluation patients, computed lazily from a study context (`validity(ctx)`):

- decisions of one class for (almost) every image, overall or within a group (`degenerate.one_class`):
  every gap is then near 0 because no one is told apart (levelling down, not fairness);
- a model whose AUC interval contains 0.5: it ranks images no better than chance;
- an image model no better than the attribute-only baseline (age band, sex, view predicting malade,
  fitted on the training patients, scored on the same evaluation patients; paired patient bootstrap).

A study is in **weak-model mode** (`Validity.weak_model`) when any of `WEAK_REASONS` holds: its fairness
gaps then measure noise more than the model, and every text leads with that (`report/weak.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cache import code_version, memory, per_study
from pipeline.data import schema as S
from pipeline.fairness.data_bias import attribute_scores, interval, patient_bootstrap, score_auc
from pipeline.fairness.degenerate import one_class_everywhere, over_seeds

CHANCE = 0.5
# Below this many evaluation images of a class, one image moves that class's rate by more than 3 points
# and a group's rate rests on a handful of images (issue 24: « about 30 »).
WEAK_MIN_IMAGES = 30
# Why a model is too weak for its fairness gaps to be read, in the order the report states them.
WEAK_REASONS = ("chance", "not_beyond_attributes", "inner_below_chance", "few_images")


@dataclass(frozen=True)
class WeakReason:
    """One reason for weak-model mode and the numbers that show it.

    chance: {"auc", "low", "high", "n_seeds"} (the reference's AUC over the training seeds);
    not_beyond_attributes: the `baseline` dict; inner_below_chance: {"auc", "per_seed", "threshold_folds"}
    (the reference's AUC where its threshold is chosen, `S.TUNING`, mean over seeds; 0 folds: the inner
    validation); few_images: {"counts": {label: images}, "minimum"} on the evaluation patients.
    """

    code: str
    values: dict[str, Any]


@dataclass
class Validity:
    """What the checks found. `one_class`: method -> attribute -> OneClass (decisions at the operating
    threshold); `chance`: methods whose AUC interval contains 0.5, with (auc, low, high);
    `baseline`: image vs attribute-only AUC on the evaluation patients (keys image, attributes, diff,
    each with _low/_high, and attributes_used)."""

    # method -> (where its decisions are one class on more than half of the seeds, « (graines 2 et 4 sur 5) »
    # when not on every one): {"all": class} or {"attribute=group": class, ...}, as the tables flag it
    degenerate: dict[str, tuple[dict[str, str], str]] = field(default_factory=dict)
    chance: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    weak: tuple[WeakReason, ...] = ()
    # method -> (evaluation decisions, images x seeds, that differ from the reference's; decisions): what it changed
    changed: dict[str, tuple[int, int]] = field(default_factory=dict)
    # method -> Spearman correlation of its evaluation scores with the reference's
    rank_agreement: dict[str, float] = field(default_factory=dict)

    @property
    def weak_model(self) -> bool:
        """The model is too weak for its fairness gaps to mean much: the report says so first."""
        return bool(self.weak)

    def weak_reason(self, code: str) -> WeakReason | None:
        return next((r for r in self.weak if r.code == code), None)

    def degenerate_methods(self) -> dict[str, dict[str, str]]:
        """method -> where its decisions are one class: {"all": class}, or {"attribute=group": class, ...}."""
        return {m: where for m, (where, _) in self.degenerate.items() if where}

    def deciding_as_reference(self) -> list[str]:
        """The weightings other than the reference whose decisions are the reference's on every seed."""
        return [m for m, (k, n) in self.changed.items() if m != "uniform" and n and k == 0]

    def degenerate_seeds(self, method: str) -> str:
        """« (graines 2 et 4 sur 5) » when a degenerate method is not so on every seed, else ""."""
        return self.degenerate.get(method, ({}, ""))[1]

    @property
    def image_not_better(self) -> bool:
        """The image model is not established to beat the attribute-only baseline (paired interval)."""
        low = self.baseline.get("diff_low", np.nan)
        return bool(np.isfinite(low) and low <= 0)

    @property
    def problems(self) -> bool:
        return bool(self.degenerate_methods() or self.chance or self.image_not_better)


def image_vs_attributes(train: pd.DataFrame, evaluation: pd.DataFrame, image_scores: list[np.ndarray],
                        attributes: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """AUC of the image model (one score per training seed) and of an attribute-only model (fitted on `train`)
    on `evaluation`, paired: the same patient resamples for all, so `diff` (image - attributes) has a paired
    95 % interval. Over several seeds, `image` and `diff` are their means with the seed-aware interval of
    `inference.combine`, as the headline AUC (a verdict of the `level` family) is.
    """
    from pipeline.fairness.inference import combine

    used = [a for a in attributes if a in train.columns and a in evaluation.columns]
    scores = {f"image{k}": np.asarray(s, dtype=float) for k, s in enumerate(image_scores)}
    aucs = score_auc(evaluation, {**scores, "attributes": attribute_scores(train, evaluation, used)},
                     patient_bootstrap(evaluation, n_boot, seed))
    image = np.array([aucs[name] for name in scores])  # (seeds, 1 + resamples): the point, then the replicates
    out: dict[str, Any] = {"attributes_used": used, "n_images": len(evaluation),
                           "n_patients": int(evaluation[S.PATIENT].nunique()), "n_seeds": len(scores),
                           "per_seed": tuple(float(x) for x in image[:, 0])}
    low, high = interval(aucs["attributes"][1:])
    out.update(attributes=float(aucs["attributes"][0]), attributes_low=float(low), attributes_high=float(high))
    for name, values in (("image", image), ("diff", image - aucs["attributes"])):
        if len(values) == 1:  # one run: the percentile interval of its own resamples
            low, high = interval(values[0, 1:])
            out[name], out[f"{name}_low"], out[f"{name}_high"] = float(values[0, 0]), float(low), float(high)
        else:
            estimate, low, high, *_ = combine(values[:, 0], values[:, 1:])
            out[name], out[f"{name}_low"], out[f"{name}_high"] = estimate, low, high
    return out


def _reference_scores_by_seed(ctx: Any, images: pd.Series) -> list[np.ndarray]:
    """The reference's (uniform) scores on `images`, one array per training seed (the detail seed's alone when
    the other seeds did not score every one of them)."""
    out = []
    for (method, _seed), preds in sorted(ctx.seed_predictions.items(), key=lambda kv: kv[0][1]):
        if method == "uniform":
            scored = preds.drop_duplicates(S.IMAGE).set_index(S.IMAGE)[S.PROBA]
            if images.isin(scored.index).all():
                out.append(scored.loc[images].to_numpy(float))
    return out or [ctx.valid_predictions["uniform"][S.PROBA].to_numpy(float)]


def _changed_over_seeds(runs: list[pd.DataFrame], reference: list[pd.DataFrame]) -> tuple[int, int]:
    """(decisions that differ from the uniform weighting's, decisions), over every training seed's evaluation
    images (`model_analysis.decided_runs` of both): the tables are means over the seeds, and 0 means the same
    decisions on every one."""
    from pipeline.fairness.metrics import DECISION

    pairs = list(zip(runs, reference, strict=True))
    differ = sum(int((mine[DECISION] != theirs[DECISION]).sum()) for mine, theirs in pairs)
    return differ, sum(len(mine) for mine, _ in pairs)


def check(ctx: Any) -> Validity:
    """The three checks on a study context (its weightings at their operating thresholds)."""
    out = Validity()
    attributes = list(dict.fromkeys([ctx.config.weighting.attribute, *ctx.config.sensitive_attributes]))
    from scipy.stats import spearmanr

    from pipeline.fairness.metrics import DECISION
    from pipeline.fairness.model_analysis import decided_runs

    reference_scores = ctx.valid_predictions["uniform"][S.PROBA].to_numpy(float)
    reference_runs = decided_runs(ctx, "uniform")
    for method, preds in ctx.valid_predictions.items():
        runs = decided_runs(ctx, method)  # every seed's decisions: degenerate as the tables say, over the seeds
        out.degenerate[method] = over_seeds(
            {seed: one_class_everywhere(run[DECISION].to_numpy(float), run, attributes)
             for seed, run in zip(ctx.config.training.seeds, runs, strict=True)}, ctx.detail_seed)
        out.changed[method] = _changed_over_seeds(runs, reference_runs)
        out.rank_agreement[method] = float(spearmanr(preds[S.PROBA].to_numpy(float), reference_scores)[0])
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
                           _reference_scores_by_seed(ctx, uniform[S.IMAGE]), list(ctx.config.sensitive_attributes),
                           ev.n_bootstrap, ev.seed, code_version("fairness.validity", "fairness.data_bias",
                                                                 "fairness.inference"))
    out.weak = weak_reasons(ctx, out)
    return out


def _reference_auc_over_seeds(ctx: Any) -> tuple[float, float, float, int] | None:
    """The reference rule's AUC as the level family states it (mean over seeds, seed-aware interval)."""
    from pipeline.fairness.inference import LEVEL_FAMILY

    verdicts = getattr(ctx, "verdicts", None)
    if not verdicts:
        return None
    reference = verdicts.meta.get("reference", ctx.config.analysis.reference)
    v = next((v for v in verdicts.family(LEVEL_FAMILY) if v.treated == reference and v.quantity == "auc"), None)
    return None if v is None or not np.isfinite(v.low) else (v.estimate, v.low, v.high, v.n_seeds)


def _inner_validation_auc(ctx: Any) -> list[float]:
    """Each training seed's AUC of the reference where it chose its threshold: on its inner-validation
    patients, or on every training patient's out-of-fold score (`schema.TUNING`)."""
    from sklearn.metrics import roc_auc_score

    out = []
    for (method, _seed), preds in sorted(ctx.seed_predictions.items(), key=lambda kv: str(kv[0])):
        if method != "uniform" or S.TUNING not in preds.columns:
            continue
        tuned = preds[preds[S.TUNING].notna()]
        if tuned[S.LABEL].nunique() == 2:
            out.append(float(roc_auc_score(tuned[S.LABEL], tuned[S.TUNING])))
    return out


def weak_reasons(ctx: Any, found: Validity) -> tuple[WeakReason, ...]:
    """The reasons (`WEAK_REASONS`) this study's model is too weak for its fairness gaps to be read."""
    reasons = []
    level = _reference_auc_over_seeds(ctx)
    if level is not None:
        auc, low, high, n_seeds = level
        if low <= CHANCE <= high:
            reasons.append(WeakReason("chance", {"auc": auc, "low": low, "high": high, "n_seeds": n_seeds}))
    elif "uniform" in found.chance:  # no seed-aware level: the detail seed's interval
        auc, low, high = found.chance["uniform"]
        reasons.append(WeakReason("chance", {"auc": auc, "low": low, "high": high, "n_seeds": 1}))
    if found.image_not_better:
        reasons.append(WeakReason("not_beyond_attributes", dict(found.baseline)))
    inner = _inner_validation_auc(ctx)
    if inner and float(np.mean(inner)) < CHANCE:
        folds = ctx.train_info.get("uniform", {}).get("threshold_folds", 0)  # where the threshold was chosen
        reasons.append(WeakReason("inner_below_chance", {"auc": float(np.mean(inner)), "per_seed": tuple(inner),
                                                         "threshold_folds": folds}))
    labels = ctx.valid_predictions["uniform"][S.LABEL]
    counts = {int(k): int((labels == k).sum()) for k in (1, 0)}
    if min(counts.values()) < WEAK_MIN_IMAGES:
        reasons.append(WeakReason("few_images", {"counts": counts, "minimum": WEAK_MIN_IMAGES}))
    return tuple(reasons)


def _baseline(train: pd.DataFrame, evaluation: pd.DataFrame, image_scores: list[np.ndarray], attributes: list[str],
              n_boot: int, seed: int, code: str) -> dict[str, Any]:
    """`image_vs_attributes`, cached (`code`: version of the code, part of the cache key)."""
    return image_vs_attributes(train, evaluation, image_scores, attributes, n_boot, seed)


@per_study
def validity(ctx: Any) -> Validity:
    """`check(ctx)`, computed once per process and study."""
    return check(ctx)
