"""Data chapter: imbalances, biases, intersections, attribute associations, Simpson's paradox.

Every interval is a 95 % percentile interval from a bootstrap over PATIENTS: a patient's images are
resampled together, because they are correlated (NIH: half of the images come from patients with 10
or more images). The bootstrap is vectorised: per-patient counts of each cell of a contingency table
(patients x cells) times a matrix of replicate weights (replicates x patients, multinomial counts)
gives every replicate's table at once; every estimator below works on a stack of tables, so 500
replicates on the 112,120 NIH images take about a second. One `PatientBootstrap` is shared by all
the estimates of an analysis, so differences between groups are paired replicate by replicate.

Tests account for clustering with a logistic model (GEE with an independence working correlation,
i.e. a GLM with cluster-robust "sandwich" covariance, patients as clusters) and a Wald test.
Functions return tidy DataFrames; `analyse` bundles everything the chapter shows.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import StudyConfig
from pipeline.data import schema as S
from pipeline.data.folder import CheckReport

ALPHA = 0.05


MISSING = "manquant"


FINDINGS_GROUP = "n_findings_group"  # 0, 1, 2, 3+ findings (univariate only)


SPLIT_ORDER = ("train", "valid")


FIXED_ORDER: dict[str, tuple[Any, ...]] = {S.SEX: ("M", "F"), S.VIEW: ("PA", "AP"), S.LABEL: (0, 1),
                                           S.SPLIT: SPLIT_ORDER, FINDINGS_GROUP: ("0", "1", "2", "3+")}


def frame_from_metadata(meta: pd.DataFrame, config: StudyConfig, valid_share: float = 0.2,
                        seed: int = 0, source: Path | str = "metadata") -> tuple[pd.DataFrame, CheckReport]:
    """Canonical frame from an NIH metadata table alone (no image files).

    `label` = any finding (Finding Labels != No Finding). `split` is kept when the table has one;
    otherwise patients (never images) are drawn into `valid` with probability `valid_share`.
    """
    from pipeline.data.folder import derive_columns

    f = meta.astype(str).rename(columns=config.column_mapping).copy()
    f[S.LABEL] = (f[S.FINDINGS].str.strip() != S.NO_FINDING).astype(int)
    if S.SPLIT not in f.columns:
        patients = f[S.PATIENT_ID].str.strip().unique()
        rng = np.random.default_rng(seed)
        valid = dict(zip(patients, rng.random(len(patients)) < valid_share, strict=True))
        f[S.SPLIT] = np.where(f[S.PATIENT_ID].str.strip().map(valid), "valid", "train")
    report = CheckReport(Path(source))
    return derive_columns(f, config, report), report


def read_metadata_frame(path: Path, config: StudyConfig, **kwargs: Any) -> tuple[pd.DataFrame, CheckReport]:
    """`frame_from_metadata` of a CSV file (gzip accepted), e.g. the full NIH Data_Entry file."""
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame_from_metadata(meta, config, source=path, **kwargs)


def levels(frame: pd.DataFrame, column: str, config: StudyConfig | None = None) -> list[Any]:
    """Groups of a column in display order (reference group first), only those present."""
    present = set(frame[column].dropna().unique())
    if column == S.AGE_BAND and (config or isinstance(frame[column].dtype, pd.CategoricalDtype)):
        order = config.age_band_labels() if config else list(frame[column].cat.categories)
    else:
        order = list(FIXED_ORDER.get(column, ()))
    known = [g for g in order if g in present]
    return known + sorted((g for g in present if g not in known), key=str)


def reference_group(frame: pd.DataFrame, attribute: str, config: StudyConfig | None = None) -> Any:
    """The reference of contrasts: M, PA, the youngest age band (first of `levels`)."""
    return levels(frame, attribute, config)[0]


def _codes(series: pd.Series, groups: list[Any]) -> np.ndarray:
    """Integer code of each row's group (-1: missing or not among `groups`)."""
    values = series.astype(object) if isinstance(series.dtype, pd.CategoricalDtype) else series
    return pd.Index(groups, dtype=object).get_indexer(values.to_numpy(dtype=object)).astype(np.int64)


@dataclass(frozen=True)
class PatientBootstrap:
    """Replicate weights of a bootstrap over patients, shared by every estimate of an analysis."""

    patients: pd.Index  # patient ids, in the order of the columns of `weights`
    weights: np.ndarray  # (n_boot, n_patients): how many times each patient is drawn
    seed: int

    @property
    def n_boot(self) -> int:
        return int(self.weights.shape[0])

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        codes = self.patients.get_indexer(frame[S.PATIENT].astype(str))
        if (codes < 0).any():
            raise ValueError("the frame has patients the bootstrap was not drawn for")
        return codes

    def describe(self) -> dict[str, Any]:
        return {"unit": "patient", "n_boot": self.n_boot, "seed": self.seed,
                "n_patients": len(self.patients), "interval": "percentile 95 %"}


def patient_bootstrap(frame: pd.DataFrame, n_boot: int = 500, seed: int = 0,
                      chunk: int = 50) -> PatientBootstrap:
    """Multinomial patient counts for `n_boot` replicates (drawn in chunks to bound memory)."""
    patients = pd.Index(pd.unique(frame[S.PATIENT].astype(str)))
    n, rng = len(patients), np.random.default_rng(seed)
    weights = np.empty((n_boot, n), dtype=np.float32)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        draws = rng.integers(0, n, size=(k, n)) + (np.arange(k) * n)[:, None]
        weights[start:start + k] = np.bincount(draws.ravel(), minlength=k * n).reshape(k, n)
    return PatientBootstrap(patients, weights, seed)


@dataclass(frozen=True)
class Tables:
    """A contingency table of the data and its bootstrap replicates (leading axis)."""

    groups: tuple[list[Any], ...]  # the groups of each dimension
    observed: np.ndarray  # shape dims
    replicates: np.ndarray  # shape (n_boot, *dims)
    patients: np.ndarray  # distinct patients in each cell of all axes but the last, shape dims[:-1]


def tables(frame: pd.DataFrame, columns: list[str], boot: PatientBootstrap,
           groups: list[list[Any]] | None = None, config: StudyConfig | None = None) -> Tables:
    """Cross-tabulate `columns` (rows with a missing value left out), with bootstrap replicates."""
    groups = groups or [levels(frame, c, config) for c in columns]
    dims = tuple(len(g) for g in groups)
    codes = np.stack([_codes(frame[c], g) for c, g in zip(columns, groups, strict=True)])
    keep = (codes >= 0).all(axis=0)
    cell = np.ravel_multi_index(tuple(codes[:, keep]), dims)
    n_cells = int(np.prod(dims))
    pcode = boot.codes(frame)[keep]
    counts = np.bincount(pcode * n_cells + cell, minlength=len(boot.patients) * n_cells)
    counts = counts.reshape(len(boot.patients), n_cells).astype(np.float32)
    observed = counts.sum(axis=0, dtype=np.float64).reshape(dims)
    replicates = (boot.weights @ counts).astype(np.float64).reshape((boot.n_boot, *dims))
    patients = (counts.reshape(-1, *dims).sum(axis=-1) > 0).sum(axis=0)
    return Tables(tuple(groups), observed, replicates, patients)


def interval(values: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along the replicate axis (0), ignoring undefined replicates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return low, high


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def prevalence_of(t: np.ndarray) -> np.ndarray:
    return _div(t[..., 1], t.sum(axis=-1))


def odds_ratio_of(case_g: np.ndarray, ctrl_g: np.ndarray, case_r: np.ndarray,
                  ctrl_r: np.ndarray) -> np.ndarray:
    """Odds ratio of a group vs its reference from case/control counts (NaN when a cell is 0)."""
    num, den = case_g * ctrl_r, ctrl_g * case_r
    return np.where((num > 0) & (den > 0), _div(num, den), np.nan)


def cramers_v(t: np.ndarray) -> np.ndarray:
    """Cramér's V of the last two axes of a stack of tables (empty rows/columns ignored)."""
    n = t.sum(axis=(-2, -1), keepdims=True)
    rows, cols = t.sum(axis=-1, keepdims=True), t.sum(axis=-2, keepdims=True)
    expected = _div(rows * cols, n)
    chi2 = np.where(expected > 0, _div((t - expected) ** 2, expected), 0.0).sum(axis=(-2, -1))
    k = np.minimum((rows > 0).sum(axis=(-2, -1)), (cols > 0).sum(axis=(-2, -1))) - 1
    return np.sqrt(_div(chi2, n[..., 0, 0] * k))


def mantel_haenszel(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mantel-Haenszel risk difference and odds ratio of tables shaped (..., 2 groups, 2 labels, K).

    Group 0 is the reference, group 1 the compared group; strata missing a group weigh nothing.
    """
    a, b = t[..., 1, 1, :], t[..., 1, 0, :]  # compared group: cases, controls
    c, d = t[..., 0, 1, :], t[..., 0, 0, :]  # reference group: cases, controls
    n = a + b + c + d
    w = _div((a + b) * (c + d), n)
    rd_k = np.nan_to_num(_div(a, a + b) - _div(c, c + d))
    rd = _div((w * rd_k).sum(axis=-1), w.sum(axis=-1))
    num, den = _div(a * d, n).sum(axis=-1), _div(b * c, n).sum(axis=-1)
    odds = np.where((num > 0) & (den > 0), _div(num, den), np.nan)
    return rd, odds


def design_effect(p: np.ndarray, n: np.ndarray, replicates: np.ndarray) -> np.ndarray:
    """Bootstrap variance over binomial variance of a prevalence (> 1: clustering widens the CI)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        var = np.nanvar(replicates, axis=0, ddof=1)
    return _div(var, _div(p * (1 - p), n))


def _findings_group(frame: pd.DataFrame) -> pd.Series:
    n = frame[S.N_FINDINGS].astype(int)
    return n.clip(upper=3).astype(str).replace({"3": "3+"})


def distribution(frame: pd.DataFrame, column: str, config: StudyConfig | None = None) -> pd.DataFrame:
    """Images and patients per group of `column`, within each split (missing values shown)."""
    f = frame.assign(**{FINDINGS_GROUP: _findings_group(frame)}) if column == FINDINGS_GROUP else frame
    groups = [*levels(f, column, config)]
    value = f[column].astype(object).where(f[column].notna(), MISSING)
    if (value == MISSING).any():
        groups.append(MISSING)
    out = []
    for split in [s for s in SPLIT_ORDER if (f[S.SPLIT] == s).any()]:
        in_split = f[S.SPLIT] == split
        sub = pd.DataFrame({"group": value[in_split], S.PATIENT: f.loc[in_split, S.PATIENT]})
        agg = sub.groupby("group", sort=False).agg(n_images=(S.PATIENT, "size"),
                                                   n_patients=(S.PATIENT, "nunique"))
        agg = agg.reindex(groups, fill_value=0)
        agg["share"] = agg["n_images"] / agg["n_images"].sum()
        out.append(agg.reset_index().assign(split=split, order=range(len(groups))))
    return pd.concat(out, ignore_index=True).assign(variable=column)[
        ["variable", "group", "split", "order", "n_images", "n_patients", "share"]]


def univariate(frame: pd.DataFrame, config: StudyConfig) -> pd.DataFrame:
    """Distributions of the sensitive attributes, the label and the number of findings, by split."""
    columns = [*config.sensitive_attributes, S.LABEL, FINDINGS_GROUP]
    return pd.concat([distribution(frame, c, config) for c in dict.fromkeys(columns)], ignore_index=True)


def imbalance(univ: pd.DataFrame) -> pd.DataFrame:
    """Majority / minority image ratio of each variable in each split (missing values left out)."""
    rows = []
    for (variable, split), g in univ[univ["group"] != MISSING].groupby(["variable", "split"], sort=False):
        g = g[g["n_images"] > 0].sort_values("n_images", kind="stable")
        if len(g) < 2:
            continue
        hi, lo = g.iloc[-1], g.iloc[0]
        rows.append({"variable": variable, "split": split, "majority": hi["group"], "minority": lo["group"],
                     "n_majority": int(hi["n_images"]), "n_minority": int(lo["n_images"]),
                     "ratio": hi["n_images"] / lo["n_images"]})
    return pd.DataFrame(rows)


PATIENT_BINS = (1, 2, 3, 6, 11, 51)


PATIENT_BIN_LABELS = ("1", "2", "3-5", "6-10", "11-50", "51+")


def images_per_patient(frame: pd.DataFrame) -> pd.DataFrame:
    """How many patients have 1, 2, 3-5, ... images, and what share of the images they hold."""
    out = []
    for split in [*SPLIT_ORDER, "total"]:
        sub = frame if split == "total" else frame[frame[S.SPLIT] == split]
        if sub.empty:
            continue
        per = sub.groupby(S.PATIENT).size()
        band = pd.cut(per, [*PATIENT_BINS, np.inf], right=False, labels=PATIENT_BIN_LABELS)
        agg = per.groupby(band, observed=False).agg(["size", "sum"])
        out.append(pd.DataFrame({"split": split, "bin": PATIENT_BIN_LABELS,
                                 "n_patients": agg["size"].to_numpy(), "n_images": agg["sum"].to_numpy(),
                                 "share_patients": agg["size"].to_numpy() / len(per),
                                 "share_images": agg["sum"].to_numpy() / len(sub)}))
    return pd.concat(out, ignore_index=True)


def patient_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per patient by split: mean, median, max, share of single-image patients."""
    rows = []
    for split in [*SPLIT_ORDER, "total"]:
        sub = frame if split == "total" else frame[frame[S.SPLIT] == split]
        if sub.empty:
            continue
        per = sub.groupby(S.PATIENT).size()
        rows.append({"split": split, "n_images": len(sub), "n_patients": len(per), "mean": per.mean(),
                     "median": per.median(), "max": int(per.max()), "share_single": (per == 1).mean(),
                     "share_images_10plus": per[per >= 10].sum() / len(sub)})
    return pd.DataFrame(rows)


def age_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Age (years) by split (and `total`) and sex: images, mean, quartiles, share missing."""
    rows = []
    both = pd.concat([frame, frame.assign(**{S.SPLIT: "total"})], ignore_index=True)
    for (split, sex), g in both.groupby([S.SPLIT, S.SEX], sort=True, dropna=False):
        age = g[S.AGE]
        rows.append({"split": split, "sex": sex, "n_images": len(g), "mean": age.mean(),
                     "q1": age.quantile(0.25), "median": age.median(), "q3": age.quantile(0.75),
                     "share_missing": age.isna().mean()})
    return pd.DataFrame(rows)


def _prevalence_rows(t: Tables, ref_index: int | None = 0) -> pd.DataFrame:
    """Prevalence, design effect, and differences vs the reference group of a (G, 2) Tables."""
    obs, rep = t.observed, t.replicates
    p, p_rep = prevalence_of(obs), prevalence_of(rep)
    n = obs.sum(axis=-1)
    out = pd.DataFrame({"group": t.groups[0], "n_images": n.astype(int),
                        "n_patients": t.patients.astype(int), "n_positive": obs[:, 1].astype(int),
                        "prevalence": p})
    out["low"], out["high"] = interval(p_rep)
    out["deff"] = design_effect(p, n, p_rep)
    if ref_index is None:
        return out
    r = ref_index
    out["reference"] = [t.groups[0][r]] * len(out)
    out["rd"] = p - p[r]
    out["rd_low"], out["rd_high"] = interval(p_rep - p_rep[:, [r]])
    out["odds_ratio"] = odds_ratio_of(obs[:, 1], obs[:, 0], obs[r, 1], obs[r, 0])
    out["or_low"], out["or_high"] = interval(odds_ratio_of(rep[..., 1], rep[..., 0], rep[:, [r], 1],
                                                           rep[:, [r], 0]))
    out.loc[r, ["rd", "rd_low", "rd_high", "odds_ratio", "or_low", "or_high"]] = np.nan
    return out


def prevalence(frame: pd.DataFrame, attribute: str, boot: PatientBootstrap,
               config: StudyConfig | None = None) -> pd.DataFrame:
    """Prevalence of `malade` by group with patient-bootstrap CI; RD and OR vs the reference group.

    Columns: attribute, group, n_images, n_patients, n_positive, prevalence, low, high, deff
    (design effect), reference, rd (+ rd_low/rd_high), odds_ratio (+ or_low/or_high).
    """
    t = tables(frame, [attribute, S.LABEL], boot, config=config)
    return _prevalence_rows(t).assign(attribute=attribute).pipe(columns_first, "attribute")


def overall_prevalence(frame: pd.DataFrame, boot: PatientBootstrap) -> pd.Series:
    """Prevalence of the whole frame with its interval (keys prevalence, low, high, n_images)."""
    t = tables(frame.assign(_all="all"), ["_all", S.LABEL], boot, groups=[["all"], [0, 1]])
    row = _prevalence_rows(t, ref_index=None).iloc[0]
    return row[["prevalence", "low", "high", "n_images", "n_patients", "deff"]]


def columns_first(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    return df[[*columns, *[c for c in df.columns if c not in columns]]]


def bivariate(frame: pd.DataFrame, config: StudyConfig, boot: PatientBootstrap) -> pd.DataFrame:
    """`prevalence` for every sensitive attribute, stacked."""
    return pd.concat([prevalence(frame, a, boot, config) for a in config.sensitive_attributes],
                     ignore_index=True)


def intersections(frame: pd.DataFrame, config: StudyConfig, boot: PatientBootstrap) -> pd.DataFrame:
    """Prevalence in each cell of every pair of sensitive attributes (e.g. F x 60+), with CIs.

    RD and OR are vs the cell of the two reference groups (e.g. M x 0-39).
    """
    out = []
    for a, b in itertools.combinations(config.sensitive_attributes, 2):
        t = tables(frame, [a, b, S.LABEL], boot, config=config)
        ga, gb = t.groups[0], t.groups[1]
        flat = Tables(([f"{x} × {y}" for x in ga for y in gb], [0, 1]), t.observed.reshape(-1, 2),
                      t.replicates.reshape(boot.n_boot, -1, 2), t.patients.reshape(-1))
        rows = _prevalence_rows(flat)
        rows.insert(0, "pair", f"{a} × {b}")
        rows.insert(1, "attr_a", a)
        rows.insert(2, "group_a", [x for x in ga for _ in gb])
        rows.insert(3, "attr_b", b)
        rows.insert(4, "group_b", [y for _ in ga for y in gb])
        out.append(rows[rows["n_images"] > 0])
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def cluster_wald_test(y: np.ndarray, group: np.ndarray, clusters: np.ndarray) -> tuple[float, int, float]:
    """Wald test that a binary outcome has the same rate in every group, patients as clusters.

    Logistic GLM with one indicator per non-reference group (code 0 is the reference) and a
    cluster-robust sandwich covariance (= GEE with an independence working correlation).
    Returns (chi2, df, p); NaN when a group has a rate of 0 or 1 (no finite odds ratio).
    """
    from statsmodels.genmod import families  # at use: the documents' kernels only read the results
    from statsmodels.genmod.generalized_linear_model import GLM

    present = np.unique(group)
    if len(present) < 2:
        return float("nan"), 0, float("nan")
    x = np.column_stack([np.ones(len(y))] + [(group == g).astype(float) for g in present[1:]])
    rates = np.array([y[group == g].mean() for g in present])
    if ((rates == 0) | (rates == 1)).any():
        return float("nan"), len(present) - 1, float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = GLM(y, x, family=families.Binomial()).fit(
            cov_type="cluster", cov_kwds={"groups": clusters})
        test = res.wald_test(np.eye(x.shape[1])[1:], scalar=True, use_f=False)
    return float(test.statistic), len(present) - 1, float(test.pvalue)


def joint_codes(frame: pd.DataFrame, columns: list[str], config: StudyConfig | None) -> np.ndarray:
    """One integer per combination of groups of `columns` (-1 when one of them is missing)."""
    groups = [levels(frame, c, config) for c in columns]
    codes = np.stack([_codes(frame[c], g) for c, g in zip(columns, groups, strict=True)])
    known = (codes >= 0).all(axis=0)
    out = np.full(len(frame), -1, dtype=np.int64)
    out[known] = np.ravel_multi_index(tuple(codes[:, known]), tuple(len(g) for g in groups))
    return out


def _outcome_test(frame: pd.DataFrame, outcome: str, predictors: list[str],
                  config: StudyConfig | None) -> tuple[float, int, float]:
    """`cluster_wald_test` of a binary column on the joint groups of others (rows all known)."""
    y = _codes(frame[outcome], levels(frame, outcome, config))
    x = joint_codes(frame, predictors, config)
    keep = (y >= 0) & (x >= 0)
    clusters = pd.factorize(frame.loc[keep, S.PATIENT])[0]
    return cluster_wald_test(y[keep].astype(float), x[keep], clusters)


def ordered_auc(t: np.ndarray) -> np.ndarray:
    """AUC from tables (..., L, 2) of (negatives, positives) per score level, levels in increasing score.

    A positive beats every negative of a lower level and half of those of its own level (ties).
    """
    neg, pos = t[..., 0], t[..., 1]
    below = np.cumsum(neg, axis=-1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=-1)
    return _div(wins, pos.sum(axis=-1) * neg.sum(axis=-1))


def attribute_only_auc(t: np.ndarray) -> np.ndarray:
    """IN-SAMPLE AUC of the group prevalence as a score, tables (..., G, 2): biased upward.

    Groups are ranked by their prevalence in the same table (each replicate re-learns the ranking),
    so even labels independent of the groups give an AUC above 0.5 (tests/test_baselines.py). Kept to
    show that bias; the report uses `attribute_baseline`, cross-validated by patient.
    """
    order = np.argsort(np.nan_to_num(prevalence_of(t), nan=-1.0), axis=-1, kind="stable")
    return ordered_auc(np.take_along_axis(t, order[..., None], axis=-2))


BASELINE_FOLDS = 5  # folds of whole patients for the out-of-sample attribute-only score


def attribute_design(frame: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """One-hot columns of the attributes (a missing value is its own level)."""
    parts = frame[list(attributes)].astype(object).where(frame[list(attributes)].notna(), MISSING).astype(str)
    return pd.get_dummies(parts, columns=list(attributes)).to_numpy(dtype=float)


def _attribute_model() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000)


def attribute_scores_oof(frame: pd.DataFrame, attributes: list[str], seed: int = 0,
                         n_splits: int = BASELINE_FOLDS) -> np.ndarray:
    """Out-of-fold probability of malade from the attributes alone (additive logistic model).

    Folds are whole patients, stratified on the label (scikit-learn's StratifiedGroupKFold): no image
    is scored by a model that saw its patient. NaN when a fold's training part has one class only.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    x, y = attribute_design(frame, attributes), frame[S.LABEL].to_numpy(int)
    groups = frame[S.PATIENT].astype(str).to_numpy()
    out = np.full(len(frame), np.nan)
    k = min(n_splits, len(np.unique(groups)), int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return out
    for fit_rows, score_rows in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(x, y, groups):
        if len(np.unique(y[fit_rows])) == 2:
            out[score_rows] = _attribute_model().fit(x[fit_rows], y[fit_rows]).predict_proba(x[score_rows])[:, 1]
    return out


def attribute_scores(fit: pd.DataFrame, score: pd.DataFrame, attributes: list[str]) -> np.ndarray:
    """Probability of malade of the `score` rows from an attribute-only model fitted on the `fit` rows."""
    both = attribute_design(pd.concat([fit, score], ignore_index=True), attributes)
    y = fit[S.LABEL].to_numpy(int)
    if len(np.unique(y)) < 2:
        return np.full(len(score), np.nan)
    return _attribute_model().fit(both[:len(fit)], y).predict_proba(both[len(fit):])[:, 1]


def score_auc(frame: pd.DataFrame, scores: dict[str, np.ndarray], boot: PatientBootstrap) -> dict[str, np.ndarray]:
    """AUC of each score on `frame` (index 0) and in every bootstrap replicate (1:), same replicates for all.

    Rows with a NaN score are left out. Paired differences are differences of these arrays.
    """
    y, codes = frame[S.LABEL].to_numpy(int), boot.codes(frame)
    out = {}
    for name, score in scores.items():
        ok = np.isfinite(score)
        level = np.unique(score[ok], return_inverse=True)[1]
        cells = level * 2 + y[ok]
        counts = np.zeros((len(boot.patients), 2 * (level.max() + 1 if ok.any() else 0)))
        np.add.at(counts, (codes[ok], cells), 1.0)
        observed = counts.sum(axis=0).reshape(-1, 2)
        replicates = (boot.weights @ counts.astype(np.float32)).astype(float).reshape(boot.n_boot, -1, 2)
        out[name] = np.concatenate([[ordered_auc(observed)], ordered_auc(replicates)])
    return out


def attribute_baseline(frame: pd.DataFrame, attributes: list[str], boot: PatientBootstrap,
                       seed: int = 0) -> dict[str, float]:
    """Attribute-only AUC cross-validated by patient, with its patient-bootstrap interval.

    The out-of-fold scores are computed once; the bootstrap resamples patients over those fixed scores
    (a model re-fitted in each replicate would be scored on the patients it learnt from).
    """
    auc = score_auc(frame, {"oof": attribute_scores_oof(frame, attributes, seed)}, boot)["oof"]
    low, high = interval(auc[1:])
    return {"auc": float(auc[0]), "auc_low": float(low), "auc_high": float(high)}


def bias_tests(frame: pd.DataFrame, config: StudyConfig, boot: PatientBootstrap) -> pd.DataFrame:
    """Per attribute (and attribute pair): cluster Wald test, Cramér's V and attribute-only AUC.

    Columns: attribute, n_images, chi2, df, p_value, cramers_v (+ v_low/v_high), auc (+ auc_low/high):
    the AUC is out of sample, cross-validated by patient (`attribute_baseline`).
    """
    attrs = list(config.sensitive_attributes)
    sets = [[a] for a in attrs] + [list(p) for p in itertools.combinations(attrs, 2)] + [attrs]
    rows = []
    for cols in sets:
        t = tables(frame, [*cols, S.LABEL], boot, config=config)
        obs, rep = t.observed.reshape(-1, 2), t.replicates.reshape(boot.n_boot, -1, 2)
        chi2, df, p = _outcome_test(frame, S.LABEL, cols, config)
        row = {"attribute": " × ".join(cols), "n_attributes": len(cols), "n_images": int(obs.sum()),
               "chi2": chi2, "df": df, "p_value": p, "cramers_v": float(cramers_v(obs))}
        row["v_low"], row["v_high"] = interval(cramers_v(rep))
        row.update(attribute_baseline(frame, cols, boot, boot.seed))
        rows.append(row)
    return pd.DataFrame(rows)


def age_trend(frame: pd.DataFrame, per_years: float = 10.0) -> dict[str, float]:
    """Odds ratio of `malade` per `per_years` of age (logistic GLM, cluster-robust CI, patients)."""
    from statsmodels.genmod import families
    from statsmodels.genmod.generalized_linear_model import GLM

    f = frame[frame[S.AGE].notna()]
    x = np.column_stack([np.ones(len(f)), f[S.AGE].to_numpy(float) / per_years])
    clusters = pd.factorize(f[S.PATIENT])[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = GLM(f[S.LABEL].to_numpy(float), x, family=families.Binomial()).fit(
            cov_type="cluster", cov_kwds={"groups": clusters})
    low, high = np.exp(res.conf_int(alpha=ALPHA)[1])
    return {"per_years": per_years, "odds_ratio": float(np.exp(res.params[1])), "low": float(low),
            "high": float(high), "p_value": float(res.pvalues[1]), "n_images": len(f)}


def attribute_associations(frame: pd.DataFrame, config: StudyConfig,
                           boot: PatientBootstrap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cramér's V (with CI and a cluster test) of each pair of attributes, and their composition.

    Returns (associations, composition); composition gives, within each group of `attr_a`, the
    share of images in each group of `attr_b` (e.g. the share of AP views among the 60+).
    """
    assoc, comp = [], []
    for a, b in itertools.combinations(config.sensitive_attributes, 2):
        t = tables(frame, [a, b], boot, config=config)
        low, high = interval(cramers_v(t.replicates))
        binary = next((c for c in (b, a) if len(levels(frame, c, config)) == 2), None)
        chi2, df, p = (_outcome_test(frame, binary, [a if binary == b else b], config) if binary
                       else (np.nan, 0, np.nan))
        assoc.append({"attr_a": a, "attr_b": b, "n_images": int(t.observed.sum()),
                      "cramers_v": float(cramers_v(t.observed)), "v_low": float(low), "v_high": float(high),
                      "chi2": chi2, "df": df, "p_value": p})
        comp.append(_composition(t, a, b))
    return pd.DataFrame(assoc), pd.concat(comp, ignore_index=True)


def _composition(t: Tables, a: str, b: str) -> pd.DataFrame:
    share, share_rep = _div(t.observed, t.observed.sum(axis=-1, keepdims=True)), _div(
        t.replicates, t.replicates.sum(axis=-1, keepdims=True))
    low, high = interval(share_rep)
    ga, gb = t.groups
    return pd.DataFrame({"attr_a": a, "group_a": [x for x in ga for _ in gb], "attr_b": b,
                         "group_b": [y for _ in ga for y in gb], "n_images": t.observed.ravel().astype(int),
                         "share": share.ravel(), "low": low.ravel(), "high": high.ravel()})
