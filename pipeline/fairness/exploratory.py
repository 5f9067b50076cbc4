"""The exploratory families: every comparison outside the pre-registered questions, as verdicts.

One family per table (the weighting table of each attribute, the post-processing grid), tested with
Benjamini-Hochberg at false discovery rate q = 0.10 (`metrics.EXPLORATORY_Q`), marked † in the tables.
What is tested is what the table shows, and only what can be tested:

- with two groups, the signed gaps (F − M) the columns show, balanced accuracy and AUC; the
  equalized-odds gap (a maximum of two absolute gaps) and the worst group's value are descriptive (no
  test, no mark: their intervals cannot contain 0 and the change of a maximum tests little);
- with three or more groups, the max − min gaps are descriptive too;
- a rule whose decisions equal the reference's is « identique » (nothing can change); a rule whose
  decisions equal an earlier row's is merged with it (« identique à … »: tested once, not twice);
- a degenerate rule (one class for a group) is not tested (levelling down is not fairness);
- a comparison of the pre-registered family is answered there, over every training seed: the table shows
  its ★ verdict and does not test it again.

The table's columns (`p_adjusted`, `significant`, `mark`, `identical_to`) are then written from these
verdicts (`annotate`), so a table's marks and the sentences about it read the same object.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.fairness.inference import Verdict, Verdicts, verdict_key
from pipeline.fairness.metrics import CORRECTION, EXPLORATORY_Q, SIGNED, adjust

PRIMARY_MARK = "★"
EXPLORATORY_MARK = "†"

def tested_metrics(n_groups: int) -> tuple[str, ...]:
    """What an exploratory table tests: performance, and with two groups the signed gaps it shows."""
    performance = ("balanced_accuracy", "auc")
    if n_groups != 2:
        return performance
    return (*performance, SIGNED["eopp_diff"], SIGNED["dp_diff"])


def described_metrics(n_groups: int) -> tuple[str, ...]:
    """What a table shows without a test: the EO gap, the worst group, and max − min gaps of 3+ groups."""
    if n_groups != 2:
        return ("eopp_diff", "eo_diff", "dp_diff", "worst_group_bacc")
    return ("eo_diff", "worst_group_bacc")


def established_at(p_adjusted: float, q: float, low: float, high: float) -> bool:
    """Benjamini-Hochberg's discovery, kept only when the 95 % interval shown beside it excludes 0: a table
    never marks a change its own interval calls compatible with none (rejects a subset of BH's discoveries,
    those with p < ~0.05; its false discovery rate is checked by simulation in tests/test_levels.py)."""
    return bool(np.isfinite(p_adjusted) and p_adjusted < q and (low > 0 or high < 0))


def _identical_to(decisions: Mapping[str, np.ndarray], order: list[str]) -> dict[str, str]:
    """Each rule whose decisions (and the score it keeps, when given as a second column: AUC reads it) equal
    an earlier rule's (the reference first) -> that rule."""
    out: dict[str, str] = {}
    for i, name in enumerate(order):
        if name not in decisions:
            continue
        for earlier in order[:i]:
            if earlier in decisions and earlier not in out and np.array_equal(decisions[name], decisions[earlier],
                                                                              equal_nan=True):
                out[name] = earlier
                break
    return out


ATTRIBUTE_FREE = ("balanced_accuracy", "auc")  # the same quantity whatever the attribute of the table


def _primary_of(primary: Verdicts | None, metric: str, attribute: str | None, treated: str, reference: str
                ) -> Verdict | None:
    """The pre-registered verdict of this very comparison (a gap only on the primary family's attribute)."""
    if primary is None:
        return None
    found = primary.find("primary", metric, treated, reference)
    if found is None or (metric not in ATTRIBUTE_FREE and found.attribute != attribute):
        return None
    return found


def table_verdicts(table: pd.DataFrame, family: str, reference: str, decisions: Mapping[str, np.ndarray],
                   degenerate: Mapping[str, str] | None = None, primary: Verdicts | None = None,
                   rule: Callable[[str], str] = lambda m: m, q: float = EXPLORATORY_Q,
                   answered: list[Verdict] | None = None) -> list[Verdict]:
    """The verdicts of one exploratory table (long form: method, metric, diff, diff_low, diff_high, p).

    `decisions[method]`: its (expected) decisions on the evaluation images, in one order for all, with the
    score it keeps as a second column (a twin must agree on both: AUC is tested too);
    `degenerate[method]`: where it gives one class; `rule(method)`: its name « weighting + postprocessor »
    (the primary family's keys); `primary`: the pre-registered verdicts, answered there; `answered`: another
    table's verdicts on the very same comparisons (the grid's « w + none » rows are the weighting table's),
    read from there instead of being tested twice. An answered cell carries its answer's estimate and
    interval (the primary one: over every seed).
    """
    elsewhere = {(v.treated, v.reference, v.quantity): v for v in answered or []}
    degenerate = degenerate or {}
    attribute = table.attrs.get("attribute")
    groups = table.attrs.get("groups") or []
    n_groups = len(groups)
    tested, described = tested_metrics(n_groups), described_metrics(n_groups)
    methods = list(dict.fromkeys(table["method"]))
    # a pre-registered rule stands for the rules repeating its decisions (they then read its answer)
    answered_first = sorted((m for m in methods if m != reference), key=lambda m: not any(
        _primary_of(primary, metric, attribute, rule(m), rule(reference)) for metric in tested))
    identical = _identical_to(decisions, [reference, *answered_first])
    rows = table.set_index(["method", "metric"])
    n_resamples = int(table.attrs.get("n_boot") or table.attrs.get("n_refit") or 0)
    n_seeds = int(table.attrs.get("n_seeds") or 1)  # the table's cells are means over that many trainings
    cells = []
    for method in methods:
        if method == reference:
            continue
        for metric in (*tested, *described):
            if (method, metric) not in rows.index:
                continue
            r = rows.loc[(method, metric)]
            pre = _primary_of(primary, metric, attribute, rule(method), rule(reference))
            other = elsewhere.get((rule(method), rule(reference), metric))
            if pre is None and other is not None and other.status in ("established", "not_established"):
                pre = other
            if identical.get(method) == reference:
                reason = "identical"
            elif method in identical:
                reason = f"identical: {rule(identical[method])}"
            elif degenerate.get(method):
                reason = f"degenerate: {degenerate[method]}"
            elif pre is not None:
                reason = f"{'primary' if pre.family == 'primary' else 'answered'}: {pre.key}"
            elif metric in described:
                reason = "descriptive"
            elif not np.isfinite(r["diff"]):
                reason = "undefined"
            elif not np.isfinite(r["p"]):
                reason = "no_interval"
            else:
                reason = ""
            cells.append((method, metric, r, reason, pre))
    p_adjusted = adjust(np.array([float(r["p"]) if reason == "" else np.nan for _, _, r, reason, _ in cells]))
    out: dict[tuple[str, str], Verdict] = {}
    for (method, metric, r, reason, pre), p_adj in zip(cells, p_adjusted, strict=True):
        answer = reason.startswith(("primary", "answered"))  # read from the family that answers it
        if answer:
            status, direction, p_adj = pre.status, pre.direction, pre.p_adjusted
        elif reason == "":
            established = established_at(p_adj, q, float(r["diff_low"]), float(r["diff_high"]))
            status, direction = ("established" if established else "not_established"), (
                int(np.sign(r["diff"])) if established else 0)
        elif reason == "descriptive":
            status, direction, p_adj = "descriptive", 0, None
        else:
            status, direction, p_adj = "not_testable", 0, None
        out[(method, metric)] = Verdict(
            key=verdict_key(family, metric, attribute, rule(method), rule(reference)), family=family,
            quantity=metric, attribute=attribute, treated=rule(method), reference=rule(reference),
            estimate=float(pre.estimate if answer else r["diff"]), low=float(pre.low if answer else r["diff_low"]),
            high=float(pre.high if answer else r["diff_high"]),
            level=q, p_value=None if reason in ("descriptive",) or not np.isfinite(r["p"]) else float(r["p"]),
            p_adjusted=None if p_adj is None or not np.isfinite(p_adj) else float(p_adj), status=status,
            direction=direction, reason=reason, mde=None, levelling_down=False,
            n_seeds=pre.n_seeds if answer else n_seeds, per_seed=pre.per_seed if answer else (),
            df=math.inf, n_resamples=n_resamples,
            reference_value=float(rows.loc[(reference, metric), "estimate"]) if (reference, metric) in rows.index
            else math.nan, treated_value=float(r["estimate"]))
    for (method, metric), v in list(out.items()):  # a merged row reads the verdict of the row it equals
        twin = identical.get(method)
        if twin and twin != reference and (twin, metric) in out:
            # whole: its status with the estimate and interval it stands on (a primary answer's span all seeds)
            first = out[(twin, metric)]
            out[(method, metric)] = replace(first, key=v.key, treated=v.treated, reason=v.reason,
                                            treated_value=v.treated_value)
    return list(out.values())


def mark(v: Verdict | None) -> str:
    """The table mark of a verdict: ★ primary established, † exploratory established, else nothing."""
    if v is None or v.status != "established":
        return ""
    return PRIMARY_MARK if v.reason.startswith("primary") or v.family == "primary" else EXPLORATORY_MARK


def annotate(table: pd.DataFrame, verdicts: list[Verdict], rule: Callable[[str], str] = lambda m: m
             ) -> pd.DataFrame:
    """`table` (long) with `p_adjusted`, `significant`, `mark`, `verdict`, `identical_to` from `verdicts`."""
    by_cell = {(v.treated, v.quantity): v for v in verdicts}
    out = table.copy()
    found = [by_cell.get((rule(m), q)) for m, q in zip(out["method"], out["metric"], strict=True)]
    out["p_adjusted"] = [np.nan if v is None or v.p_adjusted is None else v.p_adjusted for v in found]
    out["significant"] = [v is not None and v.established and v.family != "primary"
                          and not v.reason.startswith("primary") for v in found]
    out["mark"] = [mark(v) for v in found]
    out["verdict"] = ["" if v is None else v.status for v in found]
    for part in ("estimate", "low", "high", "n_seeds"):  # the ★ cells show the primary answer's numbers
        out[f"primary_{part}"] = [getattr(v, part) if v is not None and v.reason.startswith("primary") else np.nan
                                  for v in found]
    twins = identical_rules(verdicts)
    out["identical_to"] = [twins.get(rule(m), "") for m in out["method"]]
    out.attrs.update(table.attrs)
    out.attrs.update(_family_attrs(verdicts))
    return out


def identical_rules(verdicts: list[Verdict]) -> dict[str, str]:
    """Rule -> the rule whose decisions it repeats (the reference, or an earlier row it is merged with)."""
    out = {}
    for v in verdicts:
        if v.reason == "identical":
            out[v.treated] = v.reference
        elif v.reason.startswith("identical: "):
            out[v.treated] = v.reason.removeprefix("identical: ")
    return out


def _family_attrs(verdicts: list[Verdict]) -> dict:
    tested = [v for v in verdicts if v.status in ("established", "not_established") and not v.reason]
    return {"family_size": len(tested), "merged": len(identical_rules(verdicts)),
            "family": verdicts[0].family if verdicts else "", "correction": CORRECTION}


def long_from_wide(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The grid's wide table (one row per combination) as the long form `table_verdicts` reads."""
    rows = [{"method": r["combination"], "metric": m, "estimate": r.get(m, np.nan), "diff": r.get(f"{m}_diff", np.nan),
             "diff_low": r.get(f"{m}_diff_low", np.nan), "diff_high": r.get(f"{m}_diff_high", np.nan),
             "p": r.get(f"{m}_diff_p", np.nan)} for _, r in table.iterrows() for m in metrics if m in table.columns]
    out = pd.DataFrame(rows)
    out.attrs.update(table.attrs)
    return out


def annotate_wide(table: pd.DataFrame, verdicts: list[Verdict]) -> pd.DataFrame:
    """The grid's table with `m_diff_p_adjusted`, `m_significant`, `m_mark`, `m_verdict` and `identical_to`
    from `verdicts` (metrics without a verdict: no mark, no adjusted p)."""
    by_cell = {(v.treated, v.quantity): v for v in verdicts}
    out = table.copy()
    metrics = {v.quantity for v in verdicts} | {c.removesuffix("_significant") for c in table.columns
                                                 if c.endswith("_significant")}
    for m in sorted(metrics):
        found = [by_cell.get((name, m)) for name in out["combination"]]
        out[f"{m}_diff_p_adjusted"] = [np.nan if v is None or v.p_adjusted is None else v.p_adjusted for v in found]
        out[f"{m}_significant"] = [v is not None and v.established and not v.reason.startswith("primary")
                                   for v in found]
        out[f"{m}_mark"] = [mark(v) for v in found]
        out[f"{m}_verdict"] = ["" if v is None else v.status for v in found]
        for part in ("estimate", "low", "high", "n_seeds"):  # the ★ cells show the primary answer's numbers
            out[f"{m}_primary_{part}"] = [getattr(v, part) if v is not None and v.reason.startswith("primary")
                                          else np.nan for v in found]
    twins = identical_rules(verdicts)
    out["identical_to"] = [twins.get(name, "") for name in out["combination"]]
    out.attrs.update(table.attrs)
    out.attrs.update(_family_attrs(verdicts))
    return out


class Interval(NamedTuple):
    """One row of a table of single quantities: its estimate and percentile interval."""

    attribute: str | None
    treated: str | None
    estimate: float
    low: float
    high: float
    reference: str | None = None
    quantity: str | None = None  # when the table mixes quantities (else the family's)
    p_value: float | None = None  # when the table computed one (several seeds: `inference.combine`)
    per_seed: tuple[float, ...] = ()  # each training run's estimate, when there are several


def interval_verdicts(family: str, quantity: str, rows: Sequence[Sequence[Any]],
                      q: float = EXPLORATORY_Q, level: float = 0.95) -> list[Verdict]:
    """The verdicts of a table of single quantities with intervals (amplification, probes, the data chapter's
    gaps): exploratory. Each row is an `Interval` (or the tuple of its first fields); its p-value, when the
    row has none (a percentile bootstrap of one run), is that of estimate / SE against a normal reference,
    SE read from the interval's width; Benjamini-Hochberg over the table (`established_at`)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    items = [Interval(*r) for r in rows]
    p = []
    for r in items:
        if r.p_value is not None and np.isfinite(r.p_value):
            p.append(float(r.p_value))
            continue
        se = (r.high - r.low) / (2 * z) if np.isfinite(r.low) and np.isfinite(r.high) else np.nan
        p.append(math.erfc(abs(r.estimate) / se / math.sqrt(2)) if np.isfinite(r.estimate) and se > 0 else np.nan)
    adjusted = adjust(np.array(p, dtype=float))
    out = []
    for r, raw, p_adj in zip(items, p, adjusted, strict=True):
        what = r.quantity or quantity
        testable = bool(np.isfinite(p_adj))
        established = testable and established_at(p_adj, q, r.low, r.high)
        out.append(Verdict(
            key=verdict_key(family, what, r.attribute, r.treated, r.reference), family=family, quantity=what,
            attribute=r.attribute, treated=r.treated, reference=r.reference, estimate=float(r.estimate),
            low=float(r.low), high=float(r.high), level=q, p_value=float(raw) if testable else None,
            p_adjusted=float(p_adj) if testable else None,
            status="established" if established else ("not_established" if testable else "not_testable"),
            direction=int(np.sign(r.estimate)) if established else 0, reason="" if testable else "no_interval",
            mde=None, levelling_down=False, n_seeds=max(len(r.per_seed), 1),
            per_seed=tuple(r.per_seed) or (float(r.estimate),)))
    return out
