"""Result tables and sentences shared by the chapters and the slides (formatting only).

Each function takes the StudyContext and only formats what `study.run` computed, so a number is
never computed twice or typed by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.fairness.exploratory import EXPLORATORY_MARK
from pipeline.fairness.metrics import METRIC_LABELS_FR, SIGNED
from pipeline.report import charts, weak
from pipeline.report import french as fr
from pipeline.report.french import NBSP, ci, num, pct
from pipeline.study import StudyContext

SHOWN = ("balanced_accuracy", "auc", "eopp_diff", "eo_diff", "dp_diff", "worst_group_bacc")


SHORT_FR = {"balanced_accuracy": "Exact. équil.", "auc": "AUC", "eopp_diff": "Écart TPR",
            "eo_diff": "Écart égal. erreurs", "dp_diff": "Écart parité dém.", "worst_group_bacc": "BA pire groupe"}




LOWER_IS_BETTER = {"eopp_diff", "eo_diff", "dp_diff"}


def estimate_ci(table: pd.DataFrame, metric: str) -> str:
    """Estimate and interval of one metric of a bootstrap table indexed by metric."""
    r = table.loc[metric]
    return ci(r["estimate"], r["low"], r["high"])


def grid_ci(row: pd.Series, metric: str) -> str:
    return ci(row[metric], row[f"{metric}_low"], row[f"{metric}_high"])


GAPS_IN_ORDER = ("eo_diff", "eopp_diff", "dp_diff")  # a chart falls back along this list when a gap is n.d.


def defined_gap(table: pd.DataFrame, preferred: str = "eo_diff") -> str:
    """The gap a chart can draw: `preferred` when some row defines it, else the first of the EO, TPR and DP
    gaps that is defined (DP needs no class count). `table`: long (metric, estimate) or wide (one column per metric)."""
    def defined(gap: str) -> bool:
        if "metric" in table.columns:
            return bool(table.loc[table["metric"] == gap, "estimate"].notna().any())
        return gap in table.columns and bool(table[gap].notna().any())

    order = [preferred, *(g for g in GAPS_IN_ORDER if g != preferred)]
    return next((g for g in order if defined(g)), preferred)


def gap_fallback_note(ctx: StudyContext, shown: str, preferred: str = "eo_diff", of: str = "méthode",
                      instead: str = "le graphique montre") -> str:
    """« L'écart … n'est défini pour aucune méthode … : le graphique montre … » ("" when `preferred` is shown)."""
    if shown == preferred:
        return ""
    return (f"L'{in_sentence(METRIC_LABELS_FR[preferred])} n'est défini pour aucune {of} (un groupe compte moins "
            f"de {ctx.config.evaluation.min_per_class} images d'une classe) : {instead} "
            f"l'{in_sentence(METRIC_LABELS_FR[shown])}.")


def undefined_interval_reason() -> str:
    """Why an interval or a p-value is « n.d. » although the estimate exists (the bootstrap's rule)."""
    from pipeline.fairness.metrics import MIN_DEFINED_SHARE

    return (f"le taux d'un groupe n'est pas défini dans plus de {fr.percent(1 - MIN_DEFINED_SHARE)} des "
            "rééchantillonnages de patients (trop peu d'images d'une classe)")


def p_text(p: float) -> str:
    """« p = 0,03 », « p < 0,001 », « p n.d. »."""
    if p is None or not np.isfinite(p):
        return f"p{NBSP}n.d."
    return f"p{NBSP}<{NBSP}0,001" if p < 0.001 else f"p{NBSP}={NBSP}{num(p, 3 if p < 0.01 else 2)}"


def _two_groups(groups) -> tuple[str, str] | None:
    return (str(groups[0]), str(groups[1])) if groups is not None and len(groups) == 2 else None


def gap_header(metric: str, groups) -> str:
    """Column header of a gap: « Écart TPR (F − M) » for two groups (signed), « Écart TPR (max − min) » else."""
    two = _two_groups(groups)
    if metric in SIGNED and two:
        return f"{SHORT_FR[metric]} ({two[0]} − {two[1]})"
    if metric in SIGNED:
        return f"{SHORT_FR[metric]} (max − min)"
    return SHORT_FR[metric]


def gap_cell(get, metric: str, groups, compact: bool = False) -> str:
    """A gap as the reader should read it. `get(name)` reads a value of the row (NaN when absent).

    Two groups: the signed difference with its interval (it has its nominal coverage). Otherwise, and
    for the equalized-odds gap (a maximum of absolute differences, whose interval cannot contain 0),
    the estimate with the p-value of the Wald test of equal group rates instead of an interval.
    """
    signed = SIGNED.get(metric)
    if signed and _two_groups(groups) and np.isfinite(get(signed)):
        return num(get(signed)) if compact else ci(get(signed), get(f"{signed}_low"), get(f"{signed}_high"))
    if compact:
        return num(get(metric))
    if metric == "eo_diff" or not np.isfinite(get(f"{metric}_low")):
        p = get(f"{metric}_p_equal")
        return num(get(metric)) + (f" ({p_text(p)})" if np.isfinite(get(metric)) and np.isfinite(p) else "")
    return ci(get(metric), get(f"{metric}_low"), get(f"{metric}_high")) + f" ({p_text(get(f'{metric}_p_equal'))})"


def _getter(values: dict):
    def get(name: str) -> float:
        v = values.get(name, np.nan)
        return float(v) if v is not None and not isinstance(v, str) and not pd.isna(v) else np.nan
    return get


def _cell_mark(values: dict, metric: str, groups=None) -> str:
    """The mark of what the cell shows (the signed gap for two groups), written from the verdicts
    (`fairness.exploratory.annotate`): ★ a pre-registered effect established, † an exploratory one. The mark
    is on the difference with the reference, so that difference is shown with it (« Δ +0,48 † »): the value's
    own interval may contain 0 while its change does not."""
    if metric in SIGNED and _two_groups(groups):
        metric = SIGNED[metric]
    flag = values.get(f"{metric}_mark")
    if not (isinstance(flag, str) and flag):
        return ""
    diff = values.get(f"{metric}_diff")
    answer = values.get(f"{metric}_primary_estimate")
    if isinstance(answer, float) and np.isfinite(answer):  # ★: the pre-registered answer (same seeds as the table)
        diff = answer
    if diff is None or isinstance(diff, str) or not np.isfinite(diff):
        return f" {flag}"
    return f" (Δ{NBSP}{'+' if diff > 0 else ''}{num(diff)}{NBSP}{flag})"


def merge_identical(rows: list[dict], names: list[str], twins: list[str], labeller, column: str | None,
                    note: str = "mêmes décisions") -> list[dict]:
    """Rows whose decisions repeat another shown row's are merged into it: « mêmes décisions : … » in `column`
    (in the label when None)."""
    index = {n: i for i, n in enumerate(names)}
    same: dict[int, list[str]] = {}
    keep = []
    for i, twin in enumerate(twins):
        if twin and twin in index:
            same.setdefault(index[twin], []).append(labeller(names[i]))
        else:
            keep.append(i)
    for i, others in same.items():
        text = f"{note} : {', '.join(others)}"
        if column:
            rows[i][column] = "; ".join(filter(None, [rows[i].get(column, ""), text]))
        else:
            rows[i]["Méthode"] += f" ({text})"
    return [rows[i] for i in keep]


def shown_twins(rows: list[dict], names: list[str], same_decisions: set[str]) -> list[str]:
    """For each row, the earlier row whose every shown cell it repeats ("" when none), for the rows of
    `same_decisions` only (those deciding as the reference on every seed, whose score differs only past the
    printed digits): a row that decides otherwise is never hidden behind another."""
    seen: dict[tuple, str] = {}
    twins = []
    for row, name in zip(rows, names, strict=True):
        cells = tuple(v for k, v in row.items() if k != "Méthode")
        twins.append(seen.get(cells, "") if name in same_decisions else "")
        if name in same_decisions:
            seen.setdefault(cells, name)
    return twins


def distinct_rules(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of a grid table (or of its front) that no earlier rule repeats: a rule deciding exactly as
    another (`identical_to`) is counted and named once, under the name the tables give the pair."""
    if "identical_to" not in rows.columns:
        return rows
    return rows[rows["identical_to"].fillna("").eq("")]


def attribute_in_sentence(attribute: str) -> str:
    return fr.attribute_label(attribute).lower()


method_label = post_label = charts.method_label


def cite(key: str) -> str:
    return f"[@{key}]" if key else ""


def _flat(part: pd.DataFrame) -> dict:
    """A long table's rows of one method as one flat row: m, m_low, m_high, m_p_equal, m_significant."""
    out: dict = {}
    for m, r in part.iterrows():
        out.update({m: r["estimate"], f"{m}_low": r["low"], f"{m}_high": r["high"],
                    f"{m}_p_equal": r.get("p_equal", np.nan), f"{m}_significant": r.get("significant", np.nan),
                    f"{m}_mark": r.get("mark", ""), f"{m}_diff": r.get("diff", np.nan),
                    f"{m}_primary_estimate": r.get("primary_estimate", np.nan),
                    f"{m}_primary_n_seeds": r.get("primary_n_seeds", np.nan),
                    "identical_to": r.get("identical_to", "")})
    return out


def metric_cell(get, m: str, groups: list[str], compact: bool) -> str:
    """One metric's cell of a results table: a gap as `gap_cell` writes it, else the estimate (and interval)."""
    if m in SIGNED or m == "eo_diff":
        return gap_cell(get, m, groups, compact)
    return num(get(m)) if compact else ci(get(m), get(f"{m}_low"), get(f"{m}_high"))


def results_table(table: pd.DataFrame, label_col: str, labeller, metrics=SHOWN, compact=False) -> pd.DataFrame:
    """One row per method; gaps as `gap_cell` shows them; † = corrected (Benjamini-Hochberg) difference with
    the baseline (exploratory)."""
    groups = table.attrs.get("groups")
    rows, names, twins = [], [], []
    for name, part in table.groupby(label_col, sort=False):
        values = _flat(part.set_index("metric"))
        get = _getter(values)
        row = {"Méthode": labeller(name)}
        for m in metrics:
            row[gap_header(m, groups)] = metric_cell(get, m, groups, compact) + _cell_mark(values, m, groups)
        rows.append(row)
        names.append(name)
        twins.append(str(values.get("identical_to") or "").removesuffix(" + none"))
    return pd.DataFrame(merge_identical(rows, names, twins, labeller, None))


def in_sentence(label: str) -> str:
    """A label inside a sentence: « Écart de sensibilité (TPR) » -> « écart de sensibilité (TPR) », « AUC » kept."""
    return label if label[:2].isupper() else label[:1].lower() + label[1:]


def significant_moves(table: pd.DataFrame, key: str, labeller, claims: list | None = None) -> list[str]:
    """The marked (†) changes of each method, as the table shows them (signed gaps for two groups); `claims`
    receives what each sentence asserts (the consistency check)."""
    from pipeline.fairness.inference import verdict_key
    from pipeline.report.consistency import Claim

    two = _two_groups(table.attrs.get("groups"))
    sentences = []
    for name, part in table.groupby(key, sort=False):
        p = part.set_index("metric")
        shown = [m for m in (SIGNED.get(m, m) if two else m for m in SHOWN) if m in p.index]
        if name == table.attrs.get("baseline", "uniform") or not p.loc[shown, "significant"].astype(bool).any():
            continue
        moved = [f"{in_sentence(METRIC_LABELS_FR[m])}{f' {two[0]} − {two[1]}' if m.endswith('_signed') else ''} "
                 f"{'+' if p.loc[m, 'diff'] > 0 else ''}{num(p.loc[m, 'diff'])} "
                 f"[{num(p.loc[m, 'diff_low'])}\u202f; {num(p.loc[m, 'diff_high'])}]"
                 for m in shown if bool(p.loc[m, "significant"])]
        sentences.append(f"**{labeller(name)}** change de façon notable (exploratoire) : {', '.join(moved)}.")
        if claims is not None:
            keys = tuple(verdict_key(table.attrs.get("family", ""), m, table.attrs.get("attribute"), f"{name} + none",
                                     f"{table.attrs.get('baseline', 'uniform')} + none")
                         for m in shown if bool(p.loc[m, "significant"]))
            claims.append(Claim("changements notables d'une pondération", sentences[-1], keys, "established"))
    return sentences


def infeasible_groups(ctx: StudyContext, weighting: str, postprocessor: str) -> list[str]:
    """Groups for which a rule's target could not be reached in some fold (calibrated equalized odds)."""
    params = getattr(ctx.grid, "params", {}).get((weighting, postprocessor), [])
    folds = params if isinstance(params, list) else [params]
    return sorted({g for p in folds for g in p.get("infeasible", [])})


def grid_remark(ctx: StudyContext, r: dict, compact: bool = False) -> str:
    """« dégénérée (Homme : malade) », « ne sépare plus malades et sains … », « cible infaisable (M) », or empty."""
    notes = []
    if r.get("degenerate"):
        notes.append(f"dégénérée ({where_fr(str(r.get('degenerate_where', '')))})")
    if r.get("coin_flip") and not weak.is_weak(ctx):  # a weak model: said once, before the grid
        groups = [g for g in str(r.get("coin_flip_groups", "")).split("|") if g]
        names = (", ".join(fr.group_label(*g.split("=", 1)) for g in groups) if len(groups) <= 2
                 else f"{len(groups)} groupes")
        notes.append(f"TPR ≈ FPR ({names})" if compact else coin_flip_text("|".join(groups)))
    infeasible = infeasible_groups(ctx, r["weighting"], r["postprocessor"])
    if infeasible:
        notes.append(f"cible infaisable ({', '.join(infeasible)})")
    return " ; ".join(notes)


def where_fr(where: str) -> str:
    """« Homme : malade » from the grid's « sex=M : malade; ... » (« tous : malade » unchanged)."""
    parts = []
    for item in filter(None, (w.strip() for w in where.split(";"))):
        key, _, cls = item.partition(" : ")
        attribute, sep, group = key.partition("=")
        parts.append(f"{fr.group_label(attribute, group) if sep else key} : {cls}")
    return " ; ".join(parts)


def coin_flip_text(groups: str, short: bool = False) -> str:
    """« ne sépare plus malades et sains de façon notable chez les hommes, … » for the groups (« sex=M|view=AP »)
    where the reference separates them but the rule's TPR − FPR interval contains 0 (`short`: the first half)."""
    phrases = []
    for key in filter(None, groups.split("|")):
        attribute, _, group = key.partition("=")
        phrases.append(fr.group_phrase(attribute, group))
    if short:
        return f"ne sépare plus malades et sains {fr.join(phrases)}"
    return (f"ne sépare plus malades et sains de façon notable {fr.join(phrases)}, où la référence les sépare "
            "(TPR − FPR compatible avec 0)")


def grid_rows(ctx: StudyContext, compact: bool = False, rows: pd.DataFrame | None = None,
              label: str = "both", without: tuple[str, ...] = ()) -> pd.DataFrame:
    """The grid's rows as shown: gaps as `gap_cell` (signed for two groups), † = corrected (Benjamini-Hochberg)
    difference with the reference, the share of randomised decisions, degenerate and infeasible rules;
    `without`: metrics left out (the body's post-processing table has no AUC column)."""
    table = ctx.grid.table if rows is None else rows
    groups = table.attrs.get("groups") or ctx.grid.table.attrs.get("groups")
    out, names, twins = [], [], []
    for r in table.itertuples(index=False):
        r = r._asdict()
        get = _getter(r)
        weighting, post = method_label(r["weighting"]), post_label(r["postprocessor"])
        if compact:  # a slide: names without their parenthesis (a paper, a library), as in the slides' legends
            weighting, post = weighting.split(" (")[0], post.split(" (")[0]
        name = {"post": post, "weighting": weighting, "both": f"{weighting} + {post}"}[label]
        row = {"Méthode": name}
        for m in (m for m in SHOWN if m not in without):
            row[gap_header(m, groups)] = metric_cell(get, m, groups, compact) + _cell_mark(r, m, groups)
        if "randomised_share" in r and not compact:
            row["Part au hasard"] = pct(get("randomised_share"))
        if "degenerate" in r:
            row["Remarque"] = grid_remark(ctx, r, compact)
        out.append(row)
        names.append(r.get("combination") or f"{r['weighting']} + {r['postprocessor']}")
        twins.append(str(r.get("identical_to") or ""))
    if compact:
        return pd.DataFrame(out)
    return pd.DataFrame(merge_identical(out, names, twins, combination_label, "Remarque"))


def combination_label(name: str) -> str:
    """« Uniforme + Aucun » from « uniform + none »; a weighting alone when there is no « + »."""
    w, _, p = name.partition(" + ")
    return f"{method_label(w)} + {post_label(p)}" if p else method_label(w)


def table_notes(ctx: StudyContext, table: pd.DataFrame | None = None) -> str:
    """What the reader needs to read a results table: the gaps, the stars and their correction, the n.d."""
    from pipeline.fairness.metrics import min_patients, undefined_groups

    t = ctx.grid.table if table is None else table
    groups = t.attrs.get("groups") or []
    n_min = t.attrs.get("min_per_class", ctx.config.evaluation.min_per_class)
    two = _two_groups(groups)
    gaps = (f"Écarts TPR et DP : différence signée {two[0]} − {two[1]} et son intervalle bootstrap apparié"
            if two else "Écarts TPR et DP : max − min entre groupes, avec son intervalle")
    lines = [f"{gaps} ; l'écart d'égalité des erreurs (maximum de deux écarts absolus, dont l'intervalle ne peut "
             "contenir 0) est donné avec la valeur p du test de Wald d'égalité des taux entre groupes "
             "(covariance estimée par le bootstrap sur les patients).",
             f"(Δ … {EXPLORATORY_MARK}) (exploratoire) : différence Δ avec la référence, notable après correction de "
             "Benjamini-Hochberg (taux de fausses découvertes 10 %, intervalle de Δ excluant 0) sur les "
             f"{t.attrs.get('family_size', 'n.d.')} comparaisons du tableau (test apparié, erreur type bootstrap) : "
             "une piste, pas une preuve."]
    attribute = t.attrs.get("attribute")
    if attribute:
        small = undefined_groups(ctx.evaluation, attribute, n_min)
        if small:
            why = ", ".join(f"{s['group']} ({s['count']} {s['class']})" if s.get("unit", "images") == "images"
                            else f"{s['group']} ({s['class']} de {s['count']} patients)" for s in small)
            lines.append(f"n.d. : un taux n'est défini qu'avec au moins {n_min} images de sa classe dans le "
                         f"groupe, de {min_patients(n_min)} patients au moins ; ici trop peu : {why}.")
        else:
            lines.append(f"Un taux n'est défini qu'avec au moins {n_min} images de sa classe dans le groupe, de "
                         f"{min_patients(n_min)} patients au moins (sinon « n.d. ») ; tous les groupes l'atteignent "
                         "ici.")
    return " ".join(lines)


def beats_both(ctx: StudyContext, gap: str | None = None, names: bool = False) -> list[str]:
    """Combinations with a smaller `gap` than both their parts alone AND than doing nothing (the reference), and
    no lower balanced accuracy than any of the three; not degenerate. Point estimates of one training run:
    exploratory. The gap is the EO gap, else the first one defined (`defined_gap`): an undefined gap beats
    nothing and loses to nothing."""
    gap = gap or defined_gap(ctx.grid.table)
    t = ctx.grid.table.set_index(["weighting", "postprocessor"])
    out = []
    for (w, p), r in t.iterrows():
        if w == "uniform" or p == "none" or any(k not in t.index for k in ((w, "none"), ("uniform", p),
                                                                          ("uniform", "none"))):
            continue
        if bool(r.get("degenerate", False)):
            continue
        alone = [t.loc[(w, "none")], t.loc[("uniform", p)], t.loc[("uniform", "none")]]
        if all(r[gap] < a[gap] and r["balanced_accuracy"] >= a["balanced_accuracy"] for a in alone):
            out.append(f"{w} + {p}" if names else f"{method_label(w)} + {post_label(p)}")
    return out


def without_empty_columns(rows: pd.DataFrame, keep: str = "Méthode") -> pd.DataFrame:
    """The columns with something to read (slides): one empty or « n.d. » in every row says nothing there."""
    blank = [c for c in rows.columns if c != keep
             and rows[c].fillna("").astype(str).str.replace(EXPLORATORY_MARK, "").str.strip().isin(["", "n.d."]).all()]
    return rows.drop(columns=blank)
