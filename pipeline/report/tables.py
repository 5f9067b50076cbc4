"""Result tables and sentences shared by the chapters and the slides (formatting only).

Each function takes the StudyContext and only formats what `study.run` computed, so a number is
never computed twice or typed by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.fairness.metrics import METRIC_LABELS_FR
from pipeline.report import charts
from pipeline.report import french as fr
from pipeline.report.french import ci, num
from pipeline.study import StudyContext

SHOWN = ("balanced_accuracy", "auc", "eopp_diff", "eo_diff", "dp_diff", "worst_group_bacc")


SHORT_FR = {"balanced_accuracy": "Exact. équil.", "auc": "AUC", "eopp_diff": "Écart TPR",
            "eo_diff": "Écart EO", "dp_diff": "Écart DP", "worst_group_bacc": "EE pire groupe"}


LOWER_IS_BETTER = {"eopp_diff", "eo_diff", "dp_diff"}


def estimate_ci(table: pd.DataFrame, metric: str) -> str:
    """Estimate and interval of one metric of a bootstrap table indexed by metric."""
    r = table.loc[metric]
    return ci(r["estimate"], r["low"], r["high"])


def grid_ci(row: pd.Series, metric: str) -> str:
    return ci(row[metric], row[f"{metric}_low"], row[f"{metric}_high"])


def attribute_in_sentence(attribute: str) -> str:
    return fr.attribute_label(attribute).lower()


method_label = post_label = charts.method_label


def cite(key: str) -> str:
    return f"[@{key}]" if key else ""


def results_table(table: pd.DataFrame, label_col: str, labeller, metrics=SHOWN, compact=False) -> pd.DataFrame:
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


def in_sentence(label: str) -> str:
    """A label inside a sentence: « Écart de sensibilité (TPR) » -> « écart de sensibilité (TPR) », « AUC » kept."""
    return label if label[:2].isupper() else label[:1].lower() + label[1:]


def significant_moves(table: pd.DataFrame, key: str, labeller) -> list[str]:
    sentences = []
    for name, part in table.groupby(key, sort=False):
        p = part.set_index("metric")
        shown = [m for m in SHOWN if m in p.index]
        if name == table.attrs.get("baseline", "uniform") or not p.loc[shown, "significant"].any():
            continue
        moved = [f"{in_sentence(METRIC_LABELS_FR[m])} {'+' if p.loc[m, 'diff'] > 0 else ''}{num(p.loc[m, 'diff'])} "
                 f"[{num(p.loc[m, 'diff_low'])}\u202f; {num(p.loc[m, 'diff_high'])}]"
                 for m in SHOWN if m in p.index and p.loc[m, "significant"]]
        sentences.append(f"**{labeller(name)}** change significativement : {', '.join(moved)}.")
    return sentences


def grid_rows(ctx: StudyContext, compact: bool = False, rows: pd.DataFrame | None = None,
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


def beats_both(ctx: StudyContext) -> list[str]:
    t = ctx.grid.table.set_index(["weighting", "postprocessor"])
    out = []
    for (w, p), r in t.iterrows():
        if w == "uniform" or p == "none" or (w, "none") not in t.index or ("uniform", p) not in t.index:
            continue
        alone = [t.loc[(w, "none")], t.loc[("uniform", p)]]
        if all(r["eo_diff"] < a["eo_diff"] and r["balanced_accuracy"] >= a["balanced_accuracy"] for a in alone):
            out.append(f"{method_label(w)} + {post_label(p)}")
    return out
