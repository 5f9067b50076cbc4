"""Result figures (Altair, French): per-group rates by method, performance vs fairness, Pareto front.

Colours come from the project palette (`pipeline.figures`): one fixed colour per group and per
method, so « Femme » or « Reweighing » look the same in every chapter. Every chart takes an
optional `palette` (name -> colour) that overrides it. Inputs are the tables of
`pipeline.metrics` (bootstrap_group_metrics, compare_methods / comparison_wide) or any frame with
the same columns.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import altair as alt
import numpy as np
import pandas as pd

from pipeline.fairness.grid import pareto_frontier
from pipeline.fairness.metrics import LOWER_IS_BETTER, METRIC_LABELS_FR, comparison_wide
from pipeline.report import french as fr
from pipeline.report import style

SHORT_FR = {"tpr": "TPR (sensibilité)", "fpr": "FPR (faux positifs)", "fnr": "FNR (sous-diagnostic)",
            "selection_rate": "Taux de sélection", "precision": "Précision",
            "balanced_accuracy": "Exactitude équilibrée", "auc": "AUC", "ece": "ECE"}


LEGEND = alt.Legend(labelLimit=320, columns=2)


def method_label(name: str) -> str:
    """French name of a weighting or post-processing method (its registry's label_fr)."""
    from pipeline.fairness.postprocess import POSTPROCESSORS
    from pipeline.fairness.weighting import WEIGHTINGS

    for registry in (WEIGHTINGS, POSTPROCESSORS):
        if name in registry:
            return registry[name].label_fr
    return str(name)


def metric_title(metric: str) -> str:
    """Axis title of a metric, saying which direction is better for gaps."""
    text = METRIC_LABELS_FR.get(metric, metric)
    return f"{text} (plus petit = plus équitable)" if metric.endswith(("_diff", "_gap")) else text


def _method_scale(methods: list[str], labels: list[str], palette: Mapping[str, str] | None) -> alt.Scale:
    colors = style.group_colors("method", methods)
    colors.update({m: palette[m] for m in methods if palette and m in palette})
    return alt.Scale(domain=labels, range=[colors[str(m)] for m in methods])


def _group_scale(attribute: str, groups: list[str], palette: Mapping[str, str] | None) -> alt.Scale:
    colors = style.group_colors(attribute, groups)
    colors.update({g: palette[g] for g in groups if palette and g in palette})
    return alt.Scale(domain=[fr.group_label(attribute, g) for g in groups], range=[colors[g] for g in groups])


def rates_long(group_rates: Mapping[str, pd.DataFrame], metrics: tuple[str, ...] = ("tpr", "fpr"),
               labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Concatenate bootstrap_group_metrics tables (method -> table) into one labelled frame."""
    parts = []
    for method, table in group_rates.items():
        part = table[table["metric"].isin(metrics)].copy()
        part["method"] = method
        part["method_label"] = (labels or {}).get(method) or method_label(method)
        parts.append(part)
    data = pd.concat(parts, ignore_index=True)
    data["group_label"] = [fr.group_label(a, g) for a, g in zip(data["attribute"], data["group"], strict=True)]
    data["metric_label"] = data["metric"].map(SHORT_FR)
    data["text"] = [fr.percent_ci(e, lo, hi, 1) if np.isfinite(lo) and np.isfinite(hi) else
                    f"{fr.percent(e, 1)} (intervalle non défini)"
                    for e, lo, hi in zip(data["estimate"], data["low"], data["high"], strict=True)]
    return data


def rates_by_group_chart(group_rates: Mapping[str, pd.DataFrame], metrics: tuple[str, ...] = ("tpr", "fpr"),
                         labels: Mapping[str, str] | None = None, palette: Mapping[str, str] | None = None,
                         title: str | None = None) -> alt.HConcatChart:
    """Per-group rates (points) with 95 % patient-bootstrap intervals (bars): one row per method,
    one panel per metric; undefined values are left out of the panel."""
    data = rates_long(group_rates, metrics, labels)
    attribute = str(data["attribute"].iloc[0])
    groups = list(dict.fromkeys(data["group"]))
    methods = list(dict.fromkeys(data["method_label"]))
    color = alt.Color("group_label:N", title=fr.attribute_label(attribute),
                      scale=_group_scale(attribute, groups, palette))
    y = alt.Y("method_label:N", sort=methods, title=None, axis=alt.Axis(labelLimit=340))
    offset = alt.YOffset("group_label:N", sort=[fr.group_label(attribute, g) for g in groups])
    tooltip = [alt.Tooltip("method_label:N", title="Méthode"), alt.Tooltip("group_label:N", title="Groupe"),
               alt.Tooltip("metric_label:N", title="Mesure"), alt.Tooltip("text:N", title="Valeur (IC 95 %)")]
    panels = []
    for i, metric in enumerate(metrics):
        part = data[(data["metric"] == metric) & data["estimate"].notna()]
        layer = style.interval_layer(part, "estimate", "low", "high",
                                 y if i == 0 else y.axis(labels=False, ticks=False),
                                 color, tooltip, style.percent_axis(SHORT_FR.get(metric, metric)),
                                 y_offset=offset, domain=[0, 1])
        panels.append(layer.properties(width=(style.WIDTH - 200) // len(metrics),
                                       height=alt.Step(8 + 3 * len(groups))))
    names = " et ".join(SHORT_FR.get(m, m).split(" (")[0] for m in metrics)
    default = f"{names} par groupe ({fr.attribute_label(attribute).lower()}), IC 95 %"
    return alt.hconcat(*panels, spacing=8).properties(title=title or default)


def _wide(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    return comparison_wide(table, metrics) if "metric" in table.columns else table


def _bars_and_points(data: pd.DataFrame, x: str, y: str, color: alt.Color, tooltip: list,
                     x_title: str, y_title: str) -> alt.LayerChart:
    base = alt.Chart(data)
    xs, ys = alt.Scale(zero=False, nice=True), alt.Scale(zero=False, nice=True)
    layers = []
    if {f"{x}_low", f"{x}_high"} <= set(data.columns):
        layers.append(base.mark_rule(opacity=0.6, strokeWidth=2, clip=True).encode(
            x=alt.X(f"{x}_low:Q", scale=xs), x2=f"{x}_high:Q", y=f"{y}:Q", color=color))
    if {f"{y}_low", f"{y}_high"} <= set(data.columns):
        layers.append(base.mark_rule(opacity=0.6, strokeWidth=2, clip=True).encode(
            y=alt.Y(f"{y}_low:Q", scale=ys), y2=f"{y}_high:Q", x=f"{x}:Q", color=color))
    axis = alt.Axis(tickCount=5, labelOverlap="greedy")  # a narrow range: no tick labels printed over each other
    layers.append(base.mark_point(filled=True, size=90, opacity=1).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=xs, axis=axis), y=alt.Y(f"{y}:Q", title=y_title, scale=ys, axis=axis),
        color=color, tooltip=tooltip))
    return alt.layer(*layers)


def _ci_text(data: pd.DataFrame, m: str) -> list[str]:
    lows = data.get(f"{m}_low", pd.Series(np.nan, index=data.index))
    highs = data.get(f"{m}_high", pd.Series(np.nan, index=data.index))
    return [fr.ratio_ci(e, lo, hi) if np.isfinite(lo) and np.isfinite(hi) else
            f"{fr.number(e, 2)} (intervalle non défini)" for e, lo, hi in zip(data[m], lows, highs, strict=True)]


def _reference_ring(rows: pd.DataFrame, x: alt.X | str, y: alt.Y | str, size: int = 300) -> alt.Chart:
    """A black ring around the reference's point, drawn on top: it is never hidden behind another point."""
    return alt.Chart(rows).mark_point(size=size, filled=False, strokeWidth=2.5, color="#000000").encode(x=x, y=y)


def tradeoff_chart(comparison: pd.DataFrame, gap: str = "eo_diff", performance: str = "balanced_accuracy",
                   labels: Mapping[str, str] | None = None, palette: Mapping[str, str] | None = None,
                   title: str | None = None, reference: str | None = "uniform",
                   legend: alt.Legend | None = None) -> alt.LayerChart:
    """Performance against a fairness gap, one point per method, 95 % intervals on both axes; the
    `reference` method ringed in black on top (never hidden behind another point).

    `comparison` is `compare_methods`'s long table or its `comparison_wide` form (column `method`).
    """
    data = _wide(comparison, (gap, performance)).copy()
    data["label"] = [(labels or {}).get(m) or method_label(m) for m in data["method"]]
    data["gap_text"], data["perf_text"] = _ci_text(data, gap), _ci_text(data, performance)
    color = alt.Color("label:N", title="Méthode", legend=legend or alt.Legend(orient="right", labelLimit=260),
                      scale=_method_scale(list(data["method"]), list(data["label"]), palette))
    tooltip = [alt.Tooltip("label:N", title="Méthode"),
               alt.Tooltip("perf_text:N", title=METRIC_LABELS_FR.get(performance, performance)),
               alt.Tooltip("gap_text:N", title=METRIC_LABELS_FR.get(gap, gap))]
    chart = _bars_and_points(data, gap, performance, color, tooltip, metric_title(gap), metric_title(performance))
    ring = data[data["method"] == reference]
    if len(ring):
        chart += _reference_ring(ring, f"{gap}:Q", f"{performance}:Q")
    default = f"{METRIC_LABELS_FR.get(performance, performance)} et équité, par méthode (IC 95 %)"
    # the legend beside the plot by default, not under it: the figure is half as tall on the page
    return chart.properties(width=style.WIDTH - (120 if legend is not None else 270), height=190,
                            title=title or default)


PANEL_TITLE_CHARS = 24  # characters per line of a small multiple's title (10 px text over a ~120 px panel)


def pareto_panels(df: pd.DataFrame, x: str = "eo_diff", y: str = "balanced_accuracy", panel_col: str = "postprocessor",
                  color_col: str = "weighting", frontier_col: str = "on_frontier",
                  reference: tuple[str, str] | None = None, panel_labels: Mapping[str, str] | None = None,
                  columns: int = 4, title: str | None = None, front: bool = True) -> alt.ConcatChart:
    """The Pareto figure as small multiples: one panel per `panel_col` value (a post-processor), its points
    coloured by `color_col` (the weighting) with their intervals; every panel draws all the other points in
    light grey, the whole front as a dashed step line, and the reference (`reference`: its two method
    names) as a black ring. Shared axes: panels compare at a glance."""
    data = df.copy()
    if frontier_col not in data.columns:
        data[frontier_col] = pareto_frontier(data, minimise=x, maximise=y)
    data = data[data[x].notna() & data[y].notna()]
    names = list(dict.fromkeys(data[color_col].astype(str)))
    data["color_label"] = [method_label(m) for m in data[color_col].astype(str)]
    data["status"] = np.where(data[frontier_col].astype(bool), "sur le front", "dominée")
    data["x_text"], data["y_text"] = _ci_text(data, x), _ci_text(data, y)
    color = alt.Color("color_label:N", title="Pondération", legend=LEGEND,
                      scale=_method_scale(names, [method_label(m) for m in names], None))

    def span(m: str) -> list[float]:  # the axis covers every point and interval, in every panel
        values = data[[c for c in (m, f"{m}_low", f"{m}_high") if c in data.columns]].to_numpy(dtype=float)
        return [float(np.nanmin(values)), float(np.nanmax(values))]

    xs, ys = alt.Scale(domain=span(x), nice=True, zero=False), alt.Scale(domain=span(y), nice=True, zero=False)
    on_front = data[data[frontier_col].astype(bool)].sort_values(x)
    line = alt.Chart(on_front).mark_line(color=style.NEUTRAL, strokeDash=[5, 3], interpolate="step-after").encode(
        x=alt.X(f"{x}:Q", scale=xs), y=alt.Y(f"{y}:Q", scale=ys), order=f"{x}:Q")
    background = alt.Chart(data).mark_point(filled=True, size=30, color="#CCCCCC").encode(
        x=alt.X(f"{x}:Q", scale=xs), y=alt.Y(f"{y}:Q", scale=ys))
    tooltip = [alt.Tooltip("color_label:N", title="Pondération"), alt.Tooltip("status:N", title="Statut"),
               alt.Tooltip("y_text:N", title=METRIC_LABELS_FR.get(y, y)),
               alt.Tooltip("x_text:N", title=METRIC_LABELS_FR.get(x, x))]
    panels = []
    names_in_order = list(dict.fromkeys(data[panel_col].astype(str)))
    for k, name in enumerate(names_in_order):
        bottom_row = k >= len(names_in_order) - columns
        # the x title once, under the bottom row; no y title (it is in the chart's title): every panel has
        # the same width, so their titles align
        x_title = METRIC_LABELS_FR.get(x, x) if bottom_row else None
        own = data[data[panel_col].astype(str) == name]
        base = alt.Chart(own)
        layers = [background, line] if front else [background]
        if {f"{x}_low", f"{x}_high"} <= set(own.columns):
            layers.append(base.mark_rule(opacity=0.5, clip=True).encode(
                x=alt.X(f"{x}_low:Q", scale=xs), x2=f"{x}_high:Q", y=alt.Y(f"{y}:Q", scale=ys), color=color))
        if {f"{y}_low", f"{y}_high"} <= set(own.columns):
            layers.append(base.mark_rule(opacity=0.5, clip=True).encode(
                y=alt.Y(f"{y}_low:Q", scale=ys), y2=f"{y}_high:Q", x=alt.X(f"{x}:Q", scale=xs), color=color))
        layers.append(base.mark_point(filled=True, size=80).encode(
            # few ticks, never overlapping: a small panel's labels otherwise run together (« 0,00,2 »)
            x=alt.X(f"{x}:Q", scale=xs, title=x_title, axis=alt.Axis(tickCount=4, labelOverlap=True)),
            y=alt.Y(f"{y}:Q", scale=ys, title=None, axis=alt.Axis(tickCount=4, labelOverlap=True)),
            color=color, tooltip=tooltip, shape=alt.Shape("status:N", title="Combinaison", scale=alt.Scale(
                domain=["sur le front", "dominée"], range=["diamond", "circle"])) if front else alt.value("circle")))
        if reference is not None:
            ref = own[(own[color_col].astype(str) == reference[0]) & (own[panel_col].astype(str) == reference[1])]
            if len(ref):
                layers.append(_reference_ring(ref, alt.X(f"{x}:Q", scale=xs), alt.Y(f"{y}:Q", scale=ys), size=260))
        label = (panel_labels or {}).get(name, name)
        # a long name wraps over two lines rather than being cut (« Reject option classificati… »)
        lines = textwrap.wrap(label, PANEL_TITLE_CHARS) or [label]
        panels.append(alt.layer(*layers).properties(width=(style.WIDTH - 60) // columns - 24, height=100,
                                                    title=alt.TitleParams(lines if len(lines) > 1 else label,
                                                                          fontSize=10)))
    direction = " (← plus équitable)" if x in LOWER_IS_BETTER else ""
    y_name = SHORT_FR.get(y, METRIC_LABELS_FR.get(y, y))
    default = (f"{y_name} (↑) selon l'écart{direction}, par post-traitement ; front de Pareto en tirets" if front
               else f"{y_name} (↑) selon l'écart, par post-traitement (aucun front tracé : modèle trop faible)")
    return alt.concat(*panels, columns=columns, spacing=10).properties(title=title or default)


def collapse_ties(front: pd.DataFrame, key: list, label_col: str) -> pd.DataFrame:
    """One row per distinct value of `key` (columns or Series); ties are labelled « A (+2 identiques) »."""
    groups = front.groupby(key, sort=False, dropna=False)
    first = groups.head(1).copy()
    size = groups[label_col].transform("size")[first.index]
    first[label_col] = [f"{lab} (+{k - 1} identique{'s' if k > 2 else ''})" if k > 1 else str(lab)
                        for lab, k in zip(first[label_col], size, strict=True)]
    return first


def pareto_chart(df: pd.DataFrame, x: str = "eo_diff", y: str = "balanced_accuracy",
                 frontier_col: str = "on_frontier", label_col: str = "label", color_col: str | None = None,
                 palette: Mapping[str, str] | None = None, title: str | None = None,
                 show_labels: bool = True, front: bool = True, reference: str | None = None,
                 intervals: bool = True) -> alt.LayerChart:
    """Scatter of configurations (x: a gap to minimise, y: a performance to maximise) with the
    Pareto front drawn as a dashed line; dominated points are faded. Intervals are drawn when
    `{x}_low/_high` and `{y}_low/_high` exist. `frontier_col` is computed when absent;
    `color_col` (e.g. "weighting") colours the points by method, using the method palette;
    `show_labels` writes `label_col` next to the points of the front. `front=False` draws the points only
    (a weak model: ordering its rules would order noise). `reference`: the `label_col` value ringed in black.
    `intervals=False` (a slide): points only, the front's intervals being in its table."""
    data = df.copy()
    if frontier_col not in data.columns:
        data[frontier_col] = pareto_frontier(data, minimise=x, maximise=y)
    if label_col not in data.columns:
        data[label_col] = [str(i) for i in data.index]
    # Only the columns drawn: a grid table has hundreds, which the spec would carry (and Altair convert).
    ends = [f"{m}_{end}" for m in (x, y) for end in ("low", "high")] if intervals else []
    drawn = [x, y, *ends, frontier_col, label_col, color_col]
    data = data[[c for c in dict.fromkeys(drawn) if c and c in data.columns]]
    data["status"] = np.where(data[frontier_col].astype(bool), "sur le front de Pareto", "dominée")
    data["x_text"], data["y_text"] = _ci_text(data, x), _ci_text(data, y)
    if color_col:
        names = list(dict.fromkeys(data[color_col].astype(str)))
        data["color_label"] = [method_label(m) for m in data[color_col].astype(str)]
        labels = [method_label(m) for m in names]
        color = alt.Color("color_label:N", title="Méthode", legend=LEGEND,
                          scale=_method_scale(names, labels, palette))
    else:
        color = alt.Color("status:N", title=None, scale=alt.Scale(
            domain=["sur le front de Pareto", "dominée"], range=[style.NEUTRAL, "#BBBBBB"]))
    tooltip = [alt.Tooltip(f"{label_col}:N", title="Configuration"), alt.Tooltip("status:N", title="Statut"),
               alt.Tooltip("y_text:N", title=METRIC_LABELS_FR.get(y, y)),
               alt.Tooltip("x_text:N", title=METRIC_LABELS_FR.get(x, x))]
    cloud = _bars_and_points(data, x, y, color, tooltip, metric_title(x), metric_title(y)).encode(
        opacity=alt.condition(f"datum['{frontier_col}']", alt.value(1.0), alt.value(0.3)) if front else alt.value(0.7))
    ring = data[data[label_col] == reference]
    if len(ring):
        cloud += _reference_ring(ring, f"{x}:Q", f"{y}:Q")
    if not front:
        return cloud.properties(width=style.WIDTH - 120, height=260, title=title or
                                "Compromis performance–équité (aucun front tracé : modèle trop faible)")
    front = data[data[frontier_col].astype(bool)]
    front = collapse_ties(front, [front[x].round(12), front[y].round(12)], label_col).sort_values(x)
    line = alt.Chart(front).mark_line(color=style.NEUTRAL, strokeDash=[5, 3], interpolate="step-after").encode(
        x=f"{x}:Q", y=f"{y}:Q", order=f"{x}:Q")
    # Only the two ends of the front are named (the fairest, the most accurate): the points between
    # are often a few pixels apart and their names would overprint; the front's table lists them all.
    ends = [alt.Chart(front.iloc[[k]]).mark_text(align=align, dx=dx, dy=-8, fontSize=11, color=style.NEUTRAL).encode(
        x=f"{x}:Q", y=f"{y}:Q", text=f"{label_col}:N")
        for k, align, dx in ((0, "left", 8), (-1, "right", -8))[:len(front)]]  # none for an empty front
    direction = "← plus équitable" if x in LOWER_IS_BETTER else ""
    default = f"Compromis performance–équité : front de Pareto {direction}".strip()
    layers = [line, cloud, *ends] if show_labels else [line, cloud]
    return alt.layer(*layers).properties(width=style.WIDTH - 120, height=260, title=title or default)


def message_chart(line: str, reason: str) -> alt.Chart:
    """A figure that states, in its plot area, why it has nothing to draw."""
    text = pd.DataFrame({"y": [0, 1], "text": [line, reason]})
    return alt.Chart(text).mark_text(fontSize=15, color=style.NEUTRAL).encode(
        y=alt.Y("y:O", axis=None), text="text:N").properties(width=style.WIDTH, height=60)  # two lines of text
