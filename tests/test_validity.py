"""Degenerate and uninformative results are named: one-class decisions, chance AUC, no better than metadata."""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import study
from pipeline.config import load_config
from pipeline.fairness.degenerate import one_class
from pipeline.fairness.validity import check
from pipeline.report import conclusion, preprocessing, weak

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))


def _context(name: str, proba, sex_effect: float = 0.0, threshold: float = 0.5, n_patients: int = 240,
             prevalence: float = 0.5, inner_proba=None, threshold_folds: int = 0) -> study.StudyContext:
    """A study context with constructed scores (no images, no training): `proba(label, rng)`; with
    `inner_proba`, a third of the train patients are inner-validation patients scored by it instead (with
    `threshold_folds`, every train patient gets an out-of-fold score from it, as on frozen features)."""
    rng = np.random.default_rng(0)
    sex = rng.choice(["M", "F"], n_patients)
    label = (rng.random(n_patients) < prevalence + sex_effect * np.where(sex == "F", 1, -1)).astype(int)
    frame = pd.DataFrame({"Image Index": [f"{i}.png" for i in range(n_patients)], "patient": np.arange(n_patients)
                          .astype(str), "split": np.where(np.arange(n_patients) < n_patients // 2, "train", "valid"),
                          "label": label, "sex": sex, "age_band": rng.choice(["0-39", "40-59", "60+"], n_patients),
                          "view": rng.choice(["PA", "AP"], n_patients)})
    config = load_config(TINY)
    ctx = study.StudyContext(config, None, frame, frame, study._evaluation_rows(frame, config), f"constructed-{name}")
    preds = frame[["Image Index", "split", "label"]].assign(proba=proba(label, rng), role="fit", tuning_proba=np.nan)
    train = (frame["split"] == "train").to_numpy()
    if inner_proba is not None and threshold_folds:
        preds.loc[train, "tuning_proba"] = inner_proba(label[train], rng)
    elif inner_proba is not None:
        inner = train & (np.arange(n_patients) % 3 == 0)
        preds.loc[inner, "role"] = "inner_val"
        preds.loc[inner, "proba"] = preds.loc[inner, "tuning_proba"] = inner_proba(label[inner], rng)
    preds = study._attach_attributes(preds, frame, config)
    preds.attrs["threshold"] = threshold
    ctx.predictions["uniform"] = ctx.seed_predictions[("uniform", 0)] = preds
    ctx.train_info["uniform"] = {"threshold": threshold, "threshold_folds": threshold_folds}
    study._evaluate_weightings(ctx)
    return ctx


def test_every_decision_malade_is_named_as_levelling_down():
    ctx = _context("all-malade", lambda y, rng: 0.6 + 0.3 * y + rng.normal(0, 0.02, len(y)))
    v = check(ctx)
    assert v.degenerate_methods() == {"uniform": {"all": "malade"}}
    assert not v.chance and not v.image_not_better  # it ranks well: only its decisions are degenerate
    warning = preprocessing.validity_warning(ctx)
    assert "callout-warning" in warning and "seule classe" in warning and "nivellement par le bas" in warning
    assert "nivellement par le bas" in conclusion.warnings_short(ctx)


def test_a_model_at_chance_is_named_and_not_better_than_metadata_first():
    ctx = _context("chance", lambda y, rng: rng.random(len(y)))
    v = check(ctx)
    assert "uniform" in v.chance and v.image_not_better
    assert [r.code for r in v.weak] == ["chance", "not_beyond_attributes"]  # 60 images of each class: enough
    # weak-model mode: the warning opens the report and both chapters; chapter 3's own callout keeps the rest
    for where in ("summary", "preprocessing", "postprocessing"):
        warning = weak.banner(ctx, where)
        assert "callout-warning" in warning and "hasard" in warning and "métadonnées" in warning, where
    assert preprocessing.validity_warning(ctx) == ""
    assert "hasard" in conclusion.warnings_short(ctx)


def test_an_image_model_weaker_than_the_attributes_is_named():
    ctx = _context("metadata", lambda y, rng: 0.5 + 0.05 * y + rng.normal(0, 0.2, len(y)), sex_effect=0.35)
    v = check(ctx)
    assert v.baseline["attributes"] > 0.6 and v.image_not_better
    assert v.weak_reason("not_beyond_attributes") is not None
    assert "Pas mieux que les métadonnées" in weak.banner(ctx, "summary")


def test_the_image_model_is_compared_with_the_attributes_over_every_training_seed():
    """The comparison reads every seed's reference scores, as the headline AUC does: the mean over seeds, with an
    interval that holds the spread between them (a seed at chance beside a good one is not a good model)."""
    ctx = _context("two-seeds", _good)
    one = check(ctx).baseline
    rng = np.random.default_rng(1)
    ctx.seed_predictions[("uniform", 1)] = ctx.seed_predictions[("uniform", 0)].assign(
        proba=lambda d: rng.random(len(d)))
    two = check(ctx).baseline
    assert (one["n_seeds"], two["n_seeds"]) == (1, 2) and two["per_seed"][0] == one["image"]
    assert two["image"] == pytest.approx(np.mean(two["per_seed"])) and two["per_seed"][1] < 0.65
    assert two["attributes"] == one["attributes"]  # the same patients, the same attribute-only model
    assert two["diff_high"] - two["diff_low"] > 2 * (one["diff_high"] - one["diff_low"])
    reason = next(r for r in check(ctx).weak if r.code == "not_beyond_attributes")
    assert "En moyenne sur 2 entraînements" in weak.reason_sentence(reason)


def _good(y, rng):
    return np.clip(0.5 + 0.4 * (y - 0.5) * 2 + rng.normal(0, 0.1, len(y)), 0, 1)


def test_a_good_model_raises_no_warning():
    ctx = _context("good", _good)
    v = check(ctx)
    assert not v.problems, (v.degenerate_methods(), v.chance, v.baseline)
    assert not v.weak_model and weak.banner(ctx, "summary") == "" and weak.slide_line(ctx) == ""
    assert preprocessing.validity_warning(ctx) == "" and conclusion.warnings_short(ctx) == ""


def test_a_good_model_on_few_evaluation_images_of_a_class_is_weak_with_its_counts():
    ctx = _context("few-sain", _good, prevalence=0.85)
    v = check(ctx)
    healthy = int((ctx.valid_predictions["uniform"]["label"] == 0).sum())
    assert healthy < 30 and not v.chance and not v.image_not_better
    assert [r.code for r in v.weak] == ["few_images"]
    assert f"{healthy}\u00a0images «\u00a0sain\u00a0»" in weak.banner(ctx, "summary")
    assert f"{healthy}\u00a0images «\u00a0sain\u00a0»" in weak.slide_line(ctx)


@pytest.mark.parametrize(("folds", "where"), [(0, "validation interne"), (5, "scores hors-pli")])
def test_a_threshold_chosen_where_the_model_is_below_chance_is_weak(folds: int, where: str):
    ctx = _context(f"inner-below-{folds}", _good, threshold_folds=folds,
                   inner_proba=lambda y, rng: np.clip(0.7 - 0.4 * y + rng.normal(0, 0.1, len(y)), 0, 1))
    v = check(ctx)
    reason = v.weak_reason("inner_below_chance")
    assert reason is not None and reason.values["auc"] < 0.2, v.weak
    assert where in weak.banner(ctx, "preprocessing") and where in weak.slide_line(ctx)
    assert check(_context("inner-good", _good, inner_proba=_good)).weak_reason("inner_below_chance") is None


def _grid_of(ctx: study.StudyContext, decisions: dict[tuple[str, str], pd.DataFrame], table: pd.DataFrame):
    """A grid with the fields the key findings read (its table, its rules' decisions, its reference)."""
    return types.SimpleNamespace(table=table, decisions=decisions, baseline=("uniform", "none"), attribute="sex",
                                 seed_frames=lambda key: [decisions[key]])  # one training seed


def test_key_findings_never_pick_a_rule_of_one_class_for_everyone():
    """Levelling down (every decision « malade »: every gap exactly 0) looks fairest; the key findings name a
    rule only through the recommendation under constraints, which never picks it."""
    ctx = _context("grid", lambda y, rng: 0.6 + 0.3 * y + rng.normal(0, 0.02, len(y)))
    valid = ctx.valid_predictions["uniform"]
    everyone = valid.assign(decision=1.0)
    told_apart = valid.assign(decision=(valid["proba"] >= 0.75).astype(float))
    marked = {name: one_class(d["decision"], d["sex"]).degenerate  # as the grid marks its rules
              for name, d in (("threshold_global", everyone), ("none", told_apart))}
    assert marked == {"threshold_global": True, "none": False}
    row = {"balanced_accuracy": 0.9, "balanced_accuracy_low": 0.8, "balanced_accuracy_high": 1.0}
    table = pd.DataFrame([{"weighting": "uniform", "postprocessor": "none", **row, "eo_diff": 0.1,
                           "degenerate": False},
                          {"weighting": "uniform", "postprocessor": "threshold_global", **row, "eo_diff": 0.0,
                           "balanced_accuracy": 0.5, "degenerate": True}])
    ctx.grid = _grid_of(ctx, {("uniform", "none"): told_apart, ("uniform", "threshold_global"): everyone}, table)
    # any loss of accuracy allowed: only the rule against levelling down stands between it and the choice
    a = ctx.config.analysis
    ctx.config = dataclasses.replace(ctx.config, analysis=dataclasses.replace(
        a, recommendation=dataclasses.replace(a.recommendation, max_ba_loss=1.0)))
    findings = conclusion.key_findings(ctx, short=True)
    said = next(line for line in findings.splitlines() if "Recommandation" in line)
    assert "Seuil global" not in findings and "aucune règle" in said, findings


def test_key_findings_say_why_an_interval_is_undefined():
    ctx = _context("undefined", lambda y, rng: np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.15, len(y)), 0, 1))
    uni = ctx.comparison["method"] == "uniform"
    gap = "tpr_signed" if (ctx.comparison.loc[uni, "metric"] == "tpr_signed").any() else "eopp_diff"
    ctx.comparison.loc[uni & (ctx.comparison["metric"] == gap), ["low", "high"]] = np.nan  # < 90 % replicates
    table = pd.DataFrame([{"weighting": "uniform", "postprocessor": "none", "eo_diff": 0.1, "eo_diff_low": 0.02,
                           "eo_diff_high": 0.2, "eo_diff_p_equal": np.nan, "balanced_accuracy": 0.7,
                           "balanced_accuracy_low": 0.6, "balanced_accuracy_high": 0.8, "degenerate": False}])
    valid = ctx.valid_predictions["uniform"]
    ctx.grid = _grid_of(ctx, {("uniform", "none"): valid.assign(decision=(valid["proba"] >= 0.5).astype(float))},
                        table)
    first = next(line for line in conclusion.key_findings(ctx, short=True).splitlines() if "Modèle de réf" in line)
    assert "[IC n.d.] (intervalle non défini : le taux d'un groupe n'est pas défini dans plus de 10" in first


def test_charts_fall_back_to_a_defined_gap_and_say_so_when_equalized_odds_is_undefined_everywhere():
    from pipeline.report import tables

    ctx = _context("eo-undefined", lambda y, rng: np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.15, len(y)), 0, 1))
    assert tables.defined_gap(ctx.comparison) == "eo_diff" and preprocessing.weighting_tradeoff_note(ctx) == ""
    eo = ctx.comparison["metric"] == "eo_diff"
    ctx.comparison.loc[eo, ["estimate", "low", "high"]] = np.nan  # as on a folder with < 10 healthy per group
    assert tables.defined_gap(ctx.comparison) == "eopp_diff"
    assert "eopp_diff" in str(preprocessing.weighting_tradeoff_chart(ctx).to_dict(validate=False))
    note = preprocessing.weighting_tradeoff_note(ctx)
    assert note.startswith("L'écart d'égalité des erreurs") and "montre l'écart d'égalité des chances (TPR)" in note
    grid = pd.DataFrame({"eo_diff": [np.nan, np.nan], "eopp_diff": [np.nan, np.nan], "dp_diff": [0.1, 0.2]})
    assert tables.defined_gap(grid) == "dp_diff"  # DP needs no class count: always the last resort


def test_a_rule_is_named_degenerate_as_the_tables_do_on_more_than_half_of_the_seeds():
    """One training deciding every image « malade » does not make the mean over seeds a levelling down: the
    warning names a rule when most seeds are degenerate, with the seeds when not all of them are."""
    ctx = _context("seeds", lambda y, rng: 0.6 + 0.3 * y + rng.normal(0, 0.02, len(y)))  # every image malade
    all_malade = ctx.seed_predictions[("uniform", 0)]
    told_apart = all_malade.assign(proba=np.where(all_malade["label"] == 1, 0.8, 0.2))
    told_apart.attrs.update(all_malade.attrs)
    ctx.config = dataclasses.replace(ctx.config, training=dataclasses.replace(ctx.config.training, seeds=[0, 1, 2]))
    ctx.seed_predictions[("uniform", 1)] = ctx.seed_predictions[("uniform", 2)] = told_apart
    assert check(ctx).degenerate_methods() == {}  # one seed of three
    ctx.seed_predictions[("uniform", 1)] = all_malade
    v = check(ctx)
    assert v.degenerate_methods() == {"uniform": {"all": "malade"}} and v.degenerate_seeds("uniform") == \
        " (graines 0 et 1 sur 3)"
    assert "(toutes les images en «\u00a0malade\u00a0», graines 0 et 1 sur 3)" in preprocessing.validity_warning(ctx)
