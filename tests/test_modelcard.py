"""The appendix's model card and checklist: what they say of the data, and where they point."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pandas as pd

from pipeline.data import schema as S
from pipeline.report import modelcard

ROOT = Path(__file__).resolve().parents[1]


def _ctx(is_demo: bool):
    evaluation = pd.DataFrame({S.LABEL: [1, 1, 0, 1], S.PATIENT: ["a", "b", "c", "d"]})
    return types.SimpleNamespace(config=types.SimpleNamespace(is_demo=is_demo), evaluation=evaluation,
                                 describe_data=lambda: "notre sous-ensemble de 4 radiographies")


def test_the_model_card_names_nih_only_for_real_data():
    demo, real = modelcard._data(_ctx(True)), modelcard._data(_ctx(False))
    assert "NIH" not in demo and "NIH ChestX-ray14" in real
    assert "75 %" in real.replace("\u00a0", " ")  # the evaluation prevalence, computed from the rows


def test_every_checklist_pointer_names_a_section_or_table_of_the_report():
    sources = "".join(p.read_text(encoding="utf-8") for p in [ROOT / "report.qmd", *(ROOT / "chapters").glob("*.qmd")])
    anchors = (set(re.findall(r"\{#((?:sec|tbl)-[\w-]+)", sources))
               | set(re.findall(r"#\| label: (tbl-[\w-]+)", sources)))
    pointed = {ref for _, _, where in modelcard.CHECKLIST for ref in re.findall(r"[@#]((?:sec|tbl)-[\w-]+)", where)}
    assert pointed and not pointed - anchors, sorted(pointed - anchors)
