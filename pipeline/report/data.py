"""Chapter 2 (data): the sentences, tables and charts of `chapters/02-data.qmd`.

Everything is computed once by `fairness.data_bias.analyse` (`data_analysis(ctx)`); this module only
writes it in French and draws it. Generated prose is returned as Markdown that the chapter prints
inside a callout marked « Texte généré », so the user's own prose is never rewritten.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.data_analysis import PREVALENCE_FAMILY, DataAnalysis, data_analysis
from pipeline.fairness.exploratory import EXPLORATORY_MARK
from pipeline.fairness.simpson import SIMPSON_FAMILY
from pipeline.report import french as fr
from pipeline.report.french import (
    ATTRIBUTE_NOUN,
    DASH,
    attribute_label,
    cell_label,
    count,
    group_label,
    group_phrase,
    integer,
    is_missing,
    lower_first,
    number,
    of_group,
    p_value,
    percent,
    percent_ci,
    points,
    points_ci,
    precision,
    ratio_ci,
    strength,
    subject,
    than,
)
from pipeline.report.memo import cached_chart
from pipeline.report.style import (
    NEUTRAL,
    PREVALENCE_TITLE,
    WIDTH,
    color_scale,
    group_colors,
    interval_layer,
    label_groups,
    nice_ticks,
    percent_axis,
    signed_axis,
)
from pipeline.report.verdicts import _claim

VERDICT_FR = {"reversal": "Renversement (paradoxe de Simpson)", "weak_reversal": "Renversement non établi",
              "confounding": "Confusion", "effect_modification": "Écart variable selon la strate",
              "none": "Peu de changement"}


def quality_text(an: Any) -> str:
    """What the validator found, in one paragraph."""
    q = an.quality
    if q.empty:
        return ("Le validateur (`python -m pipeline check`) n'a relevé aucun problème : images lisibles, "
                "métadonnées complètes et cohérentes, aucun patient à la fois en apprentissage et en évaluation.")
    items = [f"{lower_first(r.problem)} ({count(r.count, r.unit)})" if not is_missing(r.count)
             else lower_first(r.problem) for r in q.itertuples()]
    blocking = (q["level"] == "error").any()
    verdict = "dont au moins un bloquant" if blocking else "aucun n'empêche l'étude"
    return (f"Le validateur a relevé {count(len(q), 'points')} ({verdict}) : " + " ; ".join(items)
            + ". @tbl-data-quality, en annexe, dit ce que l'étude fait de chacun.")


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
    excluded = getattr(an, "excluded_valid", {}) or {}
    parts = [f"Le jeu étudié compte {integer(total['n_images'])} images de {integer(total['n_patients'])} patients"
             + (f" ({integer(ps.loc['train', 'n_images'])} en apprentissage, "
                f"{integer(ps.loc['valid', 'n_images'])} en évaluation)." if "valid" in ps.index else ".")]
    if excluded.get("images"):
        parts.append(f"Les {integer(excluded['images'])} images d'évaluation de {integer(excluded['patients'])} "
                     "patients déjà présents en apprentissage sont écartées de l'évaluation (fuite de patients) ; "
                     "tout ce chapitre décrit l'évaluation après cette exclusion, c'est-à-dire les patients "
                     "d'évaluation des chapitres suivants.")
    imb = an.imbalance[an.imbalance["split"] == "train"]
    ratios = [f"{attribute_label(r.variable).lower()} {number(r.ratio, 1)} "
              f"({group_label(r.variable, r.majority)} / {group_label(r.variable, r.minority)})"
              for r in imb.itertuples() if r.variable != "n_findings_group"]
    if ratios:
        parts.append("Rapports majoritaire / minoritaire en apprentissage : " + " ; ".join(ratios) + ".")
    gap, where = _split_gap(an.univariate)
    if not is_missing(gap):
        parts.append(f"L'évaluation reproduit la composition de l'apprentissage à {points(abs(gap)).lstrip('+')} près "
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


def _test_row(an: Any, attribute: str) -> pd.Series | None:
    rows = an.tests[an.tests["attribute"] == attribute]
    return rows.iloc[0] if len(rows) else None


def _contrast_clause(row: pd.Series, test: pd.Series | None) -> str:
    p = (f" ; test tenant compte des patients : {p_value(test['p_value'])}, V de Cramér "
         f"{number(test['cramers_v'], 3)}" if test is not None else "")
    return (f"{points_ci(row['rd'], row['rd_low'], row['rd_high'])}, OR "
            f"{ratio_ci(row['odds_ratio'], row['or_low'], row['or_high'])}{p}")


def _family_note(an: Any, family: str) -> str:
    n = sum(v.status in ("established", "not_established") for v in an.verdicts if v.family == family)
    return f"correction pour les {n} écarts de la famille" if n > 1 else "un seul écart testé"


def _gap_mark(v: Any) -> str:
    return f" {EXPLORATORY_MARK}" if v is not None and v.established else ""


def prevalence_sentence(an: Any, attribute: str, claims: list | None = None) -> str:
    """« La prévalence est de 62 % [58 ; 66] en AP contre 41 % [38 ; 44] en PA : écart … notable. » The
    verdict is the gap's in the table's family (`DataAnalysis.prevalence_verdict`)."""
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
    v = an.prevalence_verdict(other)
    note = _family_note(an, PREVALENCE_FAMILY)
    if v is not None and v.established:
        text = f"{body} : écart{which} de {clause}, notable{_gap_mark(v)}."
    else:
        text = (f"{body} : l'écart{which} ({clause}) n'est pas notable avec ces données ({note}), ce qui ne "
                "prouve pas qu'il est nul.")
    _claim(claims, f"chapitre 2, prévalence selon {attribute}", text, v)
    return text


def prevalence_text(an: Any, claims: list | None = None) -> str:
    """Overall prevalence, one sentence per attribute, the age trend and the design effects."""
    o = an.overall
    parts = [f"Sur l'ensemble, la prévalence de la classe *malade* est de "
             f"{percent_ci(o['prevalence'], o['low'], o['high'])}."]
    parts += [s for a in an.config.sensitive_attributes if (s := prevalence_sentence(an, a, claims))]
    trend = an.age_trend
    if trend and not is_missing(trend.get("odds_ratio")):
        parts.append(f"En continu, chaque décennie d'âge multiplie la cote d'être malade par "
                     f"{ratio_ci(trend['odds_ratio'], trend['low'], trend['high'])} ({p_value(trend['p_value'])}).")
    if any(v.family == PREVALENCE_FAMILY and v.established for v in an.verdicts):
        parts.append(f"{EXPLORATORY_MARK} : notable dans une famille exploratoire "
                     f"({_family_note(an, PREVALENCE_FAMILY)}, Benjamini-Hochberg à q = 0,10) ; les effets de plan "
                     "(images d'un même patient) sont en annexe.")
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
        test = f", {p_value(r.p_value)}" if not is_missing(r.p_value) else ""
        parts.append(f"**{attribute_label(r.attr_a)} et {attribute_label(r.attr_b).lower()}** : association "
                     f"{strength(r.cramers_v)} (V de Cramér {ratio_ci(r.cramers_v, r.v_low, r.v_high)}{test}) ; "
                     f"part des images {of_group(r.attr_b, target)} : {listed}.")
    return "\n\n".join(parts)


def _strata_of(an: Any, row: pd.Series) -> pd.DataFrame:
    s = an.simpson_strata
    return s[(s["attribute"] == row["attribute"]) & (s["group"] == row["group"])
             & (s["stratifier"] == row["stratifier"]) & ~s["small"]]


def _versus(row: pd.Series) -> tuple[str, str]:
    a = row["attribute"]
    return group_label(a, row["group"]), group_label(a, row["reference"])


def _direction(d: float) -> str:
    return "plus élevée" if d > 0 else "plus faible"


def reversal_text(an: Any, row: pd.Series, claims: list | None = None) -> str:
    """The sentence that explains a Simpson's paradox with its numbers (both differences established)."""
    a, s = row["attribute"], row["stratifier"]
    g_phrase = group_phrase(a, row["group"])
    noun, equal = ATTRIBUTE_NOUN.get(s, (s, f"à {s} égal"))
    strata = _strata_of(an, row)
    same = int((strata["rd"] * row["adj_rd"] > 0).sum())
    text = (f"**Paradoxe de Simpson ({attribute_label(a).lower()}, selon {noun}).** Globalement, la prévalence "
            f"est {_direction(row['crude_rd'])} {g_phrase} {than(a, row['reference'])} "
            f"({percent(row['p_group'], 1)} contre {percent(row['p_reference'], 1)}, écart brut "
            f"{points_ci(row['crude_rd'], row['crude_rd_low'], row['crude_rd_high'])}). Pourtant, {equal}, "
            f"elle est {_direction(row['adj_rd'])} {g_phrase} : "
            f"{points_ci(row['adj_rd'], row['adj_rd_low'], row['adj_rd_high'])} après ajustement de "
            f"Mantel-Haenszel (OR {ratio_ci(row['adj_or'], row['adj_or_low'], row['adj_or_high'])}), "
            f"dans le même sens dans {fr.count(same, 'strates')} sur {len(strata)}. Le renversement vient de la "
            f"répartition de {noun} : {subject(s, row['driver_stratum'])}, où la prévalence est la plus "
            f"forte ({percent(row['driver_prevalence'])}), représentent {percent(row['driver_share_group'])} "
            f"des images {of_group(a, row['group'])} contre {percent(row['driver_share_reference'])} pour "
            f"{subject(a, row['reference'])}. " + FACT_SENTENCE)
    for kind in ("crude", "adjusted"):
        _claim(claims, f"chapitre 2, paradoxe de Simpson ({a}, {s})", text, an.simpson_verdict(row, kind))
    return text


FACT_SENTENCE = "Expliqué ne veut pas dire inexistant : l'écart brut reste un fait des données."


def _status(v: Any) -> str:
    return f"notable{_gap_mark(v)}" if v.established else "non notable"


def confounding_text(an: Any, row: pd.Series, claims: list | None = None) -> str:
    """The adjustment moves the odds ratio by more than 10 % (a descriptive rule): both differences with their
    verdicts, and what the adjustment leaves of the gap."""
    a, s = row["attribute"], row["stratifier"]
    g, r = _versus(row)
    noun = ATTRIBUTE_NOUN.get(s, (s,))[0]
    crude, adjusted = an.simpson_verdict(row, "crude"), an.simpson_verdict(row, "adjusted")
    reduced = abs(row["adj_rd"]) < abs(row["crude_rd"])
    if crude.established and not adjusted.established:
        reading = f"une fois {noun} pris en compte, l'écart n'est plus notable : {noun} en explique une partie."
    elif adjusted.established and not crude.established:
        reading = f"{noun} masquait une partie de l'écart : il n'est notable qu'après ajustement."
    elif crude.established:
        reading = (f"l'écart reste notable ; {noun} en explique une partie." if reduced
                   else f"l'écart reste notable ; {noun} en masquait une partie.")
    else:
        reading = "ni l'écart brut ni l'écart ajusté ne sont notables : la variation reste descriptive."
    text = (f"**{g} contre {r}, ajusté sur {noun}** (OR {number(row['crude_or'], 2)} brut, "
            f"{number(row['adj_or'], 2)} ajusté : {percent(row['or_change'])} de variation, plus de 10 %). Écart brut "
            f"{points_ci(row['crude_rd'], row['crude_rd_low'], row['crude_rd_high'])} ({_status(crude)}), ajusté "
            f"{points_ci(row['adj_rd'], row['adj_rd_low'], row['adj_rd_high'])} ({_status(adjusted)}) ; "
            f"{reading}")
    for v in (crude, adjusted):
        _claim(claims, f"chapitre 2, confusion ({a}, {s})", text, v)
    return text


def modification_text(an: Any, row: pd.Series, claims: list | None = None) -> str:
    """The difference depends on the stratum (the gap between the extreme strata established): quote both."""
    s = row["stratifier"]
    g, r = _versus(row)
    strata = _strata_of(an, row).set_index("stratum")
    hi, lo = strata.loc[row["gap_max"]], strata.loc[row["gap_min"]]
    sign = ", et change même de signe" if row.get("qualitative_interaction") else ""
    v = an.simpson_verdict(row, "strata_gap")
    text = (f"**{g} contre {r}, selon {ATTRIBUTE_NOUN.get(s, (s,))[0]}.** L'écart n'est pas le même "
            f"d'une strate à l'autre{sign} : {points_ci(lo['rd'], lo['rd_low'], lo['rd_high'])} "
            f"{group_phrase(s, row['gap_min'])} contre {points_ci(hi['rd'], hi['rd_low'], hi['rd_high'])} "
            f"{group_phrase(s, row['gap_max'])} (différence {points_ci(row['gap'], row['gap_low'], row['gap_high'])}, "
            f"{_status(v)} ; strates extrêmes choisies sur les données) : un chiffre global (brut "
            f"{points(row['crude_rd'])}, ajusté {points(row['adj_rd'])}) la résume mal.")
    _claim(claims, f"chapitre 2, écart selon la strate ({row['attribute']}, {s})", text, v)
    return text


def stable_text(rows: pd.DataFrame) -> str:
    items = [f"{_versus(r)[0]} contre {_versus(r)[1]} ajusté sur "
             f"{ATTRIBUTE_NOUN.get(r['stratifier'], (r['stratifier'],))[0]} ({points(r['crude_rd'])} brut, "
             f"{points(r['adj_rd'])} ajusté)" for _, r in rows.iterrows()]
    return "L'ajustement change peu les autres écarts : " + " ; ".join(items) + "." if items else ""


def simpson_text(an: Any, claims: list | None = None) -> str:
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
            parts.append(reversal_text(an, row, claims))
        elif row["verdict"] == "weak_reversal":
            g, r = _versus(row)
            crude, adjusted = an.simpson_verdict(row, "crude"), an.simpson_verdict(row, "adjusted")
            text = (f"**{g} contre {r}.** Le signe de l'écart change après ajustement sur "
                    f"{ATTRIBUTE_NOUN.get(row['stratifier'], (row['stratifier'],))[0]} (brut "
                    f"{points_ci(row['crude_rd'], row['crude_rd_low'], row['crude_rd_high'])}, {_status(crude)} ; "
                    f"ajusté {points_ci(row['adj_rd'], row['adj_rd_low'], row['adj_rd_high'])}, {_status(adjusted)}) : "
                    "renversement possible, non notable.")
            parts.append(text)
            for v in (crude, adjusted):
                _claim(claims, f"chapitre 2, renversement possible ({row['attribute']}, {row['stratifier']})", text, v)
        elif row["verdict"] == "confounding":
            parts.append(confounding_text(an, row, claims))
        elif row["verdict"] == "effect_modification":
            parts.append(modification_text(an, row, claims))
    if not summary["verdict"].isin(["reversal", "weak_reversal", "confounding", "effect_modification"]).any():
        parts.append("Aucun renversement, aucune confusion notable (variation de l'OR ≤ 10 %) ni écart "
                     "variable selon les strates n'est détecté.")
    parts.append(stable_text(summary[summary["verdict"] == "none"]))
    parts.append(f"Écarts bruts, ajustés et entre strates forment une famille exploratoire "
                 f"({_family_note(an, SIMPSON_FAMILY)}, Benjamini-Hochberg à q = 0,10) ; « notable » "
                 f"({EXPLORATORY_MARK}) : retenu par cette correction, intervalle à 95 % excluant 0.")
    return "\n\n".join(p for p in parts if p)


def model_text(an: Any, claims: list | None = None) -> str:
    """What the data imply for the classifier: shortcut ceiling, what group metrics will reflect."""
    tests = an.tests.set_index("attribute")
    singles = tests[tests["n_attributes"] == 1]
    parts = []
    if len(singles):
        best = singles["auc"].idxmax()
        allrow = tests.loc[tests["n_attributes"].idxmax()]
        parts.append(f"Un « classifieur » qui ne connaîtrait que {ATTRIBUTE_NOUN.get(best, (best,))[0]} "
                     f"atteindrait une AUC de {_auc(singles.loc[best])} ; avec tous les attributs croisés, "
                     f"{_auc(allrow)} (0,5 = hasard ; toutes les images, sans séparation entre apprentissage et "
                     "évaluation). C'est l'information que ces attributs portent à eux seuls sur la classe.")
    top = largest_gap(an)
    if top is not None:
        v = an.prevalence_verdict(top)
        gap = (f"{group_phrase(top['attribute'], top['group'])} ({points_ci(top['rd'], top['rd_low'], top['rd_high'])} "
               f"par rapport {_to_reference(top['attribute'], top['reference'])})")
        if v is not None and v.established:
            text = (f"L'écart de prévalence le plus marqué est {gap}, notable{_gap_mark(v)} : un modèle bien calibré "
                    "prédira plus souvent *malade* dans le groupe le plus touché, et la parité démographique "
                    "reflétera cet écart réel plutôt qu'une erreur du modèle.")
        else:
            text = (f"L'écart de prévalence le plus marqué dans l'échantillon est {gap}, mais il n'est pas notable : "
                    "les écarts de taux de prédiction entre groupes ne pourront pas être attribués à une "
                    "différence réelle de prévalence.")
        _claim(claims, "chapitre 2, implications pour le modèle", text, v)
        parts.append(text)
    return "\n\n".join(parts)


def largest_gap(an: Any) -> pd.Series | None:
    """The prevalence row with the largest gap to its reference group (the slide's and the chapter's)."""
    prev = an.prevalence.dropna(subset=["rd"])
    return None if prev.empty else prev.loc[prev["rd"].abs().idxmax()]


def data_claims(ctx: Any, claims: list | None = None) -> None:
    """The chapter's sentences that state a verdict, for the render's consistency check."""
    an = analysis(ctx)
    prevalence_text(an, claims)
    simpson_text(an, claims)
    model_text(an, claims)


def _auc(row: pd.Series) -> str:
    return ratio_ci(row["auc"], row["auc_low"], row["auc_high"], 3)


def _to_reference(attribute: str, group: Any) -> str:
    """« aux hommes », « aux clichés PA », « à la … » (after « par rapport » or « face »)."""
    sub = subject(attribute, group)
    return "aux " + sub[4:] if sub.startswith("les ") else "au " + sub[3:] if sub.startswith("le ") else "à " + sub


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
                "Écart (points)": DASH if first else points_ci(r.rd, r.rd_low, r.rd_high, unit=False)
                + _gap_mark(an.prevalence_verdict(r._asdict())),
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
        "Écart brut (points)": [points_ci(r.crude_rd, r.crude_rd_low, r.crude_rd_high)
                                + _gap_mark(an.simpson_verdict(r, "crude")) for _, r in s.iterrows()],
        "Écart ajusté MH (points)": [points_ci(r.adj_rd, r.adj_rd_low, r.adj_rd_high)
                                     + _gap_mark(an.simpson_verdict(r, "adjusted")) for _, r in s.iterrows()],
        "OR brut → ajusté": [f"{number(r.crude_or, 2)} → {number(r.adj_or, 2)}" for r in s.itertuples()],
        "Verdict": s["verdict"].map(VERDICT_FR),
    })


def key_message(an: Any) -> str:
    """One sentence for a slide: the largest prevalence gap with its verdict, and an established paradox if any."""
    top = largest_gap(an)
    if top is None:
        return ""
    v = an.prevalence_verdict(top)
    verdict = "notable" if v is not None and v.established else "non notable"
    text = (f"Prévalence {_direction(top['rd'])} {group_phrase(top['attribute'], top['group'])} "
            f"({points_ci(top['rd'], top['rd_low'], top['rd_high'])} par rapport "
            f"{_to_reference(top['attribute'], top['reference'])}, {verdict}).")
    flagged = an.simpson[an.simpson["verdict"] == "reversal"] if not an.simpson.empty else an.simpson
    if len(flagged):
        r = flagged.iloc[0]
        text += (f" Paradoxe de Simpson : {group_label(r['attribute'], r['group'])} / "
                 f"{group_label(r['attribute'], r['reference'])} {points(r['crude_rd'])} brut, "
                 f"{points(r['adj_rd'])} {ATTRIBUTE_NOUN.get(r['stratifier'], ('', 'à strate égale'))[1]}.")
    return text


def strongest_imbalance(an: Any) -> str:
    """« Le déséquilibre le plus fort en apprentissage porte sur l'incidence : 1,4 PA pour 1 AP. »"""
    imb = an.imbalance[(an.imbalance["split"] == "train") & (an.imbalance["variable"] != "n_findings_group")]
    if not len(imb):
        return ""
    shown = imb["ratio"].round(1)  # ratios equal as printed are equally strong: each is named
    top = imb[shown == shown.max()]

    def noun(r: pd.Series) -> str:
        return ATTRIBUTE_NOUN.get(r["variable"], (attribute_label(r["variable"]).lower(),))[0]

    def ratio(r: pd.Series) -> str:
        return (f"{number(r['ratio'], 1)} {group_label(r['variable'], r['majority'])} pour 1 "
                f"{group_label(r['variable'], r['minority'])}")

    if len(top) == 1:
        r = top.iloc[0]
        return f"Le déséquilibre le plus fort en apprentissage porte sur {noun(r)} : {ratio(r)}."
    both = fr.join([f"{noun(r)} ({ratio(r)})" for _, r in top.iterrows()])
    return f"Les déséquilibres les plus forts en apprentissage portent, à égalité, sur {both}."


def chapter_answer(an: Any) -> str:
    """The chapter's answer in two sentences (its « En bref » box): the strongest imbalance of the training
    patients, then the largest prevalence gap with its verdict (and a Simpson reversal when there is one)."""
    return " ".join(filter(None, [strongest_imbalance(an), key_message(an)]))


def simpson_message(an: Any) -> str:
    """One sentence for the Simpson slide: the first reversal, else how many contrasts the adjustment changes."""
    s = an.simpson
    if s.empty:
        return "Aucune comparaison stratifiée possible sur ces données."
    reversal = s[s["verdict"] == "reversal"]
    if len(reversal):
        r = reversal.iloc[0]
        return (f"Paradoxe de Simpson : {group_label(r['attribute'], r['group'])} / "
                f"{group_label(r['attribute'], r['reference'])} {points(r['crude_rd'])} brut, "
                f"{points(r['adj_rd'])} {ATTRIBUTE_NOUN.get(r['stratifier'], ('', 'à strate égale'))[1]}.")
    changed, weak = int((s["verdict"] != "none").sum()), int((s["verdict"] == "weak_reversal").sum())
    if not changed:
        return (f"Aucune des {count(len(s), 'comparaisons')} ne change une fois stratifiée : les écarts bruts ne "
                "s'expliquent pas par un autre attribut.")
    verb = "change" if changed < 2 else "changent"
    reversals = (f", dont {count(weak, 'inversions')} non établie{'s' * (weak > 1)}" if weak else
                 ", sans inversion")
    return (f"{count(changed, 'comparaisons')} sur {len(s)} {verb} une fois stratifiée{'s' * (changed > 1)} "
            f"(confusion ou écart qui dépend de la strate){reversals} : un biais expliqué reste un biais.")


def _source_sizes(frame: pd.DataFrame, sample: int = 20) -> list[tuple[int, int]]:
    """The sizes (width, height) of a few of the folder's images, read from their headers only."""
    from PIL import Image

    sizes = set()
    for path in frame[S.PATH].head(sample) if S.PATH in frame.columns else []:
        try:
            with Image.open(path) as im:
                sizes.add(im.size)
        except OSError:
            continue
    return sorted(sizes)


def preparation_text(ctx: Any) -> str:
    """What the study does to the images and to the patients before any model, with the numbers."""
    t = ctx.config.training
    sizes = _source_sizes(ctx.frame)
    source = (f"de {sizes[0][0]} × {sizes[0][1]} px " if len(sizes) == 1 else
              "de tailles diverses " if sizes else "")
    pretrained = t.feature_source == "pretrained"
    scale = ("ramenés à [0, 1] puis normalisés comme les images d'ImageNet (le réseau pré-entraîné l'attend)"
             if pretrained else "ramenés à [0, 1]")
    augmentation = ("Le réseau est figé : ses caractéristiques sont calculées une fois, sans augmentation."
                    if pretrained else "À l'apprentissage du réseau, chaque image subit un petit déplacement "
                    "aléatoire (décalage et zoom de 5 %, rotation de 5°), sans symétrie gauche-droite : le cœur "
                    "est à gauche.")
    f, ev = ctx.frame, ctx.evaluation
    train = f[f[S.SPLIT] == "train"]
    leaking = len(f[f[S.SPLIT] == "valid"]) - len(ev)
    excluded = (f" ; {count(leaking, 'images')} d'évaluation de patients déjà vus en apprentissage sont écartées "
                "de l'évaluation" if leaking > 0 else "")
    return (f"Chaque radiographie {source}est lue en niveaux de gris et réduite à {t.image_size} × {t.image_size} px "
            f"(interpolation bilinéaire avec anticrénelage), ses pixels {scale}. {augmentation} "
            "Le partage se fait **par patient**, jamais par "
            f"image : {count(len(train), 'images')} de {integer(train[S.PATIENT].nunique())} patients pour "
            f"l'apprentissage (dossier `train/`), {count(len(ev), 'images')} de {integer(ev[S.PATIENT].nunique())} "
            f"patients pour l'évaluation (dossier `valid/`){excluded}. Aucune image n'est modifiée ni retirée du "
            "dossier ; le découpage des patients d'apprentissage est décrit au chapitre 3 (@sec-preprocessing).")


def chapter_summary(an: Any) -> str:
    """All generated paragraphs of the chapter, in its order (for the slides or a quick look)."""
    return "\n\n".join([quality_text(an), univariate_text(an), prevalence_text(an), intersection_text(an),
                        association_text(an), simpson_text(an), model_text(an)])


def _split_color() -> alt.Color:
    return alt.Color("split_label:N", scale=color_scale(S.SPLIT, ["train", "valid"]), title="Partition")


@cached_chart
def univariate_chart(univ: pd.DataFrame, images_per_patient: pd.DataFrame | None = None) -> alt.ConcatChart:
    """Share of images per group, train vs valid side by side, one panel per variable."""
    df = label_groups(univ, "variable", "group").assign(
        split_label=lambda d: d["split"].map(fr.SPLIT_FR),
        text=lambda d: [f"{fr.integer(n)} images, {fr.integer(p)} patients ({fr.percent(s, 1)})"
                        for n, p, s in zip(d["n_images"], d["n_patients"], d["share"], strict=True)])
    panels = [_bars(g, fr.attribute_label(v), g.sort_values("order")["label"].unique().tolist())
              for v, g in df.groupby("variable", sort=False)]
    if images_per_patient is not None:
        ipp = images_per_patient[images_per_patient["split"] != "total"].assign(
            label=lambda d: d["bin"], share=lambda d: d["share_images"],
            split_label=lambda d: d["split"].map(fr.SPLIT_FR),
            text=lambda d: [f"{fr.integer(p)} patients, {fr.integer(n)} images ({fr.percent(s, 1)} des images)"
                            for p, n, s in zip(d["n_patients"], d["n_images"], d["share_images"], strict=True)])
        held = ipp.groupby("bin", sort=False)["n_images"].sum()
        ipp = ipp[ipp["bin"].isin(held[held > 0].index)]  # no empty category drawn
        panels.append(_bars(ipp, "Images du patient (nombre)", list(dict.fromkeys(ipp["bin"]))))
    return alt.concat(*panels, columns=3).resolve_scale(x="independent", xOffset="independent",
                                                        y="independent")


def _label_angle(labels: list[str], room: float) -> int:
    """0 when the labels fit side by side in `room` pixels (about 7 px a character), else -35."""
    return 0 if sum(len(str(x)) for x in labels) * 7.5 < room else -35


def _bars(df: pd.DataFrame, title: str, order: list[str]) -> alt.Chart:
    return alt.Chart(df, title=title, width=165, height=150).mark_bar().encode(
        x=alt.X("label:N", sort=order, title=None, axis=alt.Axis(labelAngle=_label_angle(order, 165))),
        xOffset=alt.XOffset("split_label:N", sort=["apprentissage", "évaluation"]),
        y=alt.Y("share:Q", axis=percent_axis("Part des images"), scale=alt.Scale(zero=True)),
        color=_split_color(),
        tooltip=[alt.Tooltip("label:N", title="Groupe"), alt.Tooltip("split_label:N", title="Partition"),
                 alt.Tooltip("text:N", title="Effectif")])


def _prevalence_text(df: pd.DataFrame) -> list[str]:
    return [fr.percent_ci(p, lo, hi) for p, lo, hi in zip(df["prevalence"], df["low"], df["high"], strict=True)]


def _domain(df: pd.DataFrame, low: str = "low", high: str = "high", pad: float = 0.01,
            step: float = 0.05) -> list[float]:
    """Axis range covering every interval, widened to round values (multiples of `step`) in [0, 1]."""
    lo = np.floor((np.nanmin(df[low]) - pad) / step) * step
    hi = np.ceil((np.nanmax(df[high]) + pad) / step) * step
    return [float(max(0.0, lo)), float(min(1.0, hi))]


@cached_chart
def prevalence_chart(prev: pd.DataFrame, overall: pd.Series | None = None) -> alt.VConcatChart:
    """Prevalence of `malade` by group with 95 % intervals, one row of panels per attribute."""
    domain = _domain(prev)
    panels = []
    n_panels = prev["attribute"].nunique()
    for i, (attribute, g) in enumerate(prev.groupby("attribute", sort=False)):
        groups = g["group"].tolist()
        df = label_groups(g, "attribute", "group").assign(text=_prevalence_text(g), n=g["n_images"].map(fr.integer))
        y = alt.Y("label:N", sort=[fr.group_label(attribute, x) for x in groups], title=None)
        layer = interval_layer(df, "prevalence", "low", "high", y,
                               alt.Color("label:N", scale=color_scale(attribute, groups), legend=None),
                               [alt.Tooltip("label:N", title="Groupe"), alt.Tooltip("text:N", title="Prévalence"),
                                alt.Tooltip("n:N", title="Images")],
                               percent_axis(PREVALENCE_TITLE, labels=i == n_panels - 1), domain=domain)
        if overall is not None:
            layer += alt.Chart(pd.DataFrame({"p": [overall["prevalence"]]})).mark_rule(
                strokeDash=[4, 3], color=NEUTRAL).encode(x="p:Q")
        panels.append(layer.properties(title=fr.attribute_label(attribute), width=WIDTH - 140,
                                       height=24 * len(groups)))
    return alt.vconcat(*panels, spacing=12).resolve_scale(color="independent")


@cached_chart
def intersection_chart(inter: pd.DataFrame) -> alt.VConcatChart:
    """Prevalence in each cell of each attribute pair: rows = first attribute, colour = second."""
    domain = _domain(inter)
    panels = []
    n_panels = inter["pair"].nunique()
    for i, (_, g) in enumerate(inter.groupby("pair", sort=False)):
        a, b = g["attr_a"].iloc[0], g["attr_b"].iloc[0]
        ga, gb = list(dict.fromkeys(g["group_a"])), list(dict.fromkeys(g["group_b"]))
        df = g.assign(label_a=[fr.group_label(a, x) for x in g["group_a"]],
                      label=[fr.group_label(b, x) for x in g["group_b"]], text=_prevalence_text(g),
                      n=g["n_images"].map(fr.integer))
        layer = interval_layer(
            df, "prevalence", "low", "high",
            alt.Y("label_a:N", sort=[fr.group_label(a, x) for x in ga], title=fr.attribute_label(a)),
            alt.Color("label:N", scale=color_scale(b, gb), title=fr.attribute_label(b),
                      legend=alt.Legend(orient="right")),
            [alt.Tooltip("label_a:N", title=fr.attribute_label(a)), alt.Tooltip("label:N", title=fr.attribute_label(b)),
             alt.Tooltip("text:N", title="Prévalence"), alt.Tooltip("n:N", title="Images")],
            percent_axis(PREVALENCE_TITLE, labels=i == n_panels - 1),
            y_offset=alt.YOffset("label:N", sort=[fr.group_label(b, x) for x in gb]), domain=domain)
        panels.append(layer.properties(width=WIDTH - 230, height=16 * len(ga) * len(gb),
                                       title=f"{fr.attribute_label(a)} × {fr.attribute_label(b).lower()}"))
    return alt.vconcat(*panels, spacing=12).resolve_scale(color="independent")


@cached_chart
def association_chart(composition: pd.DataFrame, associations: pd.DataFrame) -> alt.HConcatChart:
    """Heatmaps of the composition of each attribute pair (each row sums to 100 %), V in subtitle."""
    panels = []
    for r in associations.itertuples():
        g = composition[(composition["attr_a"] == r.attr_a) & (composition["attr_b"] == r.attr_b)]
        df = g.assign(label_a=[fr.group_label(r.attr_a, x) for x in g["group_a"]],
                      label_b=[fr.group_label(r.attr_b, x) for x in g["group_b"]],
                      text=g["share"].map(fr.percent), ci=[fr.percent_ci(s, lo, hi) for s, lo, hi in
                                                          zip(g["share"], g["low"], g["high"], strict=True)],
                      n=g["n_images"].map(fr.integer))
        order_a = [fr.group_label(r.attr_a, x) for x in dict.fromkeys(g["group_a"])]
        order_b = [fr.group_label(r.attr_b, x) for x in dict.fromkeys(g["group_b"])]
        cell = 45 if max(len(x) for x in order_b) <= 5 else 70
        base = alt.Chart(df).encode(x=alt.X("label_b:N", sort=order_b, title=fr.attribute_label(r.attr_b),
                                            axis=alt.Axis(labelAngle=_label_angle(order_b, cell * len(order_b)))),
                                    y=alt.Y("label_a:N", sort=order_a, title=fr.attribute_label(r.attr_a)))
        heat = base.mark_rect().encode(
            color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=None),
            tooltip=[alt.Tooltip("label_a:N", title=fr.attribute_label(r.attr_a)),
                     alt.Tooltip("label_b:N", title=fr.attribute_label(r.attr_b)),
                     alt.Tooltip("ci:N", title="Part de la ligne"), alt.Tooltip("n:N", title="Images")])
        text = base.mark_text(fontSize=12).encode(
            text="text:N", color=alt.condition("datum.share > 0.6", alt.value("white"), alt.value("black")))
        subtitle = f"V de Cramér {fr.ratio_ci(r.cramers_v, r.v_low, r.v_high)}"
        panels.append((heat + text).properties(
            width=cell * len(order_b), height=32 * len(order_a),
            title=alt.TitleParams(f"{fr.attribute_label(r.attr_a)} × {fr.attribute_label(r.attr_b).lower()}",
                                  subtitle=subtitle)))
    return alt.hconcat(*panels)


def simpson_frame(summary: pd.DataFrame, strata: pd.DataFrame) -> pd.DataFrame:
    """Long frame of crude, stratum-specific and adjusted risk differences (in points) per panel."""
    rows = []
    for r in summary.itertuples():
        panel = (f"{fr.group_label(r.attribute, r.group)} vs {fr.group_label(r.attribute, r.reference)}, "
                 f"selon {fr.ATTRIBUTE_NOUN.get(r.stratifier, (r.stratifier,))[0]}")
        rows.append({"panel": panel, "kind": "brut", "label": "Brut", "rd": r.crude_rd,
                     "low": r.crude_rd_low, "high": r.crude_rd_high, "verdict": VERDICT_FR[r.verdict],
                     "stratifier": r.stratifier, "group": "brut"})
        sub = strata[(strata["attribute"] == r.attribute) & (strata["group"] == r.group)
                     & (strata["stratifier"] == r.stratifier) & ~strata["small"]]
        rows += [{"panel": panel, "kind": "strate", "label": fr.group_label(r.stratifier, s.stratum), "rd": s.rd,
                  "low": s.rd_low, "high": s.rd_high, "verdict": VERDICT_FR[r.verdict],
                  "stratifier": r.stratifier, "group": str(s.stratum)} for s in sub.itertuples()]
        rows.append({"panel": panel, "kind": "ajusté", "label": "Ajusté (MH)", "rd": r.adj_rd,
                     "low": r.adj_rd_low, "high": r.adj_rd_high, "verdict": VERDICT_FR[r.verdict],
                     "stratifier": r.stratifier, "group": "ajusté"})
    df = pd.DataFrame(rows)
    df[["rd", "low", "high"]] *= 100
    df["text"] = [fr.points_ci(d / 100, lo / 100, hi / 100) for d, lo, hi in zip(df["rd"], df["low"], df["high"],
                                                                               strict=True)]
    return df


def _simpson_colors(df: pd.DataFrame) -> alt.Scale:
    domain, colors = ["Brut", "Ajusté (MH)"], ["#000000", "#7F7F7F"]
    for stratifier, g in df[df["kind"] == "strate"].groupby("stratifier", sort=False):
        groups = list(dict.fromkeys(g["group"]))
        for grp, col in group_colors(stratifier, groups).items():
            label = fr.group_label(stratifier, grp)
            if label not in domain:
                domain.append(label)
                colors.append(col)
    return alt.Scale(domain=domain, range=colors)


def simpson_flagged(summary: pd.DataFrame) -> pd.DataFrame:
    """The contrasts whose adjustment changes something (a reversal, confounding, a gap that depends on the
    stratum), or all of them when none does: what chapter 2 draws (the appendix draws every one)."""
    flagged = summary[summary["verdict"] != "none"]
    return flagged if len(flagged) else summary


@cached_chart
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
            width=WIDTH // columns - 90, height=22 * len(g),
            title=alt.TitleParams(panel, subtitle=g["verdict"].iloc[0], fontSize=13)))
    return alt.concat(*panels, columns=columns)


def analysis(ctx: Any) -> DataAnalysis:
    """Everything the chapter shows, computed once per study (`fairness.data_analysis`)."""
    return data_analysis(ctx)
