"""Simpson's paradox and confounding: does a crude gap between groups hold within strata?

For each attribute pair and stratifier, stratum-specific risk differences, the Mantel-Haenszel
pooled odds ratio against the crude one (change-in-estimate rule), a homogeneity test, and a
verdict: reversal, confounding, effect modification or stable. Intervals from the shared patient
bootstrap of `data_bias`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import StudyConfig
from pipeline.data import schema as S
from pipeline.fairness.data_bias import (
    PatientBootstrap,
    Tables,
    columns_first,
    interval,
    levels,
    mantel_haenszel,
    odds_ratio_of,
    patient_bootstrap,
    prevalence_of,
    tables,
)
from pipeline.fairness.exploratory import Interval, interval_verdicts
from pipeline.fairness.inference import Verdict, verdict_key

CONFOUNDING_THRESHOLD = 0.10  # change-in-estimate rule on the odds ratio (crude vs adjusted)


MIN_STRATUM_IMAGES = 5  # a stratum-specific difference needs this many images in each group


def contrasts(frame: pd.DataFrame, attribute: str, config: StudyConfig | None = None,
              age: str = "extremes") -> list[tuple[Any, Any]]:
    """(group, reference) pairs compared for an attribute: F vs M, AP vs PA, oldest vs youngest band.

    `age="each"` compares every age band with the youngest instead of only the extremes.
    """
    groups = levels(frame, attribute, config)
    if len(groups) < 2:
        return []
    if attribute == S.AGE_BAND and age == "extremes":
        return [(groups[-1], groups[0])]
    return [(g, groups[0]) for g in groups[1:]]


def _stratified(frame: pd.DataFrame, attribute: str, pair: tuple[Any, Any], stratifier: str,
                boot: PatientBootstrap, config: StudyConfig | None) -> Tables:
    """Tables (reference, group) x (sain, malade) x strata, on rows where all three are known."""
    strata = levels(frame, stratifier, config)
    return tables(frame, [attribute, S.LABEL, stratifier], boot,
                  groups=[[pair[1], pair[0]], [0, 1], strata])


def _stratum_rd(t: Tables) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-stratum prevalences (group, reference) and risk-difference replicates (B, K)."""
    p_g, p_r = prevalence_of(np.moveaxis(t.observed[1], -1, 0)), prevalence_of(np.moveaxis(t.observed[0], -1, 0))
    rep_g = prevalence_of(np.moveaxis(t.replicates[:, 1], -1, 1))
    rep_r = prevalence_of(np.moveaxis(t.replicates[:, 0], -1, 1))
    return p_g, p_r, rep_g - rep_r


def _small(t: Tables) -> np.ndarray:
    return (t.observed[1].sum(axis=0) < MIN_STRATUM_IMAGES) | (t.observed[0].sum(axis=0) < MIN_STRATUM_IMAGES)


def _stratum_rows(t: Tables) -> pd.DataFrame:
    """Risk difference and odds ratio of the compared group within each stratum, with CIs."""
    obs, rep = t.observed, t.replicates
    p_g, p_r, rd_rep = _stratum_rd(t)
    small = _small(t)
    out = pd.DataFrame({"stratum": t.groups[2], "n_group": obs[1].sum(axis=0).astype(int),
                        "n_reference": obs[0].sum(axis=0).astype(int), "p_group": p_g, "p_reference": p_r,
                        "rd": p_g - p_r})
    out["rd_low"], out["rd_high"] = interval(rd_rep)
    out["odds_ratio"] = odds_ratio_of(obs[1, 1], obs[1, 0], obs[0, 1], obs[0, 0])
    out["or_low"], out["or_high"] = interval(odds_ratio_of(rep[:, 1, 1], rep[:, 1, 0], rep[:, 0, 1],
                                                           rep[:, 0, 0]))
    out.loc[small, ["rd", "rd_low", "rd_high", "odds_ratio", "or_low", "or_high"]] = np.nan
    out["small"] = small
    return out


def strata_gap(t: Tables) -> dict[str, Any]:
    """Largest minus smallest stratum risk difference (usable strata), with a paired interval.

    An interval excluding 0 means the difference between groups depends on the stratum (effect
    modification); the strata are chosen on the data, so the interval is slightly optimistic.
    """
    p_g, p_r, rd_rep = _stratum_rd(t)
    rd = np.where(_small(t), np.nan, p_g - p_r)
    if np.isfinite(rd).sum() < 2:
        return {"gap": np.nan, "gap_low": np.nan, "gap_high": np.nan, "gap_max": None, "gap_min": None}
    hi, lo = int(np.nanargmax(rd)), int(np.nanargmin(rd))
    low, high = interval(rd_rep[:, hi] - rd_rep[:, lo])
    return {"gap": float(rd[hi] - rd[lo]), "gap_low": float(low), "gap_high": float(high),
            "gap_max": t.groups[2][hi], "gap_min": t.groups[2][lo]}


def _crude_and_adjusted(t: Tables) -> dict[str, float]:
    obs, rep = t.observed, t.replicates
    crude, crude_rep = obs.sum(axis=-1), rep.sum(axis=-1)
    p, p_rep = prevalence_of(crude), prevalence_of(crude_rep)
    out = {"n_images": int(obs.sum()), "p_group": p[1], "p_reference": p[0], "crude_rd": p[1] - p[0],
           "crude_or": float(odds_ratio_of(crude[1, 1], crude[1, 0], crude[0, 1], crude[0, 0]))}
    out["crude_rd_low"], out["crude_rd_high"] = interval(p_rep[:, 1] - p_rep[:, 0])
    out["crude_or_low"], out["crude_or_high"] = interval(odds_ratio_of(
        crude_rep[:, 1, 1], crude_rep[:, 1, 0], crude_rep[:, 0, 1], crude_rep[:, 0, 0]))
    rd, odds = mantel_haenszel(obs)
    rd_rep, odds_rep = mantel_haenszel(rep)
    out.update({"adj_rd": float(rd), "adj_or": float(odds)})
    out["adj_rd_low"], out["adj_rd_high"] = interval(rd_rep)
    out["adj_or_low"], out["adj_or_high"] = interval(odds_rep)
    return {k: float(v) for k, v in out.items()}


def homogeneity_p(observed: np.ndarray) -> float:
    """Breslow-Day test of equal odds ratios across strata (statsmodels; IMAGE level, indicative)."""
    tabs = [observed[::-1, ::-1, k] for k in range(observed.shape[-1])]  # [[a, b], [c, d]]
    tabs = [x for x in tabs if (x.sum(axis=1) > 0).all() and (x.sum(axis=0) > 0).all()]
    if len(tabs) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from statsmodels.stats.contingency_tables import StratifiedTable

        return float(StratifiedTable(tabs).test_equal_odds(adjust=True).pvalue)


def statsmodels_pooled_or(observed: np.ndarray) -> float:
    """Mantel-Haenszel pooled odds ratio by statsmodels' StratifiedTable (to cross-check ours)."""
    tabs = [observed[::-1, ::-1, k] for k in range(observed.shape[-1])]
    tabs = [x for x in tabs if (x.sum(axis=1) > 0).all()]
    from statsmodels.stats.contingency_tables import StratifiedTable

    return float(StratifiedTable(tabs).oddsratio_pooled)


def _flags(row: dict[str, Any], strata: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """The descriptive flags of one (attribute, stratifier) row (what needs a test: `classify`)."""
    crude, adj = row["crude_rd"], row["adj_rd"]
    usable = strata[~strata["small"]]
    change = abs(row["crude_or"] / row["adj_or"] - 1) if row["adj_or"] > 0 else np.nan
    above, below = (usable["rd_low"] > 0).any(), (usable["rd_high"] < 0).any()
    return {"reversal": bool(np.sign(crude) * np.sign(adj) < 0),
            "strata_with_adjusted_sign": int((np.sign(usable["rd"]) == np.sign(adj)).sum()),
            "n_strata": len(usable), "or_change": float(change), "confounding": bool(change > threshold),
            "qualitative_interaction": bool(above and below)}


SIMPSON_FAMILY = "exploratory:data:simpson"
SIMPSON_QUANTITIES = {"crude": "crude_rd", "adjusted": "adj_rd", "strata_gap": "gap"}  # verdict -> column


def simpson_quantity(kind: str, stratifier: str) -> str:
    """The verdict quantity of a row's crude or adjusted difference, or its gap between strata."""
    return f"{kind}:{stratifier}"


def simpson_verdicts(summary: pd.DataFrame) -> list[Verdict]:
    """The table's crude and adjusted differences and its between-strata gaps, one family (BH within it)."""
    rows = [Interval(r["attribute"], str(r["group"]), r[col], r[f"{col}_low"], r[f"{col}_high"],
                     str(r["reference"]), simpson_quantity(kind, r["stratifier"]))
            for _, r in summary.iterrows() for kind, col in SIMPSON_QUANTITIES.items()]
    return interval_verdicts(SIMPSON_FAMILY, "risk_difference", rows)


def simpson_verdict(verdicts: Mapping[str, Verdict], row: Any, kind: str) -> Verdict:
    return verdicts[verdict_key(SIMPSON_FAMILY, simpson_quantity(kind, row["stratifier"]), row["attribute"],
                                str(row["group"]), str(row["reference"]))]


def classify(summary: pd.DataFrame, verdicts: list[Verdict]) -> pd.DataFrame:
    """`reversal_clear` (opposite signs, both differences established), `effect_modification` (the gap
    between strata established) and the row's `verdict`: the first of reversal, weak_reversal,
    confounding, effect_modification, none, read from the family's verdicts."""
    by_key = {v.key: v for v in verdicts}
    out = summary.copy()
    rows = [r for _, r in out.iterrows()]
    out["reversal_clear"] = [bool(r["reversal"]) and simpson_verdict(by_key, r, "crude").established
                             and simpson_verdict(by_key, r, "adjusted").established for r in rows]
    out["effect_modification"] = [simpson_verdict(by_key, r, "strata_gap").established for r in rows]
    out["verdict"] = ["reversal" if clear else "weak_reversal" if rev else "confounding" if conf else
                      "effect_modification" if mod else "none" for clear, rev, conf, mod in
                      zip(out["reversal_clear"], out["reversal"], out["confounding"], out["effect_modification"],
                          strict=True)]
    return out


def _driver(t: Tables) -> dict[str, Any]:
    """The stratum with the highest prevalence and its share among each group's images."""
    by_stratum = t.observed.sum(axis=0)  # (labels, strata)
    p = prevalence_of(by_stratum.T)
    k = int(np.nanargmax(p))
    n_group, n_ref = t.observed[1].sum(axis=0), t.observed[0].sum(axis=0)
    return {"driver_stratum": t.groups[2][k], "driver_prevalence": float(p[k]),
            "driver_share_group": float(n_group[k] / n_group.sum()),
            "driver_share_reference": float(n_ref[k] / n_ref.sum())}


def simpson(frame: pd.DataFrame, config: StudyConfig, boot: PatientBootstrap,
            threshold: float = CONFOUNDING_THRESHOLD, age: str = "extremes"
            ) -> tuple[pd.DataFrame, pd.DataFrame, list[Verdict]]:
    """Crude vs stratum-specific vs Mantel-Haenszel-adjusted contrasts, and their flags.

    For each sensitive attribute A (contrasts: see `contrasts`) and each other attribute S:
    crude RD/OR, RD/OR within each stratum of S, Mantel-Haenszel pooled RD/OR, all with patient
    bootstrap CIs, on the same images (A, S and the label known). Flags: `reversal` (crude and
    adjusted RD of opposite signs), `reversal_clear` (and both established in the table's family,
    `simpson_verdicts`), `confounding` (|OR crude / OR adjusted - 1| > threshold, descriptive),
    `effect_modification` (the gap between the largest and smallest stratum RD established, see
    `strata_gap`), `qualitative_interaction`
    (one stratum's interval above 0 and another's below). `verdict` is the first of reversal,
    weak_reversal, confounding, effect_modification, none. Returns (summary, strata, verdicts).
    """
    summary, strata = [], []
    attrs = list(config.sensitive_attributes)
    for attribute, stratifier in itertools.permutations(attrs, 2):
        for pair in contrasts(frame, attribute, config, age):
            t = _stratified(frame, attribute, pair, stratifier, boot, config)
            if t.observed.sum() == 0:
                continue
            keys = {"attribute": attribute, "group": pair[0], "reference": pair[1], "stratifier": stratifier}
            rows = _stratum_rows(t)
            row = {**keys, **_crude_and_adjusted(t), **strata_gap(t)}
            row.update(_flags(row, rows, threshold))
            row["homogeneity_p"] = homogeneity_p(t.observed)
            row.update(_driver(t))
            summary.append(row)
            strata.append(rows.assign(**keys))
    if not summary:
        return pd.DataFrame(), pd.DataFrame(), []
    strata_df = pd.concat(strata, ignore_index=True).pipe(columns_first, "attribute", "group", "reference",
                                                          "stratifier")
    summary_df = pd.DataFrame(summary)
    verdicts = simpson_verdicts(summary_df)
    return classify(summary_df, verdicts), strata_df, verdicts


def model_gap_adjusted(runs: list[pd.DataFrame], attribute: str, stratifier: str, config: StudyConfig,
                       n_boot: int, seed: int, decision_col: str = "decision") -> dict[str, Any] | None:
    """Does the model's under-diagnosis gap between the two groups of `attribute` (first minus second, FNR
    among the malades) hold within the strata of `stratifier` (age bands)? The crude gap and the
    Mantel-Haenszel gap at equal stratum, each the mean over the training runs (`runs`: one decided frame per
    seed, the same images) with the seed-aware interval of `inference.combine` (one patient resample for
    every run). None without two groups, two usable strata or malades in both groups."""
    from pipeline.fairness.inference import combine
    from pipeline.fairness.metrics import group_order

    sick = [r[r[S.LABEL] == 1] for r in runs]
    if not sick or not len(sick[0]) or attribute not in sick[0] or stratifier not in sick[0]:
        return None
    groups = group_order(sick[0][attribute])  # the report's order: the gap is F − M
    if len(groups) != 2 or len(levels(sick[0], stratifier, config)) < 2:
        return None
    boot = patient_bootstrap(sick[0], n_boot, seed)
    crude, adjusted = [], []
    for frame in sick:
        missed = frame.assign(**{S.LABEL: (frame[decision_col].to_numpy(float) < 0.5).astype(int)})
        t = _stratified(missed, attribute, (groups[0], groups[1]), stratifier, boot, config)
        p, p_rep = prevalence_of(t.observed.sum(axis=-1)), prevalence_of(t.replicates.sum(axis=-1))
        crude.append((p[1] - p[0], p_rep[:, 1] - p_rep[:, 0]))
        adjusted.append((mantel_haenszel(t.observed)[0], mantel_haenszel(t.replicates)[0]))
    out: dict[str, Any] = {"attribute": attribute, "group": groups[0], "reference": groups[1],
                           "stratifier": stratifier, "n_seeds": len(runs)}
    for name, parts in (("crude", crude), ("adjusted", adjusted)):
        estimate, low, high, p, *_ = combine(np.array([float(x) for x, _ in parts]), np.stack([r for _, r in parts]))
        out.update({name: estimate, f"{name}_low": low, f"{name}_high": high, f"{name}_p": p,
                    f"{name}_per_seed": tuple(float(x) for x, _ in parts)})
    return out
