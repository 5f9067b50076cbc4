"""The cached study: reproducible, re-uses what did not change, recomputes what did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import study
from pipeline.cache import cache_dir
from pipeline.config import load_config
from pipeline.data.demo import make_demo
from pipeline.fairness.weighting import compute_weights, weighted_prevalence
from pipeline.report.preprocessing import diagnostics_frame

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"


def _trainings() -> int:
    """Number of cached network trainings."""
    folder = cache_dir() / "joblib" / "pipeline" / "model" / "training" / "_fit_full"
    return sum(1 for p in folder.glob("*/output.pkl")) if folder.exists() else 0


@pytest.fixture()
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")
    monkeypatch.setenv("FAIRCXR_OUTPUT", str(tmp_path / "output"))
    return make_demo(tmp_path / "data", n_patients=60, seed=1, image_size=64)


def _run(data: Path) -> study.StudyContext:
    return study.run(load_config(TINY, data_dir=str(data)))


def test_two_cold_runs_give_the_same_numbers(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = _run(data)
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "other-cache"))
    second = _run(data)
    pd.testing.assert_frame_equal(first.grid.table, second.grid.table, atol=1e-6)
    pd.testing.assert_frame_equal(first.comparison, second.comparison, atol=1e-6)


def test_second_run_reuses_the_cache_and_a_changed_image_retrains(data: Path):
    first = _run(data)
    assert _trainings() == 1  # last-layer mode: one network for every weighting
    again = _run(data)
    assert _trainings() == 1
    pd.testing.assert_frame_equal(first.grid.table, again.grid.table)
    path = Path(first.frame["path"].iloc[0])
    pixels = np.asarray(Image.open(path)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(path)
    _run(data)
    assert _trainings() == 2


def test_a_changed_metadata_cell_changes_results_without_retraining(data: Path):
    first = _run(data)
    meta_path = data / "metadata.csv"
    lines = meta_path.read_text().splitlines()
    row = lines[1].split(",")
    row[5] = "F" if row[5] == "M" else "M"  # flip one image's sex
    meta_path.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    second = _run(data)
    assert _trainings() == 1  # pixels and labels unchanged: the network is re-used
    assert first.data_fingerprint != second.data_fingerprint
    assert not first.course_weights["group_balanced"].equals(second.course_weights["group_balanced"])


def test_weights_are_exported_for_the_course_script(data: Path, tmp_path: Path):
    ctx = _run(data)
    out = tmp_path / "output" / "weights" / "reweighing.csv"
    exported = pd.read_csv(out)
    train = ctx.frame[ctx.frame["split"] == "train"]
    weights = exported.set_index("Image Index").loc[train["Image Index"], "WEIGHTS"].to_numpy()
    np.testing.assert_allclose(weights, ctx.course_weights["reweighing"].to_numpy())
    assert (data / "metadata.csv").read_text().count("WEIGHTS") == 0  # the user's file is untouched
    # the course's script trains on every train image: Reweighing equalises the prevalence over all of them
    prevalence = weighted_prevalence(train.reset_index(drop=True), pd.Series(weights), "sex")["weighted_prevalence"]
    assert np.ptp(prevalence) < 1e-9


def test_each_model_is_weighted_on_the_rows_it_is_fitted_on(data: Path):
    """Each part of the protocol gets the weights computed on its own rows (the models used weights computed
    on every train row, so Reweighing did not equalise the prevalence on the heads' quarter)."""
    ctx = _run(data)
    train = ctx.frame[ctx.frame["split"] == "train"].reset_index(drop=True)
    preds = ctx.predictions["reweighing"]
    roles = preds.loc[preds["split"] == "train", "role"].to_numpy()
    weights = ctx.weights["reweighing"]
    assert {"backbone", "fit", "inner_val"} <= set(roles)
    for part in ("fit", "inner_val"):
        rows = roles == part
        np.testing.assert_allclose(weights[rows], compute_weights("reweighing", train[rows], ["sex"]), err_msg=part)
    assert (weights[roles == "backbone"] == 1).all()  # the backbone trains unweighted
    shown = diagnostics_frame(ctx).set_index("method")  # chapter 3's table: the heads' rows
    assert shown.loc["reweighing", "n"] == (roles == "fit").sum()


def test_every_table_is_answered_over_every_seed_with_one_reference_row(data: Path, tmp_path: Path):
    """The pre-registered comparisons, the weighting table and the grid use every training seed and one set of
    patient resamples: a rule's difference is the same in the grid and in the questions, and the reference's
    row is the same in the weighting table, the grid and the headline, so chapters cannot disagree on a run's
    numbers. The detail seed (the maps, the recommendation) is the median training (of two, the lower) by the
    reference's balanced accuracy."""
    config = tmp_path / "two_seeds.yml"
    config.write_text(TINY.read_text(encoding="utf-8").replace("seeds: [0]", "seeds: [0, 1]")
                      + "analysis:\n  n_resamples: 60\n", encoding="utf-8")
    ctx = study.run(load_config(config, data_dir=str(data)))
    verdicts = ctx.verdicts
    assert verdicts.meta["seeds"] == [0, 1] and verdicts.meta["groups"] == ["F", "M"]
    primary = verdicts.family("primary")
    assert len(primary) == 4 and {v.treated for v in primary} == {"group_balanced + none",
                                                                  "uniform + equal_opportunity"}
    uniform = ctx.seed_metrics[ctx.seed_metrics["method"] == "uniform"].set_index("seed")["balanced_accuracy"]
    assert ctx.detail_scores == pytest.approx(uniform.to_dict())
    assert ctx.detail_scores[ctx.detail_seed] == min(ctx.detail_scores.values())
    assert ctx.predictions["uniform"] is ctx.seed_predictions[("uniform", ctx.detail_seed)]
    assert ctx.grid.table.attrs["n_seeds"] == ctx.comparison.attrs["n_seeds"] == 2
    grid = ctx.grid.table.set_index("combination")
    reference = ctx.comparison[ctx.comparison["method"] == "uniform"].set_index("metric")
    for metric in ("balanced_accuracy", "auc", "tpr_signed"):
        level = verdicts[f"level/{metric}/sex/uniform + none"]
        shown = [level.estimate, level.low, level.high]
        assert reference.loc[metric, ["estimate", "low", "high"]].tolist() == pytest.approx(shown, nan_ok=True)
        assert grid.loc["uniform + none", [metric, f"{metric}_low", f"{metric}_high"]].tolist() == pytest.approx(
            shown, nan_ok=True), metric
    for v in primary:
        assert v.n_seeds == 2 and len(v.per_seed) == 2 and v.n_resamples == 60
        in_grid = grid.loc[v.treated, f"{v.quantity}_diff"]
        assert v.estimate == pytest.approx(in_grid, abs=1e-9, nan_ok=True), v.key  # the same mean over seeds
        assert v.estimate == pytest.approx(np.mean(v.per_seed), nan_ok=True)
        if v.status == "not_testable":
            assert v.reason in ("undefined", "no_interval") and v.p_adjusted is None
        else:
            assert v.p_adjusted >= v.p_value and v.mde > 0 and v.variance["bootstrap"] > 0
            assert v.low <= v.estimate <= v.high
        assert (v.direction != 0) == (v.status == "established")
    amplification = [v for v in verdicts.family("exploratory:amplification") if " + " not in (v.treated or "")]
    assert amplification and all(v.n_seeds == 2 and len(v.per_seed) == 2 for v in amplification)  # the weightings'


def test_the_seed_table_applies_the_configured_small_group_rule(data: Path, tmp_path: Path):
    """With min_per_class 2 (the default is 10), seed 0's row in the seed table is the comparison table's."""
    config = tmp_path / "small_groups.yml"
    config.write_text(TINY.read_text(encoding="utf-8").replace("min_per_class: 5", "min_per_class: 2"),
                      encoding="utf-8")
    ctx = study.run(load_config(config, data_dir=str(data)))
    seed0 = ctx.seed_metrics.set_index(["method", "seed"]).loc[("uniform", 0)]
    shown = ctx.comparison[ctx.comparison["method"] == "uniform"].set_index("metric")
    assert np.isfinite(shown.loc["eopp_diff", "estimate"])
    for metric in ("balanced_accuracy", "eopp_diff", "eo_diff"):
        assert seed0[metric] == pytest.approx(shown.loc[metric, "estimate"], nan_ok=True), metric


def test_maps_explain_the_scores_the_study_decides_with(data: Path):
    """In last-layer mode the reference's scores come from a logistic head on the backbone's features: the
    network given to the maps reproduces them (the network's own end-to-end head is another model)."""
    import torch

    from pipeline.data.images import image_array
    from pipeline.model.training import deciding_network, reference_network

    ctx = _run(data)
    config = ctx.config.training
    model = deciding_network(ctx.frame, config, ctx.detail_seed)
    pixels = np.array(image_array(ctx.frame, config.image_size))
    with torch.no_grad():
        x = torch.from_numpy(pixels).unsqueeze(1)
        deciding = torch.sigmoid(model(x)).numpy()
        own_head = torch.sigmoid(reference_network(ctx.frame, config, ctx.detail_seed)["model"](x)).numpy()
    scores = ctx.predictions["uniform"]["proba"].to_numpy()
    np.testing.assert_allclose(deciding, scores, atol=1e-4)
    assert np.abs(own_head - scores).max() > 0.01


def test_the_detail_seed_is_the_median_training_whatever_the_seeds_order():
    """Five trainings: the third best is shown; an even count shows the lower middle one; a training whose
    score is undefined counts as the lowest; equal scores are ordered by seed."""
    rng = np.random.default_rng(3)
    scores = dict(zip([4, 0, 7, 2, 9], rng.uniform(0.6, 0.9, 5), strict=True))
    middle = sorted(scores.values())[2]
    for order in ([4, 0, 7, 2, 9], [9, 2, 7, 0, 4]):
        assert scores[study.median_seed({s: scores[s] for s in order})] == middle
    assert study.median_seed({1: 0.8, 2: 0.7, 3: np.nan, 4: 0.9}) == 2
    assert study.median_seed({5: 0.7, 3: 0.7, 8: 0.9}) == 5
    assert study.median_seed({6: 0.5}) == 6
