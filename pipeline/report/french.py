"""French sentences and display tables generated from the numbers of the data chapter.

Numbers follow French typography: decimal comma, non-breaking space as thousands separator and
before « % », intervals written « 62 % [58 ; 66] », a true minus sign. Every function returns plain
Markdown (strings or DataFrames of strings); the chapter prints them inside a clearly marked
callout, so the user's own prose in the .qmd is never rewritten.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import schema as S

NBSP = "\u00a0"


MINUS = "\u2212"


DASH = "—"


GENERATED_TITLE = "Texte généré à partir des données — à garder, modifier ou supprimer"


ATTRIBUTE_FR = {**S.ATTRIBUTE_LABELS_FR, S.SPLIT: "Partition", "n_findings_group": "Nombre d'anomalies",
                "patient_images": "Images par patient"}


ATTRIBUTE_NOUN = {S.SEX: ("le sexe", "à sexe égal"), S.AGE_BAND: ("la tranche d'âge", "à tranche d'âge égale"),
                  S.VIEW: ("l'incidence", "à incidence égale"), S.LABEL: ("la classe", "à classe égale")}


SPLIT_FR = {"train": "apprentissage", "valid": "évaluation", "total": "ensemble"}


def is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float | int) and not math.isfinite(float(x)))


def number(x: float | None, decimals: int = 1, sign: bool = False) -> str:
    """1234.5 -> « 1 234,5 »; `sign` adds « + » to positive values; NaN -> « — »."""
    if is_missing(x):
        return DASH
    text = f"{abs(x):,.{decimals}f}".replace(",", NBSP).replace(".", ",")
    is_zero = set(text) <= set("0," + NBSP)
    prefix = "" if is_zero else MINUS if x < 0 else "+" if sign else ""
    return prefix + text


def integer(n: float | None) -> str:
    return number(n, 0)


def precision(low: float, high: float) -> int:
    """Decimals of a percentage: 1 when its interval is narrower than 5 points, else 0."""
    if is_missing(low) or is_missing(high):
        return 0
    return 1 if abs(high - low) * 100 < 5 else 0


def percent(p: float | None, decimals: int = 0) -> str:
    """0.623 -> « 62 % » (non-breaking space before %)."""
    return DASH if is_missing(p) else f"{number(100 * p, decimals)}{NBSP}%"


def bracket(low: str, high: str) -> str:
    """« [58 ; 66] » with non-breaking spaces, so an interval never breaks across lines."""
    return f"[{low}{NBSP};{NBSP}{high}]"


def percent_ci(p: float, low: float, high: float, decimals: int | None = None) -> str:
    """« 62 % [58 ; 66] » (decimals chosen from the interval width unless given)."""
    d = precision(low, high) if decimals is None else decimals
    return f"{percent(p, d)} {bracket(number(100 * low, d), number(100 * high, d))}"


def points(d: float, decimals: int = 1) -> str:
    """A difference of proportions in percentage points: 0.052 -> « +5,2 points »."""
    if is_missing(d):
        return DASH
    unit = "point" if abs(round(100 * d, decimals)) < 2 else "points"
    return f"{number(100 * d, decimals, sign=True)}{NBSP}{unit}"


def points_ci(d: float, low: float, high: float, decimals: int = 1, unit: bool = True) -> str:
    """« +5,2 points [+3,1 ; +7,4] » (without « points » when `unit` is False)."""
    value = points(d, decimals) if unit else number(100 * d, decimals, sign=True)
    return f"{value} {bracket(number(100 * low, decimals, True), number(100 * high, decimals, True))}"


def ratio_ci(x: float, low: float, high: float, decimals: int = 2) -> str:
    """« 1,52 [1,31 ; 1,77] »."""
    return f"{number(x, decimals)} {bracket(number(low, decimals), number(high, decimals))}"


def p_value(p: float) -> str:
    """« p < 0,001 », « p = 0,003 », « p = 0,31 »."""
    if is_missing(p):
        return f"p{NBSP}:{NBSP}{DASH}"
    if p < 0.001:
        return f"p{NBSP}<{NBSP}0,001"
    return f"p{NBSP}={NBSP}{number(p, 3 if p < 0.01 else 2)}"


def excludes_zero(low: float, high: float) -> bool:
    return not is_missing(low) and not is_missing(high) and (low > 0 or high < 0)


def attribute_label(attribute: str) -> str:
    return ATTRIBUTE_FR.get(attribute, attribute)


def group_label(attribute: str, group: Any) -> str:
    """Short French label of a group, for tables and figures: Femme, AP, 60 ans et plus, malade."""
    if attribute == S.AGE_BAND:
        text = str(group)
        return f"{text[:-1]} ans et plus" if text.endswith("+") else f"{text.replace('-', '–')} ans"
    if attribute == S.SPLIT:
        return SPLIT_FR.get(str(group), str(group))
    if attribute == S.LABEL:
        return {"0": "sain", "1": "malade"}.get(str(group), str(group))
    return str(S.GROUP_LABELS_FR.get(group, group))


def group_phrase(attribute: str, group: Any) -> str:
    """« chez les femmes », « en AP », « chez les 60 ans et plus »."""
    if attribute == S.SEX:
        return {"F": "chez les femmes", "M": "chez les hommes"}.get(str(group), f"pour le sexe {group}")
    if attribute == S.AGE_BAND:
        return f"chez les {group_label(attribute, group)}"
    if attribute == S.VIEW:
        return f"en {group}"
    if "×" in str(group):
        return f"en {group}"
    return f"dans le groupe {group}"


def subject(attribute: str, group: Any) -> str:
    """Plural subject: « les femmes », « les 60 ans et plus », « les clichés AP »."""
    if attribute == S.SEX:
        return {"F": "les femmes", "M": "les hommes"}.get(str(group), f"le sexe {group}")
    if attribute == S.AGE_BAND:
        return f"les {group_label(attribute, group)}"
    if attribute == S.VIEW:
        return f"les clichés {group}"
    return f"le groupe {group}"


def than(attribute: str, group: Any) -> str:
    """« que chez les hommes », « qu'en PA »."""
    phrase = group_phrase(attribute, group)
    return f"qu'{phrase}" if phrase[0] in "aeiouéèh" else f"que {phrase}"


def of_group(attribute: str, group: Any) -> str:
    """« des femmes », « des 60 ans et plus », « en AP » (after « des images »)."""
    if attribute in (S.SEX, S.AGE_BAND):
        return "des " + subject(attribute, group).split(" ", 1)[1]
    return group_phrase(attribute, group)


def cell_label(pair_row: pd.Series) -> str:
    """« Femme × 60 ans et plus » for a row of the intersections table."""
    return (f"{group_label(pair_row['attr_a'], pair_row['group_a'])} × "
            f"{group_label(pair_row['attr_b'], pair_row['group_b'])}")


def fraction(rate: float, denominator: float) -> str:
    """« (8/13) »: the images a rate counts; « (≈8/13) » when the numerator is not whole (a mean over training
    seeds, or a randomised rule's expected decisions)."""
    numerator = float(rate) * denominator
    whole = abs(numerator - round(numerator)) < 1e-6
    return f"({'' if whole else '≈'}{round(numerator)}/{int(denominator)})"


def join(items: list[str]) -> str:
    """« a », « a et b », « a, b et c »."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " et " + items[-1] if items else ""


def generated(text: str, title: str = GENERATED_TITLE) -> str:
    """Wrap generated Markdown in a callout that says where it comes from."""
    return f'\n::: {{.callout-note appearance="simple"}}\n## {title}\n\n{text.strip()}\n:::\n'


def strength(v: float) -> str:
    """Words for a Cramér's V (orders of magnitude, not a test)."""
    if is_missing(v):
        return "indéterminée"
    return ("très faible" if v < 0.1 else "faible" if v < 0.2 else "modérée" if v < 0.4 else "forte")


def lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def count(n: float, unit: str) -> str:
    """« 1 image », « 15 patients » (French: singular below 2)."""
    if is_missing(n):
        return DASH
    word = unit[:-1] if abs(n) < 2 and unit.endswith("s") else unit
    return f"{integer(n)}{NBSP}{word}"


def threshold_source(info: dict, counts: bool = False) -> str:
    """Where the operating threshold was chosen, from a training's info (`training.predict_with_weights`):
    « la validation interne », or on frozen features « les scores hors-pli des patients d'apprentissage »;
    with `counts`, how many images (inner validation) or folds."""
    images = info.get("n_images", {})
    folds = int(info.get("threshold_folds", 0) or 0)
    if folds:
        detail = f" ({folds} plis de patients, chaque pli noté par la dernière couche ajustée sans lui)"
        return "les scores hors-pli des patients d'apprentissage" + (detail if counts else "")
    detail = f" ({count(images.get('inner_val', 0), 'images')} d'apprentissage mises de côté, tirées par patient)"
    return "la validation interne" + (detail if counts else "")


def num(x: float, digits: int = 2) -> str:
    """0.7812 -> '0,78'; NaN -> 'n.d.' (undefined, e.g. a group with one class)."""
    return "n.d." if x is None or not np.isfinite(x) else number(x, digits)


def pct(x: float, digits: int = 0) -> str:
    return "n.d." if x is None or not np.isfinite(x) else percent(x, digits)


UNDEFINED_CI = "[IC n.d.]"


ZERO_WIDTH = " (IC de largeur nulle : non interprétable)"


def ci(est: float, low: float, high: float, digits: int = 2) -> str:
    """'0,78 [0,74 ; 0,82]'; '0,04 [IC n.d.]' when the estimate exists but its interval does not; a
    zero-width interval is never shown as a precise result."""
    if not np.isfinite(low) or not np.isfinite(high):
        return num(est, digits) + (f" {UNDEFINED_CI}" if est is not None and np.isfinite(est) else "")
    if est is not None and np.isfinite(est) and high - low < 1e-12:
        return num(est, digits) + ZERO_WIDTH
    return f"{num(est, digits)} {bracket(num(low, digits), num(high, digits))}"
