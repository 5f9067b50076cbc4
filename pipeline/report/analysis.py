"""Chapter 5 (analysis): the cost of fairness and the comparison with the literature (`chapters/05-analysis.qmd`)."""

from __future__ import annotations

import hashlib

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data import schema as S
from pipeline.fairness.validity import validity
from pipeline.report import charts, style, weak
from pipeline.report import french as fr
from pipeline.report.french import ci, num
from pipeline.report.memo import cached_chart
from pipeline.report.tables import (
    beats_both,
    combination_label,
    defined_gap,
    method_label,
    post_label,
)
from pipeline.report.verdicts import detail_seed_phrase, runs_phrase
from pipeline.study import StudyContext


def cost_table(ctx: StudyContext) -> pd.DataFrame:
    """Each rule's change of balanced accuracy and of the gap the grid tests (signed sensitivity gap with two
    groups, else the EO gap, described), with the grid's marks; merged rules once."""
    from pipeline.report.verdicts import quantity_label, tested_gap

    t = ctx.grid.table
    groups = t.attrs.get("groups") or []
    gap = tested_gap(groups) or "eo_diff"
    gap_header = f"Δ {quantity_label(gap, groups)}" if gap != "eo_diff" else "Δ écart EO (descriptif)"
    keep = (t["weighting"] == "uniform") | (t["postprocessor"] == "none") | t["frontier_eo_diff"]
    if "identical_to" in t.columns:
        keep &= t["identical_to"].fillna("").eq("")
    rows = []
    for _, r in t[keep & ~((t["weighting"] == "uniform") & (t["postprocessor"] == "none"))].iterrows():
        def cell(m: str, r: pd.Series = r) -> str:
            flag = r.get(f"{m}_mark")
            flag = flag if isinstance(flag, str) else ""
            answer = r.get(f"{m}_primary_estimate", np.nan)
            if flag and isinstance(answer, float) and np.isfinite(answer):  # ★: the pre-registered answer
                return ci(answer, r[f"{m}_primary_low"], r[f"{m}_primary_high"]) + f" {flag}"
            return ci(r[f"{m}_diff"], r[f"{m}_diff_low"], r[f"{m}_diff_high"]) + (f" {flag}" if flag else "")

        rows.append({"Combinaison": f"{method_label(r['weighting'])} + {post_label(r['postprocessor'])}",
                     "Δ exactitude équilibrée": cell("balanced_accuracy"), gap_header: cell(gap),
                     "Front de Pareto": "oui" if r["frontier_eo_diff"] else ""})
    return pd.DataFrame(rows)


def grid_count_sentence(ctx: StudyContext, claims: list | None = None) -> str:
    """How the grid's combinations move the tested gap (signed sensitivity gap, two groups), counted from the
    grid's verdicts: reductions, reversals, widenings, nothing notable, identical decisions, untested."""
    from pipeline.report import verdicts as V

    moves = V.grid_moves(ctx)
    if moves.gap is None:
        return (f"Avec {len(ctx.grid.table.attrs.get('groups') or [])} groupes, les écarts (max − min) de la grille "
                "sont décrits, non testés : aucune combinaison n'est déclarée meilleure.")
    groups = ctx.grid.table.attrs.get("groups") or []
    label = V.quantity_label(moves.gap, groups)
    def verb(n: int, one: str, many: str, none: str = "") -> str:  # « aucune ne le réduit », « 3 le réduisent »
        return (none or f"aucune ne {one}") if n == 0 else f"{n} {one if n < 2 else many}"

    parts = [verb(len(moves.reduced), "le réduit", "le réduisent")]
    if moves.reversed:
        parts.append(verb(len(moves.reversed), "l'inverse", "l'inversent"))
    parts += [verb(len(moves.widened), "le creuse", "le creusent"),
              verb(len(moves.unchanged), "ne le change pas de façon notable", "ne le changent pas de façon notable",
                   "aucune ne le laisse sans changement notable")]
    if moves.identical:
        parts.append(verb(len(moves.identical), "prend les mêmes décisions qu'une autre règle (fusionnée)",
                          "prennent les mêmes décisions qu'une autre règle (fusionnées)"))
    if moves.untested:
        parts.append(verb(len(moves.untested), "n'est pas testée", "ne sont pas testées")
                     + " (règle dégénérée, écart non défini ou trop peu de rééchantillonnages)")
    if claims is not None:
        from pipeline.report.consistency import Claim

        for bucket, status in ((moves.reduced + moves.reversed + moves.widened, "established"),
                               (moves.unchanged, "not_established")):
            claims += [Claim("chapitre 5, décompte de la grille", f"{v.treated} compté « {status} »", (v.key,), status)
                       for v in bucket]
    which = "le réduisent ou l'inversent" if moves.reversed else "le réduisent"
    limit = fr.pct(ctx.config.analysis.recommendation.max_randomised)
    among = [f"{verb(len(moves.costly), 'baisse', 'baissent')} aussi l'exactitude équilibrée de façon notable"
             if moves.costly else "",
             f"{verb(len(moves.by_chance), 'y arrive', 'y arrivent')} en partie par le hasard (plus de {limit} de "
             "décisions tirées au sort, ou malades et sains confondus dans un groupe)" if moves.by_chance else ""]
    cost = f" Parmi celles qui {which}, {' et '.join(filter(None, among))}." if any(among) else ""
    return (f"Sur les {moves.compared} combinaisons comparées au modèle de référence ({V.seeds_phrase(ctx)} ; "
            f"exploratoire {V.EXPLORATORY_MARK} : test apparié, Benjamini-Hochberg à 10 %), pour l'{label} : "
            + " ; ".join(parts) + "." + cost)


def notable_among(ctx: StudyContext, rules: list[str]) -> list[str]:
    """The `rules` whose tested gap moves notably against the reference (reduced or reversed; the grid's
    exploratory verdicts): what a point-estimate ranking may name as more than noise."""
    from pipeline.report.verdicts import grid_moves

    moves = grid_moves(ctx)
    moved = {v.treated for v in moves.reduced + moves.reversed}
    return [r for r in rules if r in moved]


def analysis_narrative(ctx: StudyContext, claims: list | None = None) -> str:
    """The grid against the reference on the gap it tests (from the verdicts); the combinations that beat both
    their parts (exploratory); levelling down."""
    t = ctx.grid.table
    gap = defined_gap(t)
    lines = [grid_count_sentence(ctx, claims)]
    both = [] if weak.is_weak(ctx) else beats_both(ctx, gap, names=True)
    # named only when its gap moves notably against the reference: beating its parts is a point estimate
    notable = notable_among(ctx, both)
    if claims is not None:
        from pipeline.report.consistency import Claim

        claims += [Claim("chapitre 5, combinaisons meilleures que leurs composantes", name, beats=name, gap=gap)
                   for name in notable]
    if notable:
        from pipeline.report.verdicts import runs_phrase

        lines.append("Combinaisons qui réduisent l'écart de façon notable (exploratoire) et battent chacune de leurs "
                     "composantes seule, en estimation ponctuelle (écart plus faible sans perte d'exactitude ; "
                     f"{runs_phrase(ctx)} ; les écarts avec les composantes ne sont pas testés) : "
                     f"{', '.join(map(combination_label, notable))}.")
    elif both:
        lines.append("Aucune combinaison ne fait nettement mieux que ses deux composantes : "
                     f"{fr.count(len(both), 'combinaisons')} les {'bat' if len(both) == 1 else 'battent'} en "
                     "estimation ponctuelle, sans changer "
                     "l'écart de façon notable par rapport à la référence.")
    elif weak.is_weak(ctx):
        lines.append("Le modèle étant trop faible (avertissement en tête du rapport), aucune combinaison n'est mise "
                     "en avant : battre ses composantes sur des scores sans signal établi ne dit rien.")
    else:
        lines.append("Aucune combinaison ne bat à la fois la pondération seule, le post-traitement seul et la "
                     "référence.")
    worst = t.set_index(["weighting", "postprocessor"])["worst_group_tpr"]
    base_w = worst.get(("uniform", "none"), np.nan)
    down = [f"{method_label(w)} + {post_label(p)}" for (w, p), v in worst.items() if v < base_w - 0.05]
    if down and weak.is_weak(ctx):  # a reference at chance: the drops measure its noise, no rule is named
        lines.append(f"{fr.count(len(down), 'combinaisons')} font baisser de plus de 5 points la sensibilité du "
                     "groupe le moins bien servi, sur des scores sans signal établi : du bruit plus qu'un "
                     "nivellement par le bas (@tbl-grid).")
    elif down:
        shown = 3  # the first few by name; the grid's table (appendix) has them all
        more = len(down) - shown
        rest = f" et {more} autre{'s' * (more > 1)} combinaison{'s' * (more > 1)} (@tbl-grid)" if more > 0 else ""
        lines.append("Attention au nivellement par le bas : la sensibilité du groupe le moins bien servi baisse de "
                     f"plus de 5 points avec {fr.join(down[:shown]) if more <= 0 else ', '.join(down[:shown])}{rest}.")
    return "\n\n".join(lines)


def literature_caveat(ctx: StudyContext) -> str:
    """The end of « … à côté de ceux publiés », its full stop included (an inline value is never empty): on the
    demo, its effects are planted, so the comparison shows how to read the literature, not a finding."""
    return (" (sur la démo, les effets sont plantés par le générateur : la comparaison montre comment lire ces "
            "ordres de grandeur, elle ne confirme ni ne contredit la littérature).") if ctx.config.is_demo else "."


def literature_table(ctx: StudyContext) -> pd.DataFrame:
    """Our figures beside the published ones; the attribute-only baseline beside the image model."""
    uni = ctx.comparison[(ctx.comparison["method"] == "uniform")].set_index("metric")
    g = model_results(ctx).group_metrics  # the reference's, mean over every training seed
    fnr = g[(g["model"] == "reference") & (g["attribute"] == S.AGE_BAND) & (g["metric"] == "fnr")]
    fnr_text = ", ".join(f"{fr.group_label(S.AGE_BAND, r.group)} : {num(r.estimate)}" for r in fnr.itertuples()
                         ) if len(fnr) else "n.d."
    from pipeline.report import verdicts as V

    moves = V.grid_moves(ctx)
    better = [v for v in moves.reduced if v.treated not in moves.costly and v.treated not in moves.by_chance]
    b = validity(ctx).baseline
    source = "démo synthétique" if ctx.config.is_demo else "nos données"
    ours = f"Nous ({source})"
    return pd.DataFrame([
        {"Quantité": "AUC du classifieur d'images",
         "Littérature": "0,73 à 0,94 selon l'anomalie (DenseNet-121 [@rajpurkar2017chexnet])",
         ours: V.level_ci(ctx, "auc") or ci(*uni.loc["auc", ["estimate", "low", "high"]])},
        {"Quantité": "AUC des seuls attributs, hors échantillon", "Littérature": "—",
         ours: ci(b["attributes"], b["attributes_low"], b["attributes_high"]) if b else "n.d."},
        {"Quantité": "Sous-diagnostic par âge (notre FNR ; FPR de « No Finding » dans la littérature)",
         "Littérature": "plus élevé chez les plus jeunes (0–20 ans) et chez les femmes",
         ours: fnr_text},
        {"Quantité": "Atténuations qui réduisent l'écart de sensibilité sans perte d'exactitude (notables)",
         "Littérature": "rares (MEDFAIR, Zong et al. 2023 ; Zhang et al. 2022)",
         ours: f"{len(better)} sur {moves.compared} : des {len(moves.reduced)} qui le réduisent, sans celles qui "
               f"perdent en exactitude ou décident en partie au hasard (exploratoire, {V.runs_phrase(ctx)})"
         if moves.gap
         else "non testé (3 groupes ou plus)"},
    ])


# ------------------------------------------------------------------ the model itself (issue 16)
# Amplification, what the features reveal, per-group performance, subgroups, class-activation maps:
# computed once by `fairness.model_analysis`, formatted here for chapter 5 and the slides.


def model_results(ctx: StudyContext):
    """The model analysis of this study (computed once per process; parts cached)."""
    from pipeline.fairness.model_analysis import model_analysis

    return model_analysis(ctx)


def _pp(x: float, low: float, high: float) -> str:
    """A gap in points with its interval: « +5,2 [+3,1 ; +7,4] »."""
    return fr.points_ci(x, low, high, decimals=1, unit=False)


def _pair(attribute: str, high: str, low: str) -> str:
    return f"{fr.group_label(attribute, high)} − {fr.group_label(attribute, low)}"


def data_chapter_gap(ctx: StudyContext, attribute: str, high: str, low: str) -> str:
    """« (toutes les images, chapitre 2 : Femme − Homme −17,1) »: the same two groups' prevalence
    gap as chapter 2 quotes it (its orientation, its population), so that the two numbers read together; "" when
    chapter 2 does not compare these two groups."""
    from pipeline.fairness.data_analysis import data_analysis

    prevalence = data_analysis(ctx).prevalence
    for _, r in prevalence[prevalence["attribute"] == attribute].dropna(subset=["rd"]).iterrows():
        if {str(r["group"]), str(r["reference"])} == {str(high), str(low)}:
            return (f" (toutes les images, chapitre 2 : {_pair(attribute, r['group'], r['reference'])} "
                    f"{fr.number(100 * r['rd'], 1, sign=True)})")
    return ""


def _amp_mark(ctx: StudyContext, attribute: str, method: str, quantity: str = "bias_amplification") -> str:
    from pipeline.report.verdicts import EXPLORATORY_MARK, analysis_verdict

    v = analysis_verdict(ctx, "exploratory:amplification", quantity, attribute, method)
    return f" {EXPLORATORY_MARK}" if v is not None and v.established else ""


def amplification_table(ctx: StudyContext, methods: str = "all") -> pd.DataFrame:
    """Data gap, model gap and amplification per attribute, for each weighting and post-processor (points)."""
    t = model_results(ctx).amplification
    if methods == "reference":
        t = t[t["method"] == ctx.grid.baseline[0]]
    rows = []
    for r in t.itertuples():
        seeds = int(getattr(r, "n_seeds", 1))
        decisions = ({} if methods == "reference" else  # one model: the caption says how it decides
                     {"Décisions": (f"seuil W&R, {seeds} graines" if seeds > 1 else
                                    f"seuil W&R, graine {ctx.detail_seed}" if " + " not in r.method
                                    else f"règle, graine {ctx.detail_seed}")})
        rows.append({"Modèle": combination_label(r.method), "Attribut": fr.attribute_label(r.attribute), **decisions,
                     "Groupes (haut − bas)": _pair(r.attribute, r.high_group, r.low_group) if r.high_group else "n.d.",
                     "Écart des données": _pp(r.data_gap, r.data_gap_low, r.data_gap_high),
                     "Écart du modèle": _pp(r.model_gap, r.model_gap_low, r.model_gap_high),
                     "Amplification": _pp(r.amplification, r.amplification_low, r.amplification_high)
                     + _amp_mark(ctx, r.attribute, r.method),
                     "BiasAmp A→T": _pp(r.bias_amp, r.bias_amp_low, r.bias_amp_high)
                     + _amp_mark(ctx, r.attribute, r.method, "bias_amp")})
    return pd.DataFrame(rows)


@cached_chart
def amplification_chart(ctx: StudyContext) -> alt.LayerChart:
    """Data gap vs model gap per attribute (reference model), in points, with 95 % intervals."""
    t = model_results(ctx).amplification
    t = t[(t["method"] == ctx.grid.baseline[0]) & t["high_group"].notna()]
    rows = []
    for r in t.itertuples():
        label = f"{fr.attribute_label(r.attribute)} ({_pair(r.attribute, r.high_group, r.low_group)})"
        for what, col in (("Données (prévalence)", "data_gap"), ("Modèle (taux prédit malade)", "model_gap")):
            rows.append({"attribut": label, "source": what, "gap": 100 * getattr(r, col),
                         "low": 100 * getattr(r, f"{col}_low"), "high": 100 * getattr(r, f"{col}_high")})
    data = pd.DataFrame(rows)
    values = data[["low", "high", "gap"]].to_numpy(float)
    lo, hi = float(np.nanmin(values, initial=0)), float(np.nanmax(values, initial=0))
    axis = style.signed_axis("Écart entre groupes (points de pourcentage, IC 95 %)",
                             style.nice_ticks(min(lo, 0), max(hi, 0)))
    color = alt.Color("source:N", title=None, scale=alt.Scale(domain=["Données (prévalence)",
                                                                      "Modèle (taux prédit malade)"],
                                                              range=["#7F7F7F", "#AA3377"]),
                      legend=alt.Legend(orient="bottom", labelLimit=400))
    y = alt.Y("attribut:N", title=None, sort=None, axis=alt.Axis(labelLimit=360))
    tooltip = ["attribut:N", "source:N", alt.Tooltip("gap:Q", format="+.1f"), alt.Tooltip("low:Q", format="+.1f"),
               alt.Tooltip("high:Q", format="+.1f")]
    layer = style.interval_layer(data, "gap", "low", "high", y, color, tooltip, axis,
                                 y_offset=alt.YOffset("source:N"))
    zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(color="#888888", strokeDash=[4, 3]).encode(x="x:Q")
    return (zero + layer).properties(width=style.WIDTH, height=max(100, 45 * len(t)))


def _amp_family_size(ctx: StudyContext) -> int:
    return sum(v.status != "not_testable" for v in ctx.verdicts.family("exploratory:amplification"))


def amplification_sentences(ctx: StudyContext, method: str | None = None, claims: list | None = None,
                            bias_amp: bool = True) -> list[str]:
    """« Sexe (Homme − Femme) : écart de prévalence des données de … ; le modèle amplifie cet écart de … »;
    `bias_amp`: with Wang and Russakovsky's measure (the body leaves it to the appendix's table)."""
    t = model_results(ctx).amplification
    method = method or ctx.grid.baseline[0]
    out = []
    from pipeline.report.verdicts import EXPLORATORY_MARK, _claim, amplification_verdict, analysis_verdict

    for r in t[(t["method"] == method) & t["high_group"].notna()].itertuples():
        v = amplification_verdict(ctx, r.attribute, r.method)
        established = v is not None and v.established
        verb = "amplifie" if r.amplification > 0 else "atténue"
        data_gap = _pp(r.data_gap, r.data_gap_low, r.data_gap_high)
        low, high = sorted((abs(r.amplification_low), abs(r.amplification_high)))
        amp = (f"{fr.number(100 * abs(r.amplification))} points "
               f"{fr.bracket(fr.number(100 * low), fr.number(100 * high))}") if established \
            else _pp(r.amplification, r.amplification_low, r.amplification_high)
        seeds = int(getattr(r, "n_seeds", 1))
        runs = f"{seeds} graines" if seeds > 1 else "un entraînement"
        text = (f"**{fr.attribute_label(r.attribute)}** ({_pair(r.attribute, r.high_group, r.low_group)}) : écart de "
                f"prévalence des données de {data_gap} points sur les patients d'évaluation"
                f"{data_chapter_gap(ctx, r.attribute, r.high_group, r.low_group)}")
        if established:
            text += (f" ; le modèle {verb} cet écart de {amp} (notable, exploratoire {EXPLORATORY_MARK} : "
                     f"{runs}, Benjamini-Hochberg sur les {_amp_family_size(ctx)} mesures d'amplification).")
        else:
            text += (f" ; le modèle s'en écarte de {amp} points ({runs}) : ni amplification ni atténuation "
                     "notable (exploratoire).")
        w = analysis_verdict(ctx, "exploratory:amplification", "bias_amp", r.attribute, r.method)
        if bias_amp and w is not None and np.isfinite(r.bias_amp):
            text += (f" BiasAmp A→T : {_pp(r.bias_amp, r.bias_amp_low, r.bias_amp_high)} points, "
                     + (f"notable {EXPLORATORY_MARK}." if w.established else "non notable."))
            _claim(claims, f"chapitre 5, BiasAmp ({r.attribute})", text, w)
        _claim(claims, f"chapitre 5, amplification ({r.attribute})", text, v)
        out.append(text)
    return out


def amplification_narrative(ctx: StudyContext, claims: list | None = None, part: str = "all") -> str:
    """Generated text of the amplification section: the reference model (`part="body"`), then the
    post-processors and how the decisions are taken (`part="appendix"`), or all of it."""
    from pipeline.report.verdicts import EXPLORATORY_MARK, _claim, amplification_verdict

    lesson = ("Une amplification positive n'est pas forcément une faute : un écart de prévalence réel doit se "
              "retrouver dans les décisions ; ce qui compte est que celui du modèle ne le dépasse pas.")
    per_attribute = "\n".join(f"- {s}" for s in amplification_sentences(ctx, claims=claims,
                                                                         bias_amp=part != "body"))
    if part == "body" and weak.is_weak(ctx):  # the lesson is about a real amplification: moot here
        return "\n\n".join(filter(None, [
            "Modèle trop faible : l'écart de ses décisions peut n'être que du bruit, et « ni amplification ni "
            "atténuation notable » n'y est pas une absence d'effet.", per_attribute]))
    if part == "body":
        return "\n\n".join(filter(None, [per_attribute, lesson]))
    lines = [per_attribute] if part == "all" and per_attribute else []
    t = model_results(ctx).amplification
    base = ctx.grid.baseline[0]
    post = t[t["method"].str.startswith(f"{base} + ") & (t["method"] != f"{base} + none")
             & t["high_group"].notna()]
    main = ctx.config.postprocessing.attribute
    moved = post[(post["attribute"] == main)]
    found = [(m, amplification_verdict(ctx, main, m)) for m in moved["method"]]
    narrow = [combination_label(m) for m, v in found if v is not None and v.direction < 0]
    wide = [combination_label(m) for m, v in found if v is not None and v.direction > 0]
    for _, v in found:
        _claim(claims, "chapitre 5, amplification après post-traitement", "écart prédit sous ou au-dessus", v)
    if len(moved):
        said = []
        if narrow:
            said.append(f"l'écart prédit (signé) passe sous celui des données avec {', '.join(narrow)}")
        if wide:
            said.append(f"l'écart prédit (signé) passe au-dessus de celui des données avec {', '.join(wide)}")
        lines.append(f"Après post-traitement (attribut {fr.attribute_label(main).lower()}, patients d'évaluation, "
                     "règles dégénérées exclues), "
                     + (" ; ".join(said) + f", de façon notable (exploratoire {EXPLORATORY_MARK} ; sous 0, l'écart "
                        "s'inverse : voir le tableau)." if said else
                        "aucune règle ne fait passer l'écart prédit sous ou au-dessus de celui des données de "
                        "façon notable (exploratoire)."))
    lines.append("Comme chez Wang et Russakovsky, chaque modèle pondéré est ici décidé au seuil qui reproduit la "
                 "prévalence d'apprentissage (la part d'images prédites *malade* égale la part de malades, sur "
                 f"{fr.threshold_source(ctx.train_info.get('uniform', {}))}) : l'écart du modèle et BiasAmp "
                 "lisent alors l'écart entre groupes, "
                 "pas un décalage global du taux prédit. Les règles post-traitées gardent leurs propres décisions "
                 f"({detail_seed_phrase(ctx, short=True)}) : leur BiasAmp lit aussi le décalage de leur taux prédit.")
    if part == "all":
        lines.append(lesson)
    return "\n\n".join(lines)


def amplification_summary(ctx: StudyContext) -> str:
    """One sentence: how many of the data's gaps the reference model widens or narrows (exploratory verdicts)."""
    from pipeline.report.verdicts import amplification_verdict

    t = model_results(ctx).amplification
    rows = t[(t["method"] == ctx.grid.baseline[0]) & t["high_group"].notna()]
    if rows.empty:
        return ""
    found = [amplification_verdict(ctx, r.attribute, r.method) for r in rows.itertuples()]
    wide = [fr.attribute_label(a).lower() for a, v in zip(rows["attribute"], found, strict=True)
            if v and v.direction > 0]
    narrow = [fr.attribute_label(a).lower() for a, v in zip(rows["attribute"], found, strict=True)
              if v and v.direction < 0]
    n = fr.count(len(rows), "attributs")
    if not wide and not narrow:
        return (f"Le modèle de référence n'amplifie ni n'atténue de façon notable l'écart de prévalence des données, "
                f"pour aucun des {n} (exploratoire).")
    said = ([f"amplifie l'écart des données pour {fr.join(wide)}"] if wide else []) + (
        [f"l'atténue pour {fr.join(narrow)}"] if narrow else [])
    return f"Sur {n}, le modèle de référence {' et '.join(said)}, de façon notable (exploratoire)."


def group_gap_phrase(ctx: StudyContext, metric: str = "fnr", claims: list | None = None, where: str = "") -> str:
    """« 42 % (13/31) chez les femmes contre 4 % (4/94) chez les hommes »: the reference model's `metric` in its
    worst and best served groups of the weighting attribute, with the count behind each rate, and
    « , écart non notable » when the exploratory verdict is not established; "" with fewer than two groups."""
    from pipeline.report.verdicts import _claim, analysis_verdict

    t = model_results(ctx).group_metrics
    t = t[(t["model"] == "reference") & (t["metric"] == metric) & t["estimate"].notna()]
    main = t[t["attribute"] == ctx.config.weighting.attribute]
    if len(main) < 2:
        return ""
    worst, best = main.loc[main["estimate"].idxmax()], main.loc[main["estimate"].idxmin()]
    count = "n_positive" if metric in ("fnr", "tpr") else "n_negative"  # the rate's denominator

    def rate(r: pd.Series) -> str:  # « 65 % (20/31) chez les femmes »: the count behind the rate
        return (f"{fr.percent(r['estimate'])} {fr.fraction(r['estimate'], r[count])} "
                f"{fr.group_phrase(r['attribute'], r['group'])}")

    phrase = f"{rate(worst)} contre {rate(best)}"
    v = analysis_verdict(ctx, "exploratory:reference_gap", "tpr_signed", ctx.config.weighting.attribute,
                         "uniform + none")
    if v is not None:
        _claim(claims, where, phrase, v)
        if not v.established:
            phrase += ", écart non notable"
    return phrase


def groups_sentence(ctx: StudyContext) -> str:
    """The reference model's under-diagnosis in the worst and best served groups, with the counts behind the
    rates (the body's twin of the backup slide's title); "" when not computed."""
    phrase = group_gap_phrase(ctx)
    if not phrase:
        return ""
    return (f"Sous-diagnostic du modèle de référence ({runs_phrase(ctx)}) : {phrase} ; tous les "
            "groupes et leurs effectifs : @tbl-group-performance, en annexe." + age_adjusted_sentence(ctx))


def age_adjusted_sentence(ctx: StudyContext) -> str:
    """Is the reference's under-diagnosis gap an age effect? The gap (FNR, first group minus second) crude and
    at equal age band (Mantel-Haenszel), over every seed, and what its verdicts say (" …"; "" for a weak model)."""
    from pipeline.report.verdicts import analysis_verdict

    gap = getattr(model_results(ctx), "age_adjusted_gap", None)
    if gap is None or weak.is_weak(ctx):  # a weak model's gap may be noise: adjusting it says nothing more
        return ""
    found = {k: analysis_verdict(ctx, "exploratory:age_adjusted_gap", "fnr_signed", gap["attribute"], k)
             for k in ("crude", "adjusted")}
    if any(v is None for v in found.values()):
        return ""
    crude, adjusted = found["crude"], found["adjusted"]
    pair = f"{fr.group_label(gap['attribute'], gap['group'])} − {fr.group_label(gap['attribute'], gap['reference'])}"
    adjusted_text = fr.points_ci(adjusted.estimate, adjusted.low, adjusted.high)
    text = (f" L'âge l'explique-t-il ? À tranche d'âge égale (Mantel-Haenszel, exploratoire), l'écart {pair} "
            f"est de {adjusted_text}, contre {fr.points(crude.estimate)} brut")
    if crude.established and adjusted.established and crude.direction == adjusted.direction:
        return text + " : l'âge ne l'explique pas à lui seul."
    if crude.established:
        return text + " : à âge égal, il n'est plus distinguable de zéro."
    return text + "."


def chapter_answer(ctx: StudyContext) -> str:
    """The chapter's answer first (its « En bref » box): the pre-registered verdicts and the recommendation,
    then what the model does with the data's biases."""
    from pipeline.report.verdicts import primary_summary, recommendation_summary

    return " ".join(filter(None, [primary_summary(ctx, short=True), recommendation_summary(ctx, short=True),
                                  amplification_summary(ctx)]))


PROBE_TARGET_FR = {S.SEX: "Sexe", S.AGE_BAND: "Tranche d'âge", S.VIEW: "Incidence (AP/PA)"}


PROBE_SOURCES_FR = {"features": "Image seule", "others": "Autres attributs et diagnostic",
                    "combined": "Image + autres attributs et diagnostic"}
PROBE_COLUMNS_FR = {"features": "AUC : image", "others": "AUC : attributs + diagnostic",
                    "combined": "AUC : image + attributs + diagnostic"}


def probing_table(ctx: StudyContext) -> pd.DataFrame:
    """AUC of each sensitive attribute from the image alone, from the other attributes and the diagnosis, and from
    both; the image's gain (both − attributes) is the tested quantity."""
    t = model_results(ctx).probing
    if t is None:
        return pd.DataFrame([{"Attribut prédit": "n.d.", "Motif": "pas de caractéristiques d'image disponibles"}])
    rows = []
    for r in t.itertuples():
        row = {"Attribut prédit": PROBE_TARGET_FR.get(r.attribute, r.attribute), "Groupes": int(r.n_groups)}
        for name, label in PROBE_COLUMNS_FR.items():
            row[label] = _auc_ci(getattr(r, name), getattr(r, f"{name}_low"),
                                                   getattr(r, f"{name}_high"))
        row["Apport de l'image"] = ci(r.diff, r.diff_low, r.diff_high) + _probe_mark(ctx, r.attribute)
        rows.append(row)
    return pd.DataFrame(rows)


def _auc_ci(estimate: float, low: float, high: float) -> str:
    """A probe's AUC with its interval; an AUC of 1 on every fold says so instead of a zero-width interval."""
    if np.isfinite(estimate) and estimate >= 1 - 1e-9 and np.isfinite(low) and high - low < 1e-12:
        return f"{num(estimate)} (parfaite dans chaque pli)"
    return ci(estimate, low, high)


def image_carries(ctx: StudyContext, attribute: str) -> bool:
    """The image carries `attribute` beyond the other attributes and the diagnosis: the probe's exploratory
    verdict, established upwards."""
    from pipeline.report.verdicts import probe_verdict

    v = probe_verdict(ctx, attribute)
    return v is not None and v.established and v.direction > 0


def _probe_mark(ctx: StudyContext, attribute: str) -> str:
    from pipeline.report.verdicts import EXPLORATORY_MARK

    return f" {EXPLORATORY_MARK}" if image_carries(ctx, attribute) else ""


@cached_chart
def probing_chart(ctx: StudyContext) -> alt.LayerChart:
    t = model_results(ctx).probing
    rows = []
    for r in (t.itertuples() if t is not None else []):
        for col, what in PROBE_SOURCES_FR.items():
            rows.append({"attribut": PROBE_TARGET_FR.get(r.attribute, r.attribute), "source": what,
                         "auc": getattr(r, col), "low": getattr(r, f"{col}_low"), "high": getattr(r, f"{col}_high")})
    data = pd.DataFrame(rows, columns=["attribut", "source", "auc", "low", "high"])
    color = alt.Color("source:N", title=None, scale=alt.Scale(domain=list(PROBE_SOURCES_FR.values()),
                                                              range=["#EE99AA", "#7F7F7F", "#AA3377"]),
                      legend=alt.Legend(orient="bottom", labelLimit=400))
    # From 0.4 (chance is 0.5) or lower when an interval reaches below: a bar drawn past the scale's end
    # would widen the figure (Vega does not clip marks), and clipping it would hide the interval's extent.
    lowest = float(data["low"].min()) if data["low"].notna().any() else 0.4
    start = min(4, int(np.floor(lowest * 10))) / 10
    axis = alt.Axis(title="AUC de la sonde (IC 95 %, validation croisée répétée par patient)",
                    values=[round(v / 10, 1) for v in range(int(start * 10), 11)])
    layer = style.interval_layer(data, "auc", "low", "high", alt.Y("attribut:N", title=None, sort=None), color,
                                 ["attribut:N", "source:N", alt.Tooltip("auc:Q", format=".2f")], axis,
                                 y_offset=alt.YOffset("source:N"), domain=[start, 1.0])
    chance = alt.Chart(pd.DataFrame({"x": [0.5]})).mark_rule(color="#888888", strokeDash=[4, 3]).encode(x="x:Q")
    return (chance + layer).properties(width=style.WIDTH, height=max(120, 90 * len(data) // 3))


def probing_narrative(ctx: StudyContext) -> str:
    t = model_results(ctx).probing
    if t is None:
        return "Sans réseau entraîné (caractéristiques gelées indisponibles), la sonde n'a pas été calculée."
    lines = []
    for r in t.itertuples():
        name = fr.ATTRIBUTE_NOUN.get(r.attribute, (str(r.attribute),))[0]
        if not np.isfinite(r.combined) or not np.isfinite(r.others):
            lines.append(f"{PROBE_TARGET_FR.get(r.attribute, r.attribute)} : n.d. (trop peu de patients par groupe "
                         "pour une validation croisée).")
            continue
        above = image_carries(ctx, r.attribute)
        lines.append(f"L'image seule prédit {name} avec une AUC de "
                     f"{_auc_ci(r.features, r.features_low, r.features_high)}. Les autres attributs et le diagnostic "
                     f"en donnent {_auc_ci(r.others, r.others_low, r.others_high)}, et l'image ajoutée à eux "
                     f"{_auc_ci(r.combined, r.combined_low, r.combined_high)} : apport de "
                     f"l'image {ci(r.diff, r.diff_low, r.diff_high)}"
                     + (" : l'image porte cette information au-delà de ce que disent les autres attributs et le "
                        "diagnostic (notable, exploratoire)." if above else
                        " : pas d'apport notable de l'image au-delà des autres attributs et du diagnostic "
                        "(exploratoire)."))
    lines.append("Lecture. Le diagnostic fait partie de la comparaison, car les caractéristiques de l'image "
                 "l'encodent (le réseau est entraîné pour lui) : sans lui, un attribut lié à la maladie paraîtrait "
                 "lisible dans l'image alors qu'il ne l'est qu'à travers elle. Les intervalles viennent de cinq "
                 "validations croisées répétées (test t corrigé de Nadeau et Bengio [-@nadeau2003inference]), qui "
                 "comptent la variabilité de l'ajustement des sondes.")
    read = image_reads(ctx)
    lines.append(("Conséquences. " + (
        f"Ici, l'image porte {fr.join(read)} au-delà des autres attributs et du diagnostic : le modèle peut s'en "
        "servir comme raccourci, même si on ne le lui donne pas, et l'enlever des entrées ne suffit pas "
        "(« fairness through unawareness »)." if read else
        "Ici, aucun attribut n'est lisible dans l'image au-delà des autres attributs et du diagnostic : la sonde ne "
        "montre pas de raccourci de ce genre (ce qui ne prouve pas son absence). Un attribut qui le serait pourrait "
        "servir au modèle même sans lui être donné : l'enlever des entrées ne suffirait pas."))
        + " Le post-traitement, lui, a besoin de l'attribut au moment de décider.")
    return "\n\n".join(lines)


def image_reads(ctx: StudyContext) -> list[str]:
    """« le sexe », …: the attributes the image carries beyond the other attributes and the diagnosis (the
    probe's exploratory verdict established upwards); [] when none or no probe."""
    t = model_results(ctx).probing
    if t is None:
        return []
    return [fr.ATTRIBUTE_NOUN.get(a, (str(a),))[0] for a in t["attribute"] if image_carries(ctx, a)]


def probe_note(ctx: StudyContext) -> str:
    """The speaker's sentence on what the network reads of the attributes in the image (from the probe; never
    empty: it is an inline value)."""
    if model_results(ctx).probing is None:
        return "Sans réseau entraîné (caractéristiques gelées indisponibles), la sonde n'a pas été calculée."
    read = image_reads(ctx)
    if read:
        return (f"Le réseau lit aussi {fr.join(read)} dans l'image, au-delà du diagnostic (diapositive annexe « ce que "
                "voit le modèle ») : retirer l'attribut des entrées ne suffit pas.")
    return ("La sonde ne trouve aucun attribut lisible dans l'image au-delà du diagnostic (diapositive annexe « ce "
            "que voit le modèle ») : pas de raccourci de ce genre ici, ce qui ne prouve pas son absence.")


GROUP_METRICS_SHOWN = ("auc", "fnr", "fpr")
CALIBRATION_SHOWN = {"calibration_intercept": "Calibration : ordonnée (0)", "calibration_slope": "Pente (1)"}


def rate_with_count(estimate: float, low: float, high: float, denominator: float) -> str:
    """« 0,62 [0,35 ; 0,85] (8/13) »: a rate, its interval and the images it counts (≈ for expected
    decisions of a randomised rule, whose numerator is not a whole number)."""
    text = ci(estimate, low, high)
    return f"{text} {fr.fraction(estimate, denominator)}" if np.isfinite(estimate) and denominator else text


def group_performance_table(ctx: StudyContext, attribute: str, model: str = "reference") -> pd.DataFrame:
    """Per group, for one model: patients, malades/sains, AUC, underdiagnosis (FNR) and FPR with their
    counts, and the calibration intercept and slope (patient-clustered intervals; the ideal in brackets)."""
    ma = model_results(ctx)
    t = ma.group_metrics
    t = t[(t["model"] == model) & (t["attribute"] == attribute)]
    cal = ma.calibration_fit
    cal = cal[(cal["model"] == model) & (cal["attribute"] == attribute)].set_index(["group", "metric"])
    rows = []
    for g, part in t.groupby("group", sort=False):
        p = part.set_index("metric")
        positives, negatives = int(p["n_positive"].iloc[0]), int(p["n_negative"].iloc[0])
        row = {"Groupe": fr.group_label(attribute, g),
               "Effectifs": f"{fr.integer(p['n_patients'].iloc[0])} patients, {positives} malades / {negatives} sains",
               charts.SHORT_FR["auc"]: ci(*p.loc["auc", ["estimate", "low", "high"]])}
        for m, denominator in (("fnr", positives), ("fpr", negatives)):
            row[charts.SHORT_FR.get(m, m)] = rate_with_count(*p.loc[m, ["estimate", "low", "high"]], denominator)
        for m, title in CALIBRATION_SHOWN.items():
            row[title] = ci(*cal.loc[(g, m), ["estimate", "low", "high"]]) if (g, m) in cal.index else "n.d."
        rows.append(row)
    return pd.DataFrame(rows)


def group_performance_all(ctx: StudyContext) -> pd.DataFrame:
    """Every attribute and both models (reference, retained) in one table."""
    ma = model_results(ctx)
    parts = []
    for model, name in ma.retained.items():
        for a in ctx.config.sensitive_attributes:
            part = group_performance_table(ctx, a, model)
            if len(part):
                parts.append(part.assign(Modèle=combination_label(name), Attribut=fr.attribute_label(a)))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    first = ["Modèle", "Attribut"]
    return out[first + [c for c in out.columns if c not in first]] if len(out) else out


@cached_chart
def calibration_chart(ctx: StudyContext) -> alt.FacetChart:
    """Reliability curves per group (reference model): observed share of malade against the mean score,
    5 equal-count bins, 95 % patient-bootstrap intervals; the diagonal is perfect calibration."""
    data = model_results(ctx).calibration.copy()
    data["panel"] = data["attribute"].map(fr.attribute_label)
    data = style.label_groups(data, "attribute", "group", "groupe")
    labels = list(dict.fromkeys(data["groupe"]))
    base = alt.Chart(data)
    x = alt.X("mean_score:Q", title="Score moyen de la classe de score", scale=alt.Scale(domain=[0, 1]))
    color = alt.Color("groupe:N", title="Groupe", scale=style.label_scale(labels))
    lines = base.mark_line(point=True).encode(x=x, y=alt.Y("observed:Q", title="Part observée de malades",
                                                           scale=alt.Scale(domain=[0, 1])), color=color,
                                              tooltip=["groupe:N", "n:Q", alt.Tooltip("observed:Q", format=".2f")])
    bars = base.mark_rule(opacity=0.6).encode(x=x, y="low:Q", y2="high:Q", color=color)
    diag = base.mark_line(color="#888888", strokeDash=[4, 3]).encode(
        x=alt.X("d:Q", scale=alt.Scale(domain=[0, 1])), y="d:Q").transform_calculate(d="datum.bin / 4")
    return (alt.layer(diag, bars, lines).properties(width=230, height=230)
            .facet(column=alt.Column("panel:N", title=None, sort=None)))


def calibration_narrative(ctx: StudyContext) -> str:
    """What the reliability bands and the calibration intercept and slope say, group by group."""
    cal = model_results(ctx).calibration_fit
    cal = cal[cal["model"] == "reference"]
    text = ("Les courbes de fiabilité sont calculées sur 5 classes d'effectifs égaux du score (bornes communes à "
            "tous les groupes) ; les barres sont les intervalles bootstrap par patient à 95 % de la part observée "
            "de malades dans chaque classe. Le tableau résume la calibration de chaque groupe par deux nombres de la "
            "recalibration logistique de Cox : l'ordonnée à l'origine, ajustée la pente fixée à 1 (0 si le risque "
            "moyen prédit égale la part observée ; positive si le modèle sous-estime le risque), et la pente, "
            "ajustée avec sa propre ordonnée (1 idéale ; inférieure à 1 si les scores sont trop extrêmes ; un "
            "intervalle qui contient 0 dit que le score ne classe pas les images de ce groupe), avec des "
            "intervalles de Wald groupés par patient. L'erreur de "
            "calibration attendue (ECE) n'est pas utilisée : elle est biaisée vers le haut dans les petits "
            "groupes et son intervalle bootstrap peut exclure sa propre estimation.")
    off = []
    for r in cal.itertuples():
        ideal = 0.0 if r.metric == "calibration_intercept" else 1.0
        if np.isfinite(r.low) and np.isfinite(r.high) and not r.low <= ideal <= r.high:
            what = "l'ordonnée" if r.metric == "calibration_intercept" else "la pente"
            # a bound that rounds to the ideal value is printed with one more digit: « [−1,79 ; −0,004] »
            digits = 3 if ideal in (round(r.low, 2), round(r.high, 2)) else 2
            off.append(f"{what} {fr.group_phrase(r.attribute, r.group)} ({ci(r.estimate, r.low, r.high, digits)})")
    if off:
        text += (" Sans correction pour le nombre de groupes (lecture exploratoire), l'intervalle exclut la "
                 f"valeur idéale pour {fr.join(off)}.")
    elif len(cal):
        text += " Aucun intervalle n'exclut la valeur idéale : pas d'écart de calibration mis en évidence."
    return text


def subgroup_table(ctx: StudyContext) -> pd.DataFrame:
    """Every intersectional subgroup: images, malades, FNR, FPR, AUC with intervals or « n.d. (reason) »."""
    t = model_results(ctx).subgroups
    rows = []
    for (_, group), part in t.groupby(["crossing", "group"], sort=False):
        p = part.set_index("metric")
        first, second = part["first"].iloc[0], part["second"].iloc[0]
        a, b = str(group).split(" × ", 1)
        row = {"Sous-groupe": f"{fr.group_label(first, a)} × {fr.group_label(second, b)}",
               "Images": fr.integer(p["n"].iloc[0]), "Malades": fr.integer(p["n_positive"].iloc[0])}
        for m in ("fnr", "fpr", "auc"):
            reason = p.loc[m, "reason"]
            row[charts.SHORT_FR.get(m, m)] = f"n.d. ({reason})" if reason else ci(*p.loc[m, ["estimate", "low",
                                                                                               "high"]])
        rows.append(row)
    return pd.DataFrame(rows)


def worst_subgroup(ctx: StudyContext) -> dict | None:
    """The subgroup with the highest underdiagnosis (FNR) among those where it is defined."""
    from pipeline.fairness.subgroups import worst_subgroup as worst

    t = model_results(ctx).subgroups
    r = worst(t, "fnr")
    if r is None:
        return None
    a, b = str(r["group"]).split(" × ", 1)
    label = f"{fr.group_label(r['first'], a)} × {fr.group_label(r['second'], b)}"
    overall = ctx.comparison[(ctx.comparison["method"] == ctx.grid.baseline[0])
                             & (ctx.comparison["metric"] == "tpr")]
    fnr_all = 1 - float(overall["estimate"].iloc[0]) if len(overall) else np.nan
    from pipeline.fairness.subgroups import shrunken

    shrunk = shrunken(t, "fnr")
    return {"label": label, "fnr": r["estimate"], "low": r["low"], "high": r["high"], "n": r["n"],
            "n_positive": r["n_positive"], "missed": round(float(r["estimate"] * r["n_positive"])),
            "overall_fnr": fnr_all, "shrunken": float(shrunk[r.name]), "n_subgroups": len(shrunk)}


def selection_text(w: dict) -> str:
    """« le plus haut de 12 FNR estimés est biaisé vers le haut ; estimation corrigée de la sélection : 0,41 »."""
    return (f"le plus haut de {w['n_subgroups']} FNR estimés est biaisé vers le haut (malédiction du gagnant) ; "
            f"estimation corrigée de la sélection (rétrécissement empirique bayésien vers le FNR commun) : "
            f"{num(w['shrunken'])}")


def _undefined_subgroups(n: int, total: int) -> str:
    if n == 0:
        return f"Les {total} sous-groupes ont un FNR défini."
    return (f"{n} sous-groupe{'s' * (n > 1)} sur {total} {'n’ont' if n > 1 else 'n’a'} pas de FNR défini."
            .replace("’", "'"))


def group_performance_subject(ctx: StudyContext) -> str:
    """Whom the per-group table describes: the reference, and the recommended rule when there is one."""
    from pipeline.fairness.recommendation import recommendation

    rec = recommendation(ctx)
    if rec.chosen is not None:
        return f"pour le modèle de référence et la règle recommandée sous contraintes ({combination_label(rec.chosen)})"
    why = ("le modèle étant trop faible" if rec.withheld == "weak_model" else
           "aucune règle ne satisfaisant les contraintes")
    return f"pour le modèle de référence seul (aucune règle recommandée, {why})"


def subgroup_narrative(ctx: StudyContext) -> str:
    ma = model_results(ctx)
    t = ma.subgroups
    fnr = t[t["metric"] == "fnr"]
    undefined = int((fnr["reason"] != "").sum())
    w = worst_subgroup(ctx)
    text = (f"Règle des petits groupes : un taux n'est calculé que si le sous-groupe compte au moins "
            f"{ma.min_positives} images de la classe concernée (malades pour le FNR, sains pour le FPR) ; sinon il "
            f"est « n.d. » avec sa raison. {_undefined_subgroups(undefined, len(fnr))}")
    if w is None:
        return text + " Aucun sous-groupe n'a assez de malades pour un FNR : aucun pire sous-groupe n'est désigné."
    if weak.is_weak(ctx):
        return text + (" Le modèle étant trop faible (avertissement en tête du rapport), aucun pire sous-groupe "
                       "n'est désigné : le tableau donne chaque taux avec ses effectifs.")
    text += (f" Le sous-groupe le plus sous-diagnostiqué est **{w['label']}** : "
             f"FNR {ci(w['fnr'], w['low'], w['high'])} ({w['missed']}/{int(w['n_positive'])} malades manqués), "
             f"contre {num(w['overall_fnr'])} pour l'ensemble ; {selection_text(w)}.")
    if fr.is_missing(w["low"]):
        text += " Son intervalle n'est pas défini (trop peu de réplicats où le taux existe) : à confirmer."
    elif w["low"] <= w["overall_fnr"]:
        text += " Son intervalle contient le FNR global : ce classement peut venir du hasard de l'échantillon."
    return text


# CAM figure: a grid of (image, map over image) tiles, one column per example, drawn with PIL.


def _tile(pixels: np.ndarray, cam: np.ndarray, size: int = 192) -> tuple[Image.Image, Image.Image]:
    from matplotlib import colormaps

    grey = Image.fromarray(np.asarray(pixels, np.uint8)).convert("RGB").resize((size, size), Image.BILINEAR)
    heat = (colormaps["jet"](cam)[..., :3] * 255).astype(np.uint8)
    heat_img = Image.fromarray(heat).resize((size, size), Image.BILINEAR)
    return grey, Image.blend(grey, heat_img, 0.45)


MAP_LABELS_FR = {"gradcam": "Grad-CAM", "integrated_gradients": "Gradients intégrés"}


def cam_png(ctx: StudyContext, size: int = 176, labels: tuple[int, ...] = (1, 0)) -> bytes | None:
    """PNG: for each example (group, well / badly classified, true class in `labels`), the image, its
    Grad-CAM and its Integrated-Gradients map (smoothed for display only). Cached by content."""
    from pipeline.cache import atomic_write_bytes, cache_dir, code_version, combined_digest

    cams = model_results(ctx).cams
    if cams is None or not len(cams["cases"]):
        return None
    arrays = [np.ascontiguousarray(a) for a in (cams["pixels"], *(cams[m]["maps"] for m in MAP_LABELS_FR))]
    key = combined_digest([*(hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() for a in arrays),
                           cams["cases"].to_json(), str(size), repr(labels), ctx.config.weighting.attribute,
                           code_version("report.analysis", "report.french")])
    path = cache_dir() / "charts" / f"cam-{key}.png"
    if path.is_file():
        return path.read_bytes()
    png = _draw_cams(ctx, cams, size, labels)
    atomic_write_bytes(path, png)
    return png


def _draw_cams(ctx: StudyContext, cams: dict, size: int, labels: tuple[int, ...]) -> bytes:
    from PIL import ImageDraw, ImageFilter, ImageFont

    shown = np.flatnonzero(cams["cases"][S.LABEL].isin(labels).to_numpy())
    cases = cams["cases"].iloc[shown]
    attribute = ctx.config.weighting.attribute
    # Text in proportion to the tiles: a column's three lines (« malade détecté ») fit its width, the row
    # names on the left are larger (that column is free).
    small, large = max(12, round(size * 0.115)), max(12, round(size * 0.15))
    line = round(1.45 * small)
    n, pad, head, left = len(cases), max(6, size // 30), 4 * line + 8, round(5.4 * large)
    threshold = float(ctx.threshold(ctx.grid.baseline[0]))
    methods = list(MAP_LABELS_FR)
    canvas = Image.new("RGB", (left + n * (size + pad) + pad, (1 + len(methods)) * (size + pad) + pad + head),
                       "white")
    draw = ImageDraw.Draw(canvas)

    def font(px: int):
        try:
            return ImageFont.truetype("DejaVuSans.ttf", px)
        except OSError:
            return ImageFont.load_default()

    top_font, row_font = font(small), font(large)
    for j, label in enumerate(["Image", *(MAP_LABELS_FR[m] for m in methods)]):
        text = label.replace(" ", "\n")
        _, top, _, bottom = draw.multiline_textbbox((0, 0), text, font=row_font)
        draw.multiline_text((4, head + j * (size + pad) + (size - bottom - top) // 2), text, fill="black",
                            font=row_font)
    for i, (k, r) in enumerate(zip(shown, cases.itertuples(), strict=True)):
        x = left + pad + i * (size + pad)
        truth = "malade" if r.label == 1 else "sain"
        draw.text((x, 4), f"{fr.group_label(attribute, r.group)}, {getattr(r, 'view', '')}", fill="black",
                  font=top_font)
        outcome = {("malade", True): "malade détecté", ("malade", False): "malade manqué",
                   ("sain", True): "sain reconnu", ("sain", False): "faux positif"}[(truth, r.case.startswith("bien"))]
        draw.text((x, 4 + line), outcome, fill="#117733" if r.case.startswith("bien") else "#AA3377", font=top_font)
        for k, text in enumerate(("probabilité prédite", f"{num(r.proba)} (seuil {num(threshold)})")):
            px = small  # the largest size, down to 70 %, at which the line fits its column
            while px > 0.7 * small and draw.textlength(text, font=font(px)) > size - pad:
                px -= 1
            draw.text((x, 4 + (2 + k) * line), text, fill="black", font=font(px))
        for j, m in enumerate(methods):
            heat = cams[m]["maps"][k]
            if m == "integrated_gradients":  # pixel-level: blurred so that it can be seen at this size
                img = Image.fromarray((heat * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
                heat = np.asarray(img, float) / max(1, np.asarray(img).max())
            grey, overlay = _tile(cams["pixels"][k], heat, size)
            if j == 0:
                canvas.paste(grey, (x, head))
            canvas.paste(overlay, (x, head + (j + 1) * (size + pad)))
    import io

    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def cam_image(ctx: StudyContext, size: int = 176, labels: tuple[int, ...] = (1, 0), width: int | None = None):
    """The CAM figure for a notebook cell (IPython Image: PNG embedded in HTML and PDF), shown `width` px
    wide when given (a slide: drawn larger than shown, so that it stays sharp)."""
    from IPython.display import Image as IPImage
    from IPython.display import Markdown

    png = cam_png(ctx, size, labels)
    if png is None:
        return Markdown("*Cartes d'activation indisponibles (pas de réseau entraîné).*")
    return IPImage(png, width=width)


def cam_stats(ctx: StudyContext, method: str = "integrated_gradients") -> dict[str, float]:
    """Share of a map's mass in the image border and (AP images) in the demo's marker corner vs their area."""
    cams = model_results(ctx).cams
    if cams is None:
        return {}
    m, contrast, border = cams[method], cams["marker_contrast"][method], cams["border"][method]
    from pipeline.report.verdicts import analysis_verdict

    lungs = cams.get("lungs", {}).get(method, {"mean": np.nan, "low": np.nan, "high": np.nan})
    return {"border_share": border["mean"], "border_low": border["low"], "border_high": border["high"],
            "border_area": cams["border_area"], "lung_share": lungs["mean"], "lung_low": lungs["low"],
            "lung_high": lungs["high"], "lung_area": cams.get("lung_area", np.nan),
            "marker_share_ap": contrast["ap"], "marker_share_pa": contrast["pa"],
            "marker_diff": contrast["diff"], "marker_diff_low": contrast["diff_low"],
            "marker_diff_high": contrast["diff_high"], "marker_area": cams["marker_area"],
            "n": len(m["border_share"]),
            "border_verdict": analysis_verdict(ctx, "exploratory:maps", "border_excess", None, method),
            "marker_verdict": analysis_verdict(ctx, "exploratory:maps", "marker_contrast", None, method)}


def border_directions(ctx: StudyContext) -> dict[str, int]:
    """Each map method's established border direction (+1 more than the border's area, −1 less, 0 neither),
    for the methods whose verdict is testable."""
    out = {}
    for method in MAP_LABELS_FR:
        v = cam_stats(ctx, method).get("border_verdict")
        if v is not None and v.status != "not_testable":
            out[method] = v.direction
    return out


def _direction(v) -> int:
    """The verdict's established direction (0: not established, or no verdict)."""
    return 0 if v is None else v.direction


def marker_shows(s: dict) -> bool:
    """The demo's planted shortcut shows: on AP images the marker corner gets more of the map than its
    area, and more than on PA images by an established amount (the maps' family)."""
    return bool(s) and s["marker_share_ap"] > s["marker_area"] and _direction(s["marker_verdict"]) > 0


def border_text(s: dict[str, float]) -> str:
    """« 20 % [18 ; 22] » (patient-bootstrap interval; « [IC n.d.] » when it is not defined)."""
    low, high = s["border_low"], s["border_high"]
    if np.isfinite(low) and np.isfinite(high):
        return fr.percent_ci(s["border_share"], low, high)
    return f"{fr.percent(s['border_share'])} {fr.UNDEFINED_CI}"


def marker_gap(s: dict[str, float]) -> str:
    """« +1,8 point [+1,2 ; +2,4] »: AP − PA share of the marker corner (« [IC n.d.] » when undefined)."""
    d, low, high = s["marker_diff"], s["marker_diff_low"], s["marker_diff_high"]
    return fr.points_ci(d, low, high) if np.isfinite(low) and np.isfinite(high) else f"{fr.points(d)} {fr.UNDEFINED_CI}"


def marker_contrast_text(s: dict[str, float]) -> str:
    """« 2,3 % sur les AP contre 0,5 % sur les PA (écart +1,8 point [+1,2 ; +2,4]) »."""
    return (f"{fr.percent(s['marker_share_ap'], 1)} sur les AP contre {fr.percent(s['marker_share_pa'], 1)} sur "
            f"les PA (écart {marker_gap(s)})")


def cam_narrative(ctx: StudyContext) -> str:
    if not cam_stats(ctx):
        return "Sans réseau entraîné (`feature_source: pretrained`), les cartes d'activation ne sont pas calculées."
    lines = []
    for method, label in MAP_LABELS_FR.items():
        s = cam_stats(ctx, method)
        wide, narrow = _direction(s["border_verdict"]) > 0, _direction(s["border_verdict"]) < 0
        text = (f"{label} : sur {fr.count(s['n'], 'images')} d'évaluation, le bord de l'image (10 % de chaque côté, "
                f"{fr.percent(s['border_area'])} de la surface) reçoit {border_text(s)} de la masse de la carte"
                + (", plus que sa surface : le modèle s'appuie aussi sur les bords." if wide else
                   ", moins que sa surface : le modèle s'appuie surtout sur le centre de l'image." if narrow
                   else ", sans écart notable avec sa surface."
                   if s["border_verdict"] is not None and s["border_verdict"].status != "not_testable"
                   else " (intervalle non défini : pas de conclusion)."))
        if np.isfinite(s["lung_share"]):
            lung_ci = (fr.percent_ci(s["lung_share"], s["lung_low"], s["lung_high"])
                       if np.isfinite(s["lung_low"]) else f"{fr.percent(s['lung_share'])} {fr.UNDEFINED_CI}")
            text += (f" La zone pulmonaire approximative (deux rectangles, {fr.percent(s['lung_area'])} de la "
                     f"surface ; pas une segmentation) en reçoit {lung_ci} (descriptif).")
        if ctx.config.is_demo and np.isfinite(s["marker_share_ap"]):
            text += (f" Sur la démo, le coin du marqueur « AP » ({fr.percent(s['marker_area'], 1)} de la surface) "
                     f"reçoit {marker_contrast_text(s)}, IC 95 % par bootstrap sur les patients"
                     + (" : le raccourci planté se voit." if marker_shows(s) else
                        " : l'écart AP − PA est notable, mais le coin reçoit moins que sa part de surface : le "
                        "marqueur planté ne ressort pas de cette carte." if _direction(s["marker_verdict"]) > 0 else
                        " : le marqueur planté ne ressort pas de façon notable."))
        lines.append(text)
    directions = border_directions(ctx)
    if len(set(directions.values())) > 1:
        lines.append("Les deux méthodes se contredisent sur le bord de l'image : aucune des deux lectures ci-dessus "
                     "n'est retenue.")
    lines.append("Les cartes expliquent le score qui décide dans l'étude (en mode dernière couche, le réseau avec la "
                 "tête logistique ajustée intégrée à sa dernière couche). Grad-CAM [@selvaraju2017gradcam] ne garde "
                 "que ce qui pousse vers « malade », à la résolution de la couche de convolution la plus profonde qui "
                 "garde au moins 8 × 8 cellules ; les gradients intégrés [@sundararajan2017ig] donnent la "
                 "contribution absolue de chaque pixel, pour ou contre, depuis une copie floutée de l'image (une "
                 "image noire comme référence n'attribuerait rien aux régions sombres, poumons compris). Aucune des "
                 "deux n'est une segmentation.")
    return "\n\n".join(lines)
