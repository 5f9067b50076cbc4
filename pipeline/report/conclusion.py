"""Chapter 6 and the appendix: key findings, reproducibility, the full grid (`06-conclusion.qmd`, `appendix.qmd`)."""

from __future__ import annotations

import pandas as pd
import yaml

from pipeline.fairness.grid import best_row
from pipeline.report.analysis import analysis_narrative
from pipeline.report.french import num
from pipeline.report.tables import (
    attribute_in_sentence,
    estimate_ci,
    grid_ci,
    grid_rows,
    method_label,
    p_text,
    post_label,
)
from pipeline.study import StudyContext, seeds_used, versions


def key_findings(ctx: StudyContext, short: bool = False) -> str:
    uni = ctx.comparison[ctx.comparison["method"] == "uniform"].set_index("metric")
    attr = attribute_in_sentence(ctx.config.weighting.attribute)
    t = ctx.grid.table
    best = best_row(t, "eo_diff")  # never a degenerate rule; realised gaps for randomised rules
    signed = "tpr_signed" in uni.index and uni.loc["tpr_signed", "estimate"] == uni.loc["tpr_signed", "estimate"]
    gap = "tpr_signed" if signed else "eopp_diff"
    which = ", " + " − ".join(ctx.comparison.attrs.get("groups", [])) if signed else ""
    items = [
        f"Modèle de référence : exactitude équilibrée {estimate_ci(uni, 'balanced_accuracy')}, "
        f"écart de sensibilité ({attr}{which}) {estimate_ci(uni, gap)}.",
        ("Écart d'equalized odds non défini pour toutes les combinaisons : un groupe compte moins de "
         f"{ctx.config.evaluation.min_per_class} images d'une classe." if t["eo_diff"].notna().sum() == 0 else
         "Aucune combinaison non dégénérée : toutes les règles donnent une seule classe à presque toutes les images.")
        if best is None else
        f"Écart d'equalized odds (réalisé) le plus faible parmi les règles non dégénérées : "
        f"{method_label(best['weighting'])} + {post_label(best['postprocessor'])}, {num(best['eo_diff'])} "
        f"({p_text(best.get('eo_diff_p_equal', float('nan')))}, test d'égalité des taux), "
        f"pour une exactitude équilibrée de {grid_ci(best, 'balanced_accuracy')}.",
    ]
    if not short:
        items.append(analysis_narrative(ctx).split("\n\n")[0])
    return "\n".join(f"- {i}" for i in items)


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
        "Configuration (`study.yml`) :",
        "",
        "```yaml",
        config_yaml.strip(),
        "```",
    ])


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
