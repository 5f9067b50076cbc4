"""Chapter 3 (pre-processing): tables, charts and sentences of `chapters/03-preprocessing.qmd`."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from pipeline.data import schema as S
from pipeline.fairness.metrics import METRIC_LABELS_FR
from pipeline.fairness.validity import validity
from pipeline.fairness.weighting import WEIGHTINGS, diagnostics
from pipeline.report import charts, weak
from pipeline.report import french as fr
from pipeline.report.french import NBSP, attribute_label, ci, count, group_label, lower_first, num, pct
from pipeline.report.memo import cached_chart
from pipeline.report.tables import (
    EXPLORATORY_MARK,
    attribute_in_sentence,
    cite,
    defined_gap,
    estimate_ci,
    gap_fallback_note,
    merge_identical,
    method_label,
    results_table,
    shown_twins,
    significant_moves,
    without_empty_columns,
)
from pipeline.study import StudyContext


def _part(info: dict, role: str) -> str:
    """« 120 images de 40 patients » for a role of the training split."""
    return (f"{count(info.get('n_images', {}).get(role, 0), 'images')} de "
            f"{count(info.get('n_patients', {}).get(role, 0), 'patients')}")


def training_protocol(ctx: StudyContext) -> str:
    t = ctx.config.training
    info = ctx.train_info.get("uniform", {})
    size_note = ""
    if t.subsample_fraction < 1:
        size_note = (f" Pour tenir dans le budget de calcul, nous gardons {pct(t.subsample_fraction)} des "
                     f"patients (tirage stratifié sur la classe et le sexe, graine {t.subsample_seed}) : "
                     f"{len(ctx.frame)} images au lieu de {len(ctx.full_frame)}.")
    inner = f"une validation interne ({_part(info, 'inner_val')} d'apprentissage, tirés par patient)"
    if t.mode == "last_layer" and t.feature_source != "pretrained":
        auc = info.get("backbone_auc", {})
        how = (f"Les patients d'apprentissage sont répartis en trois parts disjointes : le réseau `{t.backbone}` "
               f"est entraîné **une fois** sans pondération sur {_part(info, 'backbone')} ({t.image_size} px, "
               f"{info.get('epochs', '?')} époques, arrêt précoce sur {inner}) ; puis, pour chaque "
               f"pondération, seule la dernière couche (régression logistique pondérée sur les "
               f"caractéristiques du réseau) est réapprise sur {_part(info, 'fit')} que le réseau n'a jamais "
               "vus : c'est le *Deep Feature Reweighting* [@kirichenko2022] ; réapprise sur les images mêmes du "
               "réseau, cette couche verrait des caractéristiques qui les séparent déjà, ce qui atténuerait "
               "l'effet de toute pondération. "
               f"L'AUC du réseau seul, avec sa propre dernière couche (avant la régression réapprise, qui donne "
               f"les scores du modèle de référence), est de {num(auc.get('backbone'))} sur ses propres images "
               f"d'apprentissage, contre {num(auc.get('fit'))} sur les patients de la dernière couche et "
               f"{num(auc.get('inner_val'))} sur la validation interne.")
    elif t.mode == "last_layer":
        how = (f"Les caractéristiques d'un réseau `{t.backbone}` pré-entraîné et figé ({t.image_size} px) "
               f"sont extraites une fois ; pour chaque pondération, seule une dernière couche (régression "
               f"logistique pondérée) est apprise, sur tous les patients d'apprentissage "
               f"({_part(info, 'fit')}) : rien n'étant entraîné ni arrêté tôt, aucune part n'est mise de côté, "
               "et le seuil est choisi sur des scores hors-pli.")
    else:
        how = (f"Un réseau `{t.backbone}` complet est entraîné pour chaque pondération sur {_part(info, 'fit')} "
               f"({t.image_size} px, au plus {t.epochs_for(info.get('n_images', {}).get('fit', 0))} époques, "
               f"arrêt précoce sur {inner}).")
    where = fr.threshold_source(info, counts=bool(info.get("threshold_folds")))  # the inner validation's: above
    rule = (" **Seuil de décision** : pour chaque pondération, celui qui maximise l'exactitude équilibrée sur "
            f"{where}, jamais sur les patients d'évaluation ni un 0,5 fixe qui ignorerait le "
            f"déséquilibre des classes (modèle de référence : {num(info.get('threshold'), 3)}).")
    seeds = ", ".join(str(s) for s in t.seeds)
    choice = getattr(ctx, "backbone_choice", None)
    how = " ".join(filter(None, [choice.sentence_fr() if choice is not None else "", how]))
    seeds_word = "Graines" if len(t.seeds) > 1 else "Graine"
    return (f"{how}{rule} {seeds_word} : {seeds}. L'évaluation porte sur {len(ctx.evaluation)} images du dossier "
            f"`valid/` de {ctx.evaluation[S.PATIENT].nunique()} patients, disjoints de l'apprentissage.{size_note}"
            f"{thin_parts_text(ctx)}{undefined_resamples_text(ctx)}")


def thin_parts_text(ctx: StudyContext) -> str:
    """The parts of the protocol with fewer than `protocol.THIN_PATIENTS` patients of a class (checked before
    training: a part with none stops the study)."""
    from pipeline.protocol import CLASS_NAMES, THIN_PATIENTS

    thin = getattr(ctx, "protocol_caveats", None) or []
    if not thin:
        return ""
    parts = []
    for p in thin:
        label, n = p.smallest()
        seed = f" (graine {p.seed})" if p.seed is not None and len(ctx.config.training.seeds) > 1 else ""
        parts.append(f"{p.label_fr}{seed} : {count(n, 'patients')} {CLASS_NAMES[label]}{'s' * (n > 1)}")
    return (f" **Parts du protocole très petites** (moins de {THIN_PATIENTS} patients d'une classe) : "
            + " ; ".join(parts) + ". Leurs résultats reposent sur très peu de patients : à lire comme des "
            "ordres de grandeur.")


def undefined_resamples_text(ctx: StudyContext) -> str:
    """How many patient resamples leave a metric undefined (a class absent from a group): counted, not dropped
    silently; an interval needs 90 % of them defined (`metrics.MIN_DEFINED_SHARE`)."""
    from pipeline.fairness.metrics import MIN_DEFINED_SHARE

    t = ctx.comparison
    if t is None or "defined" not in t.columns:
        return ""
    rows = t[(t["method"] == "uniform") & t["defined"].notna() & t["estimate"].notna()]  # n.d. itself: said apart
    worst = rows.loc[rows["defined"].idxmin()] if len(rows) else None
    if worst is None or worst["defined"] >= 1:
        return ""
    n_boot = ctx.config.evaluation.n_bootstrap
    missing = round((1 - float(worst["defined"])) * n_boot)
    return (f" Dans {missing} des {n_boot} rééchantillonnages de patients, une mesure au moins "
            f"({lower_first(METRIC_LABELS_FR.get(worst['metric'], worst['metric']))}) n'est pas définie (trop peu "
            "d'images d'une classe dans un groupe) : "
            f"ses intervalles sont calculés sur les autres, et un intervalle n'est donné que si "
            f"{pct(MIN_DEFINED_SHARE)} au moins des rééchantillonnages le définissent (sinon « n.d. »).")


def weighting_attribute(ctx: StudyContext) -> str:
    """The sensitive attribute the weightings balance, as it reads in a sentence (« le sexe »)."""
    attribute = ctx.config.weighting.attribute
    return fr.ATTRIBUTE_NOUN.get(attribute, (attribute_in_sentence(attribute),))[0]


def weighting_methods(ctx: StudyContext) -> pd.DataFrame:
    rows = [{"Méthode": WEIGHTINGS[m].label_fr, "Poids": f"${WEIGHTINGS[m].formula}$",
             "Référence": cite(WEIGHTINGS[m].reference)} for m in ctx.predictions]
    return pd.DataFrame(rows)


# Each symbol a weighting's formula may use (its LaTeX token) and its definition: the table's notation line
# names only the symbols of the formulas shown (a method with a new symbol adds its line here; tested).
NOTATION = (
    (r"\frac{n}", "$n$ : nombre d'images d'apprentissage"),
    (r"n_y", "$n_y$ : celles de la classe $y$"),
    (r"n_g", "$n_g$ : celles du groupe $g$"),
    (r"n_{g,y}", "$n_{g,y}$ : celles du groupe $g$ et de la classe $y$"),
    (r"K\,", "$K$ : nombre de groupes (de couples groupe–classe dans $w(g, y)$)"),
    (r"P(", "$P(\\cdot)$ : proportion observée à l'apprentissage"),
    (r"\mathbf{g}", "$\\mathbf{g}$ : croisement de tous les attributs sensibles"),
    (r"\beta", "$\\beta = 1 - 1/n$"),
    (r"\lambda_{up}", "$\\lambda_{up} = {upweight}$ : surpoids des images mal classées"),
    (r"ERM", "$\\hat{y}^{ERM}_i$ : décision du modèle appris sans pondération (*ERM*, minimisation du risque "
             "empirique)"),
)


def weighting_notation(ctx: StudyContext) -> str:
    """« Notations : $n$ : … ; $K$ : … . » for the symbols of the formulas in the methods table."""
    from pipeline.fairness.weighting import JTT_UPWEIGHT

    formulas = " ".join(WEIGHTINGS[m].formula for m in ctx.predictions)
    found = [text.replace("{upweight}", fr.number(JTT_UPWEIGHT, 0)) for token, text in NOTATION if token in formulas]
    return f"Notations : {' ; '.join(found)}." if found else ""


def weighting_results(ctx: StudyContext, compact: bool = False) -> pd.DataFrame:
    """Each weighting against the reference; `compact` (slides): short cells, no column n.d. everywhere."""
    rows = results_table(ctx.comparison, "method", method_label, compact=compact)
    if compact:
        return without_empty_columns(rows)
    changed = validity(ctx).changed
    by_label = {method_label(m): m for m in ctx.comparison["method"].unique()}
    # a weighting deciding as the reference on every seed, whose cells print the same, is named in its row
    names = [by_label.get(str(label).split(" (mêmes ")[0], str(label)) for label in rows["Méthode"]]
    same = {"uniform", *validity(ctx).deciding_as_reference()}
    records = rows.to_dict("records")
    rows = pd.DataFrame(merge_identical(records, names, shown_twins(records, names, same), method_label, None,
                                        "mêmes valeurs"))
    cells = []
    for label in rows["Méthode"]:
        method = by_label.get(str(label).split(" (mêmes ")[0])  # a merged row keeps its first name
        k, n = changed.get(method, (0, 0)) if method else (0, 0)
        cells.append("—" if method in (None, "uniform") or not n else f"{k}/{n}")
    return rows.assign(**{"Décisions changées": cells})


def _decisions_unit(ctx: StudyContext) -> str:
    """What a changed-decisions count counts: « décisions : 238 images × 5 entraînements » (one seed: « images »)."""
    seeds = len(ctx.config.training.seeds)
    images = len(ctx.valid_predictions["uniform"])
    return f"décisions : {images} images × {seeds} entraînements" if seeds > 1 else "images"


def inert_weightings(ctx: StudyContext, short: bool = False) -> str:
    """Names the class-only weightings, and how few decisions they change once each weighting re-picks its
    threshold: their « no effect » is expected by construction, not a finding ("" when none is compared).
    `short` (a speaker note): only the names and the decisions they share with the uniform weighting."""
    from pipeline.fairness.weighting import WEIGHTINGS

    changed = validity(ctx).changed
    shown = [m for m in ctx.comparison["method"].unique() if m in WEIGHTINGS and WEIGHTINGS[m].class_only]
    if not shown:
        return ""
    counts = {m: changed.get(m, (0, 0)) for m in shown}
    names = fr.join([method_label(m) for m in shown])
    plural = len(shown) > 1
    if all(k == 0 for k, _ in counts.values()):
        n = next(iter(counts.values()))[1]
        same = (f"{names} {'prennent' if plural else 'prend'} exactement les mêmes décisions que la pondération "
                f"uniforme (0/{n} {_decisions_unit(ctx)})")
        if short:
            return same
        return (f"{same} : une pondération qui ne dépend que de la classe déplace surtout le seuil de "
                "décision, que chaque pondération rechoisit sans les patients d'évaluation. Leur absence d'effet est "
                "attendue par construction : ce n'est pas un résultat sur l'équité. Leurs scores, eux, peuvent "
                "différer (même de très peu, quand les poids ne valent 1 qu'à l'arrondi près) : un "
                "post-traitement, qui choisit ses propres seuils sur le score, peut donc les séparer au chapitre 4.")
    class_only = f"{names} ne {'dépendent' if plural else 'dépend'} que de la classe"
    if short:
        return class_only
    changes = fr.join([f"{k}/{n}" for k, n in counts.values()]) + f" {_decisions_unit(ctx)}"
    ranks = validity(ctx).rank_agreement
    rho = fr.join([fr.number(ranks.get(m, float("nan")), 3) for m in shown])
    return (f"{class_only} : une telle pondération déplace "
            "surtout le seuil de décision, que chaque pondération rechoisit sans les patients d'évaluation. Ici, la "
            f"corrélation de rang de {'leurs' if plural else 'ses'} scores avec ceux d'Uniforme est de {rho} sur les "
            f"images d'évaluation, et {'leurs' if plural else 'ses'} décisions diffèrent des siennes sur {changes} "
            ": un effet sur l'équité de leur part tiendrait surtout au seuil rechoisi, plus qu'à la "
            "pondération.")


def weighting_by_attribute(ctx: StudyContext) -> pd.DataFrame:
    rows = {}
    for attr, table in ctx.comparison_by_attribute.items():
        t = table[table["metric"] == "eopp_diff"].set_index("method")
        rows[S.ATTRIBUTE_LABELS_FR.get(attr, attr)] = {
            method_label(m): ci(r["estimate"], r["low"], r["high"])
            + (f" {EXPLORATORY_MARK}" if r["significant"] else "")
            for m, r in t.iterrows()}
    return pd.DataFrame(rows).rename_axis("Méthode").reset_index()


@cached_chart
def weighting_rates_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    return charts.rates_by_group_chart(ctx.group_rates)


@cached_chart
def weighting_tradeoff_chart(ctx: StudyContext, slide: bool = False) -> alt.TopLevelMixin:
    """Balanced accuracy against the EO gap per weighting; against the TPR (else DP) gap when EO is n.d. for all.
    The report's legend is beside the plot (half as tall on the page); a slide's under it (a slide is wide)."""
    gap = defined_gap(ctx.comparison)
    # a weighting deciding as the reference on every seed sits exactly under its point: drawn once, as the
    # tables merge it, so that the legend names no point the reader cannot find
    same = validity(ctx).deciding_as_reference()
    shown = ctx.comparison[~ctx.comparison["method"].isin(same)]
    labels = {"uniform": f"{method_label('uniform')} + {len(same)} aux mêmes décisions"} if same else None
    return charts.tradeoff_chart(shown, gap, labels=labels, title="Performance contre équité, par pondération",
                                 legend=charts.LEGEND if slide else None)


def weighting_tradeoff_note(ctx: StudyContext) -> str:
    """Which gap the trade-off chart shows when it cannot show the EO gap ("" otherwise)."""
    return gap_fallback_note(ctx, defined_gap(ctx.comparison))


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
                     "Écart égal. erreurs": f"{num(p['eo_diff'].mean())} ± {num(p['eo_diff'].std())}",
                     "Δ écart EO vs uniforme": f"{num(d_eo.mean())} ± {num(d_eo.std())}"})
    return pd.DataFrame(rows)


def seed_sentence(ctx: StudyContext) -> str:
    seeds = ctx.config.training.seeds
    if len(seeds) < 2:
        return ("Une seule graine d'apprentissage est utilisée (`training.seeds`) : ajoutez-en pour mesurer la "
                "variabilité due à l'initialisation.")

    ref = ctx.seed_metrics[ctx.seed_metrics["method"] == "uniform"]
    gap = "eo_diff" if ref["eo_diff"].notna().sum() > 1 else "eopp_diff"
    sd = ref[gap].std()
    if not np.isfinite(sd):
        return (f"Avec {len(seeds)} graines d'apprentissage ({', '.join(map(str, seeds))}), l'écart d'équité du "
                "modèle de référence n'est défini pour aucune graine (trop peu d'images d'une classe dans un groupe) : "
                f"la variabilité d'une graine à l'autre ne se mesure pas ici. Les tableaux moyennent les "
                f"{len(seeds)} entraînements.")
    label = "l'écart d'égalité des erreurs" if gap == "eo_diff" else "l'écart de sensibilité (max − min)"
    return (f"Avec {len(seeds)} graines d'apprentissage ({', '.join(map(str, seeds))}), {label} du "
            f"modèle de référence varie d'un écart-type de {num(sd)} d'une graine à l'autre : un effet de méthode "
            "plus petit que cette variation n'est pas interprétable. Les tableaux moyennent les "
            f"{len(seeds)} entraînements et leurs intervalles incluent cette variation.")


def weighting_narrative(ctx: StudyContext, claims: list | None = None) -> str:
    from pipeline.fairness.exploratory import PRIMARY_MARK, tested_metrics
    from pipeline.report.consistency import Claim

    table = ctx.comparison
    base = table[(table["method"] == "uniform")].set_index("metric")
    attr = attribute_in_sentence(ctx.config.weighting.attribute)
    groups = table.attrs.get("groups") or []
    signed = len(groups) == 2 and "tpr_signed" in base.index
    from pipeline.report import verdicts as V

    r = base.loc["tpr_signed"] if signed else None
    table_gap = (fr.DASH if r is None else fr.points(r["estimate"]) if not np.isfinite(r["low"])
                 else fr.points_ci(r["estimate"], r["low"], r["high"]))
    # the table is the mean over every training seed: its reference row is the headline's (`verdicts.level_ci`)
    lines = [f"Sans pondération ({V.seeds_phrase(ctx)}), l'exactitude équilibrée est de "
             f"{estimate_ci(base, 'balanced_accuracy')} et l'écart de sensibilité entre groupes ({attr}"
             + (f", {groups[0]} − {groups[1]}) de {table_gap}." if signed else
                f", max − min) de {estimate_ci(base, 'eopp_diff')}.")]
    moves = significant_moves(table, "method", method_label, claims)
    if moves and weak.is_weak(ctx):
        lines.append("Le modèle étant trop faible, les différences notables (†, exploratoires) du tableau ne "
                     "désignent aucune pondération : elles restent à confirmer sur un modèle qui classe les images.")
    if not moves:
        primary = "mark" in table.columns and bool((table["mark"] == PRIMARY_MARK).any())
        none = ("Aucune pondération ne modifie une métrique de façon notable dans cette exploration "
                "(aucune différence ne résiste à la correction de Benjamini-Hochberg)"
                + (f" ; les effets établis de la question principale ({PRIMARY_MARK}) sont donnés plus haut."
                   if primary else "."))
        lines.append(none)
        if claims is not None:
            claims.append(Claim("chapitre 3, synthèse des pondérations", none, none_in=table.attrs.get("family"),
                                quantities=tested_metrics(len(table.attrs.get("groups") or [])),
                                include_primary=not primary))
    return "\n\n".join(lines)


# ------------------------------------------------------------------ weighting diagnostics
def diagnostics_frame(ctx: StudyContext) -> pd.DataFrame:
    """`weighting.diagnostics` of every weighting on the rows its model (or head) is fitted on."""
    train = ctx.frame[ctx.frame[S.SPLIT] == "train"].reset_index(drop=True)
    preds = ctx.predictions["uniform"]
    fitted = (preds.loc[preds[S.SPLIT] == "train", "role"] == "fit").to_numpy() if "role" in preds else None
    return diagnostics(train, ctx.weights, ctx.config.weighting.attribute, fitted)


def weighting_diagnostics(ctx: StudyContext) -> pd.DataFrame:
    """Chapter 3 table: effective sample size, spread of the weights, weighted prevalence per group."""
    d = diagnostics_frame(ctx)
    attr = ctx.config.weighting.attribute
    groups = [c.split(":", 1)[1] for c in d.columns if c.startswith("prevalence:")]
    rows = []
    for r in d.to_dict("records"):
        row = {"Méthode": method_label(r["method"]),
               "Taille effective": f"{num(r['ess'], 0)} / {r['n']} ({pct(r['ess_share'])})",
               "Poids min – max": f"{num(r['w_min'])} – {num(r['w_max'])}",
               "CV des poids": num(r["cv"], 3)}
        for g in groups:
            row[f"Prévalence pondérée, {group_label(attr, g)}"] = pct(r[f"prevalence:{g}"])
        row["Lecture"] = "uniforme" if r["cv"] < 1e-9 else "quasi uniforme" if r["nearly_uniform"] else ""
        spread = [r[f"prevalence:{g}"] for g in groups]
        if r["method"].startswith("reweighing") and len(spread) > 1 and np.ptp(spread) > 0.01:
            row["Lecture"] = "égalisation partielle : une cellule groupe × classe est vide"
        rows.append(row)
    return pd.DataFrame(rows)


def diagnostics_sentence(ctx: StudyContext) -> str:
    """Which weightings are (nearly) uniform on these data, so that their null result is read as such."""
    d = diagnostics_frame(ctx)
    flat = [method_label(m) for m, u in zip(d["method"], d["nearly_uniform"], strict=True) if u and m != "uniform"]
    ess = d.set_index("method")["ess_share"].drop("uniform", errors="ignore")
    costly = ess.idxmin() if len(ess) else None
    text = (f"La taille effective de Kish, $(\\sum w)^2 / \\sum w^2$, dit combien d'images "
            f"«{NBSP}comptent{NBSP}» encore une fois pondérées : une pondération forte rend le modèle plus variable.")
    if costly is not None:
        text += (f" La plus coûteuse ici est {method_label(costly)} ({pct(ess[costly])} de la taille "
                 "nominale).")
    if flat:
        text += (f" Sur ces données, {', '.join(flat)} {'donne' if len(flat) == 1 else 'donnent'} des poids "
                 f"(quasi) uniformes (coefficient de variation sous {num(0.05)}) : "
                 f"{'son' if len(flat) == 1 else 'leur'} absence d'effet est alors une conséquence de la "
                 "construction, pas un résultat sur la méthode.")
    return text


# ------------------------------------------------------------------ degenerate and uninformative results
def _where_fr(where: dict[str, str]) -> str:
    parts = []
    for key, cls in where.items():
        if key == "all":
            parts.append(f"toutes les images en «{NBSP}{cls}{NBSP}»")
        else:
            attr, group = key.split("=", 1)
            label = f"{group_label(attr, group)} ({attribute_label(attr).lower()})"
            parts.append(f"le groupe {label} en «{NBSP}{cls}{NBSP}»")
    return ", ".join(parts)


def validity_items(ctx: StudyContext) -> list[str]:
    """French sentences naming each degenerate or uninformative result (empty list: nothing to flag)."""
    v = validity(ctx)
    items = []
    degenerate = v.degenerate_methods()
    if degenerate:
        by_where: dict[str, list[str]] = {}  # methods that fail the same way are named together
        for m, w in degenerate.items():  # on more than half of the seeds, named when not on every one
            seeds = v.degenerate_seeds(m).strip().removeprefix("(").removesuffix(")")
            by_where.setdefault(_where_fr(w) + (f", {seeds}" if seeds else ""), []).append(method_label(m))
        names = [f"{fr.join(ms)} ({where})" for where, ms in by_where.items()]
        items.append("**Décisions d'une seule classe.** Au seuil de fonctionnement, " + " ; ".join(names)
                     + f" (au moins {pct(0.95)} des images d'une même classe). Les écarts d'équité y sont "
                     "proches de 0 par construction : personne n'est distingué. C'est un nivellement par le "
                     f"bas, pas de l'équité ; ces résultats ne sont jamais retenus comme «{NBSP}meilleurs{NBSP}».")
    if v.weak_model:  # the model's level is stated first, in the weak-model warning (`report/weak.py`)
        return items
    if v.chance:
        names = [f"{method_label(m)} (AUC {ci(*a)})" for m, a in v.chance.items()]
        from pipeline.report.verdicts import seeds_phrase

        items.append(f"**Modèle non distinguable du hasard** ({seeds_phrase(ctx)}). "
                     "L'intervalle de l'AUC contient 0,5 pour "
                     + ", ".join(names) + " : rien ne montre que le modèle classe les images mieux qu'au hasard, "
                     "et ses écarts entre groupes peuvent ne mesurer que du bruit, pas un biais de l'image.")
    b = v.baseline
    if v.image_not_better:
        attrs = ", ".join(attribute_label(a).lower() for a in b["attributes_used"])
        image = ci(b["image"], b["image_low"], b["image_high"])
        meta = ci(b["attributes"], b["attributes_low"], b["attributes_high"])
        diff = ci(b["diff"], b["diff_low"], b["diff_high"])
        runs = "un entraînement" if b.get("n_seeds", 1) == 1 else f"moyenne sur {b['n_seeds']} entraînements"
        items.append(f"**Pas mieux que les métadonnées.** Le modèle d'images ({runs}, "
                     f"AUC {image}) ne fait pas mieux, "
                     f"de façon notable, qu'un modèle qui ne connaît que {attrs} (AUC {meta}, appris sur les "
                     f"patients d'apprentissage ; différence appariée {diff}). Ses écarts entre groupes peuvent "
                     "alors refléter la démographie des groupes plutôt que ce que l'image montre.")
    return items


def validity_warning(ctx: StudyContext) -> str:
    """A French warning callout naming what makes the fairness gaps unreadable ("" when nothing does)."""
    items = validity_items(ctx)
    if not items:
        return ""
    body = "\n\n".join(f"- {i}" for i in items)
    return (f"\n::: {{.callout-warning}}\n## Prudence : ces écarts entre groupes sont peu interprétables\n\n{body}\n"
            ":::\n")
