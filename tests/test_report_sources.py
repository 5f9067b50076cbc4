"""The report's sources: every citation resolves, every figure and table is captioned and referenced."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "report.qmd", ROOT / "slides.qmd", *sorted((ROOT / "chapters").glob("*.qmd"))]
REQUIRED_WORKS = ["wang2017chestx", "seyyedkalantari2021underdiagnosis", "glocker2023", "idrissi2022",
                  "larrazabal2020", "hardt2016", "kamiran2012", "pleiss2017", "zhang2022", "zong2023medfair",
                  "kirichenko2022", "weerts2023fairlearn", "cui2019", "liu2021jtt"]


def _bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "references.bib").read_text(encoding="utf-8"), re.M))


def _cells(text: str) -> list[str]:
    return re.findall(r"^```\{python\}\n(.*?)^```", text, re.M | re.S)


def test_every_citation_key_exists_in_the_bibliography():
    keys = _bib_keys()
    cited = set()
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
        cited |= set(re.findall(r"(?<![\w.])@([a-z][\w-]*\d{4}[\w]*)", prose))
    python = "\n".join(p.read_text() for p in (ROOT / "pipeline").glob("*.py"))
    cited |= set(re.findall(r"\[@([a-z][\w-]*\d{4}[\w]*)\]", python))
    cited |= set(re.findall(r'reference(?:=|: )"([a-z][\w-]*\d{4}\w*)"', python))
    missing = sorted(cited - keys)
    assert not missing, f"cited but absent from references.bib: {missing}"
    assert len(cited) >= 10


def test_the_works_the_chapters_rely_on_are_in_the_bibliography():
    assert not set(REQUIRED_WORKS) - _bib_keys()


def test_every_figure_and_table_cell_has_a_caption_and_is_referenced():
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES if p.name != "slides.qmd")
    labels = []
    for cell in _cells(text):
        label = re.search(r"^#\| label: ((fig|tbl)-[\w-]+)", cell, re.M)
        if not label:
            continue
        kind = label.group(2)
        assert re.search(rf"^#\| {kind}-cap: \S", cell, re.M), f"{label.group(1)} has no {kind}-cap"
        labels.append(label.group(1))
    assert len(labels) >= 12
    unreferenced = [lab for lab in labels if f"@{lab}" not in text]
    assert not unreferenced, f"never referenced in the text: {unreferenced}"


def test_chart_cells_are_captioned_figures():
    text = "\n".join(p.read_text(encoding="utf-8") for p in SOURCES if p.name != "slides.qmd")
    for cell in _cells(text):
        if "display.chart(" in cell:
            assert re.search(r"^#\| label: fig-", cell, re.M), cell


def test_no_source_line_starts_like_a_pandoc_example_list():
    """A line beginning « (@sec-x) » followed by a space starts a pandoc example list: Quarto then prints « (1) »
    for it and for every later @sec-x (the cross-reference is lost); the offline renderer does not."""
    example = re.compile(r"^\s*(?:[-*]\s+)?\(@[\w-]+\)\s", re.M)
    found = [f"{p.name}: {m.group(0).strip()}" for p in SOURCES
             for m in example.finditer(p.read_text(encoding="utf-8"))]
    assert not found, found


SELF_MARKED = ("weak.banner(", "report_summary(")  # they print their own callout (« … (généré …) », the warning)
LAYOUT = ("contents_page(",)  # they print page layout (the PDF's contents and its page break), no prose


def _unmarked_prose_cells(text: str) -> list[str]:
    """Cells printing generated prose (`print(` under `output: asis`) outside a callout or a `.generated` div."""
    found, stack, cell, in_cell = [], [], [], False
    for line in text.splitlines():
        if in_cell:
            if line.startswith("```"):
                in_cell = False
                code = "\n".join(cell)
                marked = any(".callout" in d or ".generated" in d for d in stack)
                own_callout = any(f in code for f in SELF_MARKED + LAYOUT)
                if "output: asis" in code and "print(" in code and not marked and not own_callout:
                    found.append(code.splitlines()[-1].strip())
            else:
                cell.append(line)
        elif line.startswith("```{python}"):
            in_cell, cell = True, []
        elif re.match(r"^:::+\s*\{", line):
            stack.append(line)
        elif re.match(r"^:::+\s*$", line) and stack:
            stack.pop()
    return found


def test_generated_prose_is_marked_in_the_sources():
    """Who wrote what (issue 25): prose the pipeline writes is in a « généré » callout or a `.generated` div
    (a blue rule in every output); `SELF_MARKED` cells print their own callout."""
    found = {p.name: cells for p in SOURCES if p.name != "slides.qmd"
             for cells in [_unmarked_prose_cells(p.read_text(encoding="utf-8"))] if cells}
    assert not found, found
    assert _unmarked_prose_cells("```{python}\n#| output: asis\nprint(x(ctx))\n```\n") == ["print(x(ctx))"]


def test_every_main_slide_note_speaks_of_this_run():
    """Issue 25: the speaker notes were generic. Each main slide's note (the slides with a time budget)
    prints something computed from the run besides its timing, except the group's organisation slide."""
    from pipeline.report.slides import BUDGET

    text = (ROOT / "slides.qmd").read_text(encoding="utf-8")
    for key in BUDGET:
        start = text.index(f'slides.timing("{key}")')
        note = text[start:text.index("\n:::", start)]
        if key != "group":
            assert note.count("{python}") >= 1 and "{python}" in note.split("`", 2)[-1], key
