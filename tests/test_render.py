"""Offline renderer: a tiny Quarto project (tests/fixtures/render) rendered to HTML, PDF and slides."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from pipeline.render import slides_pdf
from pipeline.render.browser import browser, measure_slides
from pipeline.render.qmd import Cell, Emitter, RenderError, conditional_content, number_crossrefs, parse, to_markdown
from pipeline.render.renderer import SlideOverflowWarning, render_all, render_file, slide_overflows

FIXTURE = Path(__file__).parent / "fixtures" / "render"
EXTERNAL = re.compile(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=[\"']?(https?:)?//", re.I)


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory: pytest.TempPathFactory):
    """A cache of this module's own: its renders reuse nothing computed by an earlier run."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIRCXR_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("render") / "project"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.fixture(scope="module")
def rendered(project: Path) -> tuple[dict[str, Path], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = render_all(project, use_quarto=False)
    return {p.name: p for p in paths}, caught


@pytest.fixture(scope="module")
def outputs(rendered) -> dict[str, Path]:
    return rendered[0]


def _html_text(path: Path) -> str:
    """The page's text outside scripts, whitespace collapsed."""
    html = re.sub(r"<script.*?</script>", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"\s+", " ", html.replace("\u00a0", " "))


def _pdf_text(path: Path) -> str | None:
    if shutil.which("pdftotext") is None:
        return None
    done = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True)
    return re.sub(r"\s+", " ", done.stdout.replace("\u00a0", " "))


def test_render_all_writes_the_three_outputs(project, outputs):
    # and the slides as PDF for the jury, where a Chromium prints them
    pdf = ["slides.pdf"] if slides_pdf.browser() else []
    assert sorted(outputs) == ["report.html", "report.pdf", "slides.html", *pdf]
    for path in outputs.values():
        assert path.parent == project / "_output" and path.stat().st_size > 1000


def test_html_has_computed_values_not_expressions(outputs):
    text = _html_text(outputs["report.html"])
    assert "5050" in text and "0,81" in text  # a cell's variable, an inline f-string
    assert "{python}" not in text and "sum(range" not in text  # echo: false from _quarto.yml


def test_html_include_expanded_and_hidden_output_absent(outputs):
    text = _html_text(outputs["report.html"])
    assert "Résultats" in text and "{{<" not in text
    assert "SENTINELLE-MASQUEE" not in text  # output: false
    assert "Paragraphe visible seulement en HTML." in text  # .content-visible when-format="html"


def test_html_cross_references_captions_and_callout(outputs):
    text = _html_text(outputs["report.html"])
    assert '<a href="#fig-scores">Figure 1</a>' in text
    assert '<a href="#tbl-scores">Tableau 1</a>' in text
    assert '<a href="#sec-methode">Section 1.1</a>' in text
    assert "Figure 1 : Score par groupe (figure de test)" in text
    assert re.search(r"<caption>\s*Tableau 1 : Scores par groupe", text)
    assert re.search(r'<div class="callout callout-note[^"]*">\s*<div class="callout-title">\s*À retenir', text)


def test_html_citation_bibliography_math_and_chart(outputs):
    html = outputs["report.html"].read_text(encoding="utf-8")
    text = _html_text(outputs["report.html"])
    assert "Durand et Martin" in text  # the citation, resolved by citeproc
    assert re.search(r'id="refs".*Durand, Camille', text)  # the bibliography entry
    assert "<math" in html  # MathML, no MathJax from a CDN
    assert html.count("data-vega-bundle") == 1  # the Vega library, inlined once
    assert 'window.vegaEmbed("#vega-' in html


def test_html_is_self_contained(outputs):
    for name in ("report.html", "slides.html"):
        html = outputs[name].read_text(encoding="utf-8")
        assert not EXTERNAL.search(html), name


def test_pdf_has_pages_and_text(outputs):
    data = outputs["report.pdf"].read_bytes()
    assert data.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page\b", data)) >= 2  # the pagebreak shortcode
    text = _pdf_text(outputs["report.pdf"])
    if text is None:
        pytest.skip("pdftotext is not installed")
    for expected in ("5050", "Figure 1 : Score par groupe", "Tableau 1 : Scores par groupe",
                     "Figure 1", "Tableau 1", "Section 1.1", "Durand", "Table des matières", "À retenir"):
        assert expected in text, expected
    assert "Paragraphe visible seulement en HTML." not in text
    assert "#pagebreak" not in text and "#block" not in text  # raw Typst never leaks onto the page


def test_slides_self_contained_revealjs(outputs):
    html = outputs["slides.html"].read_text(encoding="utf-8")
    assert html.count("<section") >= 4  # title slide + 3 slides
    assert "Reveal.initialize" in html and "slideNumber: true" in html
    assert "0.8125" in _html_text(outputs["slides.html"])  # inline expression on a slide
    assert 'window.vegaEmbed("#vega-' in html


def test_fixture_slides_fit(rendered):
    assert not [w for w in rendered[1] if issubclass(w.category, SlideOverflowWarning)]


def test_failing_cell_names_file_and_cell(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "doc.qmd").write_text("---\ntitle: t\nformat: html\n---\n\n"
                                      "{{< include chapters/bad.qmd >}}\n", encoding="utf-8")
    (tmp_path / "chapters" / "bad.qmd").write_text("# A\n\nText.\n\n```{python}\n#| label: fig-broken\n"
                                                   "1 / 0\n```\n", encoding="utf-8")
    with pytest.raises(RenderError) as err:
        render_file(tmp_path / "doc.qmd", ["html"], use_quarto=False)
    message = str(err.value)
    assert "fig-broken" in message and "chapters/bad.qmd:5" in message
    assert "ZeroDivisionError" in message
    assert not (tmp_path / "_output" / "doc.html").exists()


def test_parse_expands_includes_and_reads_cell_options():
    doc = parse(FIXTURE / "report.qmd")
    assert [p.name for p in doc.includes] == ["01-resultats.qmd"]
    cells = [p for p in doc.parts if not hasattr(p, "text")]
    labels = [c.options.get("label") for c in cells]
    assert labels == [None, None, "fig-scores", "tbl-scores"]
    assert cells[0].options == {"include": False} and cells[1].options == {"output": False}
    assert cells[2].options["fig-cap"].startswith("Score par groupe")
    assert cells[2].origin[0].name == "01-resultats.qmd"


def test_markdown_passes_number_and_filter_without_kernel(tmp_path):
    text = ("# Un {#sec-un}\n\n## Deux {#sec-deux}\n\nVoir @sec-deux, @Tbl-b et [@fig-a] (numéro -@fig-a).\n\n"
            "![[[CAPTION:fig-a]] A](a.png){#fig-a}\n\n: Légende {#tbl-b}\n\n"
            "::: {.content-hidden when-format=\"typst\"}\nhtml seulement\n:::\n")
    typst = number_crossrefs(conditional_content(text, "typst"))
    assert "[Section\u00a01.1](#sec-deux)" in typst and "[Tableau\u00a01](#tbl-b)" in typst
    assert "[Figure\u00a01](#fig-a)" in typst and "Figure\u00a01\u00a0: A" in typst
    assert "(numéro [1](#fig-a))" in typst
    assert "html seulement" not in typst
    assert "html seulement" in conditional_content(text, "html")
    with pytest.raises(RenderError, match="@fig-nope"):
        number_crossrefs("Voir @fig-nope.")


def test_echo_and_output_options_without_kernel(tmp_path):
    qmd = tmp_path / "d.qmd"
    qmd.write_text("```{python}\n#| echo: true\nx = 1\n```\n\n```{python}\n#| output: false\n"
                   "print('DEUX-CACHE')\n```\n\n```{python}\nprint('TROIS-VU')\n```\n")
    doc = parse(qmd)
    results = iter([[], *([{"output_type": "stream", "name": "stdout", "text": t}] for t in ("DEUX-CACHE",
                                                                                           "TROIS-VU"))])
    outputs = [next(results) if isinstance(p, Cell) else None for p in doc.parts]
    markdown = to_markdown(doc, outputs, Emitter("html", tmp_path / "media"))
    assert "```python\nx = 1\n```" in markdown  # echo defaults to true, as in Quarto
    assert "```\nDEUX-CACHE\n```" not in markdown  # output: false; the code itself is echoed
    assert "```\nTROIS-VU\n```" in markdown


def _one_cell_and_png(tmp_path: Path, size: tuple[int, int]):
    """A document of one cell, and a PNG of `size` (its bytes) for that cell's output."""
    qmd = tmp_path / "d.qmd"
    qmd.write_text("```{python}\nshow()\n```\n")
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return parse(qmd), buffer


def test_uncaptioned_image_output_is_an_image(tmp_path):
    doc, buffer = _one_cell_and_png(tmp_path, (4, 4))
    data = {"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/html": "<p>HTML-SEULEMENT</p>"}
    outputs = [[{"output_type": "display_data", "data": data, "metadata": {}}] if isinstance(p, Cell) else None
               for p in doc.parts]
    typst = to_markdown(doc, outputs, Emitter("typst", tmp_path / "media"))
    path = re.search(r"!\[\]\((.+?)\)", typst).group(1)
    assert Path(path).read_bytes() == buffer.getvalue() and "HTML-SEULEMENT" not in typst
    assert "HTML-SEULEMENT" in to_markdown(doc, outputs, Emitter("html", tmp_path / "media"))


def test_image_output_keeps_its_width(tmp_path):
    """`IPython.display.Image(png, width=N)` is shown N px wide, as Quarto does (the CAM slide)."""
    doc, buffer = _one_cell_and_png(tmp_path, (40, 4))
    data = {"image/png": base64.b64encode(buffer.getvalue()).decode()}
    for metadata, size in (({"image/png": {"width": 300}}, "{width=300}"), ({}, "")):
        outputs = [[{"output_type": "display_data", "data": data, "metadata": metadata}]
                   if isinstance(p, Cell) else None for p in doc.parts]
        markdown = to_markdown(doc, outputs, Emitter("html", tmp_path / "media"))
        assert re.search(r"!\[\]\([^)]+\)" + re.escape(size) + r"(\s|$)", markdown), markdown


def test_slide_overflow_is_detected(tmp_path):
    qmd = tmp_path / "s.qmd"
    qmd.write_text("---\nformat: revealjs\n---\n")
    doc = parse(qmd)
    bullets = "\n".join(f"- point {i}" for i in range(30))
    Image.new("RGB", (300, 2400), "white").save(tmp_path / "tall.png", dpi=(216, 216))  # 800 pt tall
    Image.new("RGB", (300, 900), "white").save(tmp_path / "short.png", dpi=(216, 216))  # 300 pt tall
    markdown = (f"## Courte\n\nUne ligne.\n\n![]({tmp_path / 'short.png'})\n\n## Trop longue\n\n{bullets}\n\n"
                f"## Image haute\n\n![]({tmp_path / 'tall.png'})\n\n## Fin\n\nMerci.\n")
    assert slide_overflows(markdown, tmp_path / "build", doc) == ["Trop longue", "Image haute"]


def test_slide_overflow_warns_during_render(tmp_path):
    bullets = "\n".join(f"- point {i}" for i in range(30))
    (tmp_path / "slides.qmd").write_text(f"---\ntitle: s\nformat: revealjs\n---\n\n## Trop longue\n\n{bullets}\n")
    with pytest.warns(SlideOverflowWarning, match="Trop longue"):
        render_file(tmp_path / "slides.qmd", ["revealjs"], use_quarto=False)


def test_quarto_is_used_when_on_path(tmp_path, monkeypatch):
    """With `quarto` on PATH: one `quarto render FILE --to ...` per document, outputs collected."""
    project = tmp_path / "p"
    shutil.copytree(FIXTURE, project)
    (project / "_quarto.yml").write_text("project:\n  type: default\n")  # no output-dir: written next to sources
    log = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "quarto"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport sys, pathlib\n"
                    f"import os\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    f"open({str(log)!r} + '.python', 'w').write(os.environ.get('QUARTO_PYTHON', ''))\n"
                    "src = pathlib.Path(sys.argv[2])\n"
                    "for fmt in sys.argv[sys.argv.index('--to') + 1].split(','):\n"
                    "    ext = 'pdf' if fmt == 'typst' else 'html'\n"
                    "    (src.parent / f'{src.stem}.{ext}').write_text('made by ' + fmt)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("QUARTO_PYTHON", raising=False)  # a shell without the virtual environment activated
    paths = render_all(project)
    pdf = ["_output/slides.pdf"] if slides_pdf.browser() else []
    assert [p.relative_to(project).as_posix() for p in paths] == \
        ["_output/report.html", "_output/report.pdf", "_output/slides.html", *pdf]
    assert (project / "_output" / "report.pdf").read_text() == "made by typst"
    assert (project / "_output" / "slides.html").read_text() == "made by revealjs"
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["render", "render"]
    assert calls[0].endswith("report.qmd --to html,typst") and calls[1].endswith("slides.qmd --to revealjs")
    # Quarto's Python (documents' kernel, pre-render step) is one that has the pipeline's dependencies.
    python = Path(f"{log}.python").read_text()
    assert python and subprocess.run([python, "-c", "import pandas, altair, ipykernel"]).returncode == 0


def test_slide_overflow_counts_table_rows_as_reveal_lays_them_out(tmp_path):
    """Reveal.js rows are 1.7 em tall (line-height 1.3, padding 0.2 em): 26 rows of a `.smaller` table
    overflow a 720 px slide, 14 rows fit."""
    qmd = tmp_path / "s.qmd"
    qmd.write_text("---\nformat: revealjs\n---\n")
    doc = parse(qmd)

    def table(rows: int) -> str:
        body = "\n".join(f"| Méthode {i} + post-traitement | 0,{i:02d} | 0,50 |" for i in range(rows))
        return f"| Méthode | Exact.<br>équil. | Écart |\n|---|--:|--:|\n{body}\n"

    markdown = (f"## Annexe longue {{.smaller}}\n\n{table(26)}\n\n## Annexe courte {{.smaller}}\n\n{table(14)}\n\n"
                f"## Tableau normal\n\n{table(14)}\n")
    assert slide_overflows(markdown, tmp_path / "build", doc) == ["Annexe longue"]


needs_browser = pytest.mark.skipif(browser() is None, reason="no Chromium on PATH (Debian: apt install chromium)")


@needs_browser
def test_browser_measures_every_fixture_slide_inside_the_slide(outputs):
    size, boxes = measure_slides(outputs["slides.html"])
    assert size == {"width": 960, "height": 700}  # reveal.js defaults: the fixture sets no size
    assert [b.title for b in boxes][1:] == ["Le problème", "Un graphique", "Un tableau", "Références"]
    chart = boxes[2]
    assert 200 < chart.bottom <= 720, chart  # the chart (drawn by vega-embed) is measured, and fits
    assert not [b for b in boxes if b.overflows(**size)]


@needs_browser
def test_browser_reports_overflowing_slides_by_title(tmp_path):
    bullets = "\n".join(f"- point {i}" for i in range(30))
    wide = "x" * 400
    slides = (f"## Courte\n\nUne ligne.\n\n## Trop longue\n\n{bullets}\n\n## Trop large\n\n`{wide}`\n\n"
              "## Fin\n\nMerci.\n")
    (tmp_path / "slides.qmd").write_text(f"---\ntitle: s\nformat: revealjs\n---\n\n{slides}")
    with pytest.warns(SlideOverflowWarning, match="Trop longue") as caught:
        render_file(tmp_path / "slides.qmd", ["revealjs"], use_quarto=False)
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["Trop large", "Trop longue"]
    assert all(w.filename.endswith("slides.qmd") and w.lineno > 4 for w in caught)  # the slide's own line


def test_prose_edit_reuses_cell_outputs_and_a_cell_edit_executes(tmp_path, capsys, monkeypatch):
    """The writing loop: after a prose edit the fallback reuses the cells' outputs (no kernel) and rewrites
    only the outputs whose source changed; after a cell edit it executes again."""
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))  # the module's renders ran the same cells
    project = tmp_path / "p"
    shutil.copytree(FIXTURE, project)
    render_all(project, outputs=("report.html", "slides.html"), use_quarto=False)
    first = capsys.readouterr().out
    assert "executing report.qmd" in first and "executing slides.qmd" in first
    chapter = project / "chapters" / "01-resultats.qmd"
    chapter.write_text(chapter.read_text(encoding="utf-8").replace("Les écarts entre groupes sont connus",
                                                                    "PROSE-MODIFIEE. Les écarts sont connus"))
    render_all(project, outputs=("report.html", "slides.html"), use_quarto=False)
    second = capsys.readouterr().out
    assert "executing" not in second and "reusing the outputs of report.qmd" in second
    assert "_output/slides.html is up to date" in second and "wrote _output/report.html" in second
    assert "PROSE-MODIFIEE" in _html_text(project / "_output" / "report.html")
    (project / "report.qmd").write_text((project / "report.qmd").read_text(encoding="utf-8")
                                        .replace("sum(range(1, 101))", "sum(range(1, 11))"))
    render_all(project, outputs=("report.html",), use_quarto=False)
    assert "executing report.qmd" in capsys.readouterr().out
    assert "vaut 55" in _html_text(project / "_output" / "report.html")


def test_an_interval_wraps_after_its_semicolon_in_a_narrow_pdf_table_cell(tmp_path: Path):
    """Issue 25: « [−0,11 ; 0,10][0,57 ; 0,88] »: an interval's no-break spaces keep it whole in a sentence,
    and in a narrow PDF column it printed over the next cell. The report's Typst header lets it break after
    its « ; » inside table cells only (measured by Typst itself)."""
    import json

    import typst

    from pipeline.render.renderer import TEMPLATES

    cell = "[0,57\u00a0;\u00a00,88]"
    probe = (f'#let t(w) = table(columns: (w, w), "{cell}", "{cell}")\n'
             '#context [#metadata(measure(t(1.3cm)).height) <narrow>]\n'
             '#context [#metadata(measure(t(4cm)).height) <wide>]\n')
    source = tmp_path / "probe.typ"
    source.write_text((TEMPLATES / "tables.typ").read_text(encoding="utf-8") + probe, encoding="utf-8")

    def height(label: str) -> float:
        return float(json.loads(typst.query(str(source), f"<{label}>"))[0]["value"].removesuffix("pt"))

    assert height("narrow") > 1.5 * height("wide")  # two lines: the interval broke after « ; »


def test_an_inline_expression_with_an_empty_value_is_refused_with_its_line(tmp_path):
    # Quarto prints the code of an inline expression whose value is empty (`{python} f(ctx)` in the page)
    qmd = tmp_path / "d.qmd"
    qmd.write_text("# Titre\n\nAvant `{python} plein()` puis `{python} vide()` après.\n")
    doc = parse(qmd)
    outputs = [None if isinstance(p, Cell) else [{"text/plain": "'texte'"}, {"text/plain": "''"}] for p in doc.parts]
    with pytest.raises(RenderError, match=r"d\.qmd:3.*`vide\(\)` gave an empty value"):
        to_markdown(doc, outputs, Emitter("html", tmp_path / "media"))
    outputs = [None if isinstance(p, Cell) else [{"text/plain": "'texte'"}, {"text/plain": "'.'"}] for p in doc.parts]
    assert "Avant texte puis \\. après." in to_markdown(doc, outputs, Emitter("html", tmp_path / "media"))
