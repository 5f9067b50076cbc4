"""One visual style for the whole project: fixed colours per group, an Altair theme, chart helpers.

Every chapter draws with these helpers, so a group (Femme, AP, 60 ans et plus, a method) has the
same colour in every figure. Charts are about 600 px wide, with fonts readable in the PDF (static
PNG) and French tooltips in the HTML. Numbers on axes use the French locale (decimal comma).
"""

from __future__ import annotations

import re
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from . import narrative as N
from . import schema as S

WIDTH = 600
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
NEUTRAL = "#4D4D4D"
# Colour-blind-safe (Okabe-Ito and Paul Tol); one fixed colour per group of each attribute.
PALETTE: dict[str, dict[str, str]] = {
    S.SEX: {"M": "#0072B2", "F": "#D55E00"},
    S.VIEW: {"PA": "#009E73", "AP": "#E69F00"},
    S.SPLIT: {"train": "#9E9E9E", "valid": "#332288"},
    S.LABEL: {"0": "#9E9E9E", "1": "#AA3377"},
    "estimate": {"brut": "#000000", "ajusté": "#7F7F7F"},
    "method": {
        "uniform": NEUTRAL, "none": NEUTRAL,
        "class_balanced": "#88CCEE", "group_balanced": "#44AA99", "reweighing": "#117733",
        "reweighing_intersectional": "#999933", "effective_number": "#DDCC77", "jtt": "#CC6677",
        "threshold_global": "#332288", "equal_opportunity": "#AA4499", "to_demographic_parity": "#882255",
        "to_equalized_odds": "#6699CC", "to_tpr_parity": "#EE7733", "reject_option": "#009988",
        "calibrated_eq_odds": "#EE3377",
    },
}
AGE_RAMP = ("#DADAEB", "#BCBDDC", "#9E9AC8", "#807DBA", "#6A51A3", "#54278F", "#3F007D")
FALLBACK = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#000000")
MISSING_COLOR = "#D9D9D9"
FR_LOCALE = {"number": {"decimal": ",", "thousands": "\u00a0", "grouping": [3], "currency": ["", "\u00a0€"],
                        "percent": "\u00a0%", "minus": "\u2212"}}


# ---------------------------------------------------------------- theme


def theme() -> dict[str, Any]:
    """The project's Altair theme: print-readable fonts, light grid, French number locale."""
    axis = {"labelFontSize": 12, "titleFontSize": 13, "titleFontWeight": "normal", "labelColor": "#222222",
            "titleColor": "#222222", "gridColor": "#E8E8E8", "domainColor": "#888888", "tickColor": "#888888"}
    return {"config": {
        "font": FONT, "locale": FR_LOCALE, "view": {"continuousWidth": WIDTH, "continuousHeight": 300,
                                                    "stroke": None},
        "axis": axis, "header": {"labelFontSize": 13, "titleFontSize": 13},
        "legend": {"labelFontSize": 12, "titleFontSize": 12, "titleFontWeight": "normal", "orient": "bottom"},
        "title": {"fontSize": 14, "anchor": "start", "fontWeight": "bold", "subtitleFontSize": 12,
                  "subtitleColor": "#444444", "offset": 8},
        "point": {"size": 80, "filled": True}, "bar": {"cornerRadiusEnd": 1},
        "concat": {"spacing": 24}, "background": "white",
    }}


def use_theme() -> None:
    """Register and enable the theme (done on import; call again after `alt.theme.enable`)."""
    alt.theme.register("faircxr", enable=True)(theme)


use_theme()


# ---------------------------------------------------------------- colours


def age_band_colors(bands: list[str]) -> dict[str, str]:
    """Light (young) to dark (old) purple, placed by the band's lower age so a band keeps its colour
    whichever other bands a chart shows; evenly spread instead if two bands would share a colour."""
    def lower(band: str) -> float:
        digits = re.match(r"\d+", str(band))
        return float(digits.group()) if digits else np.nan

    idx = [1 + round(min(lower(b), 80) / 80 * (len(AGE_RAMP) - 2)) if lower(b) == lower(b) else -1 for b in bands]
    if len(set(idx)) < len(idx) or -1 in idx:
        idx = list(np.linspace(1, len(AGE_RAMP) - 1, max(len(bands), 1)).round().astype(int))
    return {b: AGE_RAMP[i] for b, i in zip(bands, idx, strict=False)}


def group_colors(attribute: str, groups: list[Any]) -> dict[str, str]:
    """Colour of each group (keys are str(group)); fixed for known groups, stable fallback otherwise."""
    keys = [str(g) for g in groups]
    fixed = age_band_colors([k for k in keys if k != "manquant"]) if attribute == S.AGE_BAND else {}
    fixed = {**fixed, **PALETTE.get(attribute, {})}
    spare = iter(c for c in FALLBACK if c not in fixed.values())
    return {k: MISSING_COLOR if k == "manquant" else fixed[k] if k in fixed else next(spare, NEUTRAL)
            for k in keys}


def color_scale(attribute: str, groups: list[Any]) -> alt.Scale:
    """A colour scale whose domain is the French labels of `groups` (as written by `label_groups`)."""
    colors = group_colors(attribute, groups)
    return alt.Scale(domain=[N.group_label(attribute, g) for g in groups], range=list(colors.values()))


def label_colors() -> dict[str, str]:
    """Colour of every known group by its French label (« Homme », « AP », « 60 ans et plus »)."""
    out: dict[str, str] = {}
    for attribute in (S.SEX, S.VIEW, S.SPLIT, S.LABEL):
        for group, color in PALETTE[attribute].items():
            out[N.group_label(attribute, group)] = color
    return out


def label_scale(labels: list[str], attribute: str | None = None) -> alt.Scale:
    """A colour scale for French group labels of any attribute (for charts built from labels).

    Age bands get the purple ramp when `attribute` is age_band; unknown labels get spare colours.
    """
    labels = list(dict.fromkeys(labels))
    known = label_colors()
    if attribute == S.AGE_BAND:
        known = {**known, **dict(zip(labels, age_band_colors(labels).values(), strict=True))}
    spare = iter(c for c in FALLBACK if c not in known.values())
    return alt.Scale(domain=labels, range=[known.get(x) or next(spare, NEUTRAL) for x in labels])


def method_scale(methods: list[str]) -> alt.Scale:
    """Fixed colour per weighting / post-processing method (for the other chapters)."""
    return alt.Scale(domain=list(methods), range=list(group_colors("method", methods).values()))


def label_groups(df: pd.DataFrame, attribute_col: str, group_col: str, out: str = "label") -> pd.DataFrame:
    """Add the French label of each row's group (attribute read from `attribute_col`)."""
    labels = [N.group_label(a, g) for a, g in zip(df[attribute_col], df[group_col], strict=True)]
    return df.assign(**{out: labels})


def percent_axis(title: str | None, fmt: str = ".0%", tick_count: int = 6, labels: bool = True) -> alt.Axis:
    """A percentage axis; `labels=False` keeps only the grid (upper panels of a stacked chart)."""
    return alt.Axis(format=fmt, title=title if labels else None, tickCount=tick_count, labels=labels,
                    ticks=labels)


PREVALENCE_TITLE = "Prévalence de « malade » (IC 95 %)"


def nice_ticks(low: float, high: float, target: int = 5) -> list[float]:
    """Round tick values covering [low, high] with about `target` ticks (always including 0 if inside)."""
    span = max(high - low, 1e-9)
    raw = span / target
    step = min((m * 10 ** np.floor(np.log10(raw)) for m in (1, 2, 2.5, 5, 10)
                if m * 10 ** np.floor(np.log10(raw)) >= raw), default=raw)
    start = np.ceil(low / step) * step
    return [float(round(v, 10)) for v in np.arange(start, high + step / 2, step) if v <= high]


def signed_axis(title: str, values: list[float]) -> alt.Axis:
    """An axis of signed differences: « −5 », « 0 », « +5 »."""
    return alt.Axis(title=title, values=values, format=",.0f",
                    labelExpr="datum.value > 0 ? '+' + datum.label : datum.label")


def interval_layer(data: pd.DataFrame, x: str, low: str, high: str, y: alt.Y, color: alt.Color | alt.Value,
                   tooltip: list[Any], x_axis: alt.Axis, y_offset: Any = None,
                   domain: list[float] | None = None) -> alt.LayerChart:
    """Points with horizontal interval bars: the building block of every estimate plot."""
    base = alt.Chart(data)
    enc: dict[str, Any] = {"y": y, "color": color, "tooltip": tooltip}
    if y_offset is not None:
        enc["yOffset"] = y_offset
    scale = alt.Scale(domain=domain, zero=False) if domain else alt.Scale(zero=False)
    rules = base.mark_rule(strokeWidth=2).encode(x=alt.X(f"{low}:Q", axis=x_axis, scale=scale),
                                                 x2=f"{high}:Q", **enc)
    points = base.mark_point(size=80, filled=True, opacity=1).encode(x=alt.X(f"{x}:Q", scale=scale), **enc)
    return rules + points


# ---------------------------------------------------------------- univariate


def _split_color() -> alt.Color:
    return alt.Color("split_label:N", scale=color_scale(S.SPLIT, ["train", "valid"]), title="Partition")


def univariate_chart(univ: pd.DataFrame, images_per_patient: pd.DataFrame | None = None) -> alt.ConcatChart:
    """Share of images per group, train vs valid side by side, one panel per variable."""
    df = label_groups(univ, "variable", "group").assign(
        split_label=lambda d: d["split"].map(N.SPLIT_FR),
        text=lambda d: [f"{N.integer(n)} images, {N.integer(p)} patients ({N.percent(s, 1)})"
                        for n, p, s in zip(d["n_images"], d["n_patients"], d["share"], strict=True)])
    panels = [_bars(g, N.attribute_label(v), g.sort_values("order")["label"].unique().tolist())
              for v, g in df.groupby("variable", sort=False)]
    if images_per_patient is not None:
        ipp = images_per_patient[images_per_patient["split"] != "total"].assign(
            label=lambda d: d["bin"], share=lambda d: d["share_images"],
            split_label=lambda d: d["split"].map(N.SPLIT_FR),
            text=lambda d: [f"{N.integer(p)} patients, {N.integer(n)} images ({N.percent(s, 1)} des images)"
                            for p, n, s in zip(d["n_patients"], d["n_images"], d["share_images"], strict=True)])
        panels.append(_bars(ipp, "Images du patient (nombre)", list(dict.fromkeys(ipp["bin"]))))
    return alt.concat(*panels, columns=3).resolve_scale(x="independent", xOffset="independent",
                                                        y="independent")


def _label_angle(labels: list[str], room: float) -> int:
    """0 when the labels fit side by side in `room` pixels (about 7 px a character), else -35."""
    return 0 if sum(len(str(x)) for x in labels) * 7.5 < room else -35


def _bars(df: pd.DataFrame, title: str, order: list[str]) -> alt.Chart:
    return alt.Chart(df, title=title, width=165, height=150).mark_bar().encode(
        x=alt.X("label:N", sort=order, title=None, axis=alt.Axis(labelAngle=_label_angle(order, 165))),
        xOffset=alt.XOffset("split_label:N", sort=["apprentissage", "validation"]),
        y=alt.Y("share:Q", axis=percent_axis("Part des images"), scale=alt.Scale(zero=True)),
        color=_split_color(),
        tooltip=[alt.Tooltip("label:N", title="Groupe"), alt.Tooltip("split_label:N", title="Partition"),
                 alt.Tooltip("text:N", title="Effectif")])


# ---------------------------------------------------------------- prevalence


def _prevalence_text(df: pd.DataFrame) -> list[str]:
    return [N.percent_ci(p, lo, hi) for p, lo, hi in zip(df["prevalence"], df["low"], df["high"], strict=True)]


def _domain(df: pd.DataFrame, low: str = "low", high: str = "high", pad: float = 0.01,
            step: float = 0.05) -> list[float]:
    """Axis range covering every interval, widened to round values (multiples of `step`) in [0, 1]."""
    lo = np.floor((np.nanmin(df[low]) - pad) / step) * step
    hi = np.ceil((np.nanmax(df[high]) + pad) / step) * step
    return [float(max(0.0, lo)), float(min(1.0, hi))]


def prevalence_chart(prev: pd.DataFrame, overall: pd.Series | None = None) -> alt.VConcatChart:
    """Prevalence of `malade` by group with 95 % intervals, one row of panels per attribute."""
    domain = _domain(prev)
    panels = []
    n_panels = prev["attribute"].nunique()
    for i, (attribute, g) in enumerate(prev.groupby("attribute", sort=False)):
        groups = g["group"].tolist()
        df = label_groups(g, "attribute", "group").assign(text=_prevalence_text(g), n=g["n_images"].map(N.integer))
        y = alt.Y("label:N", sort=[N.group_label(attribute, x) for x in groups], title=None)
        layer = interval_layer(df, "prevalence", "low", "high", y,
                               alt.Color("label:N", scale=color_scale(attribute, groups), legend=None),
                               [alt.Tooltip("label:N", title="Groupe"), alt.Tooltip("text:N", title="Prévalence"),
                                alt.Tooltip("n:N", title="Images")],
                               percent_axis(PREVALENCE_TITLE, labels=i == n_panels - 1), domain=domain)
        if overall is not None:
            layer += alt.Chart(pd.DataFrame({"p": [overall["prevalence"]]})).mark_rule(
                strokeDash=[4, 3], color=NEUTRAL).encode(x="p:Q")
        panels.append(layer.properties(title=N.attribute_label(attribute), width=WIDTH - 140,
                                       height=24 * len(groups)))
    return alt.vconcat(*panels, spacing=12).resolve_scale(color="independent")


def intersection_chart(inter: pd.DataFrame) -> alt.VConcatChart:
    """Prevalence in each cell of each attribute pair: rows = first attribute, colour = second."""
    domain = _domain(inter)
    panels = []
    n_panels = inter["pair"].nunique()
    for i, (_, g) in enumerate(inter.groupby("pair", sort=False)):
        a, b = g["attr_a"].iloc[0], g["attr_b"].iloc[0]
        ga, gb = list(dict.fromkeys(g["group_a"])), list(dict.fromkeys(g["group_b"]))
        df = g.assign(label_a=[N.group_label(a, x) for x in g["group_a"]],
                      label=[N.group_label(b, x) for x in g["group_b"]], text=_prevalence_text(g),
                      n=g["n_images"].map(N.integer))
        layer = interval_layer(
            df, "prevalence", "low", "high",
            alt.Y("label_a:N", sort=[N.group_label(a, x) for x in ga], title=N.attribute_label(a)),
            alt.Color("label:N", scale=color_scale(b, gb), title=N.attribute_label(b),
                      legend=alt.Legend(orient="right")),
            [alt.Tooltip("label_a:N", title=N.attribute_label(a)), alt.Tooltip("label:N", title=N.attribute_label(b)),
             alt.Tooltip("text:N", title="Prévalence"), alt.Tooltip("n:N", title="Images")],
            percent_axis(PREVALENCE_TITLE, labels=i == n_panels - 1),
            y_offset=alt.YOffset("label:N", sort=[N.group_label(b, x) for x in gb]), domain=domain)
        panels.append(layer.properties(width=WIDTH - 230, height=16 * len(ga) * len(gb),
                                       title=f"{N.attribute_label(a)} × {N.attribute_label(b).lower()}"))
    return alt.vconcat(*panels, spacing=12).resolve_scale(color="independent")


# ---------------------------------------------------------------- attribute associations


def association_chart(composition: pd.DataFrame, associations: pd.DataFrame) -> alt.HConcatChart:
    """Heatmaps of the composition of each attribute pair (each row sums to 100 %), V in subtitle."""
    panels = []
    for r in associations.itertuples():
        g = composition[(composition["attr_a"] == r.attr_a) & (composition["attr_b"] == r.attr_b)]
        df = g.assign(label_a=[N.group_label(r.attr_a, x) for x in g["group_a"]],
                      label_b=[N.group_label(r.attr_b, x) for x in g["group_b"]],
                      text=g["share"].map(N.percent), ci=[N.percent_ci(s, lo, hi) for s, lo, hi in
                                                          zip(g["share"], g["low"], g["high"], strict=True)],
                      n=g["n_images"].map(N.integer))
        order_a = [N.group_label(r.attr_a, x) for x in dict.fromkeys(g["group_a"])]
        order_b = [N.group_label(r.attr_b, x) for x in dict.fromkeys(g["group_b"])]
        cell = 45 if max(len(x) for x in order_b) <= 5 else 70
        base = alt.Chart(df).encode(x=alt.X("label_b:N", sort=order_b, title=N.attribute_label(r.attr_b),
                                            axis=alt.Axis(labelAngle=_label_angle(order_b, cell * len(order_b)))),
                                    y=alt.Y("label_a:N", sort=order_a, title=N.attribute_label(r.attr_a)))
        heat = base.mark_rect().encode(
            color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=None),
            tooltip=[alt.Tooltip("label_a:N", title=N.attribute_label(r.attr_a)),
                     alt.Tooltip("label_b:N", title=N.attribute_label(r.attr_b)),
                     alt.Tooltip("ci:N", title="Part de la ligne"), alt.Tooltip("n:N", title="Images")])
        text = base.mark_text(fontSize=12).encode(
            text="text:N", color=alt.condition("datum.share > 0.6", alt.value("white"), alt.value("black")))
        subtitle = f"V de Cramér {N.ratio_ci(r.cramers_v, r.v_low, r.v_high)}"
        panels.append((heat + text).properties(
            width=cell * len(order_b), height=32 * len(order_a),
            title=alt.TitleParams(f"{N.attribute_label(r.attr_a)} × {N.attribute_label(r.attr_b).lower()}",
                                  subtitle=subtitle)))
    return alt.hconcat(*panels)


# ---------------------------------------------------------------- Simpson's paradox


def simpson_frame(summary: pd.DataFrame, strata: pd.DataFrame) -> pd.DataFrame:
    """Long frame of crude, stratum-specific and adjusted risk differences (in points) per panel."""
    rows = []
    for r in summary.itertuples():
        panel = (f"{N.group_label(r.attribute, r.group)} vs {N.group_label(r.attribute, r.reference)}, "
                 f"selon {N.ATTRIBUTE_NOUN.get(r.stratifier, (r.stratifier,))[0]}")
        rows.append({"panel": panel, "kind": "brut", "label": "Brut", "rd": r.crude_rd,
                     "low": r.crude_rd_low, "high": r.crude_rd_high, "verdict": N.VERDICT_FR[r.verdict],
                     "stratifier": r.stratifier, "group": "brut"})
        sub = strata[(strata["attribute"] == r.attribute) & (strata["group"] == r.group)
                     & (strata["stratifier"] == r.stratifier) & ~strata["small"]]
        rows += [{"panel": panel, "kind": "strate", "label": N.group_label(r.stratifier, s.stratum), "rd": s.rd,
                  "low": s.rd_low, "high": s.rd_high, "verdict": N.VERDICT_FR[r.verdict],
                  "stratifier": r.stratifier, "group": str(s.stratum)} for s in sub.itertuples()]
        rows.append({"panel": panel, "kind": "ajusté", "label": "Ajusté (MH)", "rd": r.adj_rd,
                     "low": r.adj_rd_low, "high": r.adj_rd_high, "verdict": N.VERDICT_FR[r.verdict],
                     "stratifier": r.stratifier, "group": "ajusté"})
    df = pd.DataFrame(rows)
    df[["rd", "low", "high"]] *= 100
    df["text"] = [N.points_ci(d / 100, lo / 100, hi / 100) for d, lo, hi in zip(df["rd"], df["low"], df["high"],
                                                                               strict=True)]
    return df


def _simpson_colors(df: pd.DataFrame) -> alt.Scale:
    domain, colors = ["Brut", "Ajusté (MH)"], ["#000000", "#7F7F7F"]
    for stratifier, g in df[df["kind"] == "strate"].groupby("stratifier", sort=False):
        groups = list(dict.fromkeys(g["group"]))
        for grp, col in group_colors(stratifier, groups).items():
            label = N.group_label(stratifier, grp)
            if label not in domain:
                domain.append(label)
                colors.append(col)
    return alt.Scale(domain=domain, range=colors)


def simpson_chart(summary: pd.DataFrame, strata: pd.DataFrame, columns: int = 2) -> alt.ConcatChart:
    """Crude vs within-stratum vs Mantel-Haenszel differences with 95 % intervals, one panel per
    (contrast, stratifier); a reversal shows the crude point on the other side of 0."""
    df = simpson_frame(summary, strata)
    scale = _simpson_colors(df)
    lo, hi = float(np.nanmin(df["low"])), float(np.nanmax(df["high"]))
    domain = [min(lo, 0) - 1, max(hi, 0) + 1]
    axis = signed_axis("Écart de prévalence (points)", nice_ticks(domain[0], domain[1], 4))
    panels = []
    for panel, g in df.groupby("panel", sort=False):
        y = alt.Y("label:N", sort=list(g["label"]), title=None)
        layer = interval_layer(
            g, "rd", "low", "high", y, alt.Color("label:N", scale=scale, legend=None),
            [alt.Tooltip("label:N", title="Estimation"), alt.Tooltip("text:N", title="Écart (IC 95 %)")],
            axis, domain=domain)
        zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(color=NEUTRAL, strokeDash=[4, 3]).encode(x="x:Q")
        panels.append((zero + layer).properties(
            width=WIDTH // columns - 120, height=24 * len(g),
            title=alt.TitleParams(panel, subtitle=g["verdict"].iloc[0], fontSize=13)))
    return alt.concat(*panels, columns=columns)
