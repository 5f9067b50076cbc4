"""The pre-registered questions and their answers, phrased from the study's one `Verdicts` object.

No test, interval or correction is computed here: each sentence, table cell and slide line reads a
verdict's `status`, `direction` and numbers (docs/VERDICTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import altair as alt
import numpy as np
import pandas as pd

from pipeline.config import rule_parts
from pipeline.fairness.exploratory import EXPLORATORY_MARK, PRIMARY_MARK
from pipeline.fairness.inference import Verdict
from pipeline.report import french as fr
from pipeline.report import style
from pipeline.report.charts import message_chart, method_label
from pipeline.report.french import NBSP
from pipeline.report.memo import cached_chart
from pipeline.study import StudyContext

QUANTITY_FR = {"balanced_accuracy": "exactitude équilibrée", "auc": "AUC",
               "tpr_signed": "écart de sensibilité", "fpr_signed": "écart de taux de faux positifs",
               "sr_signed": "écart de taux de sélection"}


REASON_FR = {"identical": "mêmes décisions que la référence à chaque graine : rien ne peut changer",
             "undefined": "mesure non définie (un groupe a trop peu d'images d'une classe)",
             "no_interval": "trop peu de rééchantillonnages où la mesure est définie"}


def reason_text(reason: str) -> str:
    """A verdict's reason in French (« degenerate: M : malade » -> « règle dégénérée (M : malade) »)."""
    kind, _, detail = reason.partition(": ")
    if kind == "degenerate":
        return f"règle dégénérée, une seule décision ({detail})"
    if kind == "identical" and detail:
        return f"mêmes décisions que {rule_label(detail)}"
    if kind == "primary":
        return "question principale (★)"
    if kind == "answered":
        return "testé dans le tableau des pondérations"
    return REASON_FR.get(reason, reason)


def _in_points(quantity: str) -> bool:
    return quantity.endswith("_signed")


def rule_label(name: str) -> str:
    """« Équilibrage des groupes + Aucun » from « group_balanced + none »."""
    parts = rule_parts(name)
    return f"{method_label(parts[0]).split(' (')[0]} + {method_label(parts[1]).split(' (')[0]}" if parts else name


def rule_phrase(name: str) -> str:
    """A rule in words, without its code name: « la pondération **Équilibrage des groupes**, sans
    post-traitement », « le modèle de référence (sans pondération ni post-traitement) »."""
    parts = rule_parts(name)
    if not parts:
        return name
    weighting, post = (method_label(p).split(" (")[0] for p in parts)
    if parts == ("uniform", "none"):
        return "le modèle de référence (sans pondération ni post-traitement)"
    if parts[1] == "none":
        return f"la pondération **{weighting}**, sans post-traitement,"
    if parts[0] == "uniform":
        return f"le post-traitement **{post}**, sans pondération,"
    return f"la pondération **{weighting}** suivie du post-traitement **{post}**"


def _to(phrase: str) -> str:
    """« à » before a phrase: « au modèle … », « à la pondération … »."""
    return f"au {phrase[3:]}" if phrase.startswith("le ") else f"à {phrase}"


def quantity_label(quantity: str, groups: list[str]) -> str:
    """« écart de sensibilité F − M »: signed quantities name their two groups in the order subtracted."""
    label = QUANTITY_FR.get(quantity, quantity)
    return f"{label} {groups[0]}{NBSP}−{NBSP}{groups[1]}" if _in_points(quantity) and len(groups) == 2 else label


def change_ci(v: Verdict) -> str:
    """« +5,2 points [+3,1 ; +7,4] » for a gap, « −0,026 [−0,095 ; +0,043] » for a score."""
    if _in_points(v.quantity):
        return fr.points_ci(v.estimate, v.low, v.high) if not math.isnan(v.low) else fr.points(v.estimate)
    value = fr.number(v.estimate, 3, sign=True)
    if math.isnan(v.low):
        return f"{value} {fr.UNDEFINED_CI}"
    return f"{value} {fr.bracket(fr.number(v.low, 3, True), fr.number(v.high, 3, True))}"


def before_after(v: Verdict) -> str:
    """« −47,6 → −2,3 » (points for a gap): the measure for the reference and for the rule, means over the
    seeds, so that a signed difference reads as what it does to the gap."""
    if math.isnan(v.reference_value) or math.isnan(v.treated_value):
        return fr.DASH
    if _in_points(v.quantity):
        return f"{fr.number(100 * v.reference_value, 1, sign=True)} → {fr.number(100 * v.treated_value, 1, sign=True)}"
    return f"{fr.number(v.reference_value, 2)} → {fr.number(v.treated_value, 2)}"


def detectable(v: Verdict) -> str:
    """The smallest change the study could detect, in the quantity's unit."""
    if v.mde is None or math.isnan(v.mde):
        return fr.DASH
    return fr.points(v.mde).lstrip("+") if _in_points(v.quantity) else fr.number(v.mde, 3)


def _gap_move(v: Verdict) -> str:
    """What an established change does to a signed gap: brings it nearer 0, widens it, or reverses it."""
    before, after = v.reference_value, v.treated_value
    if math.isnan(before) or math.isnan(after):
        return "hausse" if v.direction > 0 else "baisse"
    if abs(after) < abs(before):
        return "réduction de l'écart"
    return "inversion de l'écart" if before * after < 0 else "creusement de l'écart"


def status_text(v: Verdict) -> str:
    """« baisse établie », « réduction de l'écart établie », « non établi », « non testable »: read from the
    verdict, never from its interval."""
    if v.status == "established":
        word = _gap_move(v) if _in_points(v.quantity) else ("hausse" if v.direction > 0 else "baisse")
        agreed = "établi" if word.startswith("creusement") else "établie"
        return f"{PRIMARY_MARK} {word} {agreed}" + (" (nivellement par le bas)" if v.levelling_down else "")
    if v.status == "not_established":
        return "non établi"
    return "non testable"


def verdict_sentence(v: Verdict, groups: list[str]) -> str:
    """One sentence: the change, its interval, the adjusted p, the verdict and, when not established, the power."""
    what = f"{quantity_label(v.quantity, groups)} : {change_ci(v)}"
    if _in_points(v.quantity) and not math.isnan(v.reference_value) and not math.isnan(v.treated_value):
        what += (f" (l'écart passe de {fr.points(v.reference_value).removesuffix(NBSP + 'points')} à "
                 f"{fr.points(v.treated_value)})")
    if v.status == "not_testable":
        return f"{what} — non testable : {reason_text(v.reason)}."
    p = fr.p_value(v.p_adjusted).replace("p", "p ajusté (Holm)", 1)
    if v.status == "established":
        extra = (" ; l'écart se réduit parce que le groupe le mieux servi perd en sensibilité (nivellement par le "
                 "bas), pas parce que l'autre gagne") if v.levelling_down else ""
        return f"{what}, {p} : {status_text(v).lstrip(PRIMARY_MARK + ' ')}{extra}."
    if v.reason == "identical":
        return f"{what} — non établi : {REASON_FR['identical']}."
    return (f"{what}, {p} : changement non établi ; l'étude ne pouvait détecter (puissance 80 %) qu'un "
            f"changement d'au moins {detectable(v)} : un effet plus petit reste possible.")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n > 1)}"


def _runs(n: int) -> str:
    """« 5 entraînements (graines) », « un seul entraînement »."""
    return "un seul entraînement" if n == 1 else f"{n} entraînements (graines)"


def _verdicts(ctx: StudyContext):
    return getattr(ctx, "verdicts", None)


def reference_level(ctx: StudyContext, metric: str) -> Verdict | None:
    """The reference rule's `metric` over every training seed (mean, seed-aware interval), if computed."""
    from pipeline.fairness.inference import LEVEL_FAMILY

    vs = _verdicts(ctx)
    if not vs:
        return None
    reference = vs.meta.get("reference", ctx.config.analysis.reference)
    return next((v for v in vs.family(LEVEL_FAMILY) if v.treated == reference and v.quantity == metric), None)


def level_ci(ctx: StudyContext, metric: str, digits: int = 2) -> str | None:
    """« 0,83 [0,79 ; 0,87] » of the reference's metric over the seeds (None: not computed)."""
    v = reference_level(ctx, metric)
    return None if v is None or not math.isfinite(v.estimate) else fr.ci(v.estimate, v.low, v.high, digits)


def reference_gap_ci(ctx: StudyContext, attribute: str) -> str | None:
    """« −47,6 points [−60,1 ; −35,0] »: the reference's signed sensitivity gap over every seed, when the
    primary family measures it on `attribute` (None otherwise): the one number the report quotes for it."""
    vs = _verdicts(ctx)
    v = reference_level(ctx, "tpr_signed")
    if v is None or vs.meta.get("attribute") != attribute or not math.isfinite(v.estimate):
        return None
    return fr.points_ci(v.estimate, v.low, v.high) if math.isfinite(v.low) else fr.points(v.estimate)


def seeds_phrase(ctx: StudyContext) -> str:
    """« moyenne sur 5 entraînements, intervalle incluant leur variance »."""
    v = reference_level(ctx, "balanced_accuracy")
    n = v.n_seeds if v is not None else len(ctx.config.training.seeds)
    return "un seul entraînement" if n == 1 else f"moyenne sur {n} entraînements, intervalle incluant leur variance"


def runs_phrase(ctx: StudyContext) -> str:
    """« moyenne sur 5 entraînements » (« un entraînement »): what a grid or weighting-table cell is taken over."""
    n = len(ctx.config.training.seeds)
    return "un entraînement" if n == 1 else f"moyenne sur {n} entraînements"


def detail_seed_phrase(ctx: StudyContext, short: bool = False) -> str:
    """Which training the detailed tables show: « graine 3, l'entraînement médian des 5 en exactitude équilibrée
    de la référence » (`short`: « graine 3, médiane des 5 »; one seed: « graine 0 »)."""
    n, seed = len(ctx.config.training.seeds), ctx.detail_seed
    if n == 1:
        return f"graine {seed}"
    if short:
        return f"graine {seed}, médiane des {n}"
    return f"graine {seed}, l'entraînement médian des {n} en exactitude équilibrée de la référence"


def primary_questions(ctx: StudyContext) -> str:
    """Chapter 1: the family as fixed in study.yml, before the results."""
    a = ctx.config.analysis
    groups = ["F", "M"] if a.attribute == "sex" else []
    measures = " et ".join(f"l'{quantity_label(m, groups)}" for m in a.metrics)  # every label starts with a vowel
    rules = "\n".join(f"{i}. Est-ce que {rule_phrase(r)} change {measures} par rapport "
                      f"{_to(rule_phrase(a.reference).rstrip(','))} ?" for i, r in enumerate(a.primary, 1))
    n = len(a.primary) * len(a.metrics)
    return (f"Avant tout résultat, nous avons fixé dans `study.yml` (`analysis.primary`) les questions principales "
            f"de l'étude :\n\n{rules}\n\n"
            f"{_count(len(a.primary), 'règle')} × {_count(len(a.metrics), 'mesure')} : ces {n} hypothèses forment "
            f"la famille **principale** ({PRIMARY_MARK}). Elles sont testées ensemble avec "
            f"la correction de Holm, qui garde à {fr.percent(a.alpha)} le risque de déclarer à tort au moins un "
            f"effet. Chaque différence est la moyenne, sur {_runs(len(ctx.config.training.seeds))}, des "
            f"différences appariées sur les mêmes patients d'évaluation ; son intervalle tient compte de la "
            f"variabilité des patients et de celle des entraînements. Une hypothèse est *testable* quand sa mesure "
            f"est définie (assez d'images de chaque classe dans chaque groupe). Toute autre comparaison du rapport "
            f"est **exploratoire** : elle suggère, elle n'établit pas. Ces questions ne doivent pas être modifiées "
            f"après avoir vu les résultats ; la configuration utilisée (`analysis`) est reproduite en annexe.")


def protocol_sentence(ctx: StudyContext) -> str:
    """How the primary intervals are computed, with the two parts of their variance."""
    vs = _verdicts(ctx)
    if not vs:
        return ""
    m = vs.meta
    tested = [v for v in vs.family("primary") if v.status != "not_testable"]
    share = [v.variance["between_seeds"] / v.n_seeds / (v.variance["bootstrap"] + v.variance["between_seeds"]
                                                         / v.n_seeds)
             for v in tested if v.n_seeds > 1 and v.variance["bootstrap"] + v.variance["between_seeds"] > 0]
    seeds = len(m["seeds"])
    seed_part = ("une seule graine : la variabilité entre entraînements n'est pas mesurée et les intervalles la "
                 "laissent de côté" if seeds == 1 else
                 f"la part des entraînements va de {fr.percent(min(share))} à {fr.percent(max(share))} de la variance "
                 f"selon la comparaison" if share else "")
    return (f"Protocole des questions principales : {seeds} graine{'s' * (seeds > 1)} d'entraînement "
            f"({', '.join(map(str, m['seeds']))}) ; {m['n_resamples']} rééchantillonnages des "
            f"{m['n_patients']} patients d'évaluation, les mêmes pour chaque graine, chaque règle post-traitée étant "
            f"réajustée dans chacun ({m['folds']} plis) ; variance = variance bootstrap + variance entre graines / "
            f"{seeds}, loi de Student (Welch-Satterthwaite) ; {seed_part}. Holm sur {m['n_tests']} tests, risque "
            f"global {fr.percent(m['alpha'])} ; puissance indiquée à 80 %.")


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _p_cell(p: float | None) -> str:
    """« 0,31 », « < 0,001 », « — »: a p-value without its « p = »."""
    return fr.DASH if p is None else fr.p_value(p).removeprefix(f"p{NBSP}").removeprefix(f"={NBSP}")


def primary_table(ctx: StudyContext, compact: bool = False) -> pd.DataFrame:
    """One row per primary hypothesis: the comparison, the change with its interval, Holm's p, the verdict."""
    vs = _verdicts(ctx)
    groups = vs.meta["groups"] if vs else []
    rows = []
    for v in vs.family("primary") if vs else []:
        row = {"Règle comparée à la référence": rule_label(v.treated),
               "Mesure": _upper_first(quantity_label(v.quantity, groups)),
               "Référence → règle": before_after(v), "Différence [IC 95 %]": change_ci(v),
               "p (Holm)": _p_cell(v.p_adjusted), "Verdict": status_text(v)}
        if not compact:
            row["Détectable (80 %)"] = detectable(v)
        rows.append(row)
    return pd.DataFrame(rows)


def _claim(claims: list | None, where: str, text: str, v: Verdict | None) -> None:
    """What a sentence states of `v` (its status and direction), for the render's consistency check."""
    if claims is not None and v is not None:
        from pipeline.report.consistency import Claim

        claims.append(Claim(where, text, (v.key,), v.status, v.direction))


def primary_answer(ctx: StudyContext, chapter: str | None = None, claims: list | None = None) -> str:
    """The answers as a list: those of a chapter's rules (« preprocessing »: no post-processor;
    « postprocessing »: a post-processor), or all of them."""
    vs = _verdicts(ctx)
    if not vs:
        return ""
    groups = vs.meta["groups"]
    lines = []
    for rule in _chapter_rules(vs, chapter):
        answers = []
        for v in vs.family("primary"):
            if v.treated == rule:
                answers.append(verdict_sentence(v, groups))
                _claim(claims, "réponse aux questions principales", answers[-1], v)
        lines.append(f"- **{rule_label(rule)}** contre {rule_label(vs.meta['reference'])} :\n"
                     + "\n".join(f"    - {_upper_first(a)}" for a in answers))
    if not lines:
        return ""
    plural = "s" * (len(lines) > 1)
    return (f"Question{plural} principale{plural} ({PRIMARY_MARK}, fixée{plural} avant les résultats, moyenne sur "
            f"{_runs(len(vs.meta['seeds']))}) :\n\n" + "\n".join(lines))


def _chapter_rules(vs, chapter: str | None) -> list[str]:
    """The primary rules a chapter answers (« preprocessing »: no post-processor; « postprocessing »: one), or
    all of them."""
    def post(rule: str) -> str:
        return rule_parts(rule)[1]

    return [r for r in vs.meta["primary"] if chapter is None or (chapter == "preprocessing") == (post(r) == "none")]


def established_count(ctx: StudyContext, chapter: str | None = None) -> tuple[int, int]:
    """(established, testable) in the primary family (a chapter's rules only, with `chapter`)."""
    vs = _verdicts(ctx)
    rules = set(_chapter_rules(vs, chapter)) if vs else set()
    primary = [v for v in vs.family("primary") if v.treated in rules] if vs else []
    return sum(v.established for v in primary), sum(v.status != "not_testable" for v in primary)


def primary_summary(ctx: StudyContext, short: bool = False, claims: list | None = None,
                    chapter: str | None = None) -> str:
    """The key finding the conclusion opens with: each primary answer in a clause, or (`short`) the count;
    with `chapter`, only the rules that chapter answers (its « En bref » box)."""
    vs = _verdicts(ctx)
    if not vs or not _chapter_rules(vs, chapter):
        return ""
    established, testable = established_count(ctx, chapter)
    none = "aucun effet établi" if established == 0 else ""
    count = none or f"{established} effet{'s' * (established > 1)} établi{'s' * (established > 1)}"
    count += f" sur {testable} hypothèse{'s' * (testable > 1)} testable{'s' * (testable > 1)}"
    if short:
        return f"Questions principales ({PRIMARY_MARK}) : {count}."
    runs = _runs(len(vs.meta["seeds"]))
    plural = "s" * (len(_chapter_rules(vs, chapter)) > 1)
    head = (f"Question{plural} principale{plural} ({PRIMARY_MARK}, fixée{plural} avant les résultats, {runs}) : "
            f"{count}")
    groups = vs.meta["groups"]
    clauses = []
    for rule in _chapter_rules(vs, chapter):
        parts = []
        for v in vs.family("primary"):
            if v.treated == rule:
                moved = (f" (de {before_after(v).replace(' → ', ' à ')} points)"
                         if _in_points(v.quantity) and before_after(v) != fr.DASH else "")
                parts.append(f"{quantity_label(v.quantity, groups)} {change_ci(v)}{moved}, "
                             f"{status_text(v).lstrip(PRIMARY_MARK + ' ')}"
                             + (f" (détectable : {detectable(v)})" if v.status == "not_established"
                                and v.reason != "identical" else ""))
                _claim(claims, "conclusion, constat principal", parts[-1], v)
        clauses.append(f"{rule_label(rule)} : " + ", ".join(parts))
    return head + " — " + " ; ".join(clauses) + "."


CHAPTER_REST = {"preprocessing": "Les autres pondérations de ce chapitre sont exploratoires (@sec-primary-questions).",
                "postprocessing": "Les autres règles et les combinaisons de ce chapitre sont exploratoires "
                                  "(@sec-primary-questions) ; la recommandation sous contraintes est au chapitre 5 "
                                  "(@sec-recommendation)."}


def chapter_answer(ctx: StudyContext, chapter: str) -> str:
    """A chapter's answer first (its « En bref » box): its pre-registered questions' verdicts in one sentence,
    then what the rest of the chapter is."""
    return " ".join(filter(None, [primary_summary(ctx, chapter=chapter), CHAPTER_REST[chapter]]))


def primary_frame(ctx: StudyContext) -> pd.DataFrame:
    """The primary verdicts in points (x 100), one row each, for the chart."""
    vs = _verdicts(ctx)
    groups = vs.meta["groups"] if vs else []
    rows = [{"rule": rule_label(v.treated), "measure": _upper_first(quantity_label(v.quantity, groups)),
             "estimate": 100 * v.estimate, "low": 100 * v.low, "high": 100 * v.high,
             "verdict": "établi" if v.established else ("non testable" if v.status == "not_testable" else "non établi"),
             "signed": _in_points(v.quantity)}
            for v in (vs.family("primary") if vs else [])]
    return pd.DataFrame(rows, columns=["rule", "measure", "estimate", "low", "high", "verdict", "signed"])


@cached_chart
def primary_chart(ctx: StudyContext, width: int = 300, height: int | None = None) -> alt.TopLevelMixin:
    """Each primary difference with its seed-aware interval, one panel per measure, a line at no change."""
    data = primary_frame(ctx).dropna(subset=["estimate"])
    if data.empty:
        return message_chart("Aucune question principale testable", "mesures non définies sur ces patients")
    color = alt.Color("verdict:N", title="Verdict", scale=alt.Scale(domain=["établi", "non établi"],
                                                                    range=["#1b7837", "#8c8c8c"]))
    panels = []
    for i, (measure, part) in enumerate(data.groupby("measure", sort=False)):
        y = alt.Y("rule:N", title=None, sort=None, axis=alt.Axis(labelLimit=320, labels=i == 0, ticks=i == 0))
        span = float(np.nanmax(np.abs(part[["low", "high", "estimate"]].to_numpy()))) * 1.1 or 1.0
        axis = alt.Axis(title=f"Δ {measure} (points)", titleLimit=500, tickCount=5)
        layer = style.interval_layer(part, "estimate", "low", "high", y, color,
                                     ["rule:N", "measure:N", alt.Tooltip("estimate:Q", format="+.1f"),
                                      alt.Tooltip("low:Q", format="+.1f"), alt.Tooltip("high:Q", format="+.1f")],
                                     axis, domain=[-span, span])
        zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4], color="#444").encode(x="x:Q")
        panels.append((zero + layer).properties(width=width, height=height or 34 * part["rule"].nunique()))
    return alt.hconcat(*panels).resolve_scale(x="independent")


def detectable_span(found: list[Verdict], lead: str = "de ") -> str:
    """« 8,5 points », or « de 0,034 à 0,194 » (`lead` before the low end): what verdicts could detect."""
    ordered = sorted(found, key=lambda v: v.mde)
    low, high = detectable(ordered[0]), detectable(ordered[-1])
    return low if low == high else f"{lead}{low.removesuffix(NBSP + 'points')} à {high}"


def power_message(ctx: StudyContext) -> str:
    """For the slide (in small type, under `established_moves`): what « non établi » could have detected, per
    measure (the range of such changes)."""
    vs = _verdicts(ctx)
    if not vs:
        return ""
    groups, parts = vs.meta["groups"], {}
    for v in vs.family("primary"):  # per question: a span over questions reads as the power of an established one
        if v.status == "not_established" and v.mde is not None and v.reason != "identical":
            parts.setdefault(v.treated, []).append(f"{quantity_label(v.quantity, groups)} {detectable(v)}")
    if not parts:
        return f"Intervalles : patients et {_runs(len(vs.meta['seeds']))} ; p ajusté par Holm sur la famille."
    detect = " ; ".join(f"{rule_label(rule)} : {', '.join(found)}" for rule, found in parts.items())
    return f"« Non établi » n'est pas « égal » ; détectable (puissance 80 %) au mieux — {detect}."


def established_moves(ctx: StudyContext) -> str:
    """For the slide: how each established primary gap moved (« passe de −42,8 à −3,2 points »)."""
    vs = _verdicts(ctx)
    if not vs:
        return ""
    groups = vs.meta["groups"]
    return " ".join(f"{rule_label(v.treated)} : l'{quantity_label(v.quantity, groups)} passe de "
                    f"{fr.points(v.reference_value).removesuffix(NBSP + 'points')} à {fr.points(v.treated_value)} "
                    f"({status_text(v).lstrip(PRIMARY_MARK + ' ')})."
                    for v in vs.established("primary") if _in_points(v.quantity) and not math.isnan(v.treated_value))


def price_of_fairness(ctx: StudyContext) -> str:
    """« Prix de l'équité : Uniforme + Égalité des chances réduit l'écart … de +45,3 points [+25,6 ; +65,0] ★,
    pour une exactitude équilibrée −0,022 [−0,066 ; +0,021] (non établi). »: each established primary gap move
    beside the same rule's accuracy verdict ("" when none)."""
    vs = _verdicts(ctx)
    if not vs:
        return ""
    groups, parts = vs.meta["groups"], []
    for v in vs.established("primary"):
        accuracy = vs.find("primary", "balanced_accuracy", v.treated, v.reference)
        if not _in_points(v.quantity) or accuracy is None:
            continue
        parts.append(f"{rule_label(v.treated)} : {quantity_label(v.quantity, groups)} {change_ci(v)} "
                     f"({status_text(v).lstrip(PRIMARY_MARK + ' ')}), exactitude équilibrée {change_ci(accuracy)} "
                     f"({status_text(accuracy).lstrip(PRIMARY_MARK + ' ')})")
    return ("Prix de l'équité : " + " ; ".join(parts) + ".") if parts else ""


FAILS_FR = {"ba": "perte d'exactitude équilibrée", "fnr": "sous-diagnostic aggravé dans un groupe",
            "randomised": "trop de décisions tirées au hasard", "degenerate": "règle dégénérée",
            "gap": "écart non défini", "no_gain": "écart pas plus petit que celui de la référence"}


def recommendation_text(ctx: StudyContext) -> str:
    """The recommendation under the constraints of study.yml, chosen on one half and reported on the other."""
    from pipeline.fairness.recommendation import recommendation

    rec = recommendation(ctx)
    c, n = rec.constraints, rec.n_patients
    groups = ctx.verdicts.meta["groups"] if _verdicts(ctx) else []
    head = (f"Contraintes fixées avant les résultats (`analysis.recommendation`) : aucun groupe dont le "
            f"sous-diagnostic (FNR) dépasse celui du modèle de référence de plus de "
            f"{fr.points(c.max_fnr_increase, 0).lstrip('+')}, au plus {fr.percent(c.max_randomised)} de décisions "
            f"tirées au hasard, une perte d'exactitude équilibrée d'au plus {fr.number(c.max_ba_loss, 2)}, pas de "
            f"règle dégénérée, et un écart de sensibilité plus petit que celui de la référence (une règle qui décide "
            f"comme elle ne corrige rien). La règle est choisie sur la moitié des "
            f"patients d'évaluation ({n.get('selection', 0)} patients) et évaluée sur l'autre moitié "
            f"({n.get('report', 0)} patients), qui n'a pas servi au choix ; "
            + ("un seul entraînement." if len(ctx.config.training.seeds) == 1 else
               f"chaque mesure est la moyenne sur {len(ctx.config.training.seeds)} entraînements, les intervalles "
               "incluent leur variance."))
    cand = rec.candidates
    if rec.withheld == "weak_model":
        return (f"{head}\n\n**Aucune règle n'est recommandée : le modèle est trop faible** (avertissement en tête du "
                "rapport). Une règle satisfait les contraintes sur la moitié de sélection, mais choisir parmi des "
                "règles de décision appliquées à des scores sans signal établi reviendrait à couronner du bruit : "
                "elle n'est pas nommée.")
    if rec.chosen is None:
        counts = pd.Series([f for fails in cand.get("fails", pd.Series(dtype=str)) for f in fails.split(",") if f])
        why = " ; ".join(f"{int(v)} par {FAILS_FR.get(k, k)}" for k, v in counts.value_counts().items())
        return (f"{head}\n\n**Aucune règle ne satisfait les contraintes** sur la moitié de sélection "
                f"({len(cand)} règles comparées au modèle de référence ; échecs : {why or 'aucun détail'})."
                f"{_established_but_failing(ctx, rec)} Nous recommandons donc de garder le modèle de référence et "
                "de ne pas présenter une correction comme un gain.")
    passing = int(cand["satisfies"].sum())
    long = rec.report.set_index(["method", "metric"])
    ref = rec.reference

    def defined(low: float, high: float) -> bool:
        return bool(np.isfinite(low) and np.isfinite(high))

    def cell(rule: str, metric: str, points: bool) -> str:
        r = long.loc[(rule, metric)]
        if not defined(r["low"], r["high"]):
            return (fr.points(r["estimate"]) if points else fr.num(r["estimate"])) + f" {fr.UNDEFINED_CI}"
        return (fr.points_ci(r["estimate"], r["low"], r["high"]) if points
                else fr.ratio_ci(r["estimate"], r["low"], r["high"]))

    def diff(metric: str, points: bool) -> str:
        r = long.loc[(rec.chosen, metric)]
        if not defined(r["diff_low"], r["diff_high"]):
            shown = fr.points(r["diff"]) if points else fr.number(r["diff"], 3, sign=True)
            return f"{shown} {fr.UNDEFINED_CI}"
        return (fr.points_ci(r["diff"], r["diff_low"], r["diff_high"]) if points
                else f"{fr.number(r['diff'], 3, sign=True)} "
                     f"{fr.bracket(fr.number(r['diff_low'], 3, True), fr.number(r['diff_high'], 3, True))}")

    gap_label = quantity_label("tpr_signed", groups) if rec.gap == "tpr_signed" else "écart de sensibilité"
    chosen_gap, ref_gap = abs(long.loc[(rec.chosen, rec.gap), "estimate"]), abs(long.loc[(ref, rec.gap), "estimate"])
    wider = (f" Sur cette moitié, son écart est plus grand que celui du modèle de référence "
             f"({fr.points(chosen_gap).lstrip('+')} contre {fr.points(ref_gap).lstrip('+')} en valeur absolue)."
             if chosen_gap > ref_gap else "")
    checks = rec.report_checks or {}
    broken = [FAILS_FR.get(f, f) for f in str(checks.get("fails", "")).split(",") if f]
    counts = _rate_counts(rec, ctx.config.analysis.attribute)
    return (f"{head}\n\n**Règle recommandée : {rule_label(rec.chosen)}**, l'écart de sensibilité le plus faible parmi "
            f"les {passing} règle{'s' * (passing > 1)} (sur {len(cand)} autres que la référence) qui satisfont les "
            f"contraintes sur la moitié de sélection. Sur l'autre moitié : {gap_label} "
            f"{cell(rec.chosen, rec.gap, True)} contre "
            f"{cell(ref, rec.gap, True)} pour le modèle de référence (différence {diff(rec.gap, True)}) ; exactitude "
            f"équilibrée {cell(rec.chosen, 'balanced_accuracy', False)} contre {cell(ref, 'balanced_accuracy', False)} "
            f"(différence {diff('balanced_accuracy', False)}).{wider}{counts}{_off_the_front(ctx, rec)} "
            + ("Les contraintes restent respectées sur cette moitié (mesures moyennes)." if not broken else
               f"Sur cette moitié, la règle ne respecte plus ces contraintes ({', '.join(broken)}) : la "
               "recommandation est fragile.")
            + " Un écart dont l'intervalle contient 0 n'est pas une égalité : lire l'intervalle.")


def _established_but_failing(ctx: StudyContext, rec) -> str:
    """Why a rule whose primary question is answered (an established move) is still not recommended: the
    constraints it breaks on the selection half, with its values (" …"; "" when none)."""
    vs = _verdicts(ctx)
    if not vs or rec.candidates is None or not len(rec.candidates):
        return ""
    c, cand = rec.constraints, rec.candidates.set_index("rule")
    value = {"fnr": lambda r: f"{fr.points(r['fnr_increase'])} au pire, au plus {fr.points(c.max_fnr_increase, 0)}",
             "ba": lambda r: f"{fr.number(r['ba_loss'], 3)}, au plus {fr.number(c.max_ba_loss, 2)}",
             "randomised": lambda r: f"{fr.percent(r['randomised_share'])}, au plus {fr.percent(c.max_randomised)}"}
    parts = []
    for rule in dict.fromkeys(v.treated for v in vs.established("primary") if v.treated in cand.index):
        r = cand.loc[rule]
        broken = [f for f in str(r["fails"]).split(",") if f]
        if broken:
            said = [f"{FAILS_FR.get(f, f)} ({value[f](r)})" if f in value else FAILS_FR.get(f, f) for f in broken]
            parts.append(f"{rule_label(rule)}, dont l'effet est établi ({PRIMARY_MARK}), ne les respecte pas : "
                         f"{', '.join(said)}")
    return (" " + " ; ".join(parts) + ". Établir un effet sur l'écart ne suffit pas : la règle doit aussi ne "
            "pas aggraver le sous-diagnostic d'un groupe ni coûter trop d'exactitude.") if parts else ""


def _rate_counts(rec, attribute: str) -> str:
    """« Sous-diagnostic sur cette moitié : … F 0,31 (12/39), M … ; référence : … » and the same for the false
    positives: the counts behind the gap, and what the sains pay for the malades' gain."""
    said = ""
    for name, what, count in (("report_fnr", "Sous-diagnostic (FNR, malades manqués / malades)", "n_positive"),
                              ("report_fpr", "Faux positifs (FPR, sains déclarés malades / sains)", "n_negative")):
        table = getattr(rec, name, None)
        if table is None or not len(table):
            continue
        parts = []
        for rule, rows in table.groupby("rule", sort=False):
            cells = [f"{fr.group_label(attribute, r.group)} {fr.number(r.estimate, 2)} "
                     f"{fr.fraction(r.estimate, getattr(r, count))}"
                     for r in rows.itertuples() if np.isfinite(r.estimate)]
            if cells:
                parts.append(f"{rule_label(rule)} : {', '.join(cells)}")
        said += f" {what} sur cette moitié : {' ; '.join(parts)}." if parts else ""
    return said


def _off_the_front(ctx: StudyContext, rec) -> str:
    """Why a recommended rule off the Pareto front is still the one recommended (" …"; "" when on it)."""
    from pipeline.report.tables import defined_gap

    grid = getattr(ctx, "grid", None)
    if grid is None or rec.chosen in set(grid.best(defined_gap(grid.table))):
        return ""
    return (" Elle n'est pas sur le front de Pareto du chapitre 4 (exactitude contre écart d'égalité des erreurs) : "
            "la recommandation minimise l'écart de sensibilité sous les contraintes, qui écartent les règles "
            "tirant plus de décisions au hasard ou aggravant le sous-diagnostic d'un groupe.")


def recommendation_summary(ctx: StudyContext, short: bool = False) -> str:
    """One key finding: the recommended rule (or none) and whether it held on the half that did not choose it."""
    from pipeline.fairness.recommendation import recommendation

    rec = recommendation(ctx)
    if rec.withheld == "weak_model":
        return ("Recommandation : aucune règle, le modèle est trop faible pour départager les règles." if short else
                "Recommandation sous contraintes fixées à l'avance : aucune règle n'est recommandée, le modèle est "
                "trop faible pour que choisir entre des règles de décision ait un sens.")
    if short:
        if rec.chosen is None:
            return "Recommandation sous contraintes : aucune règle, garder la référence."
        broken = [FAILS_FR.get(f, f) for f in str((rec.report_checks or {}).get("fails", "")).split(",") if f]
        fragile = (f" (fragile : sur l'autre moitié des patients, {', '.join(broken)})" if broken else "")
        return f"Recommandation sous contraintes : {rule_label(rec.chosen)}{fragile}."
    head = "Recommandation sous contraintes fixées à l'avance (choisie sur la moitié des patients, évaluée sur l'autre)"
    if rec.chosen is None:
        return f"{head} : aucune règle ne satisfait les contraintes ; garder le modèle de référence."
    broken = [FAILS_FR.get(f, f) for f in str((rec.report_checks or {}).get("fails", "")).split(",") if f]
    return (f"{head} : {rule_label(rec.chosen)} ; "
            + ("les contraintes tiennent sur l'autre moitié." if not broken else
               f"sur l'autre moitié, elle ne les respecte plus ({', '.join(broken)}) : recommandation fragile."))


# ------------------------------------------------------------------ exploratory families (tables, grid)


def tested_gap(groups) -> str | None:
    """The gap an exploratory table tests: the signed sensitivity gap with two groups; none with three or more
    (max − min gaps are descriptive)."""
    return "tpr_signed" if groups is not None and len(groups) == 2 else None


def move_text(v: Verdict) -> str:
    """« réduit l'écart », « creuse l'écart », « inverse l'écart », « ne change pas … de façon notable »: the
    verb of a verdict on a signed gap, from its status and direction."""
    if v.status != "established":
        return "ne change pas de façon notable"
    word = _gap_move(v)
    return {"réduction de l'écart": "réduit", "inversion de l'écart": "inverse", "creusement de l'écart": "creuse",
            "hausse": "augmente", "baisse": "diminue"}[word]


def is_primary(v: Verdict) -> bool:
    return v.family == "primary" or v.reason.startswith("primary")


def qualifier(v: Verdict) -> str:
    """How sure: « établi (question principale ★) » or « notable (exploratoire †) »."""
    return f"question principale {PRIMARY_MARK}" if is_primary(v) else f"exploratoire {EXPLORATORY_MARK}"


@dataclass
class GridMoves:
    """The grid's combinations by what their verdict on the tested gap says (means over the training seeds)."""

    gap: str | None
    compared: int = 0  # combinations other than the reference
    reduced: list[Verdict] = field(default_factory=list)
    reversed: list[Verdict] = field(default_factory=list)
    widened: list[Verdict] = field(default_factory=list)
    unchanged: list[Verdict] = field(default_factory=list)  # tested, not established
    identical: list[Verdict] = field(default_factory=list)  # the same decisions as the reference or another row
    untested: list[Verdict] = field(default_factory=list)  # degenerate, undefined, no interval
    costly: list[str] = field(default_factory=list)  # reduced or reversed at an established loss of accuracy
    by_chance: list[str] = field(default_factory=list)  # reduced or reversed by drawing decisions at random


def grid_moves(ctx: StudyContext) -> GridMoves:
    vs = _verdicts(ctx)
    gap = tested_gap(ctx.grid.table.attrs.get("groups"))
    found = [v for v in (vs.family("exploratory:grid") if vs else []) if v.quantity == gap]
    out = GridMoves(gap, compared=len(ctx.grid.table) - 1)
    ba = {v.treated: v for v in (vs.family("exploratory:grid") if vs else []) if v.quantity == "balanced_accuracy"}
    t = ctx.grid.table
    limit = ctx.config.analysis.recommendation.max_randomised
    # an equality reached by coins: many decisions drawn at random, or a group no longer told apart
    chance = set(t.loc[(t["randomised_share"] > limit) | t.get("coin_flip", False), "combination"])
    for v in found:
        if v.reason.startswith("identical"):
            out.identical.append(v)
        elif v.status == "established":
            bucket = {"réduit": out.reduced, "inverse": out.reversed}.get(move_text(v), out.widened)
            bucket.append(v)
            b = ba.get(v.treated)
            if bucket is not out.widened and b is not None and b.established and b.direction < 0:
                out.costly.append(v.treated)
            if bucket is not out.widened and v.treated in chance:
                out.by_chance.append(v.treated)
        elif v.status == "not_established":
            out.unchanged.append(v)
        else:
            out.untested.append(v)
    return out


def analysis_verdict(ctx: StudyContext, family: str, quantity: str, attribute: str | None,
                     treated: str) -> Verdict | None:
    """The exploratory verdict of one model-analysis quantity (amplification, probe), None when not computed."""
    from pipeline.fairness.inference import verdict_key

    vs = _verdicts(ctx)
    return vs.get(verdict_key(family, quantity, attribute, treated, None)) if vs else None


def amplification_verdict(ctx: StudyContext, attribute: str, method: str) -> Verdict | None:
    return analysis_verdict(ctx, "exploratory:amplification", "bias_amplification", attribute, method)


def probe_verdict(ctx: StudyContext, attribute: str) -> Verdict | None:
    return analysis_verdict(ctx, "exploratory:probe", "probe_gain", attribute, "image features")
