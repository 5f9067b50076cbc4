"""The pre-registered primary family (study.yml > analysis): its rules decided for every training seed and
refitted in every patient resample, then tested together (`inference.family_verdicts`, Holm).

Protocol. For each training seed, each rule of the family decides the evaluation patients as the grid
does: « w + none » at the weighting's own operating threshold (chosen on train patients' scores
from a model that did not fit them), a post-processor cross-fitted on the same patient folds as the
grid (each fold decided by the rule fitted on the other folds). One set of `n_resamples` patient
resamples serves every rule and every seed; in each, a post-processed rule is refitted on the resampled
fitting patients, so its interval includes the refitting; the seeds' spread adds the training runs'
variance (`inference`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from pipeline.config import rule_parts
from pipeline.data import schema as S
from pipeline.fairness import metrics as M
from pipeline.fairness.degenerate import one_class
from pipeline.fairness.grid import N_JOBS, SCORE_COL, _crossfit_and_refits
from pipeline.fairness.inference import POWER, RuleRun, Verdicts, family_verdicts, level_verdicts, rule_run


def _decide(preds: pd.DataFrame, method: str, attribute: str, fold: np.ndarray, fold_seed: int,
            row_draws: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Cross-fitted decisions and, for a rule that learns something, its refits on each resample."""
    from pipeline.fairness.postprocess import OPERATING_THRESHOLD

    if method == "none":  # nothing is fitted: the operating threshold decides, in every resample alike
        return (preds[S.PROBA].to_numpy(float) >= preds[OPERATING_THRESHOLD].to_numpy(float)).astype(float), None
    decision, _, _, refits, _ = _crossfit_and_refits(preds, method, attribute, fold, fold_seed, row_draws)
    return decision, refits


def primary_family(preds_by_seed: dict[int, dict[str, pd.DataFrame]], primary: list[str], reference: str,
                   metrics: list[str], attribute: str, rule_attribute: str, folds: int, fold_seed: int,
                   n_resamples: int, boot_seed: int, alpha: float, min_per_class: int = M.MIN_PER_CLASS,
                   n_jobs: int = N_JOBS) -> Verdicts:
    """The family's verdicts. `preds_by_seed[seed][weighting]`: evaluation predictions carrying their
    operating threshold (`attrs['threshold']`); `rule_attribute`: the post-processors' group attribute."""
    from pipeline.fairness.postprocess import DEFAULT_THRESHOLD, OPERATING_THRESHOLD, POSTPROCESSORS, patient_folds

    rules = list(dict.fromkeys([reference, *primary]))
    seeds = sorted(preds_by_seed)
    anchor = next(iter(preds_by_seed[seeds[0]].values())).reset_index(drop=True)
    fold = patient_folds(anchor, folds, fold_seed, rule_attribute)  # the grid's folds
    cluster = M._cluster_index(anchor, S.PATIENT)
    draws = M.draw_counts(int(cluster.max()) + 1, n_resamples, boot_seed)
    row_draws = draws[:, cluster]

    def aligned(seed: int, weighting: str) -> pd.DataFrame:
        p = preds_by_seed[seed][weighting]
        threshold = float(p.attrs.get("threshold", DEFAULT_THRESHOLD))
        return M._align(p, anchor).assign(**{OPERATING_THRESHOLD: threshold})

    jobs = [(rule, seed) for rule in rules for seed in seeds]
    frames = {(rule, seed): aligned(seed, rule_parts(rule)[0]) for rule, seed in jobs}
    done = Parallel(n_jobs=n_jobs)(delayed(_decide)(frames[job], rule_parts(job[0])[1], rule_attribute, fold,
                                                    fold_seed, row_draws) for job in jobs)
    runs: dict[str, list[RuleRun]] = {rule: [] for rule in rules}
    degenerate: dict[str, str] = {}
    for (rule, seed), (decision, refits) in zip(jobs, done, strict=True):
        keeps = POSTPROCESSORS[rule_parts(rule)[1]].keeps_score
        frame = frames[(rule, seed)]
        decided = frame.assign(**{M.DECISION: decision,
                                  SCORE_COL: frame[S.PROBA].to_numpy(float) if keeps else np.nan})
        runs[rule].append(rule_run(decided, attribute, draws, refits, boot_seed, M.DECISION, SCORE_COL,
                                   min_per_class))
        where = one_class(decision, frame[attribute]).where
        if where and rule not in degenerate:
            degenerate[rule] = "; ".join(f"{g} : {cls}" for g, cls in where.items()) + f" (graine {seed})"
    verdicts = family_verdicts(runs, [(rule, reference) for rule in primary], metrics, attribute, "primary", alpha,
                               degenerate)
    levels = level_verdicts(runs, rules, dict.fromkeys(["balanced_accuracy", "auc", *metrics]), attribute)
    groups = runs[reference][0].groups
    meta = {"alpha": alpha, "correction": "holm", "seeds": seeds, "n_resamples": n_resamples,
            "attribute": attribute, "groups": list(groups), "reference": reference, "primary": list(primary),
            "metrics": list(metrics), "folds": len(np.unique(fold)), "n_patients": int(cluster.max()) + 1,
            "power": POWER, "n_tests": sum(v.p_adjusted is not None for v in verdicts)}
    return Verdicts([*verdicts, *levels], meta)
