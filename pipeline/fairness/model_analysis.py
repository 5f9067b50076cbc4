"""What the analysis chapter and the defence show about the model itself, computed once from a study context.

`model_analysis(ctx)` gathers: bias amplification per weighting and per post-processor
(`amplification`), what the features reveal (`probing`), per-group performance of the reference
and the recommended combination, reliability curves per group, intersectional subgroups
(`subgroups`) and class-activation maps of a few images (`model.cam`). Each part is cached on its
inputs (`pipeline.cache.memory()`); the whole is memoised per process like `data_analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cache import code_version, memory, per_study
from pipeline.data import schema as S
from pipeline.fairness.amplification import amplification_table, prevalence_matched_threshold
from pipeline.fairness.calibration import calibration_by_group
from pipeline.fairness.data_bias import patient_bootstrap
from pipeline.fairness.metrics import (
    DECISION,
    LEVEL,
    MIN_DEFINED_SHARE,
    _align,
    draw_counts,
    group_labels,
    group_order,
)
from pipeline.fairness.subgroups import subgroup_metrics
from pipeline.progress import Laps

RELIABILITY_BINS = 5  # equal-count bins of the reference score: a few hundred images per group at most


CAM_PER_CASE = 1  # images per (group, well / badly classified, class)


CAM_STATS_MAX = 300  # images whose maps feed the region statistics (CPU seconds, not minutes)


BORDER = 0.1  # the outer 10 % of each side: where markers, text and collimation edges lie


@dataclass
class ModelAnalysis:
    amplification: pd.DataFrame  # method x attribute; see amplification.amplification_table
    probing: pd.DataFrame | None  # attribute: AUC from the features vs from the other attributes
    group_metrics: pd.DataFrame  # model x attribute x group x metric with intervals
    calibration: pd.DataFrame  # attribute x group x bin: mean score, observed rate, interval
    calibration_fit: pd.DataFrame  # model x attribute x group: calibration intercept and slope, clustered CIs
    subgroups: pd.DataFrame  # crossing x subgroup x metric, small-group rule applied
    retained: dict[str, str]  # model key -> « weighting + post-processor » (names)
    cams: dict[str, Any] | None  # examples, maps, pixels, region statistics; None without a trained network
    min_positives: int = 10
    timings: dict[str, float] = field(default_factory=dict)
    age_adjusted_gap: dict[str, Any] | None = None  # the reference's FNR gap, crude and at equal age band


def retained_combination(ctx: Any) -> tuple[str, str] | None:
    """The rule recommended under the constraints fixed in advance (study.yml > analysis.recommendation),
    None when no rule meets them or it is the reference itself: one « retained » rule in the whole report."""
    from pipeline.fairness.recommendation import recommendation

    chosen = recommendation(ctx).chosen
    if chosen is None:
        return None
    w, _, p = chosen.partition(" + ")
    return None if (w, p) == tuple(ctx.grid.baseline) else (w, p)


def _threshold(preds: pd.DataFrame) -> float:
    """The operating threshold the predictions carry (chosen on train patients the model did not fit), else 0.5."""
    return float(preds.attrs.get("threshold", 0.5))


def _decided(preds: pd.DataFrame) -> pd.DataFrame:
    """The model's decisions at its operating threshold, as in chapter 3."""
    return preds.assign(**{DECISION: (preds[S.PROBA] >= _threshold(preds)).astype(float)})


def _group_metrics(runs_by_model: dict[str, list[pd.DataFrame]], attributes: list[str], n_boot: int, seed: int,
                   code: str, min_per_class: int) -> pd.DataFrame:
    """Per model, attribute, group and metric: the mean over every training seed (`runs_by_model[model]`: one
    decided frame per seed, on the same images) with its seed-aware interval, on one set of patient resamples."""
    from pipeline.fairness.inference import group_rates_over_seeds, rule_run

    anchor = next(iter(runs_by_model.values()))[0]
    draws = draw_counts(anchor[S.PATIENT].astype(str).nunique(), n_boot, seed)
    parts = []
    for key, frames in runs_by_model.items():
        score = "kept_score" if "kept_score" in frames[0].columns else S.PROBA
        aligned = [_align(f, anchor) for f in frames]
        for a in attributes:
            runs = [rule_run(f, a, draws, None, seed, DECISION, score, min_per_class) for f in aligned]
            parts.append(group_rates_over_seeds(runs, aligned[0], a, min_per_class).assign(model=key))
    return pd.concat(parts, ignore_index=True)


def reliability(preds: pd.DataFrame, attributes: list[str], n_boot: int, seed: int,
                bins: int = RELIABILITY_BINS) -> pd.DataFrame:
    """Reliability curves per group: equal-count bins of the score (edges from all images), in each
    bin the mean score and the observed share of malade with a patient-bootstrap 95 % interval."""
    preds = preds.reset_index(drop=True)
    score = preds[S.PROBA].to_numpy(float)
    edges = np.unique(np.quantile(score, np.linspace(0, 1, bins + 1)))
    b = np.clip(np.searchsorted(edges, score, side="right") - 1, 0, len(edges) - 2)
    boot = patient_bootstrap(preds, n_boot, seed)
    draws = boot.weights[:, boot.codes(preds)].astype(float)
    y = preds[S.LABEL].to_numpy(float)
    alpha = (1 - LEVEL) / 2 * 100
    rows = []
    for a in attributes:
        labels = group_labels(preds[a])
        for g in group_order(preds[a]):
            for k in range(len(edges) - 1):
                mask = ((labels == g) & (b == k)).to_numpy()
                if mask.sum() == 0:
                    continue
                w = draws[:, mask]
                with np.errstate(invalid="ignore", divide="ignore"):
                    obs = (w * y[mask]).sum(axis=1) / w.sum(axis=1)
                ok = obs[np.isfinite(obs)]
                low, high = np.percentile(ok, [alpha, 100 - alpha]) if len(ok) > 1 else (np.nan, np.nan)
                rows.append({"attribute": a, "group": g, "bin": k, "n": int(mask.sum()),
                             "mean_score": float(score[mask].mean()), "observed": float(y[mask].mean()),
                             "low": float(low), "high": float(high)})
    return pd.DataFrame(rows)


def _cases(valid: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """Per group of `attribute`: the most confident correct and the most confident wrong image of each class."""
    picks = []
    for g in group_order(valid[attribute]):
        part = valid[group_labels(valid[attribute]) == g]
        for label in (1, 0):
            cls = part[part[S.LABEL] == label]
            conf = cls[S.PROBA] if label == 1 else 1 - cls[S.PROBA]
            right = cls[S.PROBA] >= _threshold(valid) if label == 1 else cls[S.PROBA] < _threshold(valid)
            correct, wrong = cls[right], cls[~right]
            for case, rows, ascending in (("bien classée", correct, False), ("mal classée", wrong, True)):
                if rows.empty:
                    continue
                c = conf.loc[rows.index].sort_values(ascending=ascending)
                for idx in c.index[:CAM_PER_CASE]:
                    picks.append({"index": idx, "group": g, "case": case})
    out = pd.DataFrame(picks)
    if out.empty:
        return valid.iloc[:0].assign(group=[], case=[])
    return valid.loc[out["index"]].assign(group=out["group"].to_numpy(), case=out["case"].to_numpy())


MARKER_BOX = (0.04, 0.04, 0.12, 0.19)  # where data/demo.py's _marker draws « AP »: top, left, bottom, right
# Approximate lung fields of a frontal radiograph (two boxes, fractions of the image): a stated region, not a
# segmentation; the report calls it « zone pulmonaire approximative ».
LUNG_BOXES = ((0.15, 0.12, 0.80, 0.45), (0.15, 0.55, 0.80, 0.88))


def _cam_results(model: Any, pixels: np.ndarray, stats_pixels: np.ndarray, image_size: int) -> dict[str, Any]:
    """Both maps of the example images; region statistics of both on the `stats_pixels` images."""
    from pipeline.model.cam import MAPS, box_area, region_share

    border = np.ones((image_size, image_size), bool)
    cut = max(1, round(BORDER * image_size))
    border[cut:-cut, cut:-cut] = False
    lungs = np.zeros((image_size, image_size), bool)
    for top, left, bottom, right in LUNG_BOXES:
        lungs[int(top * image_size):int(np.ceil(bottom * image_size)),
              int(left * image_size):int(np.ceil(right * image_size))] = True
    out: dict[str, Any] = {"border_area": float(border.mean()), "marker_area": box_area(MARKER_BOX, image_size),
                           "lung_area": float(lungs.mean())}
    for name, fn in MAPS.items():
        maps, stats_maps = fn(model, pixels), fn(model, stats_pixels)
        total = stats_maps.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = {"maps": maps, "marker_share": region_share(stats_maps, MARKER_BOX),
                         "border_share": (stats_maps * border).sum(axis=(1, 2)) / total,
                         "lung_share": (stats_maps * lungs).sum(axis=(1, 2)) / total}
    return out


def _cams(ctx: Any, valid: pd.DataFrame) -> dict[str, Any] | None:
    from pipeline.data.images import image_array
    from pipeline.model.cam import MAPS
    from pipeline.model.training import deciding_network

    config = ctx.config.training
    model = deciding_network(ctx.frame, config, ctx.detail_seed)  # the scores the detailed tables decide with
    if model is None:
        return None
    cases = _cases(valid, ctx.config.weighting.attribute)
    stats = valid.iloc[np.linspace(0, len(valid) - 1, min(len(valid), CAM_STATS_MAX)).astype(int)]
    stats = stats.drop_duplicates(S.IMAGE)
    frame = ctx.frame.set_index(S.IMAGE)
    pixels = np.asarray(image_array(frame.loc[cases[S.IMAGE]].reset_index(), config.image_size))
    stats_pixels = np.asarray(image_array(frame.loc[stats[S.IMAGE]].reset_index(), config.image_size))
    code = code_version("model.cam", "model.backbones", "fairness.model_analysis")  # _cam_results lives here
    result = _cached_cams(model, pixels, stats_pixels, config.image_size, code)
    stats_view = stats[S.VIEW].astype(str).to_numpy() if S.VIEW in stats else np.full(len(stats), "")
    ev = ctx.config.evaluation
    contrast = {name: marker_contrast(result[name]["marker_share"], stats_view, stats[S.PATIENT],
                                      ev.n_bootstrap, ev.seed) for name in MAPS}
    border = {name: mean_share(result[name]["border_share"], stats[S.PATIENT], ev.n_bootstrap, ev.seed)
              for name in MAPS}
    lungs = {name: mean_share(result[name]["lung_share"], stats[S.PATIENT], ev.n_bootstrap, ev.seed)
             for name in MAPS}
    return {"cases": cases.reset_index(drop=True), "pixels": pixels, **result, "marker_contrast": contrast,
            "border": border, "lungs": lungs, "stats_view": stats_view, "stats_label": stats[S.LABEL].to_numpy()}


def _patient_draws(patients: pd.Series, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_images) bootstrap weights: each image weighted by how often its patient is drawn."""
    frame = pd.DataFrame({S.PATIENT: patients.astype(str).to_numpy()})
    boot = patient_bootstrap(frame, n_boot, seed)
    return boot.weights[:, boot.codes(frame)].astype(float)


def _percentile_interval(replicates: np.ndarray, n_boot: int) -> tuple[float, float]:
    """95 % percentile interval, or NaNs when fewer replicates than the study's rule are defined."""
    ok = replicates[np.isfinite(replicates)]
    if len(ok) < MIN_DEFINED_SHARE * n_boot:
        return np.nan, np.nan
    alpha = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(ok, [alpha, 100 - alpha])
    return float(low), float(high)


def _weighted_means(values: np.ndarray, mask: np.ndarray, draws: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (draws[:, mask] @ values[mask]) / draws[:, mask].sum(axis=1)


def marker_contrast(share: np.ndarray, view: np.ndarray, patients: pd.Series, n_boot: int,
                    seed: int) -> dict[str, float]:
    """Mean share of a map's mass in the marker corner on AP images, on PA images, and their difference,
    with a 95 % interval from a bootstrap over patients (images of one patient are drawn together)."""
    ok = np.isfinite(share)
    ap, pa = ok & (view == "AP"), ok & (view == "PA")
    out = {"ap": float(share[ap].mean()) if ap.any() else np.nan,
           "pa": float(share[pa].mean()) if pa.any() else np.nan}
    out["diff"] = out["ap"] - out["pa"]
    out["diff_low"] = out["diff_high"] = np.nan
    if ap.any() and pa.any():
        draws = _patient_draws(patients, n_boot, seed)
        diffs = _weighted_means(share, ap, draws) - _weighted_means(share, pa, draws)
        out["diff_low"], out["diff_high"] = _percentile_interval(diffs, n_boot)
    return out


def mean_share(share: np.ndarray, patients: pd.Series, n_boot: int, seed: int) -> dict[str, float]:
    """Mean share of a map's mass in a region (the border) with its patient-bootstrap 95 % interval."""
    ok = np.isfinite(share)
    if not ok.any():
        return {"mean": np.nan, "low": np.nan, "high": np.nan}
    low, high = _percentile_interval(_weighted_means(share, ok, _patient_draws(patients, n_boot, seed)), n_boot)
    return {"mean": float(share[ok].mean()), "low": low, "high": high}


def _cam_cached(pixels: np.ndarray, stats_pixels: np.ndarray, image_size: int, state: dict, code: str,
                model: Any = None) -> dict[str, Any]:
    return _cam_results(model, pixels, stats_pixels, image_size)


def _cached_cams(model: Any, pixels: np.ndarray, stats_pixels: np.ndarray, image_size: int,
                 code: str) -> dict[str, Any]:
    """Maps cached on the pixels, the network's weights and the code (the module itself is not hashed)."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return memory().cache(_cam_cached, ignore=["model"])(pixels, stats_pixels, image_size, state, code, model)


def analyse_model(ctx: Any) -> ModelAnalysis:
    """Every result of the model part of the analysis chapter (parts cached on their inputs)."""
    config, ev = ctx.config, ctx.config.evaluation
    attributes = [a for a in config.sensitive_attributes if a in ctx.evaluation.columns]
    min_positives = int(ev.min_per_class)  # the study's small-group rule
    lap = Laps()

    code = code_version("fairness.amplification", "fairness.metrics", "fairness.probing", "fairness.subgroups")
    valid = ctx.valid_predictions
    decided = {m: _decided(p) for m, p in valid.items()}
    base_w, base_p = ctx.grid.baseline
    post = {f"{base_w} + {p}": d for (w, p), d in ctx.grid.decisions.items() if w == base_w}
    train = ctx.frame.loc[ctx.frame[S.SPLIT] == "train", [S.LABEL, *attributes]].reset_index(drop=True)
    amp = memory().cache(_amplification)({**prevalence_matched_runs(ctx), **post}, attributes, ev.n_bootstrap,
                                         ev.seed, train, code)
    lap("amplification")

    from pipeline.model.training import reference_network

    probing = None
    net = reference_network(ctx.frame, config.training, ctx.detail_seed)
    keep = ctx.frame[S.IMAGE].isin(set(ctx.evaluation[S.IMAGE])).to_numpy()
    if net["features"] is not None:
        rows = ctx.frame[keep].reset_index(drop=True)
        probing = memory().cache(_probe)(np.asarray(net["features"])[keep], rows[[S.PATIENT, S.LABEL, *attributes]],
                                         attributes, ev.n_bootstrap, ev.seed, code)
    lap("probing")

    reference = decided[base_w]
    models = {"reference": reference}
    over_seeds = {"reference": decided_runs(ctx, base_w)}
    retained = {"reference": f"{base_w} + {base_p}"}
    chosen = retained_combination(ctx)
    if chosen is not None:
        models["retained"] = ctx.grid.decisions[chosen]
        over_seeds["retained"] = ctx.grid.seed_frames(chosen)
        retained["retained"] = f"{chosen[0]} + {chosen[1]}"
    groups = memory().cache(_group_metrics)(over_seeds, attributes, ev.n_bootstrap, ev.seed,
                                            code_version("fairness.inference", "fairness.metrics"), min_positives)
    calibration = memory().cache(reliability)(reference, attributes, ev.n_bootstrap, ev.seed)
    calibration_fit = memory().cache(_calibration)(models, attributes, min_positives,
                                                   code_version("fairness.calibration"))
    lap("per-group metrics")
    subgroups = memory().cache(_subgroups)(reference, attributes, min_positives, ev.n_bootstrap, ev.seed, code)
    lap("subgroups")
    cams = _cams(ctx, reference)
    lap("class-activation maps")
    adjusted = memory().cache(_age_adjusted)(decided_runs(ctx, base_w), config.weighting.attribute, config,
                                             ev.n_bootstrap, ev.seed, code_version("fairness.simpson"))
    lap("age-adjusted gap")
    return ModelAnalysis(amp, probing, groups, calibration, calibration_fit, subgroups, retained, cams,
                         min_positives, lap.timings, adjusted)


def decided_runs(ctx: Any, weighting: str) -> list[pd.DataFrame]:
    """`weighting`'s model for every training seed, decided on the evaluation patients at its operating threshold
    (chosen on train patients the model did not fit)."""
    keep = set(ctx.evaluation[S.IMAGE])
    runs = []
    for seed in ctx.config.training.seeds:
        preds = ctx.seed_predictions[(weighting, seed)]
        valid = preds[preds[S.IMAGE].isin(keep)].sort_values(S.IMAGE).reset_index(drop=True)
        runs.append(valid.assign(**{DECISION: (valid[S.PROBA] >= _threshold(preds)).astype(float)}))
    return runs


def _age_adjusted(runs: list[pd.DataFrame], attribute: str, config: Any, n_boot: int, seed: int,
                  code: str) -> dict[str, Any] | None:
    """The reference's under-diagnosis gap, crude and Mantel-Haenszel at equal age band (`code`: cache key)."""
    from pipeline.fairness.simpson import model_gap_adjusted

    return model_gap_adjusted(runs, attribute, S.AGE_BAND, config, n_boot, seed, DECISION)


def _calibration(models: dict[str, pd.DataFrame], attributes: list[str], min_per_class: int,
                 code: str) -> pd.DataFrame:
    parts = []
    for key, preds in models.items():
        score = "kept_score" if "kept_score" in preds.columns else S.PROBA
        parts.append(calibration_by_group(preds, attributes, score, min_per_class).assign(model=key))
    return pd.concat(parts, ignore_index=True)


def prevalence_matched_runs(ctx: Any) -> dict[str, list[pd.DataFrame]]:
    """Each weighting's model for every training seed, decided on the evaluation patients at Wang &
    Russakovsky's threshold: the one at which the share of train images predicted *malade* equals the training
    prevalence, on the scores the operating threshold is chosen on (`schema.TUNING`: without the evaluation
    patients, never fitted on their own rows)."""
    train = ctx.frame[S.SPLIT] == "train"
    prevalence = float(ctx.frame.loc[train, S.LABEL].mean())
    keep = set(ctx.evaluation[S.IMAGE])
    runs: dict[str, list[pd.DataFrame]] = {}
    for (method, _), preds in sorted(ctx.seed_predictions.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        inner = preds[S.TUNING].dropna().to_numpy(float)
        threshold = prevalence_matched_threshold(inner, prevalence)
        valid = preds[preds[S.IMAGE].isin(keep)].reset_index(drop=True)
        runs.setdefault(method, []).append(valid.assign(**{DECISION: (valid[S.PROBA] >= threshold).astype(float)}))
    return runs


def _amplification(decided: dict[str, pd.DataFrame], attributes: list[str], n_boot: int, seed: int,
                   train: pd.DataFrame, code: str) -> pd.DataFrame:
    return amplification_table(decided, attributes, n_boot, seed, reference=train)


def _probe(features: np.ndarray, rows: pd.DataFrame, attributes: list[str], n_boot: int, seed: int,
           code: str) -> pd.DataFrame:
    from pipeline.fairness.probing import probe  # here: scikit-learn only where a probe is fitted

    return probe(features, rows, attributes, seed)


def _subgroups(preds: pd.DataFrame, attributes: list[str], min_positives: int, n_boot: int, seed: int,
               code: str) -> pd.DataFrame:
    return subgroup_metrics(preds, attributes, min_positives, n_boot, seed)


@per_study
def model_analysis(ctx: Any) -> ModelAnalysis:
    """`analyse_model(ctx)`, computed once per process for a given data and config."""
    return analyse_model(ctx)
