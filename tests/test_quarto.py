"""Real Quarto is the reference renderer: the whole project rendered with it on a tiny demo, its warnings,
what a reader sees, and the same document from the offline fallback (compared piece by piece).

Quarto comes from PATH or from `../shared/quarto/install.sh` (installed once, idempotent); without
either, the module is skipped with the reason. One temporary copy of the project is rendered by both
renderers with one temporary study cache: the study is computed once, by the first render.
"""

from __future__ import annotations

import html as html_lib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pdf_pages import body_pages

from pipeline.render.timing import copy_project

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"
INSTALLER = ROOT.parent / "shared" / "quarto" / "install.sh"
OUTPUTS = ("report.html", "report.pdf", "slides.html")
# The grading rubric's sections, in order (as tests/test_end_to_end.py).
RUBRIC = ["Introduction", "Préparation des données", "Pré-traitement", "Post-traitement",
          "Analyse et compréhension", "Conclusion"]

# Warnings caused by this machine, not by the project: the kernel's notice about its TCP transport,
# the offline Quarto build without typst-gather, and embed-resources failing to fetch from a CDN
# offline (Quarto adds require.js and jQuery to any page with HTML outputs, and fetches them to embed).
TOLERATED = [re.compile(p) for p in (
    r"Kernel is running over TCP without encryption",
    r"typst-gather",
    r"Could not fetch resource https://cdn\.jsdelivr\.net/npm/(jquery|requirejs)@",
)]
WARNING = re.compile(r"\bWARN(ING)?\b|\[WARNING\]")
# What a reader must never see: an escaped character or literal Markdown.
LEAKS = [re.compile(p) for p in (r"\\x[0-9a-f]{2}", r"\\u[0-9a-f]{4}", r"\*\*", r"\{python\}", r"\\\(",
                                 r"\\\[", r"\$\$", r"\[\[CAPTION", r"#(set|show|block|pagebreak)\b")]
INTERVAL = re.compile(r"\[\s*[−+\-]?\d[\d,]*(?:\s*%)?\s*;\s*[−+\-]?\d[\d,]*(?:\s*%)?\s*\]")
AUTHOR_DATE = re.compile(r"\((?:[^()]*?[A-Z][\w\-]+(?: et al\.| et [A-Z][\w\-]+)?,? (?:19|20)\d\d[a-z]?;?)+\)")


def quarto_command() -> tuple[str | None, str]:
    """(quarto executable, why not)."""
    found = shutil.which("quarto")
    if found:
        return found, ""
    if not INSTALLER.is_file():
        return None, f"quarto is not on PATH and {INSTALLER} does not exist"
    done = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900)
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip().endswith("quarto")]
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        return None, f"{INSTALLER} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return lines[-1], ""


@pytest.fixture(scope="module")
def quarto() -> str:
    command, why = quarto_command()
    if command is None:
        pytest.skip(why)
    return command


def _env(base: Path, quarto: str | None = None) -> dict[str, str]:
    env = {**os.environ, "FAIRCXR_CONFIG": str(TINY), "FAIRCXR_CACHE": str(base / "cache"),
           "FAIRCXR_PROGRESS": "0", "PYTHONPATH": str(ROOT), "QUARTO_PYTHON": sys.executable,
           "FAIRCXR_STRICT": "1"}
    env.pop("FAIRCXR_DATA", None)
    if quarto:
        env["PATH"] = f"{Path(quarto).parent}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture(scope="module")
def projects(quarto: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The project rendered by the fallback, then by Quarto (same study cache): output folders."""
    base = tmp_path_factory.mktemp("quarto")
    fallback = copy_project(base / "fallback")
    done = subprocess.run([sys.executable, "-m", "pipeline", "render", "--project", str(fallback), "--no-quarto"],
                          cwd=fallback, env={**_env(base), "FAIRCXR_OUTPUT": str(fallback / "_output")},
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    real = copy_project(base / "quarto")
    done = subprocess.run([quarto, "render"], cwd=real, capture_output=True, text=True, timeout=1200,
                          env={**_env(base, quarto), "FAIRCXR_OUTPUT": str(real / "_output")})
    (base / "quarto.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"fallback": fallback / "_output", "quarto": real / "_output", "log": base / "quarto.log"}


def _visible_text(html: str) -> str:
    """What a reader sees of a page: no scripts, styles, tags or comments; entities decoded."""
    html = re.sub(r"<(script|style)\b.*?</\1>|<!--.*?-->", " ", html, flags=re.S | re.I)
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", html))
    return re.sub(r"\s+", " ", text.replace("\u00a0", " ").replace("\u202f", " "))


def _pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (Debian: poppler-utils)")
    done = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True)
    return done.stdout


def test_quarto_reuses_frozen_pages_until_the_study_inputs_change(projects, quarto, tmp_path):
    """A project render with nothing changed executes nothing (freeze: auto); after a change to the
    config (here the group's name, shown on a slide), the pre-render step removes _freeze/ and the
    pages carry the new value instead of the frozen one."""
    project = tmp_path / "frozen"
    shutil.copytree(projects["quarto"].parent, project, symlinks=True)
    env = {**_env(tmp_path.parent, quarto), "FAIRCXR_OUTPUT": str(project / "_output")}
    env["FAIRCXR_CACHE"] = str(projects["quarto"].parents[1] / "cache")

    def render(config: Path) -> str:
        done = subprocess.run([quarto, "render"], cwd=project, capture_output=True, text=True, timeout=1200,
                              env={**env, "FAIRCXR_CONFIG": str(config)})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr

    unchanged = render(TINY)
    assert "Executing" not in unchanged and "removed it" not in unchanged, unchanged[-2000:]
    renamed = tmp_path / "study.yml"
    renamed.write_text(TINY.read_text(encoding="utf-8") + '\ngroup:\n  name: "Groupe GEL-7"\n', encoding="utf-8")
    changed = render(renamed)
    assert "removed it" in changed and "Executing 'slides" in changed, changed[-2000:]
    assert "Groupe GEL-7" in (project / "_output" / "slides.html").read_text(encoding="utf-8")


def test_quarto_writes_the_three_outputs(projects):
    for name in OUTPUTS:
        path = projects["quarto"] / name
        assert path.is_file() and path.stat().st_size > 10_000, path


def test_quarto_warns_about_nothing_the_project_causes(projects):
    log = re.sub(r"\x1b\[[0-9;]*m", "", projects["log"].read_text(encoding="utf-8"))  # colours
    warnings = [line for line in log.splitlines() if WARNING.search(line)]
    caused = [w for w in warnings if not any(p.search(w) for p in TOLERATED)]
    assert not caused, "\n".join(caused)


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
@pytest.mark.parametrize("name", ["report.html", "slides.html"])
def test_no_escaped_characters_or_literal_markdown_in_pages(projects, renderer, name):
    _assert_no_leak(_visible_text((projects[renderer] / name).read_text(encoding="utf-8")), f"{renderer} {name}")


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
def test_no_escaped_characters_or_literal_markdown_in_pdf(projects, renderer):
    _assert_no_leak(re.sub(r"\s+", " ", _pdf_text(projects[renderer] / "report.pdf")), f"{renderer} PDF")


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
def test_a_weak_models_body_fits_15_pages_with_its_contents_whole(projects, renderer):
    """The tiny study is a weak model: its warning fills the title page, and the contents must then move whole
    to the next page (the introduction below it), not leave its last lines alone on a page of their own."""
    pdf = projects[renderer] / "report.pdf"
    assert body_pages(pdf) <= 15, renderer
    pages = _pdf_text(pdf).split("\f")
    holding = [i for i, page in enumerate(pages) if "Table des matières" in page]
    assert len(holding) == 1, renderer
    contents = pages[holding[0]]
    assert re.search(r"^\s*Annexes\b.*\d+\s*$", contents, re.M), f"{renderer}: the contents is split"
    if holding[0] > 0:  # moved off the title page: the introduction follows it, no page left nearly blank
        assert re.search(r"^\s*1\s+Introduction\s*$", contents, re.M), renderer
    footers = [[line.strip() for line in page.splitlines() if line.strip()][-1] for page in pages[:8]]
    assert footers == [str(n) for n in range(1, 9)], f"{renderer}: page numbers {footers}"


def _assert_no_leak(text: str, where: str) -> None:
    for leak in LEAKS:
        found = leak.search(text)
        assert found is None, f"{where}: {found.group(0)!r} in « {text[max(0, found.start() - 80):found.end() + 80]} »"


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
def test_html_bibliography_under_references_in_author_date(projects, renderer):
    page = (projects[renderer] / "report.html").read_text(encoding="utf-8")
    text = _visible_text(page)
    assert "Bibliographie" not in text
    heading = re.search(r"<h1[^>]*>(?:<span[^>]*>[^<]*</span>\s*)?Références</h1>", page)
    refs = page.find('id="refs"')
    assert heading and refs > heading.end(), "the bibliography is not under the « Références » heading"
    assert re.search(r"Seyyed-Kalantari, Laleh, .*?2021\.", _visible_text(page[refs:])), "not author-date entries"
    assert AUTHOR_DATE.search(text), "no author-date citation such as (Wang et al. 2017)"
    assert not re.search(r'class="citation"[^>]*>\s*\[\d', page), "numbered citations"


def test_generated_prose_carries_the_same_mark_in_both_renderers(projects):
    """Prose the pipeline wrote (`::: {.generated}`): a blue rule and a « généré » label, in HTML and PDF alike,
    as many times in both renderers' pages; the slides carry the rule."""
    rule = "border-left: 3px solid #8aa9cf"
    counts = {r: (projects[r] / "report.html").read_text(encoding="utf-8").count(rule) for r in ("quarto", "fallback")}
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "chapters").glob("*.qmd"))
    assert counts["quarto"] == counts["fallback"] and 5 <= counts["quarto"] <= source.count("::: {.generated}"), counts
    for renderer in ("quarto", "fallback"):
        # the label sits in the left margin: pdftotext puts it at the start of the rule's first line
        labels = re.findall(r"^\s*généré(?:\s{2,}\S|\s*$)", _pdf_text(projects[renderer] / "report.pdf"), flags=re.M)
        assert len(labels) >= 5, (renderer, len(labels))
        assert rule in (projects[renderer] / "slides.html").read_text(encoding="utf-8"), renderer


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
def test_pdf_bibliography_under_references_in_author_date(projects, renderer):
    text = _pdf_text(projects[renderer] / "report.pdf")
    flat = re.sub(r"\s+", " ", text)
    assert "Bibliographie" not in flat
    body = text[text.find("Introduction", text.find("Introduction") + 1):]  # after the table of contents
    heading = [m.start() for m in re.finditer(r"^\s*Références\s*$", body, flags=re.M)]
    assert len(heading) == 1, "one « Références » heading in the body"
    after = re.sub(r"\s+", " ", body[heading[0]:])
    assert re.search(r"Seyyed-Kalantari, Laleh, .*?2021\.", after), "no author-date entry under « Références »"
    assert AUTHOR_DATE.search(flat), "no author-date citation such as (Wang et al. 2017)"
    assert not re.search(r"\bet others\b|\\", after), "BibTeX leaks into the references"


def test_quartos_slides_print_one_landscape_page_a_slide_or_not_at_all(projects, tmp_path, capsys):
    """Quarto's slides.html loads jQuery and RequireJS from a CDN; offline, Chromium printed it as one blank
    page (slides.pdf of 1.3 kB) or on portrait letter pages, silently. The printer retries (without the
    remote scripts) and either writes one landscape page a slide, as many as the fallback's slides.pdf, or
    writes nothing and says how to print it: never a misprinted copy. (On a busy machine reveal.js may not
    lay the slides out before Chromium prints, whatever the number of tries: both outcomes are legitimate.)"""
    from pipeline.render import slides_pdf

    if slides_pdf.browser() is None:
        pytest.skip("no Chromium on PATH (Debian: chromium)")
    copy = tmp_path / "slides.html"
    shutil.copyfile(projects["quarto"] / "slides.html", copy)
    printed = slides_pdf.write_slides_pdf(copy)
    if printed is None:
        assert not copy.with_suffix(".pdf").exists()
        assert "not written" in capsys.readouterr().err
        return
    expected = slides_pdf.page_count(projects["fallback"] / "slides.pdf")
    assert expected > 5 and slides_pdf.page_count(printed) == expected
    width, height = slides_pdf.page_size(printed)
    assert width > height  # one landscape page a slide, not the page cut at letter size


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
def test_formulas_are_mathml_without_any_cdn(projects, renderer):
    page = (projects[renderer] / "report.html").read_text(encoding="utf-8")
    assert "<math" in page
    assert not re.search(r"mathjax|katex", page, flags=re.I)


def _headings(page: str) -> list[tuple[str, str]]:
    """(number, title) of every numbered or unnumbered h1-h3 heading of the body."""
    out = []
    for m in re.finditer(r"<h([1-3])\b[^>]*>(.*?)</h\1>", page, flags=re.S):
        inner = m.group(2)
        number = re.search(r'class="header-section-number">([^<]*)<', inner)
        title = _visible_text(re.sub(r'<span class="header-section-number">[^<]*</span>', "", inner)).strip()
        out.append((number.group(1) if number else "", title))
    return [h for h in out if h[1] not in ("Table des matières", "")]


def _captions(page: str) -> list[str]:
    """Figure and table captions in document order."""
    found = re.findall(r'<(?:figcaption|caption)\b[^>]*>(.*?)</(?:figcaption|caption)>|'
                       r'<div class="(?:figure|table)-caption">(.*?)</div>', page, flags=re.S)
    found = [a or b for a, b in found]
    return [_visible_text(c).strip() for c in found]


def _xrefs(page: str) -> list[tuple[str, str]]:
    return sorted((m.group(1), _visible_text(m.group(2)).strip()) for m in
                  re.finditer(r'<a href="#((?:fig|tbl|sec)-[\w-]+)"[^>]*>(.*?)</a>', page, flags=re.S))


def _citations(page: str) -> list[str]:
    return [_visible_text(c).strip() for c in
            re.findall(r'<span class="citation"[^>]*>(.*?)</span>', page, flags=re.S)]


def _body(page: str) -> str:
    """The report without its table of contents (Quarto's TOC sits in a sidebar, pandoc's in a nav)."""
    return re.sub(r'<nav id="TOC".*?</nav>', "", page, flags=re.S)


@pytest.fixture(scope="module")
def pages(projects) -> dict[str, str]:
    return {r: _body((projects[r] / "report.html").read_text(encoding="utf-8")) for r in ("quarto", "fallback")}


def test_every_rubric_section_in_both_renderers(pages):
    for renderer, page in pages.items():
        titles = [t for n, t in _headings(page) if n and "." not in n]
        assert len(titles) >= len(RUBRIC), (renderer, titles)
        for title, expected in zip(titles, RUBRIC, strict=False):
            assert title.startswith(expected), (renderer, title, expected)


def test_both_renderers_same_headings(pages):
    assert _headings(pages["quarto"]) == _headings(pages["fallback"])


def test_both_renderers_same_captions(pages):
    quarto, fallback = _captions(pages["quarto"]), _captions(pages["fallback"])
    assert quarto and quarto == fallback


def test_both_renderers_same_cross_reference_texts(pages):
    quarto, fallback = _xrefs(pages["quarto"]), _xrefs(pages["fallback"])
    assert any(k.startswith("fig-") for k, _ in quarto) and any(k.startswith("tbl-") for k, _ in quarto)
    assert quarto == fallback


def test_both_renderers_same_citations(pages):
    quarto, fallback = _citations(pages["quarto"]), _citations(pages["fallback"])
    assert quarto and quarto == fallback


def test_both_renderers_same_generated_numbers(pages):
    quarto = INTERVAL.findall(_visible_text(pages["quarto"]))
    fallback = INTERVAL.findall(_visible_text(pages["fallback"]))
    assert len(quarto) > 10 and quarto == fallback


def test_both_renderers_same_slides(projects):
    def slides(path: Path) -> list[tuple[str, list[str]]]:
        page = path.read_text(encoding="utf-8")
        sections = re.findall(r"<section\b[^>]*>(.*?)</section>", page, flags=re.S)
        return [(_visible_text(h.group(1)).strip() if (h := re.search(r"<h[12][^>]*>(.*?)</h[12]>", s, re.S))
                 else "", INTERVAL.findall(_visible_text(s))) for s in sections]

    quarto, fallback = slides(projects["quarto"] / "slides.html"), slides(projects["fallback"] / "slides.html")
    assert [t for t, _ in quarto if t] == [t for t, _ in fallback if t]
    assert [n for _, n in quarto] == [n for _, n in fallback]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")


def _served(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.read().decode("utf-8", "replace")
    except OSError:
        return ""


def test_quarto_preview_starts_and_rerenders_on_save(quarto, tmp_path):
    """`quarto preview report.qmd` serves the page and re-renders it when report.qmd is saved (on the small
    test project: the mechanism, not the study). Quarto 1.10.18 does not re-render when only an included
    chapter is saved (docs/RENDERING.md)."""
    project = tmp_path / "p"
    shutil.copytree(ROOT / "tests" / "fixtures" / "render", project)
    port = _free_port()
    log = tmp_path / "preview.log"
    with open(log, "w") as out:
        server = subprocess.Popen([quarto, "preview", "report.qmd", "--no-browser", "--port", str(port),
                                   "--to", "html"], cwd=project, env={**_env(tmp_path, quarto)}, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/report.html"
        _wait_for(lambda: "Durand" in _served(url), 600, "the first preview")
        source = project / "report.qmd"
        source.write_text(source.read_text(encoding="utf-8").replace('subtitle: "Rendu hors ligne"',
                                                                     'subtitle: "APERCU-MODIFIE"'))
        _wait_for(lambda: "APERCU-MODIFIE" in _served(url), 600, "the re-render after saving report.qmd")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_every_slide_has_speaker_notes_in_both_renderers(projects):
    """The title slide carries its notes (data-notes), every other slide an aside of notes, in both HTML slides."""
    for renderer in ("quarto", "fallback"):
        html = (projects[renderer] / "slides.html").read_text(encoding="utf-8")
        title = re.search(r'<section id="title-slide"[^>]*>', html)
        assert title and "data-notes=" in title.group(0), renderer
        slides = re.split(r'<section id="[^"]*" class="[^"]*\bslide\b', html)[1:]
        assert len(slides) >= 15, renderer
        bare = [re.sub(r"<[^>]+>", "", part.split("</h2>")[0])[-60:] for part in slides
                if '<aside class="notes">' not in part.split("</section>")[0]]
        assert not bare, f"{renderer}: slides without notes: {bare}"


def test_browser_finds_no_overflowing_slide_in_either_renderer(projects):
    """Each slide of both renderers' slides.html, as headless Chromium draws it, fits the 1280x720 slide."""
    from pipeline.render.browser import browser, measure_slides
    from pipeline.report import slides

    if browser() is None:
        pytest.skip("no Chromium on PATH (Debian: apt install chromium)")
    measured = {r: measure_slides(projects[r] / "slides.html") for r in ("quarto", "fallback")}
    for renderer, (size, boxes) in measured.items():
        assert size == {"width": 1280, "height": 720}, renderer
        assert len(boxes) >= 8, renderer
        too_big = [f"{b.title}: {b.right:.0f}x{b.bottom:.0f} px" for b in boxes if b.overflows(**size)]
        assert not too_big, f"{renderer}: {too_big}"
        # Main slides with a chart or an image: data, amplification, probe, images (CAM), groups, weighting,
        # post-processing, Pareto.
        figures = [b for b in boxes if (b.chart or b.figure_width > 0) and not b.title.startswith("Annexe")]
        assert len(figures) >= 8, renderer
        small = [f"{b.title}: {b.figure_share(**size):.0%}" for b in figures if b.figure_share(**size) < 0.5]
        assert not small, f"{renderer}: figures under half of the slide: {small}"
        # Chart text read from the back of the room: at least 20 px on the 1280x720 slide, as drawn.
        charts = [b for b in boxes if b.chart_text_px > 0]
        assert len(charts) >= 6, renderer
        tiny = [f"{b.title}: {b.chart_text!r} {b.chart_text_px:.1f} px" for b in charts
                if b.chart_text_under(slides.SLIDE_TEXT_PX)]
        assert slides.SLIDE_TEXT_PX >= 20 and not tiny, f"{renderer}: chart text under 20 px: {tiny}"
    assert [b.title for b in measured["quarto"][1]] == [b.title for b in measured["fallback"][1]]


LONG_TABLE = """---
title: "Un long tableau"
lang: fr
format:
  typst:
    include-in-header: tables.typ
---

{rows}

: Un tableau plus long qu'une page {{#tbl-long}}
"""


def _pdf_pages(pdf: Path) -> list[str]:
    return _pdf_text(pdf).split("\f")


@pytest.mark.parametrize("renderer", ["quarto", "fallback"])
def test_a_long_captioned_table_continues_on_the_next_page(renderer: str, quarto: str, tmp_path: Path):
    """Quarto wraps a captioned table in a Typst figure, which does not break by default: the grid tables
    of the report's appendix ran past the page bottom, their last rows printed over each other."""
    rows = "\n".join(["| Combinaison | Valeur |", "|---|---|",
                      *(f"| ligne {i} | {i / 7:.3f} |" for i in range(1, 151))])
    (tmp_path / "_quarto.yml").write_text("project:\n  output-dir: _output\n", encoding="utf-8")
    (tmp_path / "long.qmd").write_text(LONG_TABLE.format(rows=rows), encoding="utf-8")
    shutil.copyfile(ROOT / "pipeline" / "render" / "templates" / "tables.typ", tmp_path / "tables.typ")
    if renderer == "quarto":
        done = subprocess.run([quarto, "render", "long.qmd", "--to", "typst"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env=_env(tmp_path, quarto))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    else:
        from pipeline.render.renderer import render_file

        render_file(tmp_path / "long.qmd", ["pdf"], use_quarto=False)
    pages = _pdf_pages(tmp_path / "_output" / "long.pdf")
    for i in (1, 75, 150):  # every row printed, once
        assert len(re.findall(rf"\bligne {i}\b", "\f".join(pages))) == 1, f"row {i} is missing from the PDF"
    last = next(n for n, page in enumerate(pages) if re.search(r"\bligne 150\b", page))
    assert last >= 1, "the table's last row is on its first page: the table did not continue on a new page"
