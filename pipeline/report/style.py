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

from pipeline.data import schema as S
from pipeline.report import french as fr

WIDTH = 600


FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


NEUTRAL = "#4D4D4D"


PALETTE: dict[str, dict[str, str]] = {
    S.SEX: {"M": "#0072B2", "F": "#D55E00"},
    S.VIEW: {"PA": "#009E73", "AP": "#E69F00"},
    S.SPLIT: {"train": "#9E9E9E", "valid": "#332288"},
    S.LABEL: {"0": "#9E9E9E", "1": "#AA3377"},
    "estimate": {"brut": "#000000", "ajusté": "#7F7F7F"},
    "method": {
        "uniform": NEUTRAL, "none": NEUTRAL,
        # weightings: Paul Tol's "bright" scheme (colour-blind safe; no two greens side by side)
        "class_balanced": "#66CCEE", "group_balanced": "#228833", "reweighing": "#4477AA",
        "reweighing_intersectional": "#AA3377", "effective_number": "#CCBB44", "jtt": "#EE6677",
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
    return alt.Scale(domain=[fr.group_label(attribute, g) for g in groups], range=list(colors.values()))


def label_colors() -> dict[str, str]:
    """Colour of every known group by its French label (« Homme », « AP », « 60 ans et plus »)."""
    out: dict[str, str] = {}
    for attribute in (S.SEX, S.VIEW, S.SPLIT, S.LABEL):
        for group, color in PALETTE[attribute].items():
            out[fr.group_label(attribute, group)] = color
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
    labels = [fr.group_label(a, g) for a, g in zip(df[attribute_col], df[group_col], strict=True)]
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
