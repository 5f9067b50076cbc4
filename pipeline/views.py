"""What the chapters and slides show: tables, charts and generated sentences from the study.

Each function takes the StudyContext and only formats what `study.run` computed; the report and
the slides call the same functions, so a number is never computed twice or typed by hand.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import yaml

from . import figures as F
from . import figures_results as FR
from . import narrative as N
from . import schema as S
from .metrics import METRIC_LABELS_FR
from .postprocess import POSTPROCESSORS
from .study import StudyContext, seeds_used, versions
from .weighting import WEIGHTINGS

SHOWN = ("balanced_accuracy", "auc", "eopp_diff", "eo_diff", "dp_diff", "worst_group_bacc")
SHORT_FR = {"balanced_accuracy": "Exact. équil.", "auc": "AUC", "eopp_diff": "Écart TPR",
            "eo_diff": "Écart EO", "dp_diff": "Écart DP", "worst_group_bacc": "EE pire groupe"}
LOWER_IS_BETTER = {"eopp_diff", "eo_diff", "dp_diff"}


# ---------------------------------------------------------------- French number formatting


def num(x: float, digits: int = 2) -> str:
    """0.7812 -> '0,78'; NaN -> 'n.d.' (undefined, e.g. a group with one class)."""
    return "n.d." if x is None or not np.isfinite(x) else N.number(x, digits)


def pct(x: float, digits: int = 0) -> str:
    return "n.d." if x is None or not np.isfinite(x) else N.percent(x, digits)


def ci(est: float, low: float, high: float, digits: int = 2) -> str:
    """'0,78 [0,74 ; 0,82]'."""
    if not np.isfinite(low) or not np.isfinite(high):
        return num(est, digits)
    return f"{num(est, digits)} {N.bracket(num(low, digits), num(high, digits))}"


def _est(table: pd.DataFrame, metric: str) -> str:
    """Estimate and interval of one metric of a bootstrap table indexed by metric."""
    r = table.loc[metric]
    return ci(r["estimate"], r["low"], r["high"])


def _grid_ci(row: pd.Series, metric: str) -> str:
    return ci(row[metric], row[f"{metric}_low"], row[f"{metric}_high"])


def attribute_label(attribute: str) -> str:
    return N.attribute_label(attribute).lower()


method_label = post_label = FR.method_label


def _cite(key: str) -> str:
    return f"[@{key}]" if key else ""


# ---------------------------------------------------------------- pre-processing


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


def weighting_methods(ctx: StudyContext) -> pd.DataFrame:
    rows = [{"Méthode": WEIGHTINGS[m].label_fr, "Poids": f"${WEIGHTINGS[m].formula}$",
             "Référence": _cite(WEIGHTINGS[m].reference)} for m in ctx.predictions]
    return pd.DataFrame(rows)


def _results_table(table: pd.DataFrame, label_col: str, labeller, metrics=SHOWN, compact=False) -> pd.DataFrame:
    rows = []
    for name, part in table.groupby(label_col, sort=False):
        part = part.set_index("metric")
        row = {"Méthode": labeller(name)}
        for m in metrics:
            r = part.loc[m]
            text = num(r["estimate"]) if compact else ci(r["estimate"], r["low"], r["high"])
            row[SHORT_FR[m]] = text + (" ★" if bool(r.get("significant", False)) else "")
        rows.append(row)
    return pd.DataFrame(rows)


def weighting_results(ctx: StudyContext, compact: bool = False) -> pd.DataFrame:
    return _results_table(ctx.comparison, "method", method_label, compact=compact)


def weighting_by_attribute(ctx: StudyContext) -> pd.DataFrame:
    rows = {}
    for attr, table in ctx.comparison_by_attribute.items():
        t = table[table["metric"] == "eopp_diff"].set_index("method")
        rows[S.ATTRIBUTE_LABELS_FR.get(attr, attr)] = {
            method_label(m): ci(r["estimate"], r["low"], r["high"]) + (" ★" if r["significant"] else "")
            for m, r in t.iterrows()}
    return pd.DataFrame(rows).rename_axis("Méthode").reset_index()


def weighting_rates_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    return FR.rates_by_group_chart(ctx.group_rates)


def weighting_tradeoff_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    return FR.tradeoff_chart(ctx.comparison, "eo_diff", title="Performance contre équité, par pondération")


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


def _in_sentence(label: str) -> str:
    """A label inside a sentence: « Écart de sensibilité (TPR) » -> « écart de sensibilité (TPR) », « AUC » kept."""
    return label if label[:2].isupper() else label[:1].lower() + label[1:]


def _significant_moves(table: pd.DataFrame, key: str, labeller) -> list[str]:
    sentences = []
    for name, part in table.groupby(key, sort=False):
        p = part.set_index("metric")
        shown = [m for m in SHOWN if m in p.index]
        if name == table.attrs.get("baseline", "uniform") or not p.loc[shown, "significant"].any():
            continue
        moved = [f"{_in_sentence(METRIC_LABELS_FR[m])} {'+' if p.loc[m, 'diff'] > 0 else ''}{num(p.loc[m, 'diff'])} "
                 f"[{num(p.loc[m, 'diff_low'])}\u202f; {num(p.loc[m, 'diff_high'])}]"
                 for m in SHOWN if m in p.index and p.loc[m, "significant"]]
        sentences.append(f"**{labeller(name)}** change significativement : {', '.join(moved)}.")
    return sentences


def weighting_narrative(ctx: StudyContext) -> str:
    table = ctx.comparison
    base = table[(table["method"] == "uniform")].set_index("metric")
    attr = attribute_label(ctx.config.weighting.attribute)
    lines = [f"Sans pondération, l'exactitude équilibrée est de {_est(base, 'balanced_accuracy')} "
             f"et l'écart de sensibilité entre groupes ({attr}) de {_est(base, 'eopp_diff')}."]
    moves = _significant_moves(table, "method", method_label)
    lines += moves or ["Aucune pondération ne modifie une métrique au-delà du bruit d'échantillonnage "
                       "(tous les intervalles appariés contiennent 0)."]
    best = table[table["metric"] == "eo_diff"].sort_values("estimate").iloc[0]
    lines.append(f"L'écart d'equalized odds le plus faible est obtenu par {method_label(best['method'])} "
                 f"({ci(best['estimate'], best['low'], best['high'])}).")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- post-processing


def postprocessing_protocol(ctx: StudyContext) -> str:
    g, pp = ctx.grid, ctx.config.postprocessing
    return (f"Les patients de validation sont partagés **par patient** en une partie d'ajustement "
            f"({len(g.fit_patients)} patients, {pct(pp.fit_fraction)}) et une partie d'évaluation "
            f"({len(g.score_patients)} patients), stratifiées sur la classe et le "
            f"{attribute_label(pp.attribute)} (graine {pp.seed}). Chaque post-traitement, y compris le "
            "choix du seuil global, est ajusté sur la première et mesuré sur la seconde : aucune méthode "
            "n'est évaluée sur des patients qui ont servi à l'ajuster.")


def postprocessing_methods(ctx: StudyContext) -> pd.DataFrame:
    names = list(dict.fromkeys(ctx.grid.table["postprocessor"]))
    return pd.DataFrame([{"Méthode": POSTPROCESSORS[n].label_fr, "Principe": POSTPROCESSORS[n].description_fr,
                          "Règle": f"${POSTPROCESSORS[n].formula}$",
                          "Référence": _cite(POSTPROCESSORS[n].reference)} for n in names])


def _grid_rows(ctx: StudyContext, compact: bool = False, rows: pd.DataFrame | None = None,
               label: str = "both") -> pd.DataFrame:
    table = ctx.grid.table if rows is None else rows
    out = []
    for r in table.itertuples(index=False):
        r = r._asdict()
        name = {"post": post_label(r["postprocessor"]), "weighting": method_label(r["weighting"]),
                "both": f"{method_label(r['weighting'])} + {post_label(r['postprocessor'])}"}[label]
        row = {"Méthode": name}
        for m in SHOWN:
            text = num(r[m]) if compact else ci(r[m], r[f"{m}_low"], r[f"{m}_high"])
            lo, hi = r.get(f"{m}_diff_low", np.nan), r.get(f"{m}_diff_high", np.nan)
            row[SHORT_FR[m]] = text + (" ★" if (lo > 0 or hi < 0) else "")
        out.append(row)
    return pd.DataFrame(out)


def postprocessing_results(ctx: StudyContext) -> pd.DataFrame:
    rows = ctx.grid.table[ctx.grid.table["weighting"] == "uniform"]
    return _grid_rows(ctx, rows=rows, label="post")


def postprocessing_rates_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    from .metrics import bootstrap_group_metrics

    ev, attr = ctx.config.evaluation, ctx.grid.attribute
    rates = {name: bootstrap_group_metrics(d, attr, ev.n_bootstrap, ev.seed)
             for (w, name), d in ctx.grid.decisions.items() if w == "uniform"}
    return FR.rates_by_group_chart(rates, title=f"Après post-traitement ({attribute_label(attr)}), IC 95 %")


def pareto_chart(ctx: StudyContext, gap: str = "eo_diff", labels: bool = True) -> alt.TopLevelMixin:
    data = ctx.grid.table.assign(
        label=lambda d: d["weighting"].map(method_label) + " + " + d["postprocessor"].map(post_label))
    return FR.pareto_chart(data, x=gap, frontier_col=f"frontier_{gap}", color_col="weighting", show_labels=labels)


def pareto_table(ctx: StudyContext, gap: str = "eo_diff", compact: bool = False) -> pd.DataFrame:
    """The non-dominated combinations; `compact` (slides): one row per distinct displayed result."""
    front = ctx.grid.table[ctx.grid.table[f"frontier_{gap}"]].sort_values(gap)
    rows = _grid_rows(ctx, compact, front)
    if not compact:
        return rows
    return FR.collapse_ties(rows, [c for c in rows.columns if c != "Méthode"], "Méthode").reset_index(drop=True)


def postprocessing_narrative(ctx: StudyContext) -> str:
    t = ctx.grid.table
    uni = t[t["weighting"] == "uniform"].set_index("postprocessor")
    base = uni.loc["none"]
    lines = []
    for name, r in uni.iterrows():
        if name == "none":
            continue
        d_eo, lo, hi = r["eo_diff_diff"], r["eo_diff_diff_low"], r["eo_diff_diff_high"]
        d_ba = r["balanced_accuracy_diff"]
        verdict = ("réduit" if hi < 0 else "augmente" if lo > 0 else "ne change pas de façon établie")
        lines.append(f"- **{post_label(name)}** {verdict} l'écart d'equalized odds ({num(base['eo_diff'])} → "
                     f"{num(r['eo_diff'])}, différence {num(d_eo)} [{num(lo)}\u202f; {num(hi)}]) pour une "
                     f"variation d'exactitude équilibrée de {num(d_ba)}.")
    front = ctx.grid.frontier("eo_diff")
    names = ", ".join(f"{method_label(w)} + {post_label(p)}" for w, p in
                      zip(front["weighting"], front["postprocessor"], strict=True))
    lines.append(f"\nLe front de Pareto (exactitude équilibrée contre écart d'equalized odds) contient : {names}.")
    return "\n".join(lines)


# ---------------------------------------------------------------- analysis, conclusion


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


def _beats_both(ctx: StudyContext) -> list[str]:
    t = ctx.grid.table.set_index(["weighting", "postprocessor"])
    out = []
    for (w, p), r in t.iterrows():
        if w == "uniform" or p == "none" or (w, "none") not in t.index or ("uniform", p) not in t.index:
            continue
        alone = [t.loc[(w, "none")], t.loc[("uniform", p)]]
        if all(r["eo_diff"] < a["eo_diff"] and r["balanced_accuracy"] >= a["balanced_accuracy"] for a in alone):
            out.append(f"{method_label(w)} + {post_label(p)}")
    return out


def analysis_narrative(ctx: StudyContext) -> str:
    t = ctx.grid.table
    sig_gain = t[t["eo_diff_diff_high"] < 0]
    costly = sig_gain[sig_gain["balanced_accuracy_diff_high"] < 0]
    noise = t[(t["eo_diff_diff_low"] <= 0) & (t["eo_diff_diff_high"] >= 0)]
    lines = [f"Sur {len(t) - 1} combinaisons comparées au modèle de référence, {len(sig_gain)} réduisent "
             f"l'écart d'equalized odds de façon établie (intervalle apparié sous 0), dont {len(costly)} au prix "
             f"d'une baisse établie de l'exactitude équilibrée ; {len(noise)} restent dans le bruit."]
    both = _beats_both(ctx)
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
    uni = ctx.comparison[(ctx.comparison["method"] == "uniform")].set_index("metric")
    preds = ctx.valid_predictions["uniform"]
    sick = preds[preds[S.LABEL] == 1]
    fnr = (sick[S.PROBA] < 0.5).groupby(sick[S.AGE_BAND], observed=True).mean() if S.AGE_BAND in sick else None
    fnr_text = ", ".join(f"{b} : {num(v)}" for b, v in fnr.items()) if fnr is not None else "n.d."
    t = ctx.grid.table
    better = t[(t["eo_diff_diff_high"] < 0) & (t["balanced_accuracy_diff_low"] > -0.01)]
    source = "démo synthétique" if ctx.config.is_demo else "nos données"
    return pd.DataFrame([
        {"Quantité": "AUC du classifieur", "Littérature": "≈ 0,78 (DenseNet-121, « No Finding »)",
         f"Nous ({source})": ci(*uni.loc["auc", ["estimate", "low", "high"]])},
        {"Quantité": "Sous-diagnostic (FNR) par âge", "Littérature": "0,39 (0–20 ans) à 0,53 (80 ans et +)",
         f"Nous ({source})": fnr_text},
        {"Quantité": "Atténuations meilleures que l'apprentissage simple",
         "Littérature": "rares (MEDFAIR, Zhang et al. 2022)",
         f"Nous ({source})": f"{len(better)} sur {len(t) - 1} (écart EO réduit, exactitude maintenue)"},
    ])


def key_findings(ctx: StudyContext, short: bool = False) -> str:
    uni = ctx.comparison[ctx.comparison["method"] == "uniform"].set_index("metric")
    attr = attribute_label(ctx.config.weighting.attribute)
    t = ctx.grid.table
    best = t.sort_values("eo_diff").iloc[0]
    items = [
        f"Modèle de référence : exactitude équilibrée {_est(uni, 'balanced_accuracy')}, "
        f"écart de sensibilité ({attr}) {_est(uni, 'eopp_diff')}.",
        f"Écart d'equalized odds le plus faible : {method_label(best['weighting'])} + "
        f"{post_label(best['postprocessor'])}, {_grid_ci(best, 'eo_diff')}, "
        f"pour une exactitude équilibrée de {_grid_ci(best, 'balanced_accuracy')}.",
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
    return _grid_rows(ctx)


# ---------------------------------------------------------------- slides


def for_slide(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """Fonts readable from the back of a room; the legend beside the chart (a slide is wide, not tall)."""
    return (chart.configure_axis(labelFontSize=17, titleFontSize=19)
            .configure_legend(labelFontSize=16, titleFontSize=17, labelLimit=320, orient="right")
            .configure_header(labelFontSize=18).configure_title(fontSize=20))


def slide_prevalence_chart(ctx: StudyContext) -> alt.Chart:
    from .analysis import data_analysis

    an = data_analysis(ctx)
    return F.prevalence_chart(an.prevalence, an.overall)


def slide_data_message(ctx: StudyContext) -> str:
    from .analysis import data_analysis

    return N.key_message(data_analysis(ctx))


def slide_weighting_message(ctx: StudyContext) -> str:
    moves = _significant_moves(ctx.comparison, "method", method_label)
    return moves[0] if moves else "Aucune pondération ne change l'équité au-delà du bruit."


def slide_pareto_message(ctx: StudyContext) -> str:
    both = _beats_both(ctx)
    front = ctx.grid.frontier("eo_diff")
    return (f"{len(front)} combinaisons sur {len(ctx.grid.table)} ne sont dominées par aucune autre."
            + (f" {both[0]} fait mieux que ses deux composantes." if both else ""))
