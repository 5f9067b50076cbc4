"""Chapter 6 and the appendix: key findings, reproducibility, the full grid (`06-conclusion.qmd`, `appendix.qmd`)."""

from __future__ import annotations

import pandas as pd
import yaml

from pipeline.report.analysis import analysis_narrative
from pipeline.report.french import num
from pipeline.report.tables import attribute_in_sentence, estimate_ci, grid_ci, grid_rows, method_label, post_label
from pipeline.study import StudyContext, seeds_used, versions


def key_findings(ctx: StudyContext, short: bool = False) -> str:
    uni = ctx.comparison[ctx.comparison["method"] == "uniform"].set_index("metric")
    attr = attribute_in_sentence(ctx.config.weighting.attribute)
    t = ctx.grid.table
    best = t.sort_values("eo_diff").iloc[0]
    items = [
        f"Modèle de référence : exactitude équilibrée {estimate_ci(uni, 'balanced_accuracy')}, "
        f"écart de sensibilité ({attr}) {estimate_ci(uni, 'eopp_diff')}.",
        f"Écart d'equalized odds le plus faible : {method_label(best['weighting'])} + "
        f"{post_label(best['postprocessor'])}, {grid_ci(best, 'eo_diff')}, "
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
