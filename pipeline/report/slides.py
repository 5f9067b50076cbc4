"""The defence slides (`slides.qmd`): charts sized for a room and one-sentence messages."""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from pipeline.report import analysis, charts, style, weak
from pipeline.report import data as data_chapter
from pipeline.report import french as fr
from pipeline.report import verdicts as V
from pipeline.report.french import ci, num
from pipeline.report.memo import ChartSpec, cached_chart
from pipeline.report.tables import (
    beats_both,
    combination_label,
    defined_gap,
    distinct_rules,
    gap_fallback_note,
    method_label,
    significant_moves,
)
from pipeline.study import StudyContext

SLIDE_TEXT_PX = 20  # the smallest chart text on a 1280 x 720 slide (measured in Chromium by the tests)


_TOP_LEVEL = (("layer", alt.LayerChart), ("hconcat", alt.HConcatChart), ("vconcat", alt.VConcatChart),
              ("concat", alt.ConcatChart), ("facet", alt.FacetChart))


# A legend label on a slide loses its parenthesis (« Reweighing (Kamiran & Calders) » -> « Reweighing »):
# at 20 px the full name does not fit beside the chart, and the parenthesis names a paper or a library.
SHORT_LEGEND_LABEL = "replace(datum.label, regexp(' [(][^)]*[)]', 'g'), '')"
# On a y axis, a method's parenthesis goes (« Égalité des erreurs (ThresholdOptimizer) »), but not a pair's,
# which says what is subtracted (« Sexe (Homme − Femme) »).
SHORT_RULE_LABEL = f"test(regexp('[(][^)]* − '), datum.label) ? datum.label : {SHORT_LEGEND_LABEL}"
LABEL_LIMIT_PX = 460  # a name the report's charts cut at 320 px (10 pt) needs more room at 20 px


def _no_font_under(chart: alt.TopLevelMixin, px: int) -> alt.TopLevelMixin:
    """The chart with every explicit font size below `px` (a panel title, a text mark) raised to `px`: the
    report's charts set some small ones, which `configure_*` defaults do not override. Explicit label
    limits are raised to `LABEL_LIMIT_PX`; legends' labels lose their parenthesis (`SHORT_LEGEND_LABEL`), and
    nominal y axes' labels too unless it names a pair (`SHORT_RULE_LABEL`)."""
    def raise_fonts(node, key=""):
        if isinstance(node, dict):
            out = {k: (max(v, px) if k.endswith("ontSize") and isinstance(v, int | float)
                       else max(v, LABEL_LIMIT_PX) if k == "labelLimit" and isinstance(v, int | float)
                       else raise_fonts(v, k))
                   for k, v in node.items()}
            if key in ("color", "shape", "strokeDash", "fill") and "field" in out and out.get("legend", {}) is not None:
                out["legend"] = {**out.get("legend", {}), "labelExpr": SHORT_LEGEND_LABEL}
            if key == "y" and out.get("type") == "nominal" and out.get("axis", {}) is not None:
                out["axis"] = {**out.get("axis", {}), "labelExpr": SHORT_RULE_LABEL}  # rule names on the y axis
            return out
        return [raise_fonts(v) for v in node] if isinstance(node, list) else node

    spec = raise_fonts(chart.to_dict())
    kind = next((cls for key, cls in _TOP_LEVEL if key in spec), alt.Chart)
    return kind.from_dict(spec)


def for_slide(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Fonts readable from the back of a room (no chart text under `SLIDE_TEXT_PX`); the legend beside the
    chart (a slide is wide, not tall)."""
    px = SLIDE_TEXT_PX
    chart = _no_font_under(chart, px)
    return (chart.configure_axis(labelFontSize=px, titleFontSize=px + 1)
            .configure_legend(labelFontSize=px, titleFontSize=px + 1, labelLimit=300, orient="right",
                              symbolSize=160)
            .configure_header(labelFontSize=px, titleFontSize=px + 1)
            .configure_title(fontSize=px + 2, subtitleFontSize=px)
            .configure_text(fontSize=px))


def slide_prevalence_chart(ctx: StudyContext) -> alt.Chart:
    an = data_chapter.analysis(ctx)
    return data_chapter.prevalence_chart(an.prevalence, an.overall)


def slide_data_message(ctx: StudyContext) -> str:
    return data_chapter.key_message(data_chapter.analysis(ctx))


# ------------------------------------------------------------------ the 10-minute defence (issue 16)

# Seconds per main slide, in the order of slides.qmd: they sum to the 10 minutes of the talk.
BUDGET: dict[str, int] = {
    "question": 40, "imbalances": 40, "data": 50, "simpson": 45, "weighting_methods": 40, "weighting": 55,
    "postprocessing_methods": 40, "postprocessing": 55, "primary": 55, "pareto": 45, "model": 55, "takeaways": 40,
    "group": 40,
}


TALK_SECONDS = 600


SLIDE_WIDTH, SLIDE_CHART_HEIGHT = 760, 330  # px of a 1280 x 720 slide, room left for the legend: more than half of it


def _clock(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def timing(slide: str) -> str:
    """« ⏱ 1:00 (de 2:45 à 3:45) »: this slide's budget and where the talk should be."""
    keys = list(BUDGET)
    start = sum(BUDGET[k] for k in keys[:keys.index(slide)])
    return f"⏱ {_clock(BUDGET[slide])} (de {_clock(start)} à {_clock(start + BUDGET[slide])})"


PANEL_GAP = 40  # px between the panels of a concatenated or faceted chart: spacing, axis labels, panel titles


def fill(chart: alt.TopLevelMixin, width: int, height: int) -> alt.TopLevelMixin:
    """The chart's panels resized so that the whole plot is about width x height (Vega-Lite sizes each
    panel, not the whole): side by side they share the width, stacked they share the height in
    proportion to their own heights, faceted they share the width by column."""
    if isinstance(chart, alt.Chart | alt.LayerChart):
        return chart.properties(width=width, height=height)
    if isinstance(chart, alt.HConcatChart):
        n = len(chart.hconcat)
        chart = chart.copy()
        chart.hconcat = [fill(c, (width - PANEL_GAP * (n - 1)) // n, height) for c in chart.hconcat]
        return chart
    if isinstance(chart, alt.VConcatChart):
        own = [c.height if isinstance(getattr(c, "height", None), int | float) else 1 for c in chart.vconcat]
        free = height - PANEL_GAP * (len(own) - 1)
        chart = chart.copy()
        chart.vconcat = [fill(c, width, max(40, int(free * h / sum(own)))) for c, h in zip(chart.vconcat, own,
                                                                                            strict=True)]
        return chart
    if isinstance(chart, alt.ConcatChart):  # a grid of panels, `columns` a row
        n = len(chart.concat)
        columns = min(n, chart.columns) if isinstance(chart.columns, int) and chart.columns > 0 else n
        rows = -(-n // columns)
        chart = chart.copy()
        chart.concat = [fill(c, (width - PANEL_GAP * (columns - 1)) // columns,
                             (height - PANEL_GAP * (rows - 1)) // rows) for c in chart.concat]
        return chart
    if isinstance(chart, alt.FacetChart):
        column = chart.facet.to_dict(validate=False).get("column", {}).get("field")
        columns = chart.data[column].astype(str).nunique() if column and isinstance(chart.data, pd.DataFrame) else 1
        chart = chart.copy()
        chart.spec = chart.spec.properties(width=(width - PANEL_GAP * (columns - 1)) // columns, height=height)
        return chart
    return chart


@cached_chart
def sized(chart: alt.TopLevelMixin, width: int = SLIDE_WIDTH, height: int = SLIDE_CHART_HEIGHT) -> alt.TopLevelMixin:
    """A chart at slide size (every panel resized, `fill`), fonts for the back of the room."""
    if isinstance(chart, ChartSpec):  # a cached spec: resize the chart it was built as
        chart = chart.chart()
    return for_slide(fill(chart, width, height))


SIMPSON_HEIGHT_PX = {1: 380}  # the Simpson slide's chart height by rows of panels (else 230: titles take the rest)


def simpson_chart(an: Any) -> alt.TopLevelMixin:
    """The Simpson slide's chart: chapter 2's flagged comparisons, two per row (alone, one takes the width)."""
    flagged = data_chapter.simpson_flagged(an.simpson)
    rows = max(1, -(-len(flagged) // 2))
    return sized(data_chapter.simpson_chart(flagged, an.simpson_strata, columns=2), width=900,
                 height=SIMPSON_HEIGHT_PX.get(rows, 230))


def pareto_gap(ctx: StudyContext) -> str:
    """The gap of the slide's Pareto chart: EO, else TPR, else DP (the first one defined for some rule)."""
    return defined_gap(ctx.grid.table)


def title_pareto(ctx: StudyContext) -> str:
    """« Combiner : 4 règles non dominées » (one line at Quarto's title size; how many were compared, the
    reference apart, is in the message under the chart, as in the report)."""
    if weak.is_weak(ctx):
        return "Combiner : aucune règle retenue"  # why: the message under the chart
    n = len(distinct_rules(ctx.grid.frontier(pareto_gap(ctx))))
    plural = "s" * (n > 1)
    return f"Combiner : {n} règle{plural} non dominée{plural}"


def pareto_message(ctx: StudyContext, claims: list | None = None) -> str:
    if weak.is_weak(ctx):
        return ("Le modèle est trop faible : ordonner les combinaisons sur ses scores reviendrait à ordonner du "
                "bruit ; aucune n'est mise en avant. " + caveat(f"Chaque point : la référence ou l'une des "
                                                        f"{len(ctx.grid.table) - 1} combinaisons comparées, "
                                                        f"{V.runs_phrase(ctx)}."))
    both = beats_both(ctx, names=True)
    notable = analysis.notable_among(ctx, both)
    if claims is not None and notable:
        from pipeline.report.consistency import Claim

        claims.append(Claim("diapositive du front de Pareto", notable[0], beats=notable[0],
                            gap=defined_gap(ctx.grid.table)))
    more = f" (et {len(notable) - 1} autre{'s' * (len(notable) > 2)})" if len(notable) > 1 else ""
    if notable:  # its gap moves notably against the reference; beating its parts stays a point estimate
        text = f"{combination_label(notable[0])}{more} réduit l'écart (exploratoire) et bat ses composantes."
    elif both:
        text = "Aucune combinaison ne fait nettement mieux que ses deux composantes."
    else:
        text = "Aucune combinaison ne fait mieux que ses deux composantes et que la référence à la fois."
    untested = (f"Écarts avec les composantes non testés ({V.runs_phrase(ctx)}) : exploratoire." if both else "")
    compared = f"{len(ctx.grid.table) - 1} combinaisons comparées à la référence."
    notes = " ".join(filter(None, [compared, untested, gap_fallback_note(ctx, pareto_gap(ctx), of="combinaison")]))
    return f"{text} {caveat(notes)}".strip()


def slide_weighting_message(ctx: StudyContext, claims: list | None = None) -> str:
    if weak.is_weak(ctx):
        return ("Aucune pondération n'est mise en avant : le modèle ne classe pas mieux que le hasard. "
                + caveat("Différences exploratoires en annexe, non interprétables ici."))
    moves = significant_moves(ctx.comparison, "method", method_label, claims)
    text = moves[0] if moves else "Aucune pondération ne change l'équité de façon notable (exploratoire)."
    if claims is not None and not moves:
        from pipeline.report.consistency import Claim

        t = ctx.comparison
        claims.append(Claim("diapositive des pondérations", text, none_in=t.attrs.get("family"),
                            quantities=tuple(m for m in t["metric"].unique() if m.endswith("_signed")),
                            include_primary=False))
    return f"{text} {caveat(gap_fallback_note(ctx, defined_gap(ctx.comparison)))}".strip()


def caveat(text: str) -> str:
    """A caveat after a slide's message, in small type: the chart keeps its room (Quarto shrinks a
    slide's lone figure to the height the text leaves)."""
    # A block of its own: in the message's paragraph, small lines would keep the message's line height.
    return f'[{text}]{{style="display: block; font-size: 0.6em; line-height: 1.3; margin-top: 0.4em"}}' \
        if text else ""


def small_number(value: str, caption: str) -> str:
    """A key number on one small line (under a figure that needs the slide's height)."""
    return (f'[**{value}** {caption}]{{style="display: block; font-size: 0.65em; line-height: 1.2; '
            'color: #333333"}')


def key_number(value: str, caption: str) -> str:
    """A key number in large type with its caption (Markdown span, styled inline)."""
    return (f'[{value}]{{style="font-size: 1.5em; font-weight: bold; color: #AA3377"}} '
            f'[{caption}]{{style="font-size: 0.8em"}}')


def _reference_amp(ctx: StudyContext):
    t = analysis.model_results(ctx).amplification
    return t[(t["method"] == ctx.grid.baseline[0]) & t["high_group"].notna()]


def _pair_phrase(attribute: str, high: str, low: str) -> tuple[str, str]:
    return fr.subject(attribute, high), fr.subject(attribute, low)


def title_data(ctx: StudyContext, claims: list | None = None) -> str:
    """The data's largest prevalence gap, as a sentence with its verdict: the gap the slide's chart draws."""
    an = data_chapter.analysis(ctx)
    r = data_chapter.largest_gap(an)
    if r is None:
        return "Les données : prévalence par groupe"
    high, low = (r["group"], r["reference"]) if r["rd"] >= 0 else (r["reference"], r["group"])
    hi, lo = _pair_phrase(r["attribute"], high, low)
    v = an.prevalence_verdict(r)
    title = f"Dans les données, {hi} sont plus souvent malades que {lo} ({fr.points(abs(r['rd']), 0)})"
    if v is None or not v.established:
        title = (f"Prévalence : {hi} face {data_chapter._to_reference(r['attribute'], low)}, "
                 f"{fr.points(abs(r['rd']), 0)} d'écart, non notable")
    if claims is not None:
        from pipeline.report.consistency import Claim

        rows = an.prevalence[an.prevalence["attribute"] == r["attribute"]].astype({"group": str}).set_index("group")
        drawn = abs(rows.loc[str(r["group"]), "prevalence"] - rows.loc[str(r["reference"]), "prevalence"])
        claims.append(Claim("diapositive des données, titre", title, shown=round(100 * abs(r["rd"])) / 100,
                            figure=float(drawn), tolerance=0.0051))
        if v is not None:
            claims.append(Claim("diapositive des données, titre", title, (v.key,), v.status, v.direction))
    return title


def _amp_established(ctx: StudyContext, attribute: str, method: str) -> bool:
    from pipeline.report.verdicts import amplification_verdict

    v = amplification_verdict(ctx, attribute, method)
    return v is not None and v.established


def _amp_row(ctx: StudyContext):
    """The main attribute's row, unless another attribute's amplification is established and larger."""
    t = _reference_amp(ctx)
    if t.empty:
        return None
    established = t[[_amp_established(ctx, a, m) for a, m in zip(t["attribute"], t["method"], strict=True)]]
    main = t[t["attribute"] == ctx.config.weighting.attribute]
    pool = established if len(established) else (main if len(main) else t)
    return pool.loc[pool["amplification"].abs().idxmax()]


def title_amplification(ctx: StudyContext, claims: list | None = None) -> str:
    """The main attribute's amplification (exploratory, mean over seeds), its number as the chart draws it."""
    r = _amp_row(ctx)
    if r is None:
        return "Amplification des biais : non calculable"
    pair = f"{fr.group_label(r['attribute'], r['high_group'])} − {fr.group_label(r['attribute'], r['low_group'])}"
    from pipeline.report.verdicts import _claim, amplification_verdict

    v = amplification_verdict(ctx, r["attribute"], r["method"])
    if v is None or not v.established:
        title = f"Écart {pair} : pas d'amplification notable (exploratoire)"
        if v is not None:
            _claim(claims, "diapositive de l'amplification, titre", title, v)
        return title
    _claim(claims, "diapositive de l'amplification, titre", pair, v)
    verb = "amplifie" if v.direction > 0 else "atténue"
    title = f"Le modèle {verb} l'écart {pair} : {fr.points(r['amplification'], 0)} (exploratoire)"
    if claims is not None:
        from pipeline.report.consistency import Claim

        figure = float(r["model_gap"] - r["data_gap"])  # the two bars the slide's chart draws
        claims.append(Claim("diapositive de l'amplification, titre", title,
                            shown=round(100 * r["amplification"]) / 100, figure=figure, tolerance=0.0051))
    return title


def amplification_number(ctx: StudyContext) -> str:
    r = _amp_row(ctx)
    if r is None:
        return ""
    return key_number(fr.points_ci(r["amplification"], r["amplification_low"], r["amplification_high"], 1),
                      f"écart du modèle − écart des données ({fr.attribute_label(r['attribute']).lower()})")


def _probe_row(ctx: StudyContext):
    t = analysis.model_results(ctx).probing
    if t is None or t["diff"].isna().all():
        return None
    return t.loc[t["diff"].idxmax()]


def title_sees(ctx: StudyContext, claims: list | None = None) -> str:
    from pipeline.report.verdicts import _claim, probe_verdict

    r = _probe_row(ctx)
    if r is None:
        return "Ce que voit le modèle : non calculable sans réseau entraîné"
    name = fr.ATTRIBUTE_NOUN.get(r["attribute"], (str(r["attribute"]),))[0]
    v = probe_verdict(ctx, r["attribute"])
    if v is not None:
        _claim(claims, "diapositive de la sonde, titre", name, v)
    if v is not None and v.established and v.direction > 0:
        return f"L'image révèle {name} : AUC {num(r['combined'])} contre {num(r['others'])} sans l'image"
    return "L'image n'en dit pas plus que les autres attributs et le diagnostic"


def sees_number(ctx: StudyContext) -> str:
    r = _probe_row(ctx)
    if r is None:
        return ""
    name = fr.ATTRIBUTE_NOUN.get(r["attribute"], (str(r["attribute"]),))[0]
    return key_number(ci(r["diff"], r["diff_low"], r["diff_high"]),
                      f"apport de l'image à l'AUC de la sonde qui lit {name} (avec les autres attributs et le "
                      "diagnostic)")


def title_images(ctx: StudyContext) -> str:
    """The maps' message, from both methods' border verdicts: a direction only where Grad-CAM and the
    integrated gradients agree (one method's reading is never the title when the other contradicts it)."""
    s = analysis.cam_stats(ctx)
    if not s:
        return "Cartes d'activation : indisponibles sans réseau entraîné"
    # One line at Quarto's title size (about 45 characters): the figure takes the rest of the slide.
    if ctx.config.is_demo and analysis.marker_shows(s):
        return "Les gradients intégrés trouvent le marqueur « AP »"
    directions = analysis.border_directions(ctx)
    if not directions:
        return "Où regarde le réseau ? Bord et centre de l'image"
    if len(set(directions.values())) > 1:
        return "Bord ou centre : cartes en désaccord"
    direction = next(iter(directions.values()))
    if direction > 0:
        return "Le réseau regarde aussi les bords de l'image"
    if direction < 0:
        return "Le réseau regarde surtout le centre de l'image"
    return "Bord de l'image : aucun écart notable avec sa surface"


def images_message(ctx: StudyContext) -> str:
    s = analysis.cam_stats(ctx)
    if not s:
        return ""
    # One small line under the figure: the figure keeps half the slide in both renderers (Quarto's type is larger)
    if ctx.config.is_demo and np.isfinite(s["marker_share_ap"]):
        return small_number(analysis.marker_gap(s), "de la masse des gradients intégrés sur le coin du marqueur, "
                                                    f"AP − PA ({fr.percent(s['marker_share_ap'], 1)} contre "
                                                    f"{fr.percent(s['marker_share_pa'], 1)})")
    both = [f"{analysis.border_text(analysis.cam_stats(ctx, m))} ({label})"
            for m, label in analysis.MAP_LABELS_FR.items()]
    return small_number(" ; ".join(both), f"de la masse des cartes sur le bord, {fr.percent(s['border_area'])} "
                                          "de la surface")


@cached_chart
def groups_chart(ctx: StudyContext, metric: str = "fnr") -> alt.TopLevelMixin:
    """Underdiagnosis (FNR) per group of every attribute, reference model, with 95 % intervals."""
    t = analysis.model_results(ctx).group_metrics
    t = t[(t["model"] == "reference") & (t["metric"] == metric)].copy()
    t["label"] = [f"{fr.attribute_label(a)} : {fr.group_label(a, g)}" for a, g in zip(t["attribute"], t["group"],
                                                                                      strict=True)]
    t["attr"] = t["attribute"].map(fr.attribute_label)
    axis = alt.Axis(format=".0%", title=f"{charts.SHORT_FR.get(metric, metric)} — IC 95 %")
    color = alt.Color("attr:N", title=None, legend=None)
    y = alt.Y("label:N", title=None, sort=None, axis=alt.Axis(labelLimit=400))
    layer = style.interval_layer(t, "estimate", "low", "high", y, color, ["label:N", alt.Tooltip("estimate:Q",
                                                                                              format=".2f")],
                                 axis, domain=[0, 1])
    return for_slide(fill(layer, 960, min(420, 52 * len(t))))


def title_groups(ctx: StudyContext, metric: str = "fnr", claims: list | None = None) -> str:
    phrase = analysis.group_gap_phrase(ctx, metric, claims, "diapositive du sous-diagnostic, titre")
    return f"Sous-diagnostic : {phrase}" if phrase else "Sous-diagnostic par groupe"


def title_subgroup(ctx: StudyContext) -> str:
    w = analysis.worst_subgroup(ctx)
    if w is None:
        return "Sous-groupes : trop petits pour désigner le pire"
    if weak.is_weak(ctx):
        return "Sous-groupes : aucun n'est désigné, le modèle est trop faible"
    return (f"Pire sous-groupe : {w['label']}, {fr.percent(w['fnr'])} de malades manqués "
            f"({w['missed']}/{int(w['n_positive'])})")


def subgroup_number(ctx: StudyContext) -> str:
    w = analysis.worst_subgroup(ctx)
    if w is None:
        return ""
    if weak.is_weak(ctx):  # the highest FNR, with its count, but not crowned
        return (f"FNR le plus élevé : {ci(w['fnr'], w['low'], w['high'])} ({w['missed']}/{int(w['n_positive'])}), "
                f"corrigé de la sélection : {num(w['shrunken'])} ; ensemble : {num(w['overall_fnr'])}. Sur un "
                f"modèle trop faible, classer {w['n_subgroups']} sous-groupes ne désigne personne.")
    return key_number(f"FNR {ci(w['fnr'], w['low'], w['high'])}",
                      f"{w['label']} ; ensemble : {num(w['overall_fnr'])} ; corrigé de la sélection parmi "
                      f"{w['n_subgroups']} sous-groupes : {num(w['shrunken'])}")


def question_numbers(ctx: StudyContext) -> str:
    """The reference model's balanced accuracy and AUC in large type."""
    from pipeline.report.verdicts import level_ci, seeds_phrase

    uni = ctx.comparison[ctx.comparison["method"] == ctx.grid.baseline[0]].set_index("metric")
    bacc = level_ci(ctx, "balanced_accuracy") or ci(*uni.loc["balanced_accuracy", ["estimate", "low", "high"]])
    auc = level_ci(ctx, "auc") or ci(*uni.loc["auc", ["estimate", "low", "high"]])
    runs = seeds_phrase(ctx).split(",")[0]
    if weak.is_weak(ctx):  # the warning first, then the numbers it does not already give
        warning = weak.slide_line(ctx)
        shown = (key_number(bacc, f"exactitude équilibrée ({runs})") if f"AUC {auc}" in warning
                 else key_number(f"AUC {auc}", f"exactitude équilibrée {bacc} ({runs})"))
        return warning + "\n\n" + shown
    return (key_number(bacc, "exactitude équilibrée du modèle de référence") + "\n\n"
            + key_number(auc, f"AUC ({runs})"))


def group_members(ctx: StudyContext) -> str:
    """The group's members and roles from study.yml (`group:`), as a Markdown list."""
    group = getattr(ctx.config, "group", None)
    members = list(getattr(group, "members", ()) or ())
    if not members:
        return "- *Membres et rôles : à compléter dans `study.yml` (section `group`)*"
    lines = [f"- **{m.get('name', '?')}** — {m.get('role', 'rôle à préciser')}" for m in members]
    if any("compléter" in str(m.get("name", "")) for m in members):
        lines.append("- *Noms et rôles à remplacer dans `study.yml` (section `group`)*")
    return "\n".join(lines)


def group_name(ctx: StudyContext) -> str:
    return str(getattr(getattr(ctx.config, "group", None), "name", "Groupe"))


def primary_message(ctx: StudyContext) -> str:
    """Under the primary chart: how each established gap moved, then (small type) what « non établi » could
    have detected. One inline expression: an empty one would leave its code on the slide."""
    from pipeline.report.verdicts import established_moves, power_message

    return f"{established_moves(ctx)} {caveat(power_message(ctx))}".strip()


def title_primary(ctx: StudyContext, claims: list | None = None) -> str:
    """The count of established primary effects (read from the verdicts), as the slide's title."""
    from pipeline.report.verdicts import _claim, established_count

    established, testable = established_count(ctx)
    for v in ctx.verdicts.family("primary") if ctx.verdicts is not None else []:
        _claim(claims, "diapositive des questions principales, titre", f"compté « {v.status} »", v)
    if not testable:
        return "Questions fixées à l'avance : aucune n'est testable ici"
    return (f"Questions fixées à l'avance : {established} effet{'s' * (established > 1)} établi"
            f"{'s' * (established > 1)} sur {testable}")


# ------------------------------------------------------------------ the methods, one line each


def _first_clause(text: str) -> str:
    """A method's description cut at its first « ; » or « : » (the slide's one line; the report has the rest)."""
    import re

    return re.split(r" ; | : ", text, maxsplit=1)[0].rstrip(". ")


def weighting_method_lines(ctx: StudyContext) -> str:
    """« - **Reweighing (Kamiran & Calders)** : $w(g, y) = …$ », one line per weighting compared."""
    from pipeline.fairness.weighting import WEIGHTINGS

    return "\n".join(f"- **{WEIGHTINGS[m].label_fr}** : ${WEIGHTINGS[m].formula}$" for m in ctx.predictions)


def postprocessing_method_lines(ctx: StudyContext) -> str:
    """« - **Égalité des chances (seuils par groupe)** : un seuil par groupe, … », one line per post-processor."""
    from pipeline.fairness.postprocess import POSTPROCESSORS

    names = list(dict.fromkeys(ctx.grid.table["postprocessor"]))
    return "\n".join(f"- **{POSTPROCESSORS[n].label_fr}** : "
                     f"{fr.lower_first(_first_clause(POSTPROCESSORS[n].description_fr))}" for n in names)


# ------------------------------------------------------------------ backup slides for the jury's questions


def counts_table(ctx: StudyContext) -> pd.DataFrame:
    """« How many images behind each rate? »: evaluation images per group and class, every sensitive
    attribute (a TPR rests on the `malade` count, an FPR on the `sain` count)."""
    from pipeline.data import schema as S

    ev = ctx.evaluation
    rows = []
    for attribute in ctx.config.sensitive_attributes:
        if attribute not in ev.columns:
            continue
        for group, g in ev.groupby(attribute, observed=True, sort=True):
            rows.append({"Groupe": f"{fr.attribute_label(attribute)} : {fr.group_label(attribute, group)}",
                         "Malades (base du TPR)": fr.integer(int((g[S.LABEL] == 1).sum())),
                         "Sains (base du FPR)": fr.integer(int((g[S.LABEL] == 0).sum())),
                         "Patients": fr.integer(g[S.PATIENT].nunique())})
    return pd.DataFrame(rows)


def seed_spread(ctx: StudyContext) -> str:
    """« Référence, exactitude équilibrée : de 0,81 à 0,91 selon la graine (écart-type 0,04, 5 entraînements) »;
    "" with one seed. The gap's spread is `preprocessing.seed_sentence`, printed beside it on the slide."""
    m = ctx.seed_metrics
    if m is None or m.empty:
        return ""
    v = m.loc[m["method"] == "uniform", "balanced_accuracy"].dropna()
    if len(v) < 2:
        return ""
    return (f"- Référence, exactitude équilibrée : de {num(v.min())} à {num(v.max())} selon la graine "
            f"(écart-type {num(v.std(ddof=1))}, {fr.count(len(v), 'entraînements')})")


def training_choices(ctx: StudyContext) -> str:
    """Why the last layer is retrained per weighting, and why this image size: from the run's own protocol."""
    t, info = ctx.config.training, ctx.train_info.get("uniform", {})
    images, patients = info.get("n_images", {}), info.get("n_patients", {})
    weightings, seeds = len(ctx.predictions), len(t.seeds)
    lines = []
    fit = f"{fr.count(images.get('fit', 0), 'images')} de {fr.count(patients.get('fit', 0), 'patients')}"
    if t.mode == "last_layer" and t.feature_source == "pretrained":
        lines.append(f"- **Dernière couche seule** : un réseau `{t.backbone}` pré-entraîné et figé, puis pour chaque "
                     f"pondération une régression logistique pondérée sur ses caractéristiques de {fit} : "
                     "aucun réseau entraîné ici")
    elif t.mode == "last_layer":
        lines.append(f"- **Dernière couche réapprise** [@kirichenko2022] : un réseau entraîné une fois par graine, "
                     f"puis pour chaque pondération une régression logistique pondérée sur {fit} que le réseau n'a "
                     f"pas vus : {seeds} entraînements de réseau au lieu de {weightings * seeds}, et des poids qui "
                     "agissent sur des caractéristiques ne séparant pas déjà ces images")
    lines.append(f"- **{t.image_size} px** : les radiographies sont réduites à {t.image_size} × {t.image_size} "
                 "pour que chaque entraînement tienne en minutes sur un processeur ; `training.image_size` dans "
                 "`study.yml` pour 256 px")
    lines.append(f"- **Seuil** : choisi sur {fr.threshold_source(info, counts=True)}, jamais sur les patients "
                 "d'évaluation")
    return "\n".join(lines)


def run_note(ctx: StudyContext, slide: str) -> str:
    """This run's own numbers for a main slide's speaker notes (the rest of the note says how to read the
    slide): what the speaker says about *these* data, from the same functions as the report."""
    from pipeline.report import preprocessing
    from pipeline.report import verdicts as V

    an = data_chapter.analysis(ctx)
    if slide == "question":
        auc = V.level_ci(ctx, "auc")
        level = f" ; modèle de référence : AUC {auc} ({V.seeds_phrase(ctx).split(',')[0]})" if auc else ""
        return f"Ici : {ctx.describe_data()}{level}."
    if slide == "imbalances":
        return data_chapter.strongest_imbalance(an)
    if slide == "simpson":
        return data_chapter.simpson_message(an) or "Ici, l'ajustement ne renverse aucun écart."
    if slide == "weighting_methods":
        inert = preprocessing.inert_weightings(ctx, short=True)
        return f"Ici : {inert}." if inert else ""
    if slide == "weighting":
        return V.primary_summary(ctx, chapter="preprocessing")
    if slide == "postprocessing":
        phrase = analysis.group_gap_phrase(ctx)
        return f"Ici, sous-diagnostic du modèle de référence : {phrase}." if phrase else ""
    if slide == "primary":
        return V.established_moves(ctx) or V.primary_summary(ctx, short=True)
    if slide == "model":
        return analysis.amplification_summary(ctx)
    if slide == "takeaways":
        return V.recommendation_summary(ctx, short=True)
    raise KeyError(f"no run note for slide {slide!r}")


def marker_note(ctx: StudyContext) -> str:
    """How an image reveals the view: the candidates, and on the demo its planted « AP » marker in a corner (the
    maps' check); a real folder's notes do not speak of it. Never empty (an inline value)."""
    demo = " Sur la démo, un marqueur « AP » est planté dans le coin de l'image." if ctx.config.is_demo else ""
    return "Marqueurs, exposition, position du patient." + demo
