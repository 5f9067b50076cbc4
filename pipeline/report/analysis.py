"""Chapter 5 (analysis): the cost of fairness and the comparison with the literature (`chapters/05-analysis.qmd`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.validity import validity
from pipeline.report.french import ci, num
from pipeline.report.tables import beats_both, method_label, post_label
from pipeline.study import StudyContext


def cost_table(ctx: StudyContext) -> pd.DataFrame:
    t = ctx.grid.table
    keep = (t["weighting"] == "uniform") | (t["postprocessor"] == "none") | t["frontier_eo_diff"]
    rows = []
    for r in t[keep & ~((t["weighting"] == "uniform") & (t["postprocessor"] == "none"))].itertuples():
        rows.append({"Combinaison": f"{method_label(r.weighting)} + {post_label(r.postprocessor)}",
                     "Δ exactitude équilibrée": ci(r.balanced_accuracy_diff, r.balanced_accuracy_diff_low,
                                                   r.balanced_accuracy_diff_high),
                     "Δ écart EO": ci(r.eo_diff_diff, r.eo_diff_diff_low, r.eo_diff_diff_high),
                     "Front de Pareto": "oui" if r.frontier_eo_diff else ""})
    return pd.DataFrame(rows)


def analysis_narrative(ctx: StudyContext) -> str:
    t = ctx.grid.table
    others = t[~((t["weighting"] == "uniform") & (t["postprocessor"] == "none"))]
    moved = others["eo_diff_significant"].astype(bool)  # Holm-corrected z-test of the paired difference
    sig_gain, worse = others[moved & (others["eo_diff_diff"] < 0)], others[moved & (others["eo_diff_diff"] > 0)]
    costly = sig_gain[sig_gain["balanced_accuracy_significant"].astype(bool) & (sig_gain["balanced_accuracy_diff"] < 0)]
    lines = [f"Sur {len(others)} combinaisons comparées au modèle de référence, {len(sig_gain)} réduisent "
             f"l'écart d'equalized odds de façon établie (test apparié, correction de Holm), dont {len(costly)} au "
             f"prix d'une baisse établie de l'exactitude équilibrée ; {len(worse)} l'augmentent de façon établie ; "
             f"{len(others) - len(sig_gain) - len(worse)} restent dans le bruit."]
    both = beats_both(ctx)
    if both:
        lines.append("Combinaisons meilleures que chacune de leurs composantes seule (écart plus faible sans "
                     f"perte d'exactitude) : {', '.join(both)}.")
    else:
        lines.append("Aucune combinaison ne bat à la fois la pondération seule et le post-traitement seul.")
    worst = t.set_index(["weighting", "postprocessor"])["worst_group_tpr"]
    base_w = worst.get(("uniform", "none"), np.nan)
    down = [f"{method_label(w)} + {post_label(p)}" for (w, p), v in worst.items() if v < base_w - 0.05]
    if down:
        lines.append("Attention au nivellement par le bas : le TPR du groupe le moins bien servi baisse de plus de "
                     f"5 points avec {', '.join(down[:5])}{' …' if len(down) > 5 else ''}.")
    return "\n\n".join(lines)


def literature_table(ctx: StudyContext) -> pd.DataFrame:
    """Our figures beside the published ones; the attribute-only baseline beside the image model."""
    uni = ctx.comparison[(ctx.comparison["method"] == "uniform")].set_index("metric")
    preds = ctx.valid_predictions["uniform"]
    threshold = ctx.threshold("uniform")
    sick = preds[preds[S.LABEL] == 1]
    fnr = (sick[S.PROBA] < threshold).groupby(sick[S.AGE_BAND], observed=True).mean() if S.AGE_BAND in sick else None
    fnr_text = ", ".join(f"{b} : {num(v)}" for b, v in fnr.items()) if fnr is not None and len(fnr) else "n.d."
    t = ctx.grid.table
    others = t[~((t["weighting"] == "uniform") & (t["postprocessor"] == "none"))]
    better = others[(others["eo_diff_diff_high"] < 0) & (others["balanced_accuracy_diff_low"] > -0.01)]
    b = validity(ctx).baseline
    source = "démo synthétique" if ctx.config.is_demo else "nos données"
    ours = f"Nous ({source})"
    return pd.DataFrame([
        {"Quantité": "AUC du classifieur d'images", "Littérature": "≈ 0,78 (DenseNet-121, « No Finding »)",
         ours: ci(*uni.loc["auc", ["estimate", "low", "high"]])},
        {"Quantité": "AUC des seuls attributs (âge, sexe, incidence), hors échantillon", "Littérature": "—",
         ours: ci(b["attributes"], b["attributes_low"], b["attributes_high"]) if b else "n.d."},
        {"Quantité": "Sous-diagnostic par âge : malade déclaré sain (FPR de « No Finding » dans la littérature, "
                     "notre FNR)",
         "Littérature": "plus élevé chez les plus jeunes (0–20 ans) et chez les femmes",
         ours: fnr_text},
        {"Quantité": "Atténuations meilleures que l'apprentissage simple",
         "Littérature": "rares (MEDFAIR, Zong et al. 2023 ; Zhang et al. 2022)",
         ours: f"{len(better)} sur {len(others)} (écart EO réduit, exactitude maintenue)"},
    ])
