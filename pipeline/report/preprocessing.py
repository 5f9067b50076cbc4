"""Chapter 3 (pre-processing): tables, charts and sentences of `chapters/03-preprocessing.qmd`."""

from __future__ import annotations

import altair as alt
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.weighting import WEIGHTINGS
from pipeline.report import charts
from pipeline.report.french import ci, num, pct
from pipeline.report.tables import (
    attribute_in_sentence,
    cite,
    estimate_ci,
    method_label,
    results_table,
    significant_moves,
)
from pipeline.study import StudyContext


def training_protocol(ctx: StudyContext) -> str:
    t = ctx.config.training
    info = ctx.train_info.get("uniform", {})
    size_note = ""
    if t.subsample_fraction < 1:
        size_note = (f" Pour tenir dans le budget de calcul, nous gardons {pct(t.subsample_fraction)} des "
                     f"patients (tirage stratifié sur la classe et le sexe, graine {t.subsample_seed}) : "
                     f"{len(ctx.frame)} images au lieu de {len(ctx.full_frame)}.")
    if t.mode == "last_layer":
        how = (f"Un réseau `{t.backbone}` est entraîné **une fois** sans pondération ({t.image_size} px, "
               f"{info.get('epochs', '?')} époques avec arrêt précoce sur des patients d'apprentissage mis de "
               "côté), puis, pour chaque pondération, seule la dernière couche (régression logistique "
               "pondérée sur les caractéristiques du réseau) est réapprise : c'est le principe du *Deep "
               "Feature Reweighting* [@kirichenko2022], qui rend la comparaison de nombreuses pondérations "
               "peu coûteuse.")
    else:
        how = (f"Un réseau `{t.backbone}` complet est entraîné pour chaque pondération ({t.image_size} px, "
               f"au plus {t.max_epochs} époques, arrêt précoce sur des patients d'apprentissage mis de côté).")
    seeds = ", ".join(str(s) for s in t.seeds)
    return (f"{how} Graine(s) : {seeds}. L'évaluation porte sur {len(ctx.evaluation)} images de validation "
            f"de {ctx.evaluation[S.PATIENT].nunique()} patients, disjoints de l'apprentissage.{size_note}")


def weighting_attribute(ctx: StudyContext) -> str:
    """The sensitive attribute the weightings balance, as it reads in a sentence (« le sexe »)."""
    return attribute_in_sentence(ctx.config.weighting.attribute)


def weighting_methods(ctx: StudyContext) -> pd.DataFrame:
    rows = [{"Méthode": WEIGHTINGS[m].label_fr, "Poids": f"${WEIGHTINGS[m].formula}$",
             "Référence": cite(WEIGHTINGS[m].reference)} for m in ctx.predictions]
    return pd.DataFrame(rows)


def weighting_results(ctx: StudyContext, compact: bool = False) -> pd.DataFrame:
    return results_table(ctx.comparison, "method", method_label, compact=compact)


def weighting_by_attribute(ctx: StudyContext) -> pd.DataFrame:
    rows = {}
    for attr, table in ctx.comparison_by_attribute.items():
        t = table[table["metric"] == "eopp_diff"].set_index("method")
        rows[S.ATTRIBUTE_LABELS_FR.get(attr, attr)] = {
            method_label(m): ci(r["estimate"], r["low"], r["high"]) + (" ★" if r["significant"] else "")
            for m, r in t.iterrows()}
    return pd.DataFrame(rows).rename_axis("Méthode").reset_index()


def weighting_rates_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    return charts.rates_by_group_chart(ctx.group_rates)


def weighting_tradeoff_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    return charts.tradeoff_chart(ctx.comparison, "eo_diff", title="Performance contre équité, par pondération")


def seed_variability(ctx: StudyContext) -> pd.DataFrame:
    """Mean and spread over training seeds of each method's metrics and of its difference with uniform."""
    t = ctx.seed_metrics
    base = t[t["method"] == "uniform"].set_index("seed")
    rows = []
    for method, part in t.groupby("method", sort=False):
        p = part.set_index("seed")
        d_eo = (p["eo_diff"] - base["eo_diff"]).dropna()
        rows.append({"Méthode": method_label(method),
                     "Exact. équil.": f"{num(p['balanced_accuracy'].mean())} ± {num(p['balanced_accuracy'].std())}",
                     "Écart EO": f"{num(p['eo_diff'].mean())} ± {num(p['eo_diff'].std())}",
                     "Δ écart EO vs uniforme": f"{num(d_eo.mean())} ± {num(d_eo.std())}"})
    return pd.DataFrame(rows)


def seed_sentence(ctx: StudyContext) -> str:
    seeds = ctx.config.training.seeds
    if len(seeds) < 2:
        return ("Une seule graine d'apprentissage est utilisée (`training.seeds`) : ajoutez-en pour mesurer la "
                "variabilité due à l'initialisation.")
    sd = ctx.seed_metrics[ctx.seed_metrics["method"] == "uniform"]["eo_diff"].std()
    return (f"Avec {len(seeds)} graines d'apprentissage ({', '.join(map(str, seeds))}), l'écart d'equalized odds du "
            f"modèle de référence varie d'un écart-type de {num(sd)} d'une graine à l'autre : un effet de méthode "
            "plus petit que cette variation n'est pas interprétable. Les autres résultats utilisent la "
            f"graine {seeds[0]}.")


def weighting_narrative(ctx: StudyContext) -> str:
    table = ctx.comparison
    base = table[(table["method"] == "uniform")].set_index("metric")
    attr = attribute_in_sentence(ctx.config.weighting.attribute)
    lines = [f"Sans pondération, l'exactitude équilibrée est de {estimate_ci(base, 'balanced_accuracy')} "
             f"et l'écart de sensibilité entre groupes ({attr}) de {estimate_ci(base, 'eopp_diff')}."]
    moves = significant_moves(table, "method", method_label)
    lines += moves or ["Aucune pondération ne modifie une métrique au-delà du bruit d'échantillonnage "
                       "(tous les intervalles appariés contiennent 0)."]
    best = table[table["metric"] == "eo_diff"].sort_values("estimate").iloc[0]
    lines.append(f"L'écart d'equalized odds le plus faible est obtenu par {method_label(best['method'])} "
                 f"({ci(best['estimate'], best['low'], best['high'])}).")
    return "\n\n".join(lines)
