"""Chapter 4 (post-processing): tables, charts and sentences of `chapters/04-postprocessing.qmd`."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from pipeline.fairness import metrics as M
from pipeline.fairness.grid import front_flags
from pipeline.fairness.postprocess import POSTPROCESSORS
from pipeline.report import charts, weak
from pipeline.report import french as fr
from pipeline.report.french import group_label, num, pct
from pipeline.report.memo import cached_chart
from pipeline.report.tables import (
    attribute_in_sentence,
    cite,
    coin_flip_text,
    combination_label,
    distinct_rules,
    grid_rows,
    in_sentence,
    infeasible_groups,
    method_label,
    post_label,
    table_notes,
    where_fr,
    without_empty_columns,
)
from pipeline.study import StudyContext


def postprocessing_protocol(ctx: StudyContext, part: str = "body") -> str:
    """How the rules are fitted and evaluated: cross-fitting (`part="body"`, chapter 4), then how their intervals
    and marks are computed (`part="appendix"`)."""
    g, pp = ctx.grid, ctx.config.postprocessing
    n_patients = len(g.patients)
    if part == "body":
        return (f"Les {n_patients} patients d'évaluation (les mêmes qu'au chapitre précédent) sont répartis **par "
                f"patient** en {g.n_folds} blocs, stratifiés sur la classe et le "
                f"{attribute_in_sentence(pp.attribute)} (graine {pp.seed}). Chaque post-traitement, y compris le "
                f"choix du seuil global, est ajusté {g.n_folds} fois (ajustement croisé, *cross-fitting*) : les "
                "images d'un bloc sont décidées par la règle ajustée sur les autres blocs. Tous les patients "
                "d'évaluation sont ainsi évalués, et aucun par une règle qui les a vus. Les intervalles incluent "
                "le réajustement des règles sur des patients rééchantillonnés ; le détail est en "
                "[annexe C](#sec-appendix-post).")
    seeds = getattr(g, "seeds", [0])
    runs = (f"Chaque combinaison est appliquée aux scores de chacun des {len(seeds)} entraînements ; la valeur "
            "donnée est leur moyenne, et son intervalle ajoute la variance entre entraînements à celle des patients "
            "et du réajustement (comme pour les questions principales). " if len(seeds) > 1 else "")
    n_resamples = int(g.table.attrs.get("n_resamples", g.n_refit))
    return (runs + f"Les intervalles à 95 % incluent la variabilité de l'ajustement : dans chacun des {g.n_refit} "
            "rééchantillonnages des patients (avec remise), toutes les règles sont **réajustées** sur les patients "
            "rééchantillonnés des autres blocs, puis évaluées ; la loi de Student de l'intervalle compte les "
            f"{g.n_refit - 1} degrés de liberté de ces réplicats (peu nombreux : un réajustement coûte). Une règle "
            f"qui n'apprend rien (« Aucun ») est évaluée sur les {n_resamples} rééchantillonnages des questions "
            "principales, dont ceux-ci sont les premiers : sa ligne est celle du chapitre 3. "
            "Les règles randomisées sont évaluées **telles qu'elles agissent** : chaque réplicat "
            f"tire au hasard leurs décisions, et l'estimation est la moyenne sur {M.REALISED_DRAWS} tirages "
            "(l'écart réalisé, plus grand que l'écart des taux espérés). Une croix † (exploratoire) marque une "
            "différence avec la référence qui reste significative après correction de Benjamini-Hochberg (taux de "
            f"fausses découvertes 10 %) sur les {ctx.grid.table.attrs.get('family_size', 'n.d.')} comparaisons "
            "testées de la grille : une piste à confirmer, pas une preuve ; l'écart d'égalité des erreurs et le pire "
            "groupe sont décrits sans test, les règles aux décisions identiques sont fusionnées et les règles "
            "dégénérées ne sont pas testées. Un taux par groupe n'est défini qu'avec au moins "
            f"{ctx.config.evaluation.min_per_class} images de sa classe dans le groupe (`evaluation.min_per_class`)."
            + refit_fallback_text(ctx))


def refit_fallback_text(ctx: StudyContext) -> str:
    """How many refits had a group with one class (or none) in a fitting part: counted, never dropped."""
    t = ctx.grid.table
    main = len(getattr(ctx.grid, "warnings", None) or [])
    first = (f" Dès l'ajustement principal, {main} repli{'s' * (main > 1)} de ce genre (une partie d'ajustement, "
             "ou l'un de ses groupes, avec une seule classe : seuil de repli) ont eu lieu." if main else "")
    if "refit_fallbacks" not in t.columns or not (t["refit_fallbacks"] > 0).any():
        return first
    worst = t.loc[t["refit_fallbacks"].idxmax()]
    refits = ctx.grid.n_refit * len(getattr(ctx.grid, "seeds", [0]))  # per rule, every seed
    n_rules = int((t["refit_fallbacks"] > 0).sum())
    return (f" Dans certains réajustements, la partie d'ajustement (ou l'un de ses groupes) n'avait qu'une classe, "
            f"ou aucun patient d'un groupe : la règle y a décidé au seuil de repli (global, ou 0,5 sans aucune "
            f"seconde classe). C'est arrivé pour {n_rules} "
            f"règle{'s' * (n_rules > 1)} de la grille, au plus dans {int(worst['refit_fallbacks'])} des "
            f"{refits} réajustements ({combination_label(worst['combination'])}) ; ces réplicats sont "
            "gardés (l'intervalle inclut ce repli), pas écartés." + first)


NOISE_DRAWS = 2000  # draws of a fair coin for the realised gaps' noise floor


def realised_noise_floor(ctx: StudyContext, seed: int = 0) -> float:
    """The realised equalized-odds gap of a rule that decides every evaluation image by a fair coin: what a
    realised gap shows on these patients with no difference between groups at all (a finite-sample floor)."""
    decided = ctx.grid.decisions[tuple(ctx.grid.baseline)]
    groups = M.group_labels(decided[ctx.grid.attribute]).to_numpy()
    y = decided["label"].to_numpy()
    rng = np.random.default_rng(seed)
    coins = rng.random((NOISE_DRAWS, len(y))) < 0.5
    gaps = []
    for cls in (1, 0):
        rates = [coins[:, (groups == g) & (y == cls)].mean(axis=1) for g in pd.unique(groups[pd.notna(groups)])
                 if ((groups == g) & (y == cls)).any()]
        gaps.append(np.max(rates, axis=0) - np.min(rates, axis=0) if len(rates) > 1 else np.zeros(NOISE_DRAWS))
    return float(np.mean(np.maximum(*gaps)))


def randomised_rules_text(ctx: StudyContext) -> str:
    """What the randomised rules' gaps mean here: realised gaps and their noise floor on these patients, what
    calibrated equalized odds equalises (each group's mixing rate and generalised FNR), and why the two rules
    that equalise sensitivity differ."""
    methods = set(ctx.config.postprocessing.methods)
    lines = ["Les décisions de `ThresholdOptimizer` [@weerts2023fairlearn] et des *calibrated equalized odds* "
             "[@pleiss2017] sont randomisées : les tableaux de ce chapitre donnent leurs écarts **réalisés**, "
             "l'espérance, sur les tirages, de l'écart des décisions effectivement prises (l'écart des taux espérés "
             "est en général plus petit et les flatterait), et la part des décisions tirées au hasard ; les figures "
             "de taux par groupe et le chapitre 5 montrent les taux espérés."]
    base = ctx.grid.table.set_index("combination").get("eo_diff")
    if base is not None and np.isfinite(base.get(f"{ctx.grid.baseline[0]} + {ctx.grid.baseline[1]}", np.nan)):
        lines[0] += (" Le hasard seul crée un écart réalisé : une règle qui tirerait **toutes** ses décisions à "
                     "pile ou face aurait ici un écart d'égalité des erreurs réalisé de "
                     f"{num(realised_noise_floor(ctx))} en moyenne, sans aucune différence entre groupes (moins "
                     "pour une règle qui n'en tire qu'une part).")
    if "calibrated_eq_odds" in methods:
        folds = getattr(ctx.grid, "params", {}).get((ctx.grid.baseline[0], "calibrated_eq_odds"), [])
        attribute = ctx.grid.attribute
        rows = {}
        for fold in folds if isinstance(folds, list) else [folds]:
            for g, a in fold.get("alpha", {}).items():
                rows.setdefault(g, []).append((a, fold["gfnr"].get(g, np.nan), fold["base_rate"].get(g, np.nan)))
        groups = [f"{group_label(attribute, g)} : α {num(np.mean([v[0] for v in r]))}, taux généralisé de faux "
                  f"négatifs avant mélange {num(np.mean([v[1] for v in r]))}" for g, r in rows.items()]
        lines.append("Nos *calibrated equalized odds* sont une **adaptation** de l'algorithme 1 de Pleiss et al. "
                     "(coût des faux négatifs) : leur garantie porte sur des scores, dont le taux généralisé de "
                     "faux négatifs E[1 − h | malade] est égalisé en remplaçant, avec la probabilité α du groupe, "
                     "son score par sa prévalence ; nous seuillons le score mélangé, et la part remplacée décide au "
                     "hasard (malade avec la probabilité de la prévalence du groupe). Un groupe mélangé avec α proche "
                     "de 1 est donc décidé au hasard, sans regarder l'image."
                     + (f" Sur le modèle de référence (moyenne des plis) : {' ; '.join(groups)}." if groups else ""))
    if {"equal_opportunity", "to_tpr_parity"} <= methods:
        lines.append("*Égalité des chances (seuils par groupe)* et *Parité des sensibilités (ThresholdOptimizer)* "
                     "visent le même critère, une sensibilité égale entre groupes [@hardt2016], par deux chemins : "
                     "la première choisit un seuil déterministe par groupe à la sensibilité commune qui maximise "
                     "l'exactitude équilibrée ; la seconde randomise entre deux seuils par groupe (fairlearn). "
                     "Aucune ne contraint le taux de faux positifs : leurs écarts d'égalité des erreurs, qui "
                     "prennent le plus grand des écarts de sensibilité et de faux positifs, peuvent donc différer "
                     "beaucoup.")
    return "\n\n".join(lines)


def postprocessing_methods(ctx: StudyContext, formulas: bool = False) -> pd.DataFrame:
    """The post-processors compared: their principle and reference, or (`formulas`) their decision rules."""
    names = list(dict.fromkeys(ctx.grid.table["postprocessor"]))
    if formulas:
        return pd.DataFrame([{"Méthode": POSTPROCESSORS[n].label_fr,
                              "Règle de décision": f"${POSTPROCESSORS[n].formula}$"} for n in names])
    return pd.DataFrame([{"Méthode": f"{POSTPROCESSORS[n].label_fr} {cite(POSTPROCESSORS[n].reference)}".strip(),
                          "Principe": POSTPROCESSORS[n].description_fr} for n in names])


def postprocessing_results(ctx: StudyContext) -> pd.DataFrame:
    """The body's table: the reference model under each post-processor. No AUC column: a post-processor
    keeps the model's score (its AUC is chapter 3's) or gives none (« n.d. »); the appendix's grid shows it."""
    rows = ctx.grid.table[ctx.grid.table["weighting"] == "uniform"]
    return grid_rows(ctx, rows=rows, label="post", without=("auc",))


def results_notes(ctx: StudyContext) -> str:
    """How to read the post-processing tables (gaps, stars, correction, n.d., randomised decisions)."""
    return (table_notes(ctx) + " « Part au hasard » : part des images dont la décision est "
            "randomisée. AUC « n.d. » : la règle ne garde pas le score du modèle (seuils par groupe, décisions "
            "randomisées), seules ses décisions sont évaluées. « Dégénérée » : une classe pour au moins 95 % "
            "des images, globalement ou dans un groupe (nivellement par le bas, jamais retenue sur le front de "
            "Pareto).")


@cached_chart
def postprocessing_rates_chart(ctx: StudyContext) -> alt.TopLevelMixin:
    return charts.rates_by_group_chart(ctx.grid.group_rates, title=f"Après post-traitement "
                                       f"({attribute_in_sentence(ctx.grid.attribute)}), IC 95 %")


@cached_chart
def pareto_chart(ctx: StudyContext, gap: str = "eo_diff", labels: bool = True,
                 intervals: bool = True) -> alt.TopLevelMixin:
    data = ctx.grid.table.assign(
        label=lambda d: d["weighting"].map(method_label) + " + " + d["postprocessor"].map(post_label))
    if data[gap].notna().sum() == 0:  # nothing to place: say why instead of drawing empty axes
        return charts.message_chart(f"{M.METRIC_LABELS_FR[gap]} : non défini pour toutes les combinaisons",
                                    "(un groupe compte trop peu d'images d'une classe ; voir le texte)")
    weighting, post = ctx.grid.baseline
    return charts.pareto_chart(data, x=gap, frontier_col=f"frontier_{gap}", color_col="weighting", show_labels=labels,
                               front=not weak.is_weak(ctx), reference=f"{method_label(weighting)} + {post_label(post)}",
                               intervals=intervals)


def pareto_panels(ctx: StudyContext, gap: str = "eo_diff") -> alt.TopLevelMixin:
    """The report's Pareto figure: one panel per post-processor, points coloured by weighting, the whole front
    dashed in every panel, the reference (no weighting, no post-processing) ringed in black."""
    t = ctx.grid.table
    if t[gap].notna().sum() == 0:
        return charts.message_chart(f"{M.METRIC_LABELS_FR[gap]} : non défini pour toutes les combinaisons",
                                    "(un groupe compte trop peu d'images d'une classe ; voir le texte)")
    labels = {name: post_label(name).split(" (")[0] for name in t["postprocessor"].astype(str).unique()}
    return charts.pareto_panels(t, x=gap, frontier_col=f"frontier_{gap}", reference=tuple(ctx.grid.baseline),
                                panel_labels=labels, front=not weak.is_weak(ctx))


SLIDE_FRONT_ROWS = 4  # rows of the front that fit an appendix slide under its title and header (names wrap)


def front_gap(ctx: StudyContext) -> str:
    """The gap of the report's and the slides' Pareto front: EO, else the first gap some rule defines."""
    from pipeline.report.tables import defined_gap

    return defined_gap(ctx.grid.table)


def pareto_table(ctx: StudyContext, gap: str | None = None, compact: bool = False) -> pd.DataFrame:
    """The non-dominated combinations, sorted by the gap; `compact` (slides): one row per distinct displayed
    result, no column that is empty or n.d. everywhere, and at most SLIDE_FRONT_ROWS of them, spread from
    the fairest to the most accurate. `gap`: the front's gap (default: `front_gap`, as the slides)."""
    t = ctx.grid.table
    if weak.is_weak(ctx):
        return pd.DataFrame({"Méthode": ["Aucun front de Pareto : le modèle est trop faible pour ordonner ses règles"]})
    gap = gap or front_gap(ctx)
    flags = t[f"frontier_{gap}"] if f"frontier_{gap}" in t.columns else front_flags(t, gap)
    front = t[flags.astype(bool)].sort_values(gap)
    if front.empty:  # every rule degenerate or its gap undefined: the chapter's text says which
        return pd.DataFrame({"Méthode": ["Front vide : aucune règle non dégénérée dont l'écart est défini"]})
    rows = grid_rows(ctx, compact, front)
    if not compact:
        return rows
    rows = without_empty_columns(charts.collapse_ties(rows, [c for c in rows.columns if c != "Méthode"], "Méthode"))
    if len(rows) <= SLIDE_FRONT_ROWS:
        return rows.reset_index(drop=True)
    keep = np.unique(np.linspace(0, len(rows) - 1, SLIDE_FRONT_ROWS).round().astype(int))
    more = len(rows) - len(keep)
    rest = f"… et {more} autre{'s' * (more > 1)} (tableau du rapport)"
    return pd.concat([rows.iloc[keep], pd.DataFrame({"Méthode": [rest]})], ignore_index=True).fillna("")


def _empty_front_reason(t: pd.DataFrame, gap: str) -> str:
    if t[gap].notna().sum() == 0:
        return (f"aucune combinaison, car l'{in_sentence(M.METRIC_LABELS_FR[gap])} "
                "n'est défini pour aucune (un groupe compte trop peu d'images d'une classe)")
    return "aucune combinaison non dégénérée"


PASSIVE = {"réduit": "est réduit", "creuse": "est creusé", "inverse": "est inversé", "augmente": "augmente",
           "diminue": "diminue", "ne change pas de façon notable": "ne change pas de façon notable"}


UNCHANGED = PASSIVE["ne change pas de façon notable"]


def _grouped(by_phrase: dict[str, list[str]]) -> list[str]:
    """« est réduit avec A et B », one clause per verdict; the rules that change nothing notable are counted, not
    listed, when they are more than three (the table names them)."""
    others = sum(len(labels) for phrase, labels in by_phrase.items() if phrase != UNCHANGED)
    out = []
    for phrase, labels in by_phrase.items():
        if phrase == UNCHANGED and len(labels) > 3:
            rest = "" if others == 0 else " autres"
            out.append(f"ne change de façon notable avec aucun des {len(labels)}{rest} post-traitements testés")
        else:
            out.append(f"{phrase} avec {fr.join(labels)}")
    return out


def postprocessing_narrative(ctx: StudyContext, claims: list | None = None) -> str:
    """What the post-processors do to the reference model, in a few sentences that group the rules by verdict
    (the tested gap, read from the verdicts; the accuracy cost; what to watch), then the Pareto front. The
    numbers are in the tables: the text says which way each rule goes."""
    from pipeline.report import verdicts as V
    from pipeline.report.consistency import Claim

    t = ctx.grid.table
    uni = t[t["weighting"] == "uniform"].set_index("postprocessor")
    groups = t.attrs.get("groups") or []
    gap = V.tested_gap(groups)
    vs = ctx.verdicts
    moves: dict[str, list[str]] = {}
    same: list[str] = []
    costly: list[str] = []
    cautions: list[str] = []
    for name, r in uni.iterrows():
        if name == "none":
            continue
        rule, label = f"uniform + {name}", post_label(name)
        extra = []
        if r.get("randomised_share", 0) > 0:
            extra.append(f"{pct(r['randomised_share'])} au hasard")
        if r.get("degenerate"):
            extra.append(f"dégénérée ({where_fr(str(r['degenerate_where']))}) : nivellement par le bas, pas équité")
        if r.get("coin_flip") and not weak.is_weak(ctx):
            extra.append(coin_flip_text(str(r.get("coin_flip_groups", "")), short=True))
        infeasible = infeasible_groups(ctx, "uniform", name)
        if infeasible:
            extra.append(f"cible infaisable pour {', '.join(infeasible)}")
        if extra:
            cautions.append(f"{label} ({' ; '.join(extra)})")
        primary = vs.find("primary", gap, rule) if gap and vs else None
        v = vs.find("exploratory:grid", gap, rule) if gap and vs else None
        stated = primary if primary is not None else v
        if stated is not None and stated.reason.startswith("identical"):
            same.append(label)
        elif stated is not None and stated.status in ("established", "not_established"):
            verb = PASSIVE[V.move_text(stated)]
            if stated.status == "established":
                verb += (f" de façon établie (question principale {V.PRIMARY_MARK}, {stated.n_seeds} entraînements)"
                         if primary is not None else f" de façon notable (exploratoire {V.EXPLORATORY_MARK})")
            moves.setdefault(verb, []).append(label)
            if claims is not None:
                claims.append(Claim("chapitre 4, post-traitements groupés par verdict", f"{label} : {verb}",
                                    (stated.key,), stated.status, stated.direction))
        else:
            moves.setdefault("n'est pas testable", []).append(label)
        accuracy = (vs.find("primary", "balanced_accuracy", rule) or vs.find("exploratory:grid", "balanced_accuracy",
                                                                             rule)) if vs else None
        if accuracy is not None and accuracy.established and accuracy.direction < 0:
            costly.append(f"{label} ({V.change_ci(accuracy)})")
    lines = []
    if gap and (moves or same):
        head = (f"Sur le modèle de référence, l'{V.quantity_label(gap, groups)} " + " ; il ".join(_grouped(moves))
                if moves else "")
        tail = (f"{fr.join(same)} {'prend' if len(same) == 1 else 'prennent'} les mêmes décisions que la référence"
                if same else "")
        lines.append(fr.upper_first(" ; ".join(filter(None, [head, tail]))) + ".")
    elif not gap:
        lines.append("Avec trois groupes ou plus, les écarts sont décrits dans le tableau, non testés.")
    lines.append("Baisse notable d'exactitude équilibrée : " + fr.join(costly) + "." if costly else
                 "Aucun post-traitement ne fait baisser l'exactitude équilibrée de façon notable.")
    if cautions:
        lines.append("À lire avec leurs limites (colonnes « Part au hasard » et « Remarque » du tableau) : "
                     + " ; ".join(cautions) + ".")
    gap = front_gap(ctx)
    if weak.is_weak(ctx):
        lines.append("\nLe modèle étant trop faible, aucun front de Pareto n'est tracé ni listé : ordonner ces "
                     "combinaisons par exactitude et par équité reviendrait à ordonner du bruit.")
        return "\n".join(lines)
    front = distinct_rules(ctx.grid.frontier(gap))
    names = [f"{method_label(w)} + {post_label(p)}" for w, p in
             zip(front["weighting"], front["postprocessor"], strict=True)]
    n_degenerate = int(t["degenerate"].sum()) if "degenerate" in t.columns else 0
    against = ("écart d'égalité des erreurs réalisé" if gap == "eo_diff" else
               f"{in_sentence(M.METRIC_LABELS_FR[gap])}, l'écart d'égalité des erreurs n'étant défini pour aucune")
    ends = (f"{fr.count(len(names), 'combinaisons')}, de {names[0]} (la plus équitable) à {names[-1]} (la plus "
            "exacte) ; @tbl-pareto, en annexe, les liste toutes" if len(names) > 1 else "".join(names))
    lines.append(f"\nLe front de Pareto (exactitude équilibrée contre {against}) compte "
                 f"{ends or _empty_front_reason(t, gap)}."
                 + (f" {n_degenerate} combinaison{'s' * (n_degenerate > 1)} dégénérée{'s' * (n_degenerate > 1)} en "
                    f"{'sont exclues' if n_degenerate > 1 else 'est exclue'}." if n_degenerate else ""))
    return "\n".join(lines)
