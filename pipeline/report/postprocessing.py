"""Chapter 4 (post-processing): tables, charts and sentences of `chapters/04-postprocessing.qmd`."""

from __future__ import annotations

import altair as alt
import pandas as pd

from pipeline.fairness.postprocess import POSTPROCESSORS
from pipeline.report import charts
from pipeline.report.french import num, pct
from pipeline.report.tables import attribute_in_sentence, cite, grid_rows, method_label, post_label
from pipeline.study import StudyContext


def postprocessing_protocol(ctx: StudyContext) -> str:
    g, pp = ctx.grid, ctx.config.postprocessing
    return (f"Les patients de validation sont partagés **par patient** en une partie d'ajustement "
            f"({len(g.fit_patients)} patients, {pct(pp.fit_fraction)}) et une partie d'évaluation "
            f"({len(g.score_patients)} patients), stratifiées sur la classe et le "
            f"{attribute_in_sentence(pp.attribute)} (graine {pp.seed}). Chaque post-traitement, y compris le "
            "choix du seuil global, est ajusté sur la première et mesuré sur la seconde : aucune méthode "
            "n'est évaluée sur des patients qui ont servi à l'ajuster.")


def postprocessing_methods(ctx: StudyContext) -> pd.DataFrame:
    names = list(dict.fromkeys(ctx.grid.table["postprocessor"]))
    return pd.DataFrame([{"Méthode": POSTPROCESSORS[n].label_fr, "Principe": POSTPROCESSORS[n].description_fr,
                          "Règle": f"${POSTPROCESSORS[n].formula}$",
                          "Référence": cite(POSTPROCESSORS[n].reference)} for n in names])


def postprocessing_results(ctx: StudyContext) -> pd.DataFrame:
    rows = ctx.grid.table[ctx.grid.table["weighting"] == "uniform"]
    return grid_rows(ctx, rows=rows, label="post")


def postprocessing_rates_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    from pipeline.fairness.metrics import bootstrap_group_metrics

    ev, attr = ctx.config.evaluation, ctx.grid.attribute
    rates = {name: bootstrap_group_metrics(d, attr, ev.n_bootstrap, ev.seed)
             for (w, name), d in ctx.grid.decisions.items() if w == "uniform"}
    return charts.rates_by_group_chart(rates, title=f"Après post-traitement ({attribute_in_sentence(attr)}), IC 95 %")


def pareto_chart(ctx: StudyContext, gap: str = "eo_diff", labels: bool = True) -> alt.TopLevelMixin:
    data = ctx.grid.table.assign(
        label=lambda d: d["weighting"].map(method_label) + " + " + d["postprocessor"].map(post_label))
    return charts.pareto_chart(data, x=gap, frontier_col=f"frontier_{gap}", color_col="weighting", show_labels=labels)


def pareto_table(ctx: StudyContext, gap: str = "eo_diff", compact: bool = False) -> pd.DataFrame:
    """The non-dominated combinations; `compact` (slides): one row per distinct displayed result."""
    front = ctx.grid.table[ctx.grid.table[f"frontier_{gap}"]].sort_values(gap)
    rows = grid_rows(ctx, compact, front)
    if not compact:
        return rows
    return charts.collapse_ties(rows, [c for c in rows.columns if c != "Méthode"], "Méthode").reset_index(drop=True)


def postprocessing_narrative(ctx: StudyContext) -> str:
    t = ctx.grid.table
    uni = t[t["weighting"] == "uniform"].set_index("postprocessor")
    base = uni.loc["none"]
    lines = []
    for name, r in uni.iterrows():
        if name == "none":
            continue
        d_eo, lo, hi = r["eo_diff_diff"], r["eo_diff_diff_low"], r["eo_diff_diff_high"]
        d_ba = r["balanced_accuracy_diff"]
        verdict = ("réduit" if hi < 0 else "augmente" if lo > 0 else "ne change pas de façon établie")
        lines.append(f"- **{post_label(name)}** {verdict} l'écart d'equalized odds ({num(base['eo_diff'])} → "
                     f"{num(r['eo_diff'])}, différence {num(d_eo)} [{num(lo)}\u202f; {num(hi)}]) pour une "
                     f"variation d'exactitude équilibrée de {num(d_ba)}.")
    front = ctx.grid.frontier("eo_diff")
    names = ", ".join(f"{method_label(w)} + {post_label(p)}" for w, p in
                      zip(front["weighting"], front["postprocessor"], strict=True))
    lines.append(f"\nLe front de Pareto (exactitude équilibrée contre écart d'equalized odds) contient : {names}.")
    return "\n".join(lines)
