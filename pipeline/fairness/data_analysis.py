"""Everything the data chapter shows, computed once: `analyse(frame, config)` and `data_analysis(ctx)`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.cache import per_study
from pipeline.config import StudyConfig
from pipeline.data import schema as S
from pipeline.data.folder import CheckReport
from pipeline.data.quality import quality_table
from pipeline.fairness.data_bias import (
    age_summary,
    age_trend,
    attribute_associations,
    bias_tests,
    bivariate,
    images_per_patient,
    imbalance,
    intersections,
    overall_prevalence,
    patient_bootstrap,
    patient_summary,
    univariate,
)
from pipeline.fairness.exploratory import Interval, interval_verdicts
from pipeline.fairness.inference import Verdict, verdict_key
from pipeline.fairness.simpson import simpson, simpson_verdict
from pipeline.progress import Laps


@dataclass
class DataAnalysis:
    """All results of the data chapter, computed once from the canonical frame."""

    config: StudyConfig
    frame: pd.DataFrame
    check: CheckReport | None
    bootstrap: dict[str, Any]
    quality: pd.DataFrame
    univariate: pd.DataFrame
    imbalance: pd.DataFrame
    images_per_patient: pd.DataFrame
    patients: pd.DataFrame
    ages: pd.DataFrame
    overall: pd.Series
    prevalence: pd.DataFrame
    tests: pd.DataFrame
    age_trend: dict[str, float]
    intersections: pd.DataFrame
    associations: pd.DataFrame
    composition: pd.DataFrame
    simpson: pd.DataFrame
    simpson_strata: pd.DataFrame
    verdicts: list[Verdict] = field(default_factory=list)  # the prevalence gaps' and the Simpson table's families
    timings: dict[str, float] = field(default_factory=dict)
    excluded_valid: dict[str, int] = field(default_factory=dict)  # valid rows left out of evaluation (leaks)

    def prevalence_verdict(self, row: Any) -> Verdict | None:
        """The verdict of a prevalence row's gap to its reference group (None for the reference itself)."""
        key = verdict_key(PREVALENCE_FAMILY, "prevalence_rd", row["attribute"], str(row["group"]),
                          str(row["reference"]))
        return next((v for v in self.verdicts if v.key == key), None)

    def simpson_verdict(self, row: Any, kind: str) -> Verdict:
        """The verdict of a Simpson row's `kind`: crude, adjusted or strata_gap."""
        return simpson_verdict({v.key: v for v in self.verdicts}, row, kind)


PREVALENCE_FAMILY = "exploratory:data:prevalence"


def prevalence_verdicts(prevalence: pd.DataFrame) -> list[Verdict]:
    """Each group's prevalence gap to the attribute's reference group, one family (BH within the table)."""
    rows = [Interval(r["attribute"], str(r["group"]), r["rd"], r["rd_low"], r["rd_high"], str(r["reference"]))
            for _, r in prevalence.dropna(subset=["rd"]).iterrows()]
    return interval_verdicts(PREVALENCE_FAMILY, "prevalence_rd", rows)


def analyse(frame: pd.DataFrame, config: StudyConfig, check: CheckReport | None = None,
            n_boot: int | None = None, seed: int | None = None) -> DataAnalysis:
    """Every table of the data chapter. Bootstrap size and seed default to `config.evaluation`."""
    n_boot = n_boot or config.evaluation.n_bootstrap
    seed = config.evaluation.seed if seed is None else seed
    lap = Laps()

    boot = patient_bootstrap(frame, n_boot, seed)
    lap("bootstrap weights")
    univ = univariate(frame, config)
    lap("univariate")
    prev, overall = bivariate(frame, config, boot), overall_prevalence(frame, boot)
    tests, trend = bias_tests(frame, config, boot), age_trend(frame)
    lap("bivariate")
    inter = intersections(frame, config, boot)
    assoc, comp = attribute_associations(frame, config, boot)
    lap("intersections and associations")
    simp, strata, simpson_found = simpson(frame, config, boot)
    lap("simpson")
    return DataAnalysis(config, frame, check, boot.describe(), quality_table(check, config), univ,
                        imbalance(univ), images_per_patient(frame), patient_summary(frame), age_summary(frame),
                        overall, prev, tests, trend, inter, assoc, comp, simp, strata,
                        [*prevalence_verdicts(prev), *simpson_found], lap.timings)


@per_study
def data_analysis(ctx: Any) -> DataAnalysis:
    """`analyse` of a study context (`.config`, `.frame`, `.check`), computed once per process."""
    frame, excluded = used_frame(ctx)
    result = analyse(frame, ctx.config, getattr(ctx, "check", None))
    result.excluded_valid = excluded
    return result


def used_frame(ctx: Any) -> tuple[pd.DataFrame, dict[str, int]]:
    """The images the study uses: train rows and the evaluation rows (valid images of patients also in
    train are left out, as the evaluation leaves them out), and how many valid images and patients
    were left out."""
    frame, evaluation = ctx.frame, getattr(ctx, "evaluation", None)
    if evaluation is None:
        return frame, {"images": 0, "patients": 0}
    valid = frame[S.SPLIT] == "valid"
    dropped = valid & ~frame[S.IMAGE].isin(set(evaluation[S.IMAGE]))
    return (frame[~dropped].reset_index(drop=True),
            {"images": int(dropped.sum()), "patients": int(frame.loc[dropped, S.PATIENT].nunique())})
