"""Weak-model mode on a folder whose labels carry no signal: the warning comes first, nothing is crowned."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import study
from pipeline.config import load_config
from pipeline.data.demo import make_demo
from pipeline.fairness.recommendation import recommendation
from pipeline.fairness.validity import validity
from pipeline.report import analysis, conclusion, consistency, preprocessing, slides, verdicts, weak
from pipeline.report.tables import grid_remark

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"


def shuffled_labels(source: Path, out: Path, seed: int) -> Path:
    """A copy of a data folder whose patients get random labels (same prevalence): images and labels are
    independent, so any model is at chance. Files move between malade/ and sain/ with their metadata."""
    shutil.copytree(source, out)
    meta = pd.read_csv(out / "metadata.csv")
    sick = meta["Finding Labels"] != "No Finding"
    patients = meta["Patient ID"].unique()
    rng = np.random.default_rng(seed)
    drawn = dict(zip(patients, rng.random(len(patients)) < sick.mean(), strict=True))
    for i, row in meta.iterrows():
        now = bool(drawn[row["Patient ID"]])
        if now == bool(sick[i]):
            continue
        old = next(out.glob(f"*/{'malade' if sick[i] else 'sain'}/{row['Image Index']}"))
        old.rename(old.parent.parent / ("malade" if now else "sain") / old.name)
        meta.loc[i, "Finding Labels"] = "Effusion" if now else "No Finding"
    meta.to_csv(out / "metadata.csv", index=False)
    return out


@pytest.fixture(scope="module")
def at_chance(tmp_path_factory: pytest.TempPathFactory) -> study.StudyContext:
    tmp = tmp_path_factory.mktemp("weak")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAIRCXR_CACHE", str(tmp / "cache"))
        mp.setenv("FAIRCXR_PROGRESS", "0")
        mp.setenv("FAIRCXR_OUTPUT", str(tmp / "output"))
        folder = shuffled_labels(make_demo(tmp / "demo", n_patients=120, seed=3, image_size=64), tmp / "chance", 0)
        ctx = study.run(load_config(TINY, data_dir=str(folder)))
        validity(ctx), recommendation(ctx)  # computed while the cache folder is set
        yield ctx


def test_a_model_on_shuffled_labels_is_in_weak_model_mode_for_its_auc(at_chance):
    v = validity(at_chance)
    reason = v.weak_reason("chance")
    assert reason is not None, v.weak
    assert reason.values["low"] <= 0.5 <= reason.values["high"]
    level = verdicts.reference_level(at_chance, "auc")  # the seed-aware level the title page quotes
    assert (reason.values["auc"], reason.values["low"]) == (level.estimate, level.low)


def test_the_warning_opens_the_report_slide_2_and_chapters_3_and_4(at_chance):
    summary = conclusion.report_summary(at_chance)
    assert summary.lstrip().startswith("::: {.callout-warning}") and "Pas mieux que le hasard" in summary
    assert summary.index(weak.TITLE) < summary.index("Résumé")
    assert "Étape suivante" in summary and "Ce qui reste lisible" in summary
    assert "Modèle trop faible" in slides.question_numbers(at_chance)
    for chapter in ("preprocessing", "postprocessing"):
        assert weak.TITLE in weak.banner(at_chance, chapter)
    for name in ("03-preprocessing.qmd", "04-postprocessing.qmd"):  # the banner comes before the chapter's answer
        text = (ROOT / "chapters" / name).read_text(encoding="utf-8")
        assert text.index("weak.banner(ctx") < text.index("verdicts.chapter_answer(ctx")
    report = (ROOT / "report.qmd").read_text(encoding="utf-8")
    assert (report.index("conclusion.report_summary(ctx)") < report.index("conclusion.contents_page(ctx)")
            < report.index("01-introduction"))
    # the warning fills the title page: the contents moves to page 2, the introduction follows it there
    assert "outline(" in conclusion.contents_page(at_chance) and "#pagebreak" not in conclusion.contents_page(at_chance)


def test_no_rule_and_no_subgroup_is_crowned(at_chance):
    rec = recommendation(at_chance)
    assert rec.chosen is None and rec.withheld == "weak_model"
    assert "Aucune règle n'est recommandée" in verdicts.recommendation_text(at_chance)
    assert not slides.title_subgroup(at_chance).startswith("Pire")
    assert "aucune" in slides.title_pareto(at_chance) and "fait mieux" not in slides.pareto_message(at_chance)
    assert "Combinaisons meilleures" not in analysis.analysis_narrative(at_chance)
    assert "le plus sous-diagnostiqué" not in analysis.subgroup_narrative(at_chance)
    findings = conclusion.key_findings(at_chance, short=True)
    assert findings.startswith(f"- {weak.TITLE}") and "Recommandation : aucune règle" in findings
    remarks = [grid_remark(at_chance, r) for r in at_chance.grid.table.to_dict("records")]
    assert not any("ne sépare plus" in r for r in remarks)  # said once, in the chapter's warning
    assert consistency.check(consistency.collect(at_chance), at_chance) == []


def test_each_weighting_counts_the_decisions_it_changes_and_class_only_ones_are_named(at_chance):
    reference = at_chance.valid_predictions["uniform"]
    decided = reference["proba"] >= reference.attrs["threshold"]
    changed = validity(at_chance).changed
    for method, preds in at_chance.valid_predictions.items():
        assert (preds["Image Index"] == reference["Image Index"]).all()
        own = preds["proba"] >= preds.attrs["threshold"]
        assert changed[method] == (int((own != decided).sum()), len(preds)), method
    table = preprocessing.weighting_results(at_chance).set_index("Méthode")["Décisions changées"]
    k, n = changed["class_balanced"]
    shown = table.filter(like="Équilibrage des classes")
    if k == 0 and "mêmes valeurs" in shown.index[0]:  # the same decisions and printed cells: merged with the reference
        assert shown.index[0].startswith("Uniforme (référence)") and shown.iloc[0] == "—"
    else:
        assert shown.iloc[0] == f"{k}/{n}"
    text = preprocessing.inert_weightings(at_chance)
    assert "Équilibrage des classes" in text and "Équilibrage des groupes" not in text
    assert (f"(0/{n} images)" if k == 0 else f"sur {k}/{n} images") in text  # one seed: images


def test_the_takeaways_slide_leads_with_what_can_still_be_said_and_the_next_step(at_chance):
    lines = conclusion.key_findings(at_chance, short=True).splitlines()
    assert lines[0].startswith(f"- {weak.TITLE}")
    assert "prévalence" in lines[1] and lines[-1].startswith("- **Étape suivante :**")
    assert not any(line.startswith("- Un modèle qui ne connaît") for line in lines)  # already in the first line
