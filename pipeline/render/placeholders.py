"""What a student has not yet written: the template's placeholders left in the sources.

Every render lists them as a warning; `python -m pipeline render --final` refuses to render while any
is left (a hand-in with « Votre nom (groupe) » on its title page costs more than a failed command).
Found by text: the template's own words (the author line, « à compléter », the instructions in the
« Votre … » boxes) are known here, and a box whose body is empty or still holds its instruction is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

AUTHOR_PLACEHOLDER = "Votre nom (groupe)"
TO_FILL = "à compléter"

# The instructions the template's « Votre … » boxes ship with (chapters/*.qmd), whitespace collapsed.
# A box still holding one of them (alone, or before the student's text) is a placeholder left.
BOX_INSTRUCTIONS = (
    "Remplacez ce paragraphe par la présentation de votre groupe, de votre sous-ensemble de données et de vos "
    "choix.",
    "Ajoutez ici votre lecture de ces biais",
    "Quelle pondération retenez-vous, et pourquoi ? Ce texte est le vôtre",
    "Quel post-traitement retenez-vous ? Le gain d'équité justifie-t-il sa perte de performance ?",
    "Ajoutez ici votre interprétation",
    "Écrivez ici votre conclusion",
)

STUDENT_BOX = re.compile(r"^:::+\s*\{\.callout-tip[^}]*\}\s*\n##\s*(Votre[^\n]*)\n(.*?)^:::+\s*$", re.M | re.S)


@dataclass(frozen=True)
class Placeholder:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _collapsed(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def in_text(path: Path, text: str) -> list[Placeholder]:
    """The placeholders in one source file's text (`path` only names it)."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if AUTHOR_PLACEHOLDER in line:
            found.append(Placeholder(path, number, f"« {AUTHOR_PLACEHOLDER} »: write your names"))
        elif TO_FILL in line:
            found.append(Placeholder(path, number, f"« {_collapsed(line)[:80]} »: to fill in"))
    for box in STUDENT_BOX.finditer(text):
        title, body = box.group(1).strip(), _collapsed(box.group(2))
        if not body:
            found.append(Placeholder(path, _line_of(text, box.start()), f"« {title} » box is empty: write it"))
        elif any(_collapsed(instruction) in body for instruction in BOX_INSTRUCTIONS):
            found.append(Placeholder(path, _line_of(text, box.start()),
                                     f"« {title} » box still holds the template's instruction: replace it"))
    return sorted(found, key=lambda p: p.line)


def in_project(project: Path, config_file: Path | None = None) -> list[Placeholder]:
    """Every placeholder left in the project's documents (`*.qmd`, `chapters/*.qmd`) and its config."""
    project = Path(project).resolve()
    sources = sorted(project.glob("*.qmd")) + sorted((project / "chapters").glob("*.qmd"))
    config = Path(config_file).resolve() if config_file else project / "study.yml"
    if config.is_file():
        sources.append(config)
    found = []
    for source in sources:
        shown = source.relative_to(project) if source.is_relative_to(project) else source
        found += in_text(shown, source.read_text(encoding="utf-8", errors="replace"))
    return found


def report(found: list[Placeholder], final: bool) -> str:
    """The message listing them: a warning for a draft render, the reason for refusing a final one."""
    head = (f"{len(found)} placeholder(s) left, --final renders only without them:" if final else
            f"note: {len(found)} placeholder(s) left (fill them before handing in; "
            "`python -m pipeline render --final` refuses to render while any is left):")
    return "\n".join([head, *[f"  {p}" for p in found]])
