"""French sentences and display tables generated from the numbers of the data chapter.

Numbers follow French typography: decimal comma, non-breaking space as thousands separator and
before « % », intervals written « 62 % [58 ; 66] », a true minus sign. Every function returns plain
Markdown (strings or DataFrames of strings); the chapter prints them inside a clearly marked
callout, so the user's own prose in the .qmd is never rewritten.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from . import schema as S

NBSP = "\u00a0"
MINUS = "\u2212"
DASH = "—"
GENERATED_TITLE = "Texte généré à partir des données — à garder, modifier ou supprimer"

ATTRIBUTE_FR = {**S.ATTRIBUTE_LABELS_FR, S.SPLIT: "Partition", "n_findings_group": "Nombre d'anomalies",
                "patient_images": "Images par patient"}
# (noun with article, "à ... égal(e)") for sentences.
ATTRIBUTE_NOUN = {S.SEX: ("le sexe", "à sexe égal"), S.AGE_BAND: ("la tranche d'âge", "à tranche d'âge égale"),
                  S.VIEW: ("l'incidence", "à incidence égale"), S.LABEL: ("la classe", "à classe égale")}
SPLIT_FR = {"train": "apprentissage", "valid": "validation", "total": "ensemble"}
VERDICT_FR = {"reversal": "Renversement (paradoxe de Simpson)", "weak_reversal": "Renversement non établi",
              "confounding": "Confusion", "effect_modification": "Écart variable selon la strate",
              "none": "Peu de changement"}


# ---------------------------------------------------------------- numbers


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float | int) and not math.isfinite(float(x)))


def number(x: float | None, decimals: int = 1, sign: bool = False) -> str:
    """1234.5 -> « 1 234,5 »; `sign` adds « + » to positive values; NaN -> « — »."""
    if _missing(x):
        return DASH
    text = f"{abs(x):,.{decimals}f}".replace(",", NBSP).replace(".", ",")
    is_zero = set(text) <= set("0," + NBSP)
    prefix = "" if is_zero else MINUS if x < 0 else "+" if sign else ""
    return prefix + text


def integer(n: float | None) -> str:
    return number(n, 0)


def precision(low: float, high: float) -> int:
    """Decimals of a percentage: 1 when its interval is narrower than 5 points, else 0."""
    if _missing(low) or _missing(high):
        return 0
    return 1 if abs(high - low) * 100 < 5 else 0


def percent(p: float | None, decimals: int = 0) -> str:
    """0.623 -> « 62 % » (non-breaking space before %)."""
    return DASH if _missing(p) else f"{number(100 * p, decimals)}{NBSP}%"


def bracket(low: str, high: str) -> str:
    """« [58 ; 66] » with non-breaking spaces, so an interval never breaks across lines."""
    return f"[{low}{NBSP};{NBSP}{high}]"


def percent_ci(p: float, low: float, high: float, decimals: int | None = None) -> str:
    """« 62 % [58 ; 66] » (decimals chosen from the interval width unless given)."""
    d = precision(low, high) if decimals is None else decimals
    return f"{percent(p, d)} {bracket(number(100 * low, d), number(100 * high, d))}"


def points(d: float, decimals: int = 1) -> str:
    """A difference of proportions in percentage points: 0.052 -> « +5,2 points »."""
    if _missing(d):
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
    if _missing(p):
        return f"p{NBSP}:{NBSP}{DASH}"
    if p < 0.001:
        return f"p{NBSP}<{NBSP}0,001"
    return f"p{NBSP}={NBSP}{number(p, 3 if p < 0.01 else 2)}"


def excludes_zero(low: float, high: float) -> bool:
    return not _missing(low) and not _missing(high) and (low > 0 or high < 0)


# ---------------------------------------------------------------- groups in words


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


def generated(text: str, title: str = GENERATED_TITLE) -> str:
    """Wrap generated Markdown in a callout that says where it comes from."""
    return f'\n::: {{.callout-note appearance="simple"}}\n## {title}\n\n{text.strip()}\n:::\n'


def strength(v: float) -> str:
    """Words for a Cramér's V (orders of magnitude, not a test)."""
    if _missing(v):
        return "indéterminée"
    return ("très faible" if v < 0.1 else "faible" if v < 0.2 else "modérée" if v < 0.4 else "forte")


# ---------------------------------------------------------------- data quality and univariate


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def count(n: float, unit: str) -> str:
    """« 1 image », « 15 patients » (French: singular below 2)."""
    if _missing(n):
        return DASH
    word = unit[:-1] if abs(n) < 2 and unit.endswith("s") else unit
    return f"{integer(n)}{NBSP}{word}"


def quality_text(an: Any) -> str:
    """What the validator found, in one paragraph."""
    q = an.quality
    if q.empty:
        return ("Le validateur (`python -m pipeline check`) n'a relevé aucun problème : images lisibles, "
                "métadonnées complètes et cohérentes, aucun patient à la fois en apprentissage et en validation.")
    items = [f"{_lower_first(r.problem)} ({count(r.count, r.unit)})" if not _missing(r.count)
             else _lower_first(r.problem) for r in q.itertuples()]
    blocking = (q["level"] == "error").any()
    verdict = "dont au moins un bloquant" if blocking else "aucun n'empêche l'étude"
    return (f"Le validateur a relevé {len(q)} point(s) ({verdict}) : " + " ; ".join(items)
            + ". Le tableau ci-dessous dit ce que l'étude fait de chacun.")


def _split_gap(univ: pd.DataFrame) -> tuple[float, str]:
    """Largest train-valid difference of a group share, and where it is."""
    wide = univ.pivot_table(index=["variable", "group"], columns="split", values="share", observed=True)
    if not {"train", "valid"} <= set(wide.columns):
        return float("nan"), ""
    gap = (wide["train"] - wide["valid"]).abs()
    variable, group = gap.idxmax()
    return float(gap.max()), f"{attribute_label(variable).lower()} : {group_label(variable, group)}"


def univariate_text(an: Any) -> str:
    """Sizes, imbalance ratios, train/valid comparability, images per patient."""
    ps = an.patients.set_index("split")
    total = ps.loc["total"]
    parts = [f"Le jeu compte {integer(total['n_images'])} images de {integer(total['n_patients'])} patients"
             + (f" ({integer(ps.loc['train', 'n_images'])} en apprentissage, "
                f"{integer(ps.loc['valid', 'n_images'])} en validation)." if "valid" in ps.index else ".")]
    imb = an.imbalance[an.imbalance["split"] == "train"]
    ratios = [f"{attribute_label(r.variable).lower()} {number(r.ratio, 1)} "
              f"({group_label(r.variable, r.majority)} / {group_label(r.variable, r.minority)})"
              for r in imb.itertuples() if r.variable != "n_findings_group"]
    if ratios:
        parts.append("Rapports majoritaire / minoritaire en apprentissage : " + " ; ".join(ratios) + ".")
    gap, where = _split_gap(an.univariate)
    if not _missing(gap):
        parts.append(f"La validation reproduit la composition de l'apprentissage à {points(abs(gap)).lstrip('+')} près "
                     f"au plus ({where}).")
    parts.append(age_text(an))
    parts.append(patients_text(an))
    return " ".join(p for p in parts if p)


def age_text(an: Any) -> str:
    """Median age (quartiles) of each sex, which often explains sex differences in prevalence."""
    ages = an.ages[(an.ages["split"] == "total") & an.ages["sex"].isin(["F", "M"])].set_index("sex")
    if len(ages) < 2:
        return ""
    f, m = ages.loc["F"], ages.loc["M"]
    return (f"Âge médian : {integer(f['median'])} ans chez les femmes (quartiles {integer(f['q1'])}–"
            f"{integer(f['q3'])}), {integer(m['median'])} ans chez les hommes ({integer(m['q1'])}–"
            f"{integer(m['q3'])}).")


def patients_text(an: Any) -> str:
    """Why intervals are computed over patients, with the numbers."""
    t = an.patients.set_index("split").loc["total"]
    head = f"{percent(t['share_single'])} des patients n'ont qu'une image, mais "
    if t["share_images_10plus"] > 0:
        head += (f"{percent(t['share_images_10plus'])} des images viennent de patients qui en ont au moins "
                 f"10 (jusqu'à {integer(t['max'])})")
    else:
        head += f"les autres en ont jusqu'à {integer(t['max'])} (moyenne {number(t['mean'], 1)} par patient)"
    return (head + " : les images d'un même patient ne sont pas indépendantes, d'où des intervalles "
            "calculés par bootstrap sur les patients.")


# ---------------------------------------------------------------- bivariate


def _test_row(an: Any, attribute: str) -> pd.Series | None:
    rows = an.tests[an.tests["attribute"] == attribute]
    return rows.iloc[0] if len(rows) else None


def _contrast_clause(row: pd.Series, test: pd.Series | None) -> str:
    p = (f" ; test tenant compte des patients : {p_value(test['p_value'])}, V de Cramér "
         f"{number(test['cramers_v'], 3)}" if test is not None else "")
    return (f"{points_ci(row['rd'], row['rd_low'], row['rd_high'])}, OR "
            f"{ratio_ci(row['odds_ratio'], row['or_low'], row['or_high'])}{p}")


def prevalence_sentence(an: Any, attribute: str) -> str:
    """« La prévalence est de 62 % [58 ; 66] en AP contre 41 % [38 ; 44] en PA (...). »"""
    prev = an.prevalence[an.prevalence["attribute"] == attribute].reset_index(drop=True)
    if len(prev) < 2:
        return ""
    test, ref = _test_row(an, attribute), prev.iloc[0]
    other = prev.iloc[1:].loc[prev["rd"].iloc[1:].abs().idxmax()]
    d = min(precision(lo, hi) for lo, hi in zip(prev["low"], prev["high"], strict=True))
    lead = f"Selon {ATTRIBUTE_NOUN.get(attribute, (attribute,))[0]}, la prévalence"
    if len(prev) == 2:
        body = (f"{lead} est de {percent_ci(other['prevalence'], other['low'], other['high'], d)} "
                f"{group_phrase(attribute, other['group'])} contre "
                f"{percent_ci(ref['prevalence'], ref['low'], ref['high'], d)} {group_phrase(attribute, ref['group'])}")
        which = ""
    else:
        hi, lo = prev.loc[prev["prevalence"].idxmax()], prev.loc[prev["prevalence"].idxmin()]
        body = (f"{lead} va de {percent_ci(lo['prevalence'], lo['low'], lo['high'], d)} "
                f"{group_phrase(attribute, lo['group'])} à {percent_ci(hi['prevalence'], hi['low'], hi['high'], d)} "
                f"{group_phrase(attribute, hi['group'])}")
        which = f" {group_phrase(attribute, other['group'])} par rapport {_to_reference(attribute, ref['group'])}"
    clause = _contrast_clause(other, test)
    if excludes_zero(other["rd_low"], other["rd_high"]):
        return f"{body} : écart{which} de {clause}."
    return (f"{body} : l'écart{which} ({clause}) n'est pas distinguable de zéro avec ces données, "
            "ce qui ne prouve pas qu'il est nul.")


def prevalence_text(an: Any) -> str:
    """Overall prevalence, one sentence per attribute, the age trend and the design effects."""
    o = an.overall
    parts = [f"Sur l'ensemble, la prévalence de la classe *malade* est de "
             f"{percent_ci(o['prevalence'], o['low'], o['high'])}."]
    parts += [s for a in an.config.sensitive_attributes if (s := prevalence_sentence(an, a))]
    trend = an.age_trend
    if trend and not _missing(trend.get("odds_ratio")):
        parts.append(f"En continu, chaque décennie d'âge multiplie la cote d'être malade par "
                     f"{ratio_ci(trend['odds_ratio'], trend['low'], trend['high'])} ({p_value(trend['p_value'])}).")
    deff = an.prevalence["deff"].dropna()
    if len(deff):
        parts.append(f"Les effets de plan vont de {number(deff.min(), 1)} à {number(deff.max(), 1)} : "
                     "un intervalle qui traiterait chaque image comme indépendante serait environ "
                     f"{number(math.sqrt(deff.median()), 1)} fois trop étroit.")
    return "\n\n".join(parts)


def intersection_text(an: Any) -> str:
    """Lowest and highest prevalence cell of each pair of attributes."""
    parts = []
    for _, g in an.intersections.groupby("pair", sort=False):
        lo, hi = g.loc[g["prevalence"].idxmin()], g.loc[g["prevalence"].idxmax()]
        a, b = attribute_label(g["attr_a"].iloc[0]).lower(), attribute_label(g["attr_b"].iloc[0]).lower()
        parts.append(f"En croisant {a} et {b}, la prévalence va de "
                     f"{percent_ci(lo['prevalence'], lo['low'], lo['high'])} ({cell_label(lo)}) à "
                     f"{percent_ci(hi['prevalence'], hi['low'], hi['high'])} ({cell_label(hi)}).")
    return " ".join(parts)


def association_text(an: Any) -> str:
    """Cramér's V of each attribute pair and the share that makes it concrete."""
    parts = []
    for r in an.associations.itertuples():
        comp = an.composition[(an.composition["attr_a"] == r.attr_a) & (an.composition["attr_b"] == r.attr_b)]
        target = comp["group_b"].iloc[-1]
        shares = comp[comp["group_b"] == target]
        listed = ", ".join(f"{percent(s.share)} {group_phrase(r.attr_a, s.group_a)}" for s in shares.itertuples())
        test = f", {p_value(r.p_value)}" if not _missing(r.p_value) else ""
        parts.append(f"**{attribute_label(r.attr_a)} et {attribute_label(r.attr_b).lower()}** : association "
                     f"{strength(r.cramers_v)} (V de Cramér {ratio_ci(r.cramers_v, r.v_low, r.v_high)}{test}) ; "
                     f"part des images {of_group(r.attr_b, target)} : {listed}.")
    return "\n\n".join(parts)


# ---------------------------------------------------------------- Simpson's paradox


def _strata_of(an: Any, row: pd.Series) -> pd.DataFrame:
    s = an.simpson_strata
    return s[(s["attribute"] == row["attribute"]) & (s["group"] == row["group"])
             & (s["stratifier"] == row["stratifier"]) & ~s["small"]]


def _versus(row: pd.Series) -> tuple[str, str]:
    a = row["attribute"]
    return group_label(a, row["group"]), group_label(a, row["reference"])


def _direction(d: float) -> str:
    return "plus élevée" if d > 0 else "plus faible"


def reversal_text(an: Any, row: pd.Series) -> str:
    """The sentence that explains a Simpson's paradox with its numbers."""
    a, s = row["attribute"], row["stratifier"]
    g_phrase = group_phrase(a, row["group"])
    noun, equal = ATTRIBUTE_NOUN.get(s, (s, f"à {s} égal"))
    strata = _strata_of(an, row)
    same = int((strata["rd"] * row["adj_rd"] > 0).sum())
    return (f"**Paradoxe de Simpson ({attribute_label(a).lower()}, selon {noun}).** Globalement, la prévalence "
            f"est {_direction(row['crude_rd'])} {g_phrase} {than(a, row['reference'])} "
            f"({percent(row['p_group'], 1)} contre {percent(row['p_reference'], 1)}, écart brut "
            f"{points_ci(row['crude_rd'], row['crude_rd_low'], row['crude_rd_high'])}). Pourtant, {equal}, "
            f"elle est {_direction(row['adj_rd'])} {g_phrase} : "
            f"{points_ci(row['adj_rd'], row['adj_rd_low'], row['adj_rd_high'])} après ajustement de "
            f"Mantel-Haenszel (OR {ratio_ci(row['adj_or'], row['adj_or_low'], row['adj_or_high'])}), "
            f"dans le même sens dans {same} strate(s) sur {len(strata)}. Le renversement vient de la "
            f"répartition de {noun} : {subject(s, row['driver_stratum'])}, où la prévalence est la plus "
            f"forte ({percent(row['driver_prevalence'])}), représentent {percent(row['driver_share_group'])} "
            f"des images {of_group(a, row['group'])} contre {percent(row['driver_share_reference'])} pour "
            f"{subject(a, row['reference'])}. " + FACT_SENTENCE)


FACT_SENTENCE = ("Expliqué ne veut pas dire inexistant : l'écart brut reste un fait des données — c'est la "
                 "population que le modèle voit à l'apprentissage et celle sur laquelle ses métriques par "
                 "groupe seront calculées.")


def confounding_text(row: pd.Series) -> str:
    a, s = row["attribute"], row["stratifier"]
    g, r = _versus(row)
    noun = ATTRIBUTE_NOUN.get(s, (s,))[0]
    reduced = abs(row["adj_rd"]) < abs(row["crude_rd"])
    role = ("explique une partie de" if reduced else "masque une partie de")
    return (f"**{g} contre {r}, ajusté sur {noun}.** L'ajustement {'réduit' if reduced else 'accentue'} "
            f"l'écart : brut {points_ci(row['crude_rd'], row['crude_rd_low'], row['crude_rd_high'])}, ajusté "
            f"{points_ci(row['adj_rd'], row['adj_rd_low'], row['adj_rd_high'])} (OR "
            f"{number(row['crude_or'], 2)} → {number(row['adj_or'], 2)}, variation de "
            f"{percent(row['or_change'])}) : {noun} {role} l'écart selon {ATTRIBUTE_NOUN.get(a, (a,))[0]}. "
            "L'écart brut, lui, reste celui du jeu de données.")


def modification_text(an: Any, row: pd.Series) -> str:
    """The difference depends on the stratum: quote the two extreme strata and their gap."""
    s = row["stratifier"]
    g, r = _versus(row)
    strata = _strata_of(an, row).set_index("stratum")
    hi, lo = strata.loc[row["gap_max"]], strata.loc[row["gap_min"]]
    sign = ", et change même de signe" if row.get("qualitative_interaction") else ""
    return (f"**{g} contre {r}, selon {ATTRIBUTE_NOUN.get(s, (s,))[0]}.** L'écart n'est pas le même "
            f"d'une strate à l'autre{sign} : {points_ci(lo['rd'], lo['rd_low'], lo['rd_high'])} "
            f"{group_phrase(s, row['gap_min'])} contre {points_ci(hi['rd'], hi['rd_low'], hi['rd_high'])} "
            f"{group_phrase(s, row['gap_max'])} (différence {points_ci(row['gap'], row['gap_low'], row['gap_high'])}). "
            f"Un seul chiffre global (brut {points(row['crude_rd'])}, ajusté {points(row['adj_rd'])}) "
            "résume mal cette hétérogénéité.")


def stable_text(rows: pd.DataFrame) -> str:
    items = [f"{_versus(r)[0]} contre {_versus(r)[1]} ajusté sur "
             f"{ATTRIBUTE_NOUN.get(r['stratifier'], (r['stratifier'],))[0]} ({points(r['crude_rd'])} brut, "
             f"{points(r['adj_rd'])} ajusté)" for _, r in rows.iterrows()]
    return "L'ajustement change peu les autres écarts : " + " ; ".join(items) + "." if items else ""


def simpson_text(an: Any) -> str:
    """One paragraph per flagged (attribute, stratifier) row, the others in one sentence."""
    summary = an.simpson
    if summary.empty:
        return "Pas assez d'attributs renseignés pour rechercher un paradoxe de Simpson."
    parts, seen = [], set()
    for _, row in summary.iterrows():
        pair = frozenset((row["attribute"], row["stratifier"]))
        if row["verdict"] == "effect_modification" and pair in seen:
            continue  # the same interaction read from the other attribute
        seen.add(pair)
        if row["verdict"] == "reversal":
            parts.append(reversal_text(an, row))
        elif row["verdict"] == "weak_reversal":
            g, r = _versus(row)
            parts.append(f"**{g} contre {r}.** Le signe de l'écart change après ajustement sur "
                         f"{ATTRIBUTE_NOUN.get(row['stratifier'], (row['stratifier'],))[0]} (brut "
                         f"{points_ci(row['crude_rd'], row['crude_rd_low'], row['crude_rd_high'])}, ajusté "
                         f"{points_ci(row['adj_rd'], row['adj_rd_low'], row['adj_rd_high'])}), mais un des deux "
                         "intervalles contient 0 : renversement possible, non établi.")
        elif row["verdict"] == "confounding":
            parts.append(confounding_text(row))
        elif row["verdict"] == "effect_modification":
            parts.append(modification_text(an, row))
    if not summary["verdict"].isin(["reversal", "weak_reversal", "confounding", "effect_modification"]).any():
        parts.append("Aucun renversement, aucune confusion notable (variation de l'OR ≤ 10 %) ni écart "
                     "variable selon les strates n'est détecté.")
    parts.append(stable_text(summary[summary["verdict"] == "none"]))
    return "\n\n".join(p for p in parts if p)


# ---------------------------------------------------------------- consequences for the model


def model_text(an: Any) -> str:
    """What the data imply for the classifier: shortcut ceiling, what group metrics will reflect."""
    tests = an.tests.set_index("attribute")
    singles = tests[tests["n_attributes"] == 1]
    parts = []
    if len(singles):
        best = singles["auc"].idxmax()
        allrow = tests.loc[tests["n_attributes"].idxmax()]
        parts.append(f"Un « classifieur » qui ne connaîtrait que {ATTRIBUTE_NOUN.get(best, (best,))[0]} "
                     f"atteindrait une AUC de {_auc(singles.loc[best])} ; avec tous les attributs croisés, "
                     f"{_auc(allrow)} (0,5 = hasard). C'est l'information que ces attributs portent à eux "
                     "seuls sur la classe.")
    prev = an.prevalence.dropna(subset=["rd"])
    if len(prev):
        top = prev.loc[prev["rd"].abs().idxmax()]
        parts.append(f"L'écart de prévalence le plus marqué est {group_phrase(top['attribute'], top['group'])} "
                     f"({points_ci(top['rd'], top['rd_low'], top['rd_high'])} par rapport "
                     f"{_to_reference(top['attribute'], top['reference'])}) : un modèle bien calibré prédira "
                     "plus souvent *malade* dans le groupe le plus touché, et la parité démographique "
                     "reflétera cet écart réel plutôt qu'une erreur du modèle.")
    return "\n\n".join(parts)


def _auc(row: pd.Series) -> str:
    return ratio_ci(row["auc"], row["auc_low"], row["auc_high"], 3)


def _to_reference(attribute: str, group: Any) -> str:
    """« aux hommes », « aux clichés PA » (after « par rapport »)."""
    sub = subject(attribute, group)
    return "aux " + sub[4:] if sub.startswith("les ") else "au " + sub[3:] if sub.startswith("le ") else sub


# ---------------------------------------------------------------- display tables (strings)


def quality_table(an: Any) -> pd.DataFrame:
    """Validator issues in French, with what the study does about each."""
    q = an.quality
    if q.empty:
        return pd.DataFrame({"Contrôle": ["Toutes les vérifications du validateur"], "Résultat": ["aucun problème"],
                             "Ce que fait l'étude": ["Rien à corriger."]})
    return pd.DataFrame({"Niveau": q["level"].map({"error": "bloquant", "warning": "avertissement"}),
                         "Problème": q["problem"],
                         "Nombre": [count(c, u) for c, u in zip(q["count"], q["unit"], strict=True)],
                         "Ce que fait l'étude": q["action"]})


def effects_table(an: Any) -> pd.DataFrame:
    """Prevalence by group, difference and odds ratio vs the reference; the cluster test's p-value
    next to the attribute's name (one row per group, compact enough for a printed page)."""
    rows = []
    for attribute, g in an.prevalence.groupby("attribute", sort=False):
        test = _test_row(an, attribute)
        d = min(precision(lo, hi) for lo, hi in zip(g["low"], g["high"], strict=True))
        head = attribute_label(attribute) + (f" ({p_value(test['p_value'])})" if test is not None else "")
        for i, r in enumerate(g.itertuples()):
            first = i == 0
            rows.append({
                "Attribut (test)": head if first else "",
                "Groupe": group_label(attribute, r.group) + (" (réf.)" if first else ""),
                "Images (patients)": f"{integer(r.n_images)} ({integer(r.n_patients)})",
                "Prévalence [IC 95 %]": percent_ci(r.prevalence, r.low, r.high, d),
                "Écart (points)": DASH if first else points_ci(r.rd, r.rd_low, r.rd_high, unit=False),
                "OR": DASH if first else ratio_ci(r.odds_ratio, r.or_low, r.or_high),
                "Effet de plan": number(r.deff, 1),
            })
    return pd.DataFrame(rows)


def simpson_table(an: Any) -> pd.DataFrame:
    """Crude vs Mantel-Haenszel-adjusted differences, and the verdict, per attribute and stratifier."""
    s = an.simpson
    return pd.DataFrame({
        "Comparaison": [f"{group_label(r.attribute, r.group)} / {group_label(r.attribute, r.reference)}"
                        for r in s.itertuples()],
        "Ajusté sur": [attribute_label(x) for x in s["stratifier"]],
        "Écart brut (points)": [points_ci(r.crude_rd, r.crude_rd_low, r.crude_rd_high) for r in s.itertuples()],
        "Écart ajusté MH (points)": [points_ci(r.adj_rd, r.adj_rd_low, r.adj_rd_high) for r in s.itertuples()],
        "OR brut → ajusté": [f"{number(r.crude_or, 2)} → {number(r.adj_or, 2)}" for r in s.itertuples()],
        "Verdict": s["verdict"].map(VERDICT_FR),
    })


def key_message(an: Any) -> str:
    """One sentence for a slide: the largest prevalence gap, and a flagged paradox if any."""
    prev = an.prevalence.dropna(subset=["rd"])
    if prev.empty:
        return ""
    top = prev.loc[prev["rd"].abs().idxmax()]
    text = (f"Prévalence {_direction(top['rd'])} {group_phrase(top['attribute'], top['group'])} "
            f"({points_ci(top['rd'], top['rd_low'], top['rd_high'])} par rapport "
            f"{_to_reference(top['attribute'], top['reference'])}).")
    flagged = an.simpson[an.simpson["verdict"] == "reversal"] if not an.simpson.empty else an.simpson
    if len(flagged):
        r = flagged.iloc[0]
        text += (f" Paradoxe de Simpson : {group_label(r['attribute'], r['group'])} / "
                 f"{group_label(r['attribute'], r['reference'])} {points(r['crude_rd'])} brut, "
                 f"{points(r['adj_rd'])} {ATTRIBUTE_NOUN.get(r['stratifier'], ('', 'à strate égale'))[1]}.")
    return text


def chapter_summary(an: Any) -> str:
    """All generated paragraphs of the chapter, in its order (for the slides or a quick look)."""
    return "\n\n".join([quality_text(an), univariate_text(an), prevalence_text(an), intersection_text(an),
                        association_text(an), simpson_text(an), model_text(an)])
