"""Chapter 6 and the appendix: key findings, reproducibility, the full grid (`06-conclusion.qmd`, `appendix.qmd`)."""

from __future__ import annotations

import pandas as pd
import yaml

from pipeline.fairness.validity import validity
from pipeline.report import french as fr
from pipeline.report import weak
from pipeline.report.french import UNDEFINED_CI, ci, lower_first, num
from pipeline.report.tables import (
    attribute_in_sentence,
    estimate_ci,
    grid_rows,
    undefined_interval_reason,
)
from pipeline.report.verdicts import (
    level_ci,
    price_of_fairness,
    primary_summary,
    recommendation_summary,
    reference_gap_ci,
    seeds_phrase,
)
from pipeline.study import StudyContext, seeds_used, versions


def key_findings(ctx: StudyContext, short: bool = False, readable: bool = True, slide: bool = False) -> str:
    """The study's key findings, one bullet each (`short`: brief sentences; `slide`: the three a slide holds).
    A weak model's come first with what stays readable (`readable=False`: not repeated, as in the conclusion
    of a report that opens with it)."""
    uni = ctx.comparison[ctx.comparison["method"] == "uniform"].set_index("metric")
    attr = attribute_in_sentence(ctx.config.weighting.attribute)
    signed = "tpr_signed" in uni.index and uni.loc["tpr_signed", "estimate"] == uni.loc["tpr_signed", "estimate"]
    gap = "tpr_signed" if signed else "eopp_diff"
    which = ", " + " − ".join(ctx.comparison.attrs.get("groups", [])) if signed else ""
    v = validity(ctx)
    gap_text = estimate_ci(uni, gap)
    if UNDEFINED_CI in gap_text:
        gap_text += f" (intervalle non défini : {undefined_interval_reason()})"
    if v.weak_model and short:  # the slide leads with what can still be said, then the next step
        items = [f"{weak.TITLE} ({weak.short_reasons(ctx)}).",
                 *(fr.upper_first(s).rstrip(".") + "." for s in (weak.still_readable(ctx) if readable else [])),
                 *filter(None, [primary_summary(ctx, short), recommendation_summary(ctx, short)]),
                 weak.next_step(ctx, brief=not readable)]
        return "\n".join(f"- {i}" for i in items if i)
    items = [f"{weak.TITLE} ({weak.short_reasons(ctx)})."] if v.weak_model else []
    items += [primary_summary(ctx, short)] if primary_summary(ctx, short) else []
    items.append(recommendation_summary(ctx, short))
    auc, bacc = level_ci(ctx, "auc"), level_ci(ctx, "balanced_accuracy")
    if slide and not v.weak_model:
        items.append(price_of_fairness(ctx))
        if auc and bacc:
            items.append(f"Modèle de référence ({seeds_phrase(ctx).split(',')[0]}) : AUC {auc}, exactitude "
                         f"équilibrée {bacc}.")
        return "\n".join(f"- {i}" for i in items if i)
    over_seeds = reference_gap_ci(ctx, ctx.config.weighting.attribute) if signed else None
    if auc and bacc and over_seeds:
        items += [f"Modèle de référence ({seeds_phrase(ctx)}) : AUC {auc}, exactitude équilibrée {bacc}, écart de "
                  f"sensibilité ({attr}{which}) {over_seeds}."]
    elif auc and bacc:
        items += [f"Modèle de référence ({seeds_phrase(ctx)}) : AUC {auc}, exactitude équilibrée {bacc} au seuil "
                  f"de fonctionnement (choisi sur {fr.threshold_source(ctx.train_info.get('uniform', {}))}), "
                  f"écart de sensibilité ({attr}{which}) "
                  f"{gap_text}."]
    else:
        items += [f"Modèle de référence : AUC {estimate_ci(uni, 'auc')}, exactitude équilibrée "
                  f"{estimate_ci(uni, 'balanced_accuracy')} au seuil de fonctionnement "
                  f"({num(ctx.threshold('uniform'), 3)}, choisi sur "
                  f"{fr.threshold_source(ctx.train_info.get('uniform', {}))}), écart de sensibilité "
                  f"({attr}{which}) {gap_text}."]
    b = v.baseline
    if b:
        items.append(f"Un modèle des seuls attributs sensibles (appris sur les patients d'apprentissage) atteint "
                     f"une AUC de {ci(b['attributes'], b['attributes_low'], b['attributes_high'])} sur les "
                     "patients d'évaluation, "
                     f"contre {ci(b['image'], b['image_low'], b['image_high'])} pour le modèle d'images ("
                     + ("un entraînement" if b.get("n_seeds", 1) == 1 else f"{b['n_seeds']} entraînements")
                     + ") : différence appariée "
                     f"{ci(b['diff'], b['diff_low'], b['diff_high'])}.")
    if v.problems and not v.weak_model:
        items.append("À lire avec prudence : " + lower_first(warnings_short(ctx)))
    if ctx.grid.table["eo_diff"].notna().sum() == 0:
        items.append("Écart d'égalité des erreurs non défini pour toutes les combinaisons : un groupe compte moins de "
                     f"{ctx.config.evaluation.min_per_class} images d'une classe.")
    return "\n".join(f"- {i}" for i in items)


def warnings_short(ctx: StudyContext) -> str:
    """One French sentence (for a slide) on why the fairness gaps cannot be read as fairness; "" if nothing."""
    v = validity(ctx)
    reasons = []
    if v.degenerate_methods():
        reasons.append("des règles donnent la même décision à (presque) tout le monde (écarts nuls par "
                       "construction : nivellement par le bas)")
    if v.chance:
        everyone = len(v.chance) == len(ctx.predictions)
        reasons.append(f"l'AUC {'des' if everyone else 'de certains'} modèles n'est pas distinguable du hasard")
    if v.image_not_better:
        reasons.append("le modèle d'images ne fait pas mieux qu'un modèle des seules métadonnées")
    if not reasons:
        return ""
    return ("Ces écarts entre groupes sont peu interprétables : " + " ; ".join(reasons) + ".")


def report_summary(ctx: StudyContext) -> str:
    """The summary the report opens with: the weak-model warning first when there is one, then the data, the
    reference model's level, the primary answers and the recommendation (all read from the study)."""
    from pipeline.report import data as data_chapter

    items = [f"Données : {ctx.describe_data()}."]
    an = data_chapter.analysis(ctx)
    largest = data_chapter.largest_gap(an)
    if largest is not None:
        from pipeline.report.slides import title_data

        items.append(title_data(ctx) + " (chapitre 2).")
    auc, bacc = level_ci(ctx, "auc"), level_ci(ctx, "balanced_accuracy")
    if auc and bacc:
        items.append(f"Modèle de référence ({seeds_phrase(ctx)}) : AUC {auc}, exactitude équilibrée {bacc}.")
    items += [s for s in (primary_summary(ctx, short=True), recommendation_summary(ctx, short=True)) if s]
    body = "\n".join(f"- {i}" for i in items)
    head = '::: {.callout-note appearance="simple"}\n## Résumé (généré à partir des résultats)'
    return weak.banner(ctx, "summary") + f"\n{head}\n\n{body}\n:::\n"


def contents_page(ctx: StudyContext) -> str:
    """The PDF's contents after the summary, kept whole: then a page break, so that the introduction starts a
    page. A weak model's warning fills the title page, so its contents moves to page 2: there the introduction
    follows it without a break, instead of after a page left nearly blank. (Decided here, not by Typst asking
    which page it is on: a `context` page break does not converge and freezes every page number at 1.)"""
    pagebreak = "" if weak.is_weak(ctx) else "\n#pagebreak(weak: true)"
    return ("```{=typst}\n#block(breakable: false)[\n  #heading(outlined: false, numbering: none)[Table des matières]"
            f"\n  #text(size: 0.9em, outline(title: none, depth: 1))\n]{pagebreak}\n```")


def reproducibility(ctx: StudyContext) -> str:
    v = versions()
    seeds = {k: s for k, s in seeds_used(ctx.config).items() if s is not None}
    config_yaml = yaml.safe_dump(_plain(ctx.config), allow_unicode=True, sort_keys=False)
    times = ", ".join(f"{k} {num(s, 1)} s" for k, s in ctx.timings.items())
    return "\n".join([
        f"Empreinte des données : `{ctx.data_fingerprint}` ({len(ctx.frame)} images). "
        f"Graines : {', '.join(f'{k} = {s}' for k, s in seeds.items())}. "
        f"Intervalles : bootstrap sur les patients, {ctx.config.evaluation.n_bootstrap} réplicats, "
        f"percentiles 2,5 et 97,5. Temps de calcul (ou de lecture du cache) : {times}.",
        "",
        "Versions : " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        compute_sentence(ctx),
        "",
        "Configuration (`study.yml`) :",
        "",
        "```yaml",
        config_yaml.strip(),
        "```",
    ])


CPU_KERNELS = {"AVX512": "AVX-512", "AVX2": "AVX2", "DEFAULT": "sans instructions vectorielles (default)",
               "ZVECTOR": "ZVECTOR", "VSX": "VSX", "SVE256": "SVE 256 bits", "NO AVX": "sans AVX"}


def compute_sentence(ctx: StudyContext) -> str:
    """Where the networks were trained (kernels, device, precision) and what reproduces bit for bit."""
    records = [p.attrs.get("compute") or {} for p in ctx.seed_predictions.values()]
    seen = sorted({(r.get("device", "?"), r.get("cpu_capability", "?"), r.get("precision", "?"))
                   for r in records if r})
    if not seen:
        where = "Noyaux de calcul non enregistrés (modèles entraînés avant que l'étude ne les note)."
    else:
        parts = []
        for device, cpu, prec in seen:
            kernels = CPU_KERNELS.get(str(cpu).upper(), str(cpu))
            on = "processeur" if device == "cpu" else f"GPU {device}"
            parts.append(f"{on}, noyaux CPU de torch {kernels}, précision {prec}")
        where = "Entraînement : " + " ; ".join(parts) + "."
    return (f"{where} Mêmes versions (`requirements.lock`), mêmes noyaux et mêmes graines redonnent les mêmes "
            "résultats au bit près ; d'autres noyaux (une autre machine, `ATEN_CPU_CAPABILITY`) ou un GPU "
            "donnent un autre entraînement, aussi plausible : c'est la variabilité entre entraînements, que "
            "les graines montrent et que les intervalles bootstrap sur les patients ne couvrent pas.")


def _plain(obj):
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _plain(x) for k, x in obj.items()}
    return obj


def grid_table(ctx: StudyContext) -> pd.DataFrame:
    return grid_rows(ctx)
