"""The walking skeleton: the README's report command on a tiny demo gives the three outputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pdf_pages import body_pages

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"
RUBRIC = ["Introduction", "Préparation des données", "Pré-traitement", "Post-traitement",
          "Analyse et compréhension", "Conclusion"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copy the project's sources to a temporary folder and render them there."""
    from pipeline.render.timing import copy_project

    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    env = {**os.environ, "FAIRCXR_CONFIG": str(TINY), "FAIRCXR_CACHE": str(project / "cache"),
           "FAIRCXR_PROGRESS": "0", "PYTHONPATH": str(ROOT), "FAIRCXR_OUTPUT": str(project / "_output"),
           "FAIRCXR_STRICT": "1"}
    env.pop("FAIRCXR_DATA", None)
    done = subprocess.run([sys.executable, "-m", "pipeline", "render", "--project", str(project), "--no-quarto"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {name: project / "_output" / name for name in ("report.html", "report.pdf", "slides.html")}


def _text(path: Path) -> str:
    return re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))


def test_three_outputs_exist(rendered):
    for path in rendered.values():
        assert path.is_file() and path.stat().st_size > 10_000, path


def test_html_report_has_every_rubric_section_in_order(rendered):
    html = _text(rendered["report.html"])
    headings = re.findall(r'<h1 data-number="(\d)" id="sec-\w+"><span[^>]*>\d</span> ([^<]+)</h1>', html)
    assert [n for n, _ in headings] == ["1", "2", "3", "4", "5", "6"]
    for (_, text), title in zip(headings, RUBRIC, strict=True):
        assert text.startswith(title), (text, title)


def test_html_report_is_self_contained_and_offline(rendered):
    html = _text(rendered["report.html"])
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?://", html)
    assert "window.vegaEmbed" in html and "<math" in html  # charts inlined, formulas as MathML


def test_numbers_come_from_code_not_placeholders(rendered):
    html = re.sub(r"<script.*?</script>", "", _text(rendered["report.html"]))
    assert "{python}" not in html and "??" not in html
    assert re.search(r"\d,\d\d \[\d,\d\d", html), "no interval of the form 0,78 [0,74 ; 0,82]"
    assert re.search(r"Figure\s\d+", html) and re.search(r"Tableau\s\d+", html)
    assert "Seyyed-Kalantari" in html  # citations resolved into a bibliography


def test_pdf_has_pages_and_every_section(rendered):
    data = rendered["report.pdf"].read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 10
    if subprocess.run(["which", "pdftotext"], capture_output=True).returncode == 0:
        text = subprocess.run(["pdftotext", str(rendered["report.pdf"]), "-"], capture_output=True,
                              text=True).stdout
        for title in RUBRIC:
            assert title in text, title
        assert "#set" not in text  # raw Typst never leaks into the page


def test_slides_are_self_contained_revealjs(rendered):
    html = _text(rendered["slides.html"])
    assert html.count("<section") >= 8
    assert "Reveal.initialize" in html
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", html)


def test_a_weak_model_is_said_first_on_the_title_page_slide_2_and_chapters_3_and_4(rendered):
    """The tiny demo evaluates about 40 images (fewer than 30 of each class): weak-model mode, said first."""
    if subprocess.run(["which", "pdftotext"], capture_output=True).returncode == 0:
        first_page = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(rendered["report.pdf"]), "-"],
                                    capture_output=True, text=True).stdout
        assert "Modèle trop faible" in first_page and "Résumé" in first_page
    slides = _text(rendered["slides.html"])
    second = re.split(r"<section[^>]*>\s*<h2", slides)[1]  # the slide after the title slide
    assert "Modèle trop faible" in second
    html = _text(rendered["report.html"])
    for chapter in ("sec-preprocessing", "sec-postprocessing"):
        body = html[html.index(f'id="{chapter}"'):]
        assert body.index("Modèle trop faible") < body.index("<h2"), chapter  # before the chapter's first section


def test_the_pdf_body_is_at_most_15_pages_and_the_appendix_holds_the_rest(rendered):
    assert body_pages(rendered["report.pdf"]) <= 15
    text = subprocess.run(["pdftotext", str(rendered["report.pdf"]), "-"], capture_output=True, text=True).stdout
    appendix = text[text.rindex("Annexes"):]
    for moved in ("Grille complète", "Sous-groupes intersectionnels", "Diagnostic des pondérations"):
        assert moved in appendix, moved


def test_the_numbers_behind_the_tables_are_written_as_csv(rendered):
    import pandas as pd

    from pipeline.config import load_config

    folder = rendered["report.pdf"].parent / "tables"
    config = load_config(TINY)
    grid = pd.read_csv(folder / "grid.csv")
    assert len(grid) == len(config.weighting.methods) * len(config.postprocessing.methods)
    verdicts = pd.read_csv(folder / "verdicts.csv")
    assert {"primary", "level"} <= set(verdicts["family"])
    established = verdicts[verdicts["status"] == "established"]
    assert ((established["low"] > 0) | (established["high"] < 0)).all()  # the CSV says what the report says
