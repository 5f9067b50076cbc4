"""The render's consistency check catches planted contradictions between generated text and the verdicts.

A tiny study (generated demo) gives real verdicts and real texts; contradictions are planted the way they
arose in past reports (a verdict that changes under a sentence written for another, a title whose number is
not its figure's, « better than both its parts » for a dominated rule), and the check must name each.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline import study
from pipeline.config import load_config
from pipeline.data.demo import make_demo
from pipeline.report import analysis, consistency, preprocessing, slides
from pipeline.report.consistency import Claim

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> study.StudyContext:
    root = tmp_path_factory.mktemp("consistency")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAIRCXR_CACHE", str(root / "cache"))
        mp.setenv("FAIRCXR_PROGRESS", "0")
        mp.setenv("FAIRCXR_OUTPUT", str(root / "output"))
        data = make_demo(root / "data", n_patients=120, seed=3, image_size=64)
        yield study.run(load_config(TINY, data_dir=str(data)))


def _flip(ctx: study.StudyContext, key: str, **changes) -> None:
    ctx.verdicts._items[key] = dataclasses.replace(ctx.verdicts[key], **changes)


def test_the_generated_texts_agree_with_the_verdicts(ctx):
    claims = consistency.collect(ctx)
    assert any(c.keys for c in claims) and any(c.shown is not None for c in claims)
    assert consistency.check(claims, ctx) == []
    assert "aucune contradiction" in consistency.ensure(ctx)


def test_a_sentence_whose_verdict_changed_is_caught(ctx):
    claims = consistency.collect(ctx)
    stated = next(c for c in claims if c.keys and c.status == "not_established")
    key = stated.keys[0]
    before = ctx.verdicts[key]
    try:
        _flip(ctx, key, status="established", direction=1)
        problems = consistency.check(claims, ctx)
        assert any(key in p and "not_established" in p for p in problems), problems
    finally:
        ctx.verdicts._items[key] = before


def test_nothing_notable_while_a_mark_exists_is_caught(ctx):
    table = ctx.comparison
    saved = table["significant"].copy()
    table["significant"] = False  # the text is written as if no weighting moved anything...
    try:
        claims: list[Claim] = []
        text = preprocessing.weighting_narrative(ctx, claims)
        assert "Aucune pondération ne modifie" in text
        said = claims[-1]  # « nothing notable »: consistent exactly when no such effect is established
        effects = [v for v in ctx.verdicts.values() if v.family == said.none_in and v.established
                   and v.quantity in said.quantities and (said.include_primary or not v.reason.startswith("primary"))]
        assert bool(consistency.check(claims, ctx)) == bool(effects)
        target = next(v for v in ctx.verdicts.values() if v.family == table.attrs["family"] and v.reason == ""
                      and v.quantity == "balanced_accuracy")
        _flip(ctx, target.key, status="established", direction=-1)  # ...while the verdicts hold an effect
        problems = consistency.check(claims, ctx)
        assert any("Aucune pondération" in p and target.key in p for p in problems), problems
    finally:
        table["significant"] = saved
        _flip(ctx, target.key, status=target.status, direction=target.direction)


def test_a_title_whose_number_is_not_its_figures_is_caught(ctx):
    """The amplification title states its number beside the bars of its chart: consistent as computed; the
    title's sign flipped (not the bars') is caught. The title's row is made established first, so that the
    title states a number whatever this tiny study found."""
    from pipeline.report.verdicts import amplification_verdict

    amp = analysis.model_results(ctx).amplification
    saved = amp.copy()
    row = slides._amp_row(ctx)
    v = amplification_verdict(ctx, row["attribute"], row["method"])
    index = amp.index[(amp["attribute"] == row["attribute"]) & (amp["method"] == row["method"])]
    try:
        _flip(ctx, v.key, status="established", direction=int(np.sign(row["amplification"])) or 1)
        claims: list[Claim] = []
        slides.title_amplification(ctx, claims)
        assert any(c.shown is not None for c in claims) and consistency.check(claims, ctx) == []
        amp.loc[index, "amplification"] = -amp.loc[index, "amplification"]  # the title's sign, not the bars'
        _flip(ctx, v.key, direction=-ctx.verdicts[v.key].direction)
        claims.clear()
        title = slides.title_amplification(ctx, claims)
        problems = consistency.check(claims, ctx)
        assert any(title in p and "sa figure montre" in p for p in problems), (title, problems)
    finally:
        amp.loc[:, :] = saved
        ctx.verdicts._items[v.key] = v
    claims = [Claim("test", "titre", shown=0.61, figure=0.52, tolerance=0.0051)]  # the +61 over +52 of a review
    assert consistency.check(claims, ctx)


def test_better_than_both_parts_for_a_dominated_rule_is_caught(ctx):
    t = ctx.grid.table.set_index("combination")
    reference = t.loc["uniform + none"]
    worse = (t["eo_diff"] >= reference["eo_diff"]) | (t["balanced_accuracy"] < reference["balanced_accuracy"])
    combined = ~t.index.str.startswith("uniform") & ~t.index.str.endswith(" + none")
    dominated = t.index[worse & combined][0]
    problems = consistency.check([Claim("test", dominated, beats=dominated, gap="eo_diff")], ctx)
    assert any(dominated in p and "ne bat pas" in p for p in problems), problems


def test_the_render_fails_under_strict_mode_and_warns_otherwise(ctx, monkeypatch, capsys):
    """A builder whose sentence says « not established » of an established verdict (planted)."""
    target = next(v for v in ctx.verdicts.values() if v.status in ("established", "not_established"))
    wrong = "established" if target.status == "not_established" else "not_established"

    def contradicting(ctx, claims):
        claims.append(Claim("phrase plantée", "phrase", (target.key,), wrong))

    monkeypatch.setattr(consistency, "builders", lambda: [contradicting])
    monkeypatch.setenv(consistency.STRICT_ENV, "1")
    with pytest.raises(consistency.ConsistencyError, match="phrase plantée"):
        consistency.ensure(ctx)
    monkeypatch.delenv(consistency.STRICT_ENV)
    text = consistency.ensure(ctx)
    assert "contradictions trouvées" in text and "warning: consistency" in capsys.readouterr().err


def test_the_data_chapters_sentences_are_checked_against_their_verdicts(ctx):
    """The prevalence and Simpson sentences state the data families' verdicts: a flipped one is caught."""
    claims = consistency.collect(ctx)
    data_claims = [c for c in claims if c.keys and c.keys[0].startswith("exploratory:data:")]
    assert {c.keys[0].split("/")[0] for c in data_claims} >= {"exploratory:data:prevalence"}
    stated = data_claims[0]
    key = stated.keys[0]
    before = ctx.verdicts[key]
    flipped = "not_established" if before.established else "established"
    try:
        _flip(ctx, key, status=flipped, direction=0 if before.established else 1)
        problems = consistency.check(claims, ctx)
        assert any(key in p and "chapitre 2" in p for p in problems), problems
    finally:
        ctx.verdicts._items[key] = before


def test_a_verdict_established_against_its_own_interval_is_caught(ctx):
    """A table prints the interval beside the mark: « established » with an interval containing 0 is flagged,
    whatever family it belongs to."""
    key = next(k for k, v in ctx.verdicts.items() if v.family.startswith("exploratory") and not v.established
               and np.isfinite(v.low) and v.low < 0 < v.high)
    before = ctx.verdicts[key]
    try:
        _flip(ctx, key, status="established", direction=1)
        problems = consistency.check([], ctx)
        assert any(key in p and "contient 0" in p for p in problems), problems
    finally:
        ctx.verdicts._items[key] = before
    assert consistency.check([], ctx) == []


def test_the_map_title_and_sentence_read_the_maps_verdict(ctx):
    """Where the maps put their mass is a verdict of the maps' family (border share minus its area): the
    slide title follows the direction both methods agree on, never the interval directly, and says when
    Grad-CAM and the integrated gradients disagree."""
    found = {m: analysis.cam_stats(ctx, m)["border_verdict"] for m in analysis.MAP_LABELS_FR}
    assert all(v is not None and v.family == "exploratory:maps" for v in found.values())
    titles = {}
    try:
        for status, direction in (("established", 1), ("established", -1), ("not_established", 0)):
            for v in found.values():
                _flip(ctx, v.key, status=status, direction=direction)
            titles[direction] = (slides.title_images(ctx), analysis.cam_narrative(ctx))
        _flip(ctx, found["gradcam"].key, status="established", direction=1)
        _flip(ctx, found["integrated_gradients"].key, status="established", direction=-1)
        titles["disagree"] = (slides.title_images(ctx), analysis.cam_narrative(ctx))
    finally:
        for v in found.values():
            ctx.verdicts._items[v.key] = v
    assert "bords" in titles[1][0] and "centre" in titles[-1][0] and "aucun écart notable" in titles[0][0]
    assert "désaccord" in titles["disagree"][0] and "se contredisent" in titles["disagree"][1]
    assert "plus que sa surface" in titles[1][1] and "sans écart notable" in titles[0][1]


def test_the_main_slides_notes_give_this_runs_numbers(ctx):
    """The speaker notes read the same functions as the report: the data described, the primary answers and
    the recommendation as the verdicts give them; a real folder's notes never speak of the demo's marker."""
    from pipeline.report import verdicts

    question = slides.run_note(ctx, "question")
    assert f"{len(ctx.frame)} radiographies" in question and ctx.describe_data() in question
    assert slides.run_note(ctx, "weighting") == verdicts.primary_summary(ctx, chapter="preprocessing")
    assert slides.run_note(ctx, "takeaways") == verdicts.recommendation_summary(ctx, short=True)
    assert slides.run_note(ctx, "primary")
    assert not ctx.config.is_demo and "démo" not in slides.marker_note(ctx)  # a folder given by path: not the demo's
    demo = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, data_dir=""))
    assert demo.config.is_demo and "démo" in slides.marker_note(demo)
    with pytest.raises(KeyError):
        slides.run_note(ctx, "no such slide")
