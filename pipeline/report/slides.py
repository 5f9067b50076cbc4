"""The defence slides (`slides.qmd`): charts sized for a room and one-sentence messages."""

from __future__ import annotations

import altair as alt

from pipeline.report import data as data_chapter
from pipeline.report.tables import beats_both, method_label, significant_moves
from pipeline.study import StudyContext


def for_slide(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Fonts readable from the back of a room; the legend beside the chart (a slide is wide, not tall)."""
    return (chart.configure_axis(labelFontSize=17, titleFontSize=19)
            .configure_legend(labelFontSize=16, titleFontSize=17, labelLimit=320, orient="right")
            .configure_header(labelFontSize=18).configure_title(fontSize=20))


def slide_prevalence_chart(ctx: StudyContext) -> alt.Chart:
    an = data_chapter.analysis(ctx)
    return data_chapter.prevalence_chart(an.prevalence, an.overall)


def slide_data_message(ctx: StudyContext) -> str:
    return data_chapter.key_message(data_chapter.analysis(ctx))


def slide_weighting_message(ctx: StudyContext) -> str:
    moves = significant_moves(ctx.comparison, "method", method_label)
    return moves[0] if moves else "Aucune pondération ne change l'équité au-delà du bruit."


def slide_pareto_message(ctx: StudyContext) -> str:
    both = beats_both(ctx)
    front = ctx.grid.frontier("eo_diff")
    return (f"{len(front)} combinaisons sur {len(ctx.grid.table)} ne sont dominées par aucune autre."
            + (f" {both[0]} fait mieux que ses deux composantes." if both else ""))
