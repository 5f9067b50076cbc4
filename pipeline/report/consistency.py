"""The render's consistency check: every generated claim against the verdict (or the figure) it states.

Text builders that state a verdict accept `claims: list[Claim] | None` and append what they assert: the
verdicts' keys with the status and direction the sentence gives them, « nothing notable » over a family,
« better than both its parts » for a rule, a number in a title beside the number its figure shows.
`collect` calls those builders, `check` compares each claim with `ctx.verdicts` and the grid, and
`ensure` runs at render (the appendix): a contradiction fails the render under FAIRCXR_STRICT=1 (the
tests) and is printed as a warning otherwise. Planted contradictions are tested (tests/test_consistency.py).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.study import StudyContext

STRICT_ENV = "FAIRCXR_STRICT"


@dataclass(frozen=True)
class Claim:
    """What one generated sentence, cell or title asserts."""

    where: str  # « chapitre 4, synthèse », « diapositive, titre de l'amplification »
    text: str
    keys: tuple[str, ...] = ()  # the verdicts it states...
    status: str | None = None  # ...with this status (None: it states no status)
    direction: int = 0  # ...and this direction (0: none stated)
    none_in: str | None = None  # « nothing notable » in every family starting with this name
    quantities: tuple[str, ...] = ()  # ...on these quantities (all when empty)
    include_primary: bool = True  # ...counting the pre-registered answers shown there (False: said apart)
    beats: str | None = None  # « fait mieux que ses composantes et que la référence » for this grid rule
    gap: str | None = None  # ...on this gap
    shown: float | None = None  # a number the text states...
    figure: float | None = None  # ...and the number its figure shows (same unit)
    tolerance: float = 0.006  # rounding of the shown number


class ConsistencyError(RuntimeError):
    pass


def _key_problems(c: Claim, ctx: StudyContext) -> list[str]:
    out = []
    for key in c.keys:
        v = ctx.verdicts.get(key) if ctx.verdicts is not None else None
        if v is None:
            out.append(f"{c.where} : « {c.text} » cite un verdict inconnu ({key})")
            continue
        if c.status is not None and v.status != c.status:
            out.append(f"{c.where} : « {c.text} » dit « {c.status} », le verdict est « {v.status} » ({key})")
        if c.direction and v.direction != c.direction:
            out.append(f"{c.where} : « {c.text} » donne le sens {c.direction:+d}, le verdict {v.direction:+d} ({key})")
    return out


def _none_problems(c: Claim, ctx: StudyContext) -> list[str]:
    found = [v for v in (ctx.verdicts.values() if ctx.verdicts is not None else [])
             if v.family.startswith(c.none_in) and v.established and (not c.quantities or v.quantity in c.quantities)
             and (c.include_primary or not v.reason.startswith("primary"))]
    return [f"{c.where} : « {c.text} » alors que {v.treated} a un effet établi sur {v.quantity} ({v.key})"
            for v in found[:3]]


def _beats_problems(c: Claim, ctx: StudyContext) -> list[str]:
    t = ctx.grid.table.set_index("combination")
    w, _, p = c.beats.partition(" + ")
    if c.beats not in t.index:
        return [f"{c.where} : « {c.text} » nomme une règle absente de la grille ({c.beats})"]
    r = t.loc[c.beats]
    if bool(r.get("degenerate", False)):
        return [f"{c.where} : « {c.text} » pour une règle dégénérée ({c.beats})"]
    problems = []
    for other in (f"{w} + none", f"uniform + {p}", "uniform + none"):
        if other in t.index and not (r[c.gap] < t.loc[other, c.gap]
                                     and r["balanced_accuracy"] >= t.loc[other, "balanced_accuracy"]):
            problems.append(f"{c.where} : « {c.text} » mais {c.beats} ne bat pas {other} "
                            f"({c.gap} {r[c.gap]:.3f} contre {t.loc[other, c.gap]:.3f})")
    return problems


def _figure_problems(c: Claim) -> list[str]:
    if c.shown is None or c.figure is None or not (math.isfinite(c.shown) and math.isfinite(c.figure)):
        return []
    if math.copysign(1, c.shown) != math.copysign(1, c.figure) or abs(c.shown - c.figure) > c.tolerance:
        return [f"{c.where} : « {c.text} » annonce {c.shown:+.3f}, sa figure montre {c.figure:+.3f}"]
    return []


def _interval_problems(ctx: StudyContext) -> list[str]:
    """A verdict established while the interval shown beside it contains 0 (the tables print both)."""
    return [f"{v.key} : établi alors que son intervalle [{v.low:.3f} ; {v.high:.3f}] contient 0"
            for v in (ctx.verdicts.values() if ctx.verdicts is not None else [])
            if v.established and math.isfinite(v.low) and math.isfinite(v.high) and v.low <= 0 <= v.high]


def check(claims: list[Claim], ctx: StudyContext) -> list[str]:
    """Every contradiction between a claim and what it states, and every verdict established against its own
    interval (empty: consistent)."""
    problems: list[str] = _interval_problems(ctx)
    for c in claims:
        problems += _key_problems(c, ctx)
        if c.none_in:
            problems += _none_problems(c, ctx)
        if c.beats:
            problems += _beats_problems(c, ctx)
        problems += _figure_problems(c)
    return problems


def builders() -> list[Callable[[StudyContext, list[Claim]], object]]:
    """The text builders that state verdicts, each called with a list to fill (order of the documents)."""
    from pipeline.report import analysis, postprocessing, preprocessing, slides
    from pipeline.report import data as data_chapter
    from pipeline.report import verdicts as V

    return [data_chapter.data_claims, preprocessing.weighting_narrative, postprocessing.postprocessing_narrative,
            analysis.analysis_narrative, analysis.amplification_narrative,
            V.primary_summary, V.primary_answer, slides.title_primary, slides.title_data,
            slides.title_amplification, slides.title_sees, slides.title_groups, slides.slide_weighting_message,
            slides.pareto_message]


def collect(ctx: StudyContext) -> list[Claim]:
    claims: list[Claim] = []
    for build in builders():
        build(ctx, claims=claims)
    return claims


def ensure(ctx: StudyContext) -> str:
    """Run the check at render: raise under FAIRCXR_STRICT=1, else warn on stderr; the appendix's sentence."""
    claims = collect(ctx)
    problems = check(claims, ctx)
    if problems and os.environ.get(STRICT_ENV) == "1":
        raise ConsistencyError("generated text contradicts the verdicts:\n- " + "\n- ".join(problems))
    for p in problems:
        print(f"warning: consistency: {p}", file=sys.stderr)
    if problems:
        return ("**Contrôle de cohérence : contradictions trouvées** entre le texte généré et les verdicts "
                "(signalez-les) :\n\n" + "\n".join(f"- {p}" for p in problems))
    return (f"Contrôle de cohérence automatique : {len(claims)} affirmations générées qui citent un verdict ou une "
            "figure (phrases des chapitres 2 à 5 et de la conclusion, titres de diapositives) ont été comparées à "
            "ce qu'elles citent ; aucune contradiction parmi elles. Les autres phrases générées ne sont pas "
            "vérifiées automatiquement : relisez-les.")
