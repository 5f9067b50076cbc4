"""A rule recommended under constraints fixed before the results (study.yml > analysis.recommendation).

The evaluation patients are split in two halves by patient (stratified on label and group). On the
selection half only, every combination of the grid (its cross-fitted decisions) is checked against the
constraints, each measure being the mean over every training seed: no group's under-diagnosis (FNR) worse
than the reference's by more than `max_fnr_increase`, at most `max_randomised` of decisions drawn at random,
a balanced-accuracy loss of at most `max_ba_loss`, not degenerate (on more than half of the seeds), and a
smaller gap than the reference's (a rule that decides as the reference does, such as a class-only weighting,
changes nothing: it is not a recommendation). Among those that pass, the one with the smallest sensitivity
gap (|F − M| for two groups, else max − min) is chosen, ties by balanced accuracy. It is then reported on
the other half, which played no part in the choice, over every seed, with intervals that include the
patients and the seeds' variance: a choice scored on the patients it was picked with would look better
than it is. « No rule satisfies the constraints » is a valid answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.cache import per_study
from pipeline.data import schema as S
from pipeline.fairness import metrics as M
from pipeline.fairness.degenerate import one_class


@dataclass(frozen=True)
class Constraints:
    max_fnr_increase: float = 0.05
    max_randomised: float = 0.10
    max_ba_loss: float = 0.02


@dataclass
class Recommendation:
    chosen: str | None  # « weighting + postprocessor », None when no rule satisfies the constraints
    reference: str
    gap: str  # the gap minimised: tpr_signed (absolute value) or eopp_diff
    constraints: Constraints
    candidates: pd.DataFrame  # one row per rule, on the selection half: the checks and why a rule fails
    report: pd.DataFrame | None = None  # chosen vs reference on the report half (comparison_over_seeds' table)
    report_fnr: pd.DataFrame | None = None  # per-group FNR of both on the report half, with intervals
    report_fpr: pd.DataFrame | None = None  # and their FPR: what the sains pay for the malades' gain
    report_checks: dict | None = None  # the constraints checked again on the report half (point values)
    n_patients: dict[str, int] = field(default_factory=dict)  # selection / report
    withheld: str = ""  # "weak_model": the rule the constraints chose (`would_choose`) is not recommended
    would_choose: str | None = None


def _group_fnr(decided: pd.DataFrame, attribute: str, min_per_class: int) -> np.ndarray:
    design = M._design(decided, attribute, M.DECISION, None, S.PATIENT, min_per_class)
    return M._replicate(design, np.ones((1, design.n_clusters)))["group:fnr"][0]


def _measures(decided: pd.DataFrame, reference: pd.DataFrame, attribute: str, gap: str,
              min_per_class: int) -> dict:
    """What the constraints read of one rule on some patients (`decided` and `reference` on the same rows)."""
    point = M.point_metrics_fast(decided, attribute, M.DECISION, None, min_per_class)
    base = M.point_metrics_fast(reference, attribute, M.DECISION, None, min_per_class)
    fnr, base_fnr = _group_fnr(decided, attribute, min_per_class), _group_fnr(reference, attribute, min_per_class)
    d = decided[M.DECISION].to_numpy(float)
    worse = float(np.nanmax(fnr - base_fnr)) if np.isfinite(fnr - base_fnr).any() else np.nan
    return {"ba_loss": base["balanced_accuracy"] - point["balanced_accuracy"], "fnr_increase": worse,
            "randomised_share": float(np.mean((d > 1e-9) & (d < 1 - 1e-9))),
            "gap": abs(point[gap]), "reference_gap": abs(base[gap]), "balanced_accuracy": point["balanced_accuracy"],
            "degenerate": bool(one_class(d, decided[attribute]).where)}


def _checks(decided: list[pd.DataFrame], reference: list[pd.DataFrame], attribute: str, constraints: Constraints,
            gap: str, min_per_class: int) -> dict:
    """The constraints of one rule over every training seed (one frame per seed, the reference's likewise): each
    measure is the mean over the seeds (NaN when undefined on one), a rule is degenerate when it is on more than
    half of them, as in the tables."""
    per_seed = pd.DataFrame([_measures(d, r, attribute, gap, min_per_class)
                             for d, r in zip(decided, reference, strict=True)])
    row = {k: float(per_seed[k].mean(skipna=False)) for k in per_seed.columns if k != "degenerate"}
    row["degenerate"] = bool(2 * per_seed["degenerate"].sum() > len(per_seed))
    fails = []
    if not np.isfinite(row["gap"]):
        fails.append("gap")
    if not np.isfinite(row["fnr_increase"]) or row["fnr_increase"] > constraints.max_fnr_increase:
        fails.append("fnr")
    if row["randomised_share"] > constraints.max_randomised:
        fails.append("randomised")
    if not np.isfinite(row["ba_loss"]) or row["ba_loss"] > constraints.max_ba_loss:
        fails.append("ba")
    if row["degenerate"]:
        fails.append("degenerate")
    if np.isfinite(row["gap"]) and row["gap"] >= row["reference_gap"] - 1e-12:
        fails.append("no_gain")  # the reference's gap or wider: nothing to recommend over doing nothing
    return {**row, "fails": ",".join(fails), "satisfies": not fails, "n_seeds": len(per_seed)}


def recommend(decisions: Mapping[tuple[str, str], pd.DataFrame | list[pd.DataFrame]], reference: tuple[str, str],
              attribute: str, constraints: Constraints, seed: int, n_boot: int,
              min_per_class: int = M.MIN_PER_CLASS) -> Recommendation:
    """Choose on the selection half, report on the other. `decisions`: the grid's cross-fitted decisions of each
    rule, one frame per training seed (the same seeds, in the same order, for every rule; one frame: one seed).
    The choice reads the means over the seeds; the report compares the chosen rule with the reference over every
    seed on one set of patient resamples (`inference.comparison_over_seeds`: the intervals include the seeds'
    variance)."""
    from pipeline.fairness.inference import comparison_over_seeds, group_rates_over_seeds, rule_run
    from pipeline.fairness.postprocess import split_fit_score

    runs = {k: [v] if isinstance(v, pd.DataFrame) else list(v) for k, v in decisions.items()}
    ref_frames = runs[reference]
    selection, held = split_fit_score(ref_frames[0], 0.5, seed, attribute)
    halves = {"selection": set(selection[S.PATIENT].astype(str)), "report": set(held[S.PATIENT].astype(str))}
    two = len(M.group_order(ref_frames[0][attribute])) == 2
    gap = "tpr_signed" if two else "eopp_diff"

    def half(frames: list[pd.DataFrame], name: str, anchor: pd.DataFrame | None = None) -> list[pd.DataFrame]:
        """The frames' rows of one half, in the row order of `anchor` (else of the first frame's half)."""
        kept = [f[f[S.PATIENT].astype(str).isin(halves[name])].reset_index(drop=True) for f in frames]
        return [M._align(f, kept[0] if anchor is None else anchor) for f in kept]

    ref_selection = half(ref_frames, "selection")
    rows = []
    for (w, p), frames in runs.items():
        if (w, p) == reference:
            continue
        chosen = half(frames, "selection", ref_selection[0])
        rows.append({"rule": f"{w} + {p}", **_checks(chosen, ref_selection, attribute, constraints, gap,
                                                     min_per_class)})
    candidates = pd.DataFrame(rows)
    passing = candidates[candidates["satisfies"]] if len(candidates) else candidates
    name = None
    if len(passing):
        name = passing.sort_values(["gap", "balanced_accuracy"], ascending=[True, False]).iloc[0]["rule"]
    out = Recommendation(name, f"{reference[0]} + {reference[1]}", gap, constraints, candidates,
                         n_patients={k: len(v) for k, v in halves.items()})
    if name is None:
        return out
    w, p = name.split(" + ", 1)
    ref_report = half(ref_frames, "report")
    pair = {name: half(runs[(w, p)], "report", ref_report[0]), out.reference: ref_report}
    n_patients = ref_report[0][S.PATIENT].astype(str).nunique()
    draws = M.draw_counts(n_patients, n_boot, seed)  # one set of patient resamples for every seed and both rules
    scored = {r: [rule_run(f, attribute, draws, None, seed, M.DECISION, None, min_per_class) for f in frames]
              for r, frames in pair.items()}
    out.report = comparison_over_seeds(scored, out.reference)
    rates = pd.concat([group_rates_over_seeds(scored[r], pair[r][0], attribute, min_per_class).assign(rule=r)
                       for r in pair])
    out.report_fnr, out.report_fpr = (rates[rates["metric"] == m].reset_index(drop=True) for m in ("fnr", "fpr"))
    out.report_checks = _checks(pair[name], ref_report, attribute, constraints, gap, min_per_class)
    return out


@per_study
def recommendation(ctx) -> Recommendation:
    """The study's recommendation: the grid's decisions, the constraints of study.yml > analysis.recommendation."""
    from pipeline.fairness.validity import validity

    r, ev = ctx.config.analysis.recommendation, ctx.config.evaluation
    out = recommend({key: ctx.grid.seed_frames(key) for key in ctx.grid.decisions}, ctx.grid.baseline,
                    ctx.grid.attribute,
                    Constraints(r.max_fnr_increase, r.max_randomised, r.max_ba_loss), r.seed, ev.n_bootstrap,
                    ev.min_per_class)
    if validity(ctx).weak_model and out.chosen is not None:
        # Decision rules compared on scores without established signal: choosing among them crowns noise.
        out.would_choose, out.chosen, out.withheld = out.chosen, None, "weak_model"
    return out
