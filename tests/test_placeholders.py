"""The template's placeholders a student must fill before handing in, found by file and line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from pipeline import cli
from pipeline.render import placeholders

ROOT = Path(__file__).resolve().parents[1]


def _template_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("report.qmd", "slides.qmd", "study.yml"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "chapters", project / "chapters")
    return project


def test_every_placeholder_the_template_ships_is_found_by_file_and_line():
    found = placeholders.in_project(ROOT)
    boxes = {(str(p.relative_to(ROOT)), n + 1) for p in sorted((ROOT / "chapters").glob("*.qmd"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines())
             if re.match(r"^:::+\s*\{\.callout-tip", line)}
    assert boxes, "the chapters ship the student's boxes"
    assert boxes <= {(str(p.path), p.line) for p in found}  # every box, at its opening line
    authors = {(str(p.path), p.line) for p in found if "Votre nom" in p.what}
    assert authors == {("report.qmd", 4), ("slides.qmd", 4)}
    yml = ROOT / "study.yml"
    to_fill = [n + 1 for n, line in enumerate(yml.read_text(encoding="utf-8").splitlines()) if "à compléter" in line]
    assert to_fill and {p.line for p in found if p.path == yml.relative_to(ROOT)} == set(to_fill)


def test_a_box_counts_as_written_only_once_its_instruction_is_gone(tmp_path):
    project = _template_copy(tmp_path)
    chapter = project / "chapters" / "03-preprocessing.qmd"
    text = chapter.read_text(encoding="utf-8")
    box = re.search(r"(::: \{\.callout-tip\}\n## Votre analyse\n)(.*?)(\n:::)", text, re.S)
    ours = "Nous retenons la pondération par groupe."
    kept = text.replace(box.group(0), box.group(1) + box.group(2) + "\n" + ours + box.group(3))
    emptied = text.replace(box.group(0), box.group(1) + box.group(3).lstrip("\n"))
    written = text.replace(box.group(0), box.group(1) + ours + box.group(3))
    line = text[:box.start()].count("\n") + 1
    for version, left in ((kept, True), (emptied, True), (written, False)):
        found = placeholders.in_text(Path("ch3.qmd"), version)
        assert (line in {p.line for p in found}) is left, (version[box.start():box.end() + 60], found)


def test_render_final_refuses_a_draft_before_any_work_and_passes_a_filled_project(tmp_path, capsys, monkeypatch):
    project = _template_copy(tmp_path)
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))  # nothing may be computed there
    config = project / "study.yml"
    assert cli.main(["--config", str(config), "render", "--final", "--project", str(project)]) == 1
    err = capsys.readouterr().err
    assert "report.qmd:4" in err and "chapters/06-conclusion.qmd" in err and "study.yml:" in err
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # refused before the study ran

    for source in [project / "report.qmd", project / "slides.qmd", config, *(project / "chapters").glob("*.qmd")]:
        text = source.read_text(encoding="utf-8").replace("Votre nom (groupe)", "Alice Martin, Bob Durand (G3)")
        text = text.replace(" (à compléter)", "")
        for instruction in placeholders.BOX_INSTRUCTIONS:
            text = re.sub(r"(## Votre [^\n]*\n)[^:]*?" + re.escape(instruction[:20]) + r"[^\n]*(\n[^:\n][^\n]*)*",
                          r"\1Notre lecture, écrite par nous.", text)
        source.write_text(text, encoding="utf-8")
    assert placeholders.in_project(project, config) == []
