"""The study the chapters and slides read: data, one model per weighting, post-processing grid.

`run(config)` computes what is missing and loads the rest from the cache; `context()` is what a
chapter calls (memoised per kernel, so a document computes nothing twice).
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import progress
from pipeline.cache import atomic_path, cache_dir, code_version, combined_digest, file_digest, memory, output_dir
from pipeline.config import StudyConfig, load_config
from pipeline.data import schema as S
from pipeline.data.folder import CheckReport, fingerprint, load_dataset


@dataclass
class StudyContext:
    """Everything the report shows, computed (or loaded from the cache) by `run`."""

    config: StudyConfig
    check: CheckReport
    full_frame: pd.DataFrame  # canonical frame before subsampling
    frame: pd.DataFrame  # frame the study trains and evaluates on
    evaluation: pd.DataFrame  # valid rows kept for evaluation (leaking patients excluded)
    data_fingerprint: str
    weights: dict[str, pd.Series] = field(default_factory=dict)  # method -> the models' weights, detail seed, by part
    course_weights: dict[str, pd.Series] = field(default_factory=dict)  # on every train row (the CSV copies)
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> all rows, detail seed
    seed_predictions: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict)
    train_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: Any = None
    verdicts: Any = None  # fairness.inference.Verdicts: the primary family's answers (every text reads them)
    comparison: pd.DataFrame | None = None  # weighting methods vs uniform, main attribute
    comparison_by_attribute: dict[str, pd.DataFrame] = field(default_factory=dict)
    group_rates: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> per-group rates
    seed_metrics: pd.DataFrame | None = None  # method x training seed: point metrics
    timings: dict[str, float] = field(default_factory=dict)
    analyses: dict[str, Any] = field(default_factory=dict)  # data, model, validity: stored with the study
    key: str = ""  # `study_key` of its config and data when computed by `run` (names its cached charts)
    protocol_caveats: list[Any] = field(default_factory=list)  # protocol.PartSize: parts with very few patients
    backbone_choice: Any = None  # model.choice.BackboneChoice: the backbone used, and why (`training.backbone: auto`)
    detail_seed: int = 0  # the training the detailed tables show: the reference's median balanced accuracy
    detail_scores: dict[int, float] = field(default_factory=dict)  # seed -> that balanced accuracy (how it was chosen)

    # ------------------------------------------------------------ convenience for chapters
    @property
    def valid_predictions(self) -> dict[str, pd.DataFrame]:
        """Predictions on the evaluation patients, per weighting method (the detail seed)."""
        keep = set(self.evaluation[S.IMAGE])
        out = {m: p[p[S.IMAGE].isin(keep)].reset_index(drop=True) for m, p in self.predictions.items()}
        for method, p in out.items():
            p.attrs.update(self.predictions[method].attrs)  # the operating threshold travels with the scores
        return out

    def threshold(self, method: str) -> float:
        """Operating threshold of a weighting (the detail seed), chosen on train patients the model did not fit."""
        return float(self.train_info[method]["threshold"])

    def describe_data(self) -> str:
        f = self.frame
        n_train = int((f[S.SPLIT] == "train").sum())
        source = "le jeu de démonstration synthétique" if self.config.is_demo else "notre sous-ensemble"
        return (f"{source} de {len(f)} radiographies de {f[S.PATIENT].nunique()} patients "
                f"({n_train} en apprentissage, {len(self.evaluation)} en évaluation)")

    def summary(self) -> str:
        lines = [f"Data: {self.config.data_path()} ({len(self.frame)} images, fingerprint "
                 f"{self.data_fingerprint[:12]})", f"Weightings: {', '.join(self.predictions)}"]
        lines += [f"  {k}: {v:.1f} s" for k, v in self.timings.items()]
        return "\n".join(lines)


def ensure_demo(config: StudyConfig) -> None:
    """Write the demo dataset once when the config names no data folder (its files key the study)."""
    path = config.data_path()
    if config.is_demo and not (path / "demo.json").exists():
        from pipeline.data.demo import make_demo

        d = config.demo
        print(f"No data folder configured: writing the demo dataset to {path}")
        make_demo(path, n_patients=d.n_patients, seed=d.seed, image_size=d.image_size)


def _evaluation_rows(frame: pd.DataFrame, config: StudyConfig) -> pd.DataFrame:
    valid = frame[frame[S.SPLIT] == "valid"]
    if config.evaluation.exclude_leaking_patients:
        train_patients = set(frame.loc[frame[S.SPLIT] == "train", S.PATIENT])
        valid = valid[~valid[S.PATIENT].isin(train_patients)]
    return valid.reset_index(drop=True)


def _attach_attributes(preds: pd.DataFrame, frame: pd.DataFrame, config: StudyConfig) -> pd.DataFrame:
    cols = [S.IMAGE, S.PATIENT, *config.sensitive_attributes]
    extra = frame[[c for c in dict.fromkeys(cols) if c in frame.columns]]
    out = preds.drop(columns=[c for c in extra.columns if c != S.IMAGE and c in preds.columns])
    return out.merge(extra, on=S.IMAGE, how="left", validate="one_to_one")


def _train_all(ctx: StudyContext) -> None:
    """One model (or head) per weighting method and seed; JTT gets the ERM model's train errors."""
    from pipeline.fairness.weighting import compute_weights, weights_by_part
    from pipeline.model.training import predict_with_weights, protocol_roles

    config = ctx.config
    train = ctx.frame[ctx.frame[S.SPLIT] == "train"].reset_index(drop=True)
    attributes = [config.weighting.attribute]
    methods = study_weightings(config)
    total, done = len(methods) * len(config.training.seeds), 0
    is_train = (ctx.frame[S.SPLIT] == "train").to_numpy()
    per_seed: dict[tuple[str, int], tuple[pd.Series, dict[str, Any], dict[str, Any]]] = {}
    for seed in config.training.seeds:
        roles = protocol_roles(ctx.frame, config.training, seed)[is_train]
        erm_proba, erm_threshold = None, 0.5
        for method in methods:  # JTT's errors: the ERM model's, at its own operating threshold
            done += 1
            head = config.training.mode == "last_layer" and (method != "uniform" or
                                                             config.training.feature_source == "pretrained")
            progress.update(f"{'head' if head else 'network'} {done}/{total}: {method}, seed {seed}")
            context = {"train_proba": erm_proba, "jtt_threshold": erm_threshold} if erm_proba is not None else {}
            weights = weights_by_part(method, train, roles, attributes,
                                      all_attributes=list(config.sensitive_attributes), **context)
            preds, info = predict_with_weights(ctx.frame, weights.to_numpy(), config.training, seed)
            if not head and not info["cached"]:
                progress.milestone(f"network {done}/{total}: {method}, seed {seed}, {info['epochs']} epochs, "
                                   f"{info['backbone_training_seconds']:.1f} s")
            preds = _attach_attributes(preds, ctx.frame, config)
            preds.attrs["threshold"] = info["threshold"]
            preds.attrs["compute"] = info.get("compute", {})  # the kernels it was trained on (appendix)
            if method == "uniform":
                erm_proba = preds.loc[preds[S.SPLIT] == "train", S.PROBA].to_numpy()
                erm_threshold = info["threshold"]
            ctx.seed_predictions[(method, seed)] = preds
            per_seed[(method, seed)] = weights, info, context
    ctx.seed_metrics = _seed_metrics(ctx)
    uniform = ctx.seed_metrics[ctx.seed_metrics["method"] == "uniform"]
    ctx.detail_scores = dict(zip(uniform["seed"].astype(int), uniform["balanced_accuracy"].astype(float), strict=True))
    ctx.detail_seed = median_seed(ctx.detail_scores)
    for method in methods:
        weights, info, context = per_seed[(method, ctx.detail_seed)]
        ctx.weights[method], ctx.predictions[method] = weights, ctx.seed_predictions[(method, ctx.detail_seed)]
        ctx.train_info[method] = info
        # the course's script trains on every train image: its copy is weighted on all of them
        ctx.course_weights[method] = compute_weights(method, train, attributes,
                                                     all_attributes=list(config.sensitive_attributes), **context)


def median_seed(scores: dict[int, float]) -> int:
    """The seed of the median score: the lower middle one for an even count; equal scores are ordered by seed.

    The detailed tables show one training; the median one is representative of the seeds, where the
    first seed may happen to be the best or the worst of them."""
    order = sorted(scores, key=lambda seed: (-np.inf if np.isnan(scores[seed]) else scores[seed], seed))
    return order[(len(order) - 1) // 2]


def threshold_of(preds: pd.DataFrame) -> float:
    """The operating threshold the predictions carry (chosen on train patients' scores
    from a model that did not fit them, `S.TUNING`)."""
    if "threshold" not in preds.attrs:
        raise ValueError("these predictions carry no operating threshold (predictions.attrs['threshold'])")
    return float(preds.attrs["threshold"])


def _decided(preds: pd.DataFrame) -> pd.DataFrame:
    """The model's own decisions at its operating threshold: what a weighting changes, before post-processing.

    The threshold maximises the balanced accuracy on train patients' scores from a model that did
    not fit them (`S.TUNING`: the inner validation, or out-of-fold scores; never evaluation patients),
    so a weighting that only shifts the scores does not win by moving them across a fixed 0.5.
    """
    out = preds.assign(decision=(preds[S.PROBA] >= threshold_of(preds)).astype(float))
    out.attrs.update(preds.attrs)
    return out


def _weighting_metrics(by_seed: dict[int, dict[str, pd.DataFrame]], attributes: list[str], main: str,
                       n_resamples: int, seed: int, code: str, min_per_class: int = 10
                       ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Comparison tables per attribute over every training seed (`by_seed[seed][weighting]`, decided at each
    run's operating threshold), on the primary family's patient resamples (`n_resamples`, `seed`), so the
    reference row is the one the headline and the questions quote; and each weighting's per-group rates for
    the main attribute, over every seed on the same resamples (`code`: cache key)."""
    from pipeline.fairness import metrics as M
    from pipeline.fairness.inference import comparison_over_seeds, group_rates_over_seeds, rule_run

    seeds = sorted(by_seed)
    weightings = list(by_seed[seeds[0]])
    anchor = by_seed[seeds[0]]["uniform"].sort_values(S.IMAGE).reset_index(drop=True)
    draws = M.draw_counts(len(anchor[S.PATIENT].astype(str).unique()), n_resamples, seed)
    comparisons, rates = {}, {}
    for attribute in dict.fromkeys([*attributes, main]):
        runs = {w: [rule_run(M._align(by_seed[s][w], anchor), attribute, draws, None, seed, M.DECISION, S.PROBA,
                             min_per_class) for s in seeds] for w in weightings}
        table = comparison_over_seeds(runs, "uniform")
        groups = list(runs["uniform"][0].groups)
        table.attrs.update(level=M.LEVEL, test_equal="Bonferroni des contrastes, chacun sur toutes les graines",
                           correction=M.CORRECTION, n_boot=n_resamples, seed=seed, unit=S.PATIENT,
                           attribute=attribute, baseline="uniform", groups=groups, min_per_class=min_per_class,
                           realised=False, n_seeds=len(seeds), seeds=seeds)
        comparisons[attribute] = table
        if attribute == main:
            rates = {w: group_rates_over_seeds(r, M._align(by_seed[seeds[0]][w], anchor), main, min_per_class)
                     for w, r in runs.items()}
    return comparisons, rates


def _evaluate_weightings(ctx: StudyContext) -> None:
    """Metrics over every seed with patient-bootstrap intervals and paired differences with the uniform
    weighting (cached)."""
    ev, attribute = ctx.config.evaluation, ctx.config.weighting.attribute
    by_seed = {seed: {m: _decided(p) for m, p in preds.items()} for seed, preds in _evaluated_by_seed(ctx).items()}
    compute = memory().cache(_weighting_metrics)
    ctx.comparison_by_attribute, ctx.group_rates = compute(
        by_seed, list(ctx.config.sensitive_attributes), attribute, ctx.config.analysis.n_resamples, ev.seed,
        code_version("fairness.metrics", "fairness.inference"), ev.min_per_class)
    ctx.comparison = ctx.comparison_by_attribute[attribute]


def _seed_metrics(ctx: StudyContext) -> pd.DataFrame:
    """Point metrics of every method for every training seed: seed variability next to method effects."""
    from pipeline.fairness.metrics import point_metrics

    keep = set(ctx.evaluation[S.IMAGE])
    rows = []
    for (method, seed), preds in ctx.seed_predictions.items():
        valid = preds[preds[S.IMAGE].isin(keep)]
        valid.attrs.update(preds.attrs)
        valid = _decided(valid)
        m = point_metrics(valid, ctx.config.weighting.attribute, min_per_class=ctx.config.evaluation.min_per_class)
        rows.append({"method": method, "seed": seed, **{k: m[k] for k in ("balanced_accuracy", "auc", "eopp_diff",
                                                                           "eo_diff")}})
    return pd.DataFrame(rows)


def _write_weights(ctx: StudyContext) -> None:
    """Each method's weights in a copy of metadata.csv (column WEIGHTS), for the course's own script."""
    from pipeline.fairness.weighting import write_weights_csv

    source = ctx.config.data_path() / "metadata.csv"
    out_dir = output_dir() / "weights"
    train = ctx.frame[ctx.frame[S.SPLIT] == "train"].reset_index(drop=True)
    for method, weights in ctx.course_weights.items():
        write_weights_csv(source, train, weights, ctx.config.weighting.weights_col, out_dir / f"{method}.csv")


def _grid(preds: dict[int, dict[str, pd.DataFrame]], methods: list[str], attribute: str, folds: int, seed: int,
          n_refit: int, boot_seed: int, code: str, min_per_class: int = 10, attributes: tuple[str, ...] = (),
          n_resamples: int | None = None, detail_seed: int | None = None):
    """The post-processing grid over every seed (`code`: cache key of the code that computes it)."""
    from pipeline.fairness.grid import run_grid

    return run_grid(preds, methods, attribute, folds, seed, n_refit, boot_seed, min_per_class,
                    attributes=list(attributes), n_resamples=n_resamples, detail_seed=detail_seed)


def study_weightings(config: StudyConfig) -> list[str]:
    """The weightings trained: uniform (the reference), the configured ones, and those the primary family needs."""
    from pipeline.config import rule_parts

    a = config.analysis
    primary = [rule_parts(r)[0] for r in (a.reference, *a.primary) if rule_parts(r)]
    return list(dict.fromkeys(["uniform", *config.weighting.methods, *primary]))


def _check_primary(ctx: StudyContext) -> None:
    """Before any training: the family's rules are registered methods, and a signed difference (F − M) needs
    exactly two groups of the family's attribute."""
    from pipeline.config import ConfigError, rule_parts
    from pipeline.fairness.postprocess import POSTPROCESSORS
    from pipeline.fairness.weighting import WEIGHTINGS

    a = ctx.config.analysis
    for name in (a.reference, *a.primary):
        for part, registry, kind in zip(rule_parts(name), (WEIGHTINGS, POSTPROCESSORS), ("weighting", "post-processor"),
                                        strict=True):
            if part not in registry:
                raise ConfigError(f"study.yml: analysis rule {name!r}: '{part}' is not a {kind}. "
                                  f"Valid: {', '.join(registry)}.")
    signed = [m for m in a.metrics if m.endswith("_signed")]
    groups = sorted(ctx.evaluation[a.attribute].dropna().astype(str).unique()) if a.attribute in ctx.evaluation else []
    if signed and len(groups) != 2:
        raise ConfigError(f"study.yml: analysis.metrics = {signed}: a signed difference needs exactly two groups of "
                          f"analysis.attribute '{a.attribute}', the evaluation patients have {len(groups)} "
                          f"({', '.join(groups) or 'none'}). Choose a two-group attribute (sex) or unsigned "
                          "metrics (balanced_accuracy, auc).")


def _evaluated_by_seed(ctx: StudyContext) -> dict[int, dict[str, pd.DataFrame]]:
    """Every seed's predictions on the evaluation patients, per weighting, with their operating threshold."""
    keep = set(ctx.evaluation[S.IMAGE])
    out: dict[int, dict[str, pd.DataFrame]] = {}
    for (method, seed), preds in ctx.seed_predictions.items():
        valid = preds[preds[S.IMAGE].isin(keep)].reset_index(drop=True)
        valid.attrs.update(preds.attrs)
        out.setdefault(seed, {})[method] = valid
    return out


def _primary_verdicts(ctx: StudyContext):
    """The pre-registered family's verdicts over every training seed (cached with the code that decides them)."""
    from pipeline.config import rule_parts

    config, a = ctx.config, ctx.config.analysis
    rules = [a.reference, *a.primary]
    weightings = {rule_parts(r)[0] for r in rules}
    by_seed = {seed: {w: p for w, p in preds.items() if w in weightings}
               for seed, preds in _evaluated_by_seed(ctx).items()}
    code = code_version("fairness.metrics", "fairness.postprocess", "fairness.grid", "fairness.inference",
                        "fairness.primary")
    return memory().cache(_primary)(by_seed, list(a.primary), a.reference, list(a.metrics), a.attribute,
                                    config.postprocessing.attribute, config.postprocessing.folds,
                                    config.postprocessing.seed, a.n_resamples, config.evaluation.seed, a.alpha,
                                    config.evaluation.min_per_class, code)


def _primary(by_seed, primary, reference, metrics, attribute, rule_attribute, folds, fold_seed, n_resamples,
             boot_seed, alpha, min_per_class, code):
    """The primary family (`code`: cache key of the code that computes it)."""
    from pipeline.fairness.primary import primary_family

    return primary_family(by_seed, primary, reference, metrics, attribute, rule_attribute, folds, fold_seed,
                          n_resamples, boot_seed, alpha, min_per_class)


def _one_class_where(by_seed: dict[int, dict[str, pd.DataFrame]], method: str, attribute: str, detail: int) -> str:
    """Where a weighting decides one class for a group of `attribute` on more than half of the seeds
    (`degenerate.over_seeds`); "" when it does not."""
    from pipeline.fairness.degenerate import one_class, over_seeds

    found = {}
    for seed, preds in by_seed.items():
        d = _decided(preds[method])
        found[seed] = one_class(d["decision"], d[attribute]).where
    where, seeds = over_seeds(found, detail)
    return "; ".join(f"{g} : {c}" for g, c in where.items()) + seeds if where else ""


def _with_exploratory(ctx: StudyContext, primary):
    """The primary verdicts plus one exploratory family per table (weightings per attribute, the grid); the
    tables' marks are then written from them (`fairness.exploratory.annotate`)."""
    from pipeline.fairness import exploratory as X
    from pipeline.fairness.grid import KEY_METRICS, SCORE_COL
    from pipeline.fairness.inference import Verdicts
    from pipeline.fairness.metrics import DECISION

    decided = {m: _decided(p).sort_values(S.IMAGE) for m, p in ctx.valid_predictions.items()}
    by_seed = _evaluated_by_seed(ctx)
    # twins decide (and score: AUC reads it) alike on every seed
    decisions = {m: np.concatenate([_decided(by_seed[s][m]).sort_values(S.IMAGE)[[DECISION, S.PROBA]].to_numpy(float)
                                    for s in sorted(by_seed)]) for m in decided}
    families = []
    for attribute, table in ctx.comparison_by_attribute.items():
        degenerate = {m: _one_class_where(by_seed, m, attribute, ctx.detail_seed) for m in decided}
        found = X.table_verdicts(table, f"exploratory:weighting:{attribute}", "uniform", decisions, degenerate,
                                 primary, rule=lambda m: f"{m} + none")
        ctx.comparison_by_attribute[attribute] = X.annotate(table, found, rule=lambda m: f"{m} + none")
        families += found
    ctx.comparison = ctx.comparison_by_attribute[ctx.config.weighting.attribute]
    grid = ctx.grid.table
    order = {f"{w} + {p}": np.concatenate([ctx.grid.decisions_by_seed[(w, p)].T, d[[SCORE_COL]].to_numpy(float)],
                                          axis=1) for (w, p), d in ctx.grid.decisions.items()}  # every seed's
    degenerate = dict(zip(grid["combination"], grid["degenerate_where"].where(grid["degenerate"], ""), strict=True))
    weighting_family = [v for v in families if v.family == f"exploratory:weighting:{grid.attrs.get('attribute')}"]
    found = X.table_verdicts(X.long_from_wide(grid, KEY_METRICS), "exploratory:grid",
                             grid.attrs.get("baseline", "uniform + none"), order, degenerate, primary,
                             answered=weighting_family)  # « w + none » rows: the weighting table's verdicts
    ctx.grid.table = X.annotate_wide(grid, found)
    families += found
    return Verdicts([*primary.values(), *families], meta=primary.meta)


def _with_analysis_families(ctx: StudyContext):
    """The verdicts plus the analyses' exploratory families (amplification, probes, the reference's gaps, the
    data chapter's prevalence gaps and Simpson table), each corrected by Benjamini-Hochberg within its table."""
    from pipeline.fairness import exploratory as X
    from pipeline.fairness.data_analysis import data_analysis
    from pipeline.fairness.inference import Verdicts
    from pipeline.fairness.model_analysis import model_analysis

    found = model_analysis(ctx)
    grid = ctx.grid.table
    degenerate = set(grid.loc[grid["degenerate"], "combination"])  # one decision for a group: not tested
    amp = found.amplification[found.amplification["high_group"].notna()
                              & ~found.amplification["method"].isin(degenerate)]
    families = X.interval_verdicts("exploratory:amplification", "bias_amplification", [
        X.Interval(r.attribute, r.method, getattr(r, m), getattr(r, f"{m}_low"), getattr(r, f"{m}_high"), None,
                   quantity, getattr(r, f"{m}_p", None), tuple(getattr(r, f"{m}_per_seed", ())))
        for m, quantity in (("amplification", "bias_amplification"), ("bias_amp", "bias_amp"))
        for r in amp.itertuples()])  # both columns of the table, one family
    if found.probing is not None:
        families += X.interval_verdicts("exploratory:probe", "probe_gain", [
            X.Interval(r.attribute, "image features", r.diff, r.diff_low, r.diff_high, None, None,
                       getattr(r, "diff_p", None)) for r in found.probing.itertuples()])
    reference = []
    for attribute, table in ctx.comparison_by_attribute.items():
        row = table[(table["method"] == "uniform") & (table["metric"] == "tpr_signed")]
        if len(table.attrs.get("groups") or []) == 2 and len(row):
            r = row.iloc[0]
            reference.append((attribute, "uniform + none", r["estimate"], r["low"], r["high"]))
    families += X.interval_verdicts("exploratory:reference_gap", "tpr_signed", reference)
    gap = getattr(found, "age_adjusted_gap", None)
    if gap is not None:  # the reference's under-diagnosis gap, crude and at equal age band
        families += X.interval_verdicts("exploratory:age_adjusted_gap", "fnr_signed", [
            X.Interval(gap["attribute"], kind, gap[kind], gap[f"{kind}_low"], gap[f"{kind}_high"], None, None,
                       gap[f"{kind}_p"], gap[f"{kind}_per_seed"]) for kind in ("crude", "adjusted")])
    if found.cams is not None:
        families += X.interval_verdicts("exploratory:maps", "border_excess",
                                        map_intervals(found.cams, marker=ctx.config.is_demo))
    families += data_analysis(ctx).verdicts
    return Verdicts([*ctx.verdicts.values(), *families], meta=ctx.verdicts.meta)


def map_intervals(cams: dict, marker: bool) -> list:
    """Each map method's border share minus the border's area (more mass than its surface: > 0) and, with
    `marker` (the demo draws one), the AP − PA share of the marker corner: the maps' family."""
    from pipeline.fairness.exploratory import Interval

    rows, area = [], cams["border_area"]
    for method, b in cams["border"].items():
        rows.append(Interval(None, method, b["mean"] - area, b["low"] - area, b["high"] - area))
        c = cams["marker_contrast"].get(method, {})
        if marker and np.isfinite(c.get("diff", np.nan)):
            rows.append(Interval(None, method, c["diff"], c["diff_low"], c["diff_high"], None, "marker_contrast"))
    return rows


def run(config: StudyConfig | None = None) -> StudyContext:
    """Compute (or load from the cache) the whole study."""
    from pipeline.model.choice import announce, resolve

    config, choice = resolve(config or load_config(), download=True)  # `auto`: the backbone usable here
    announce(choice)
    ensure_demo(config)
    t0 = time.perf_counter()
    with progress.stage("checking the data folder") as stage:
        full_frame, check = load_dataset(config.data_path(), config)
        n_warnings = len(check.issues)
        stage.done(f"{len(full_frame)} images, {full_frame[S.PATIENT].nunique()} patients"
                   + (f", {n_warnings} warning(s): see `python -m pipeline check`" if n_warnings else ""))
    frame = full_frame
    if config.training.subsample_fraction < 1:
        from pipeline.model.training import subsample_patients

        frame = subsample_patients(full_frame, config.training.subsample_fraction,
                                   config.training.subsample_seed)
    ctx = StudyContext(config, check, full_frame, frame, _evaluation_rows(frame, config),
                       fingerprint(frame), key=study_key(config))
    ctx.backbone_choice = choice
    _check_primary(ctx)
    from pipeline.protocol import caveat_line, check_sizes

    ctx.protocol_caveats = check_sizes(frame, ctx.evaluation, config)  # before any training: exit 2 if impossible
    for part in ctx.protocol_caveats:
        progress.note(caveat_line(part))
    ctx.timings["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with progress.stage("training") as stage:
        _train_all(ctx)
        _write_weights(ctx)
        cached = sum(bool(i.get("cached")) for i in ctx.train_info.values())
        stage.done(f"{len(ctx.seed_predictions)} models ({describe_count(config)}), "
                   f"{cached}/{len(ctx.train_info)} of the detail seed from the cache")
    ctx.timings["training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pp, ev = config.postprocessing, config.evaluation
    with progress.stage(f"weighting metrics ({len(ctx.predictions)} weightings x {len(config.training.seeds)} "
                        f"seeds, {config.analysis.n_resamples} patient resamples)"):
        _evaluate_weightings(ctx)
    ctx.timings["weighting metrics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    code = code_version("fairness.metrics", "fairness.postprocess", "fairness.grid", "fairness.inference")
    n_seeds = len(config.training.seeds)
    with progress.stage(f"post-processing grid ({len(ctx.predictions)} x {len(pp.methods)} x {n_seeds} "
                        f"seed{'s' * (n_seeds > 1)}, {pp.folds} folds, {pp.n_refit} refits)"):
        ctx.grid = memory().cache(_grid)(_evaluated_by_seed(ctx), list(pp.methods), pp.attribute, pp.folds,
                                         pp.seed, pp.n_refit, ev.seed, code, ev.min_per_class,
                                         tuple(config.sensitive_attributes), config.analysis.n_resamples,
                                         ctx.detail_seed)
    ctx.timings["post-processing grid"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    a = config.analysis
    with progress.stage(f"pre-registered comparisons ({len(a.primary)} rules x {len(config.training.seeds)} seeds, "
                        f"{a.n_resamples} resamples)"):
        ctx.verdicts = _with_exploratory(ctx, _primary_verdicts(ctx))
    ctx.timings["primary family"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with progress.stage("analyses (data, model, validity, recommendation)"):
        _analyse(ctx)
        ctx.verdicts = _with_analysis_families(ctx)
    ctx.timings["analyses"] = time.perf_counter() - t0
    return ctx


def _analyse(ctx: StudyContext) -> None:
    """The analyses the chapters show, computed now (the training stack is loaded) and stored with the study."""
    from pipeline.fairness.data_analysis import data_analysis
    from pipeline.fairness.model_analysis import model_analysis
    from pipeline.fairness.recommendation import recommendation
    from pipeline.fairness.validity import validity

    for analysis in (data_analysis, model_analysis, validity, recommendation):
        analysis(ctx)


def describe_count(config: StudyConfig) -> str:
    """What the trainings were: networks and heads per seed (for the progress line)."""
    n_seeds, n_methods = len(config.training.seeds), len(study_weightings(config))
    if config.training.mode == "full":
        return f"{n_seeds * n_methods} networks"
    networks = 0 if config.training.feature_source == "pretrained" else n_seeds
    return f"{networks} network{'s' * (networks != 1)} + {n_seeds * n_methods - networks} heads"


_CONTEXTS: dict[str, StudyContext] = {}


# The modules whose code computes the study (the report and render layers only format it).
STUDY_CODE = ("cache.py", "config.py", "study.py", "data", "model", "fairness")


def study_key(config: StudyConfig) -> str:
    """Key of the whole computed study, cheap to compute (no decoding, no training stack imported).

    The config, the data folder's files (path, size, modification time; the metadata's bytes) and the
    source of the code that computes the study: any change recomputes through `run`, which reuses the
    finer per-step cache. `training.backbone: auto` is keyed as the backbone it resolves to from the weights on disk.
    """
    from pipeline.model.choice import resolve

    config = resolve(config, download=False)[0]
    root = config.data_path()
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    listing = [f"{p.relative_to(root)}|{p.stat().st_size}|{p.stat().st_mtime_ns}" for p in files]
    metadata = root / "metadata.csv"
    here = Path(__file__).parent
    sources = sorted(q for name in STUDY_CODE for q in ([here / name] if name.endswith(".py")
                                                        else (here / name).rglob("*.py")))
    return combined_digest([repr(config), *listing, file_digest(metadata) if metadata.is_file() else "",
                            *(f"{q.relative_to(here)}:{q.read_text(encoding='utf-8')}" for q in sources)])


def _stored(config: StudyConfig) -> Path:
    ensure_demo(config)
    return cache_dir() / "study" / f"{study_key(config)}.pickle"


def ensure_computed(config: StudyConfig | None = None) -> None:
    """Compute and store the study unless its cached object exists (then nothing is loaded)."""
    from pipeline.model.choice import resolve

    config = config or load_config()
    resolve(config, download=True)  # `auto`: fetch pre-trained weights now (once an hour at most) if possible
    if not _stored(config).is_file():
        context(config)


def _load_or_run(config: StudyConfig) -> StudyContext:
    """The computed study from its one cached object, else `run` (and store the object).

    Plain pickle (protocol 5), not joblib: its C unpickler loads the study several times faster."""
    import pickle

    stored = _stored(config)
    if stored.is_file():
        try:
            with open(stored, "rb") as f:
                ctx = pickle.load(f)
        except Exception:  # a truncated or stale pickle is only a cache: recompute
            progress.note(f"cache entry {stored} unreadable (a file cut short?): recomputed")
        else:
            if not all((output_dir() / "weights" / f"{m}.csv").is_file() for m in ctx.course_weights):
                _write_weights(ctx)  # the user's copies, if _output/ was cleaned meanwhile
            return ctx
    ctx = run(config)
    with atomic_path(stored) as tmp, open(tmp, "wb") as f:
        pickle.dump(ctx, f, protocol=pickle.HIGHEST_PROTOCOL)
    return ctx


def context(config: StudyConfig | None = None) -> StudyContext:
    """The study for the current config: loaded once per Python process from one cached object.

    A document's kernel therefore imports neither torch nor Lightning when the study is cached.
    """
    config = config or load_config()
    key = repr(config)  # the config holds a dict, so it is not hashable itself
    if key not in _CONTEXTS:
        _CONTEXTS[key] = _load_or_run(config)
    return _CONTEXTS[key]


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that produce the numbers."""
    names = ["numpy", "pandas", "scikit-learn", "fairlearn", "torch", "torchvision", "lightning",
             "statsmodels", "altair"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def seeds_used(config: StudyConfig) -> dict[str, Any]:
    return {"training": list(config.training.seeds), "subsample": config.training.subsample_seed,
            "post-processing split": config.postprocessing.seed, "bootstrap": config.evaluation.seed,
            "demo": config.demo.seed if config.is_demo else None}
