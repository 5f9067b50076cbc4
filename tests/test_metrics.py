"""Metrics: equal to an independent scikit-learn / fairlearn computation; soft decisions as
expectations; undefined groups as NaN; a fast patient bootstrap equal to MetricFrame at the unit
resample; cluster-aware and paired intervals. Predictions are generated (seeded), no training."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import balanced_accuracy_score, precision_score, recall_score, roc_auc_score

from pipeline.data import schema as S
from pipeline.fairness import metrics as M
from pipeline.report import charts

BANDS = ["0-39", "40-59", "60+"]


def make_preds(n_patients: int = 400, seed: int = 0, soft: bool = False, missing: float = 0.0,
               ties: bool = False, images: tuple[int, int] = (1, 4)) -> pd.DataFrame:
    """Predictions frame: per-patient label and sex, group-dependent quality of the scores."""
    rng = np.random.default_rng(seed)
    per = rng.integers(images[0], images[1] + 1, n_patients)
    pat = np.repeat(np.arange(n_patients), per)
    n = len(pat)
    sex = np.where(rng.random(n_patients) < 0.45, "F", "M")[pat]
    band = pd.Categorical(rng.choice(BANDS, n_patients)[pat], categories=BANDS, ordered=True)
    y = (rng.random(n) < np.where(sex == "F", 0.35, 0.5)).astype(int)
    signal = np.where(sex == "F", 0.25, 0.4)
    proba = np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1)
    if ties:
        proba = np.round(proba, 1)
    decision = (proba >= 0.5).astype(float)
    if soft:
        decision = np.clip(proba + rng.normal(0, 0.2, n), 0, 1)
    frame = pd.DataFrame({S.IMAGE: [f"{i:08d}.png" for i in range(n)], S.LABEL: y, S.PROBA: proba,
                          M.DECISION: decision, S.PATIENT: pat.astype(str), S.SEX: sex, S.AGE_BAND: band})
    if missing:
        frame.loc[rng.random(n) < missing, S.SEX] = np.nan
    return frame


def close(a: float, b: float, tol: float = 1e-12) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= tol


# ---------------------------------------------------------------- equal to scikit-learn / fairlearn


@pytest.mark.parametrize("attribute", [S.SEX, S.AGE_BAND])
def test_point_and_group_metrics_equal_sklearn_and_fairlearn(attribute):
    p = make_preds(seed=1)
    y, d, s = p[S.LABEL].to_numpy(), p[M.DECISION].to_numpy().astype(int), p[S.PROBA].to_numpy()
    g = p[attribute].astype(str).to_numpy()
    table = M.group_metrics(p, attribute)
    assert list(table.index) == (["F", "M"] if attribute == S.SEX else BANDS)
    baccs = {}
    for group in table.index:
        m = g == group
        row = table.loc[group]
        assert close(row["tpr"], recall_score(y[m], d[m]))
        assert close(row["fpr"], 1 - recall_score(y[m], d[m], pos_label=0))
        assert close(row["fnr"], 1 - recall_score(y[m], d[m]))
        assert close(row["precision"], precision_score(y[m], d[m]))
        assert close(row["selection_rate"], d[m].mean())
        baccs[group] = balanced_accuracy_score(y[m], d[m])
        assert close(row["balanced_accuracy"], baccs[group])
        assert close(row["auc"], roc_auc_score(y[m], s[m]))
        assert row["n"] == m.sum() and row["n_patients"] == p.loc[m, S.PATIENT].nunique()
    point = M.point_metrics(p, attribute)
    assert close(point["balanced_accuracy"], balanced_accuracy_score(y, d))
    assert close(point["auc"], roc_auc_score(y, s))
    assert close(point["dp_diff"], demographic_parity_difference(y, d, sensitive_features=g))
    assert close(point["dp_ratio"], demographic_parity_ratio(y, d, sensitive_features=g))
    assert close(point["eo_diff"], equalized_odds_difference(y, d, sensitive_features=g))
    assert close(point["eopp_diff"], equal_opportunity_difference(y, d, sensitive_features=g))
    assert close(point["worst_group_bacc"], min(baccs.values()))
    assert point["eo_diff"] > 0.01  # the groups do differ: the comparisons above are not 0 == 0
    assert set(point) == set(M.SUMMARY)


def _ece_by_hand(y: np.ndarray, s: np.ndarray) -> float:
    total = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        m = (s >= lo) & ((s < hi) if b < 9 else (s <= hi))
        if m.any():
            total += m.sum() / len(y) * abs(y[m].mean() - s[m].mean())
    return total


def test_calibration_error_per_group_and_gap():
    p = make_preds(seed=2)
    table = M.group_metrics(p, S.SEX)
    by_hand = {g: _ece_by_hand(p.loc[p[S.SEX] == g, S.LABEL].to_numpy(), p.loc[p[S.SEX] == g, S.PROBA].to_numpy())
               for g in ("F", "M")}
    for g, v in by_hand.items():
        assert close(table.loc[g, "ece"], v)
    point = M.point_metrics(p, S.SEX)
    assert close(point["ece_gap"], abs(by_hand["F"] - by_hand["M"]))
    assert close(point["ece"], _ece_by_hand(p[S.LABEL].to_numpy(), p[S.PROBA].to_numpy()))


def test_soft_decisions_are_expectations():
    p = make_preds(seed=3, soft=True)
    assert not np.isin(p[M.DECISION], (0, 1)).all()
    table = M.group_metrics(p, S.SEX)
    for g in ("F", "M"):
        q = p[p[S.SEX] == g]
        y, d = q[S.LABEL].to_numpy(), q[M.DECISION].to_numpy()
        tpr, fpr = (d * y).sum() / y.sum(), (d * (1 - y)).sum() / (1 - y).sum()
        assert close(table.loc[g, "tpr"], tpr) and close(table.loc[g, "fpr"], fpr)
        assert close(table.loc[g, "precision"], (d * y).sum() / d.sum())
        assert close(table.loc[g, "selection_rate"], d.mean())
        assert close(table.loc[g, "balanced_accuracy"], (tpr + 1 - fpr) / 2)
        assert close(table.loc[g, "auc"], roc_auc_score(y, q[S.PROBA]))  # the score's AUC is unchanged


def test_soft_decision_one_half_gives_tpr_equal_fpr_one_half():
    p = make_preds(seed=4).assign(**{M.DECISION: 0.5})
    point = M.point_metrics(p, S.SEX)
    assert point["tpr"] == pytest.approx(0.5) and point["fpr"] == pytest.approx(0.5)
    assert point["balanced_accuracy"] == pytest.approx(0.5)
    assert point["dp_diff"] == pytest.approx(0) and point["eo_diff"] == pytest.approx(0)
    assert point["dp_ratio"] == pytest.approx(1)
    table = M.group_metrics(p, S.SEX)
    assert np.allclose(table[["tpr", "fpr", "fnr", "selection_rate"]], 0.5)


def test_invalid_decisions_are_refused():
    p = make_preds(50)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.point_metrics(p.assign(**{M.DECISION: p[S.PROBA] * 2}), S.SEX)
    with pytest.raises(KeyError, match="decision"):
        M.point_metrics(p.drop(columns=M.DECISION), S.SEX)


# ---------------------------------------------------------------- undefined values


def _with_one_class_group(p: pd.DataFrame) -> pd.DataFrame:
    extra = p[p[S.LABEL] == 0].head(6).copy()
    extra[S.IMAGE] = [f"x{i}.png" for i in range(len(extra))]
    extra[S.PATIENT] = ["x1", "x1", "x2", "x2", "x3", "x3"][: len(extra)]
    extra[S.SEX] = "X"
    lone = p.head(1).assign(**{S.IMAGE: "lone.png", S.PATIENT: "lone", S.SEX: "L"})
    return pd.concat([p, extra, lone], ignore_index=True)


def test_group_with_one_class_or_one_image_is_nan_not_a_crash():
    """With the smallest threshold (one image of a class) only truly empty classes are undefined."""
    p = _with_one_class_group(make_preds(seed=5))
    table = M.group_metrics(p, S.SEX, min_per_class=1)
    assert np.isnan(table.loc["X", ["tpr", "fnr", "balanced_accuracy", "auc"]].astype(float)).all()
    assert np.isfinite(table.loc["X", "fpr"]) and np.isfinite(table.loc["X", "selection_rate"])
    assert np.isnan(table.loc["L", "auc"]) and table.loc["L", "n"] == 1
    point = M.point_metrics(p, S.SEX, min_per_class=1)
    assert np.isfinite(point["eopp_diff"])  # defined on the groups where TPR is defined
    fast = M.point_metrics_fast(p, S.SEX, min_per_class=1)
    assert all(close(point[k], fast[k]) for k in M.SUMMARY)
    boot = M.bootstrap_group_metrics(p, S.SEX, n_boot=100, min_per_class=1).set_index(["group", "metric"])
    assert np.isnan(boot.loc[("X", "tpr"), ["estimate", "low", "high"]].astype(float)).all()
    assert boot.loc[("X", "tpr"), "defined"] == 0
    assert np.isfinite(boot.loc[("F", "tpr"), "low"])
    assert M.bootstrap_metrics(p, S.SEX, n_boot=50, min_per_class=1)["estimate"].notna().sum() >= 10


def test_single_group_or_no_score_gives_nan_gaps():
    p = make_preds(seed=6)
    point = M.point_metrics(p.assign(**{S.SEX: "F"}), S.SEX)
    assert np.isnan([point[k] for k in ("dp_diff", "dp_ratio", "eopp_diff", "eo_diff", "ece_gap")]).all()
    no_score = M.point_metrics(p, S.SEX, score_col=None)
    assert np.isnan([no_score[k] for k in ("auc", "ece", "ece_gap")]).all()
    assert np.isfinite(no_score["eo_diff"])
    boot = M.bootstrap_metrics(p, S.SEX, n_boot=50, score_col=None).set_index("metric")
    assert np.isnan(boot.loc["auc", ["estimate", "low", "high"]].astype(float)).all()


# ---------------------------------------------------------------- fast path == MetricFrame


@pytest.mark.parametrize("kind", ["hard", "soft", "missing", "ties", "no_score", "age_band"])
def test_fast_path_equals_metricframe(kind):
    p = make_preds(seed=7, soft=kind == "soft", missing=0.1 if kind == "missing" else 0.0, ties=kind == "ties")
    attribute = S.AGE_BAND if kind == "age_band" else S.SEX
    score_col = None if kind == "no_score" else S.PROBA
    slow = M.point_metrics(p, attribute, score_col=score_col)
    fast = M.point_metrics_fast(p, attribute, score_col=score_col)
    bad = {k: (slow[k], fast[k]) for k in M.SUMMARY if not close(slow[k], fast[k], 1e-12)}
    assert not bad


def test_a_replicate_equals_metricframe_on_the_resampled_frame():
    """The matrix-product replicate = MetricFrame on the frame with each patient repeated as drawn."""
    p = make_preds(120, seed=8, soft=True, ties=True, missing=0.05)
    design = M._design(p, S.SEX, M.DECISION, S.PROBA)
    patients = np.unique(p[S.PATIENT].astype(str))
    draws = next(M._draw_chunks(len(patients), len(p), 3, seed=11))
    reps = M._replicate(design, draws)
    for b in range(3):
        parts = [p[p[S.PATIENT] == pid].assign(**{S.PATIENT: f"{pid}#{k}"})
                 for pid, c in zip(patients, draws[b].astype(int), strict=True) for k in range(c)]
        resampled = pd.concat(parts, ignore_index=True)
        point = M.point_metrics(resampled, S.SEX)
        bad = {k: (point[k], reps[k][b]) for k in M.SUMMARY if not close(point[k], reps[k][b], 1e-10)}
        assert not bad


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_table_seed_and_reproducibility():
    p = make_preds(seed=9)
    a = M.bootstrap_metrics(p, S.SEX, n_boot=200, seed=3)
    assert list(a.columns[:4]) == ["metric", "estimate", "low", "high"] and list(a["metric"]) == list(M.SUMMARY)
    assert a.attrs["seed"] == 3 and a.attrs["n_boot"] == 200 and a.attrs["unit"] == S.PATIENT
    pd.testing.assert_frame_equal(a, M.bootstrap_metrics(p, S.SEX, n_boot=200, seed=3))
    assert not a["low"].equals(M.bootstrap_metrics(p, S.SEX, n_boot=200, seed=4)["low"])
    ok = a.dropna(subset=["low"])
    assert len(ok) == len(M.SUMMARY) and (ok["low"] <= ok["estimate"] + 1e-12).all()
    assert (ok["estimate"] <= ok["high"] + 1e-12).all() and (ok["high"] - ok["low"] > 0).all()
    point = M.point_metrics(p, S.SEX)
    assert all(close(point[m], e) for m, e in zip(a["metric"], a["estimate"], strict=True))


def test_patient_bootstrap_is_wider_than_image_bootstrap_for_correlated_images():
    rng = np.random.default_rng(10)
    p = make_preds(150, seed=10, images=(8, 8))
    # images of a patient share the label and whether the model gets them right
    first = p.groupby(S.PATIENT)[S.LABEL].transform("first")
    right = p[S.PATIENT].map(dict(zip(p[S.PATIENT].unique(), rng.random(150) < 0.75, strict=True)))
    p = p.assign(**{S.LABEL: first, M.DECISION: np.where(right, first, 1 - first).astype(float)})
    width = {}
    for unit in (S.PATIENT, None):
        b = M.bootstrap_metrics(p, S.SEX, n_boot=400, seed=0, cluster_col=unit).set_index("metric")
        width[unit] = b["high"] - b["low"]
    ratio = width[S.PATIENT]["balanced_accuracy"] / width[None]["balanced_accuracy"]
    assert ratio > 2  # 8 copies of each patient: about sqrt(8) = 2.8 times wider
    independent = make_preds(400, seed=10, images=(1, 1))
    w = [M.bootstrap_metrics(independent, S.SEX, n_boot=400, cluster_col=u).set_index("metric")
         .eval("high - low")["balanced_accuracy"] for u in (S.PATIENT, None)]
    assert w[0] / w[1] == pytest.approx(1, abs=0.2)  # one image per patient: the same thing


def test_bootstrap_group_metrics_long_table():
    p = make_preds(seed=12)
    g = M.bootstrap_group_metrics(p, S.AGE_BAND, n_boot=100)
    assert list(dict.fromkeys(g["group"])) == BANDS
    assert set(g["metric"]) == set(M.GROUP_METRICS)
    tpr = g[g["metric"] == "tpr"].set_index("group")
    table = M.group_metrics(p, S.AGE_BAND)
    assert np.allclose(tpr["estimate"], table.loc[BANDS, "tpr"])
    assert ((tpr["low"] <= tpr["estimate"]) & (tpr["estimate"] <= tpr["high"])).all()


def test_bootstrap_500_replicates_is_fast():
    p = make_preds(500, seed=13)  # about 1,250 images
    t0 = time.perf_counter()
    M.bootstrap_metrics(p, S.SEX, n_boot=500)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    M.bootstrap_metrics(p, S.SEX, n_boot=500, score_col=None)
    no_score = time.perf_counter() - t0
    print(f"\nbootstrap_metrics, 500 replicates, {len(p)} images: {one:.2f} s (with AUC/ECE), "
          f"{no_score:.2f} s (decisions only)")
    assert one < 3 and no_score < 3


# ---------------------------------------------------------------- paired differences, comparison


def test_paired_difference_with_itself_is_exactly_zero():
    p = make_preds(seed=14, soft=True)
    shuffled = p.sample(frac=1, random_state=0)  # same images, another row order
    d = M.paired_difference(p, shuffled, S.SEX, n_boot=200).set_index("metric")
    assert (d["diff"] == 0).all() and (d["low"] == 0).all() and (d["high"] == 0).all()
    assert not d["significant"].any()


def test_paired_interval_detects_a_real_difference_and_is_narrower_than_unpaired():
    p = make_preds(600, seed=15)
    near = (p[S.LABEL] == 1) & p[S.PROBA].between(0.45, 0.5)  # a few more true positives
    better = p.assign(**{M.DECISION: np.where(near, 1.0, p[M.DECISION])})
    d = M.paired_difference(better, p, S.SEX, n_boot=300, tested=("tpr", "balanced_accuracy")).set_index("metric")
    assert d.loc["tpr", "diff"] > 0 and d.loc["tpr", "significant"]  # after Holm over the two tested metrics
    a = M.bootstrap_metrics(better, S.SEX, n_boot=300, seed=1).set_index("metric")
    b = M.bootstrap_metrics(p, S.SEX, n_boot=300, seed=2).set_index("metric")
    unpaired = np.hypot((a["high"] - a["low"]) / 2, (b["high"] - b["low"]) / 2)["balanced_accuracy"]
    paired = ((d["high"] - d["low"]) / 2)["balanced_accuracy"]
    assert paired < 0.5 * unpaired


def test_paired_difference_refuses_different_images():
    p = make_preds(100, seed=16)
    with pytest.raises(ValueError, match="same images"):
        M.paired_difference(p, p.iloc[1:], S.SEX, n_boot=10)


def test_compare_methods_rows_equal_bootstrap_and_paired_difference():
    p = make_preds(seed=17)
    methods = {"uniform": p, "strict": p.assign(**{M.DECISION: (p[S.PROBA] >= 0.6).astype(float)}),
               "soft": p.assign(**{M.DECISION: p[S.PROBA]})}
    table = M.compare_methods(methods, S.SEX, baseline="uniform", n_boot=200, seed=5)
    assert table.attrs["baseline"] == "uniform" and table.attrs["seed"] == 5
    for name, preds in methods.items():
        rows = table[table["method"] == name].set_index("metric")
        boot = M.bootstrap_metrics(preds, S.SEX, n_boot=200, seed=5).set_index("metric")
        pd.testing.assert_frame_equal(rows[["estimate", "low", "high"]], boot[["estimate", "low", "high"]])
        diff = M.paired_difference(preds, p, S.SEX, n_boot=200, seed=5).set_index("metric")
        assert np.allclose(rows["diff"], diff["diff"], equal_nan=True)
        assert np.allclose(rows["diff_low"], diff["low"], equal_nan=True)
    base = table[table["method"] == "uniform"]
    assert (base["diff"] == 0).all() and not base["significant"].any()
    wide = M.comparison_wide(table)
    assert list(wide["method"]) == list(methods) and "eo_diff_diff_high" in wide.columns
    with pytest.raises(ValueError, match="baseline"):
        M.compare_methods(methods, S.SEX, baseline="missing", n_boot=10)


# ---------------------------------------------------------------- Pareto front and figures


def test_pareto_frontier():
    df = pd.DataFrame({"gap": [0.10, 0.05, 0.05, 0.20, 0.01, np.nan, 0.05],
                       "bacc": [0.80, 0.78, 0.70, 0.85, 0.60, 0.99, 0.78]})
    front = charts.pareto_frontier(df, minimise="gap", maximise="bacc")
    assert list(front) == [True, True, False, True, True, False, True]  # ties stay, NaN never


def test_result_charts_build(tmp_path):
    p = make_preds(seed=18)
    methods = {"uniform": p, "reweighing": p.assign(**{M.DECISION: (p[S.PROBA] >= 0.45).astype(float)})}
    rates = {m: M.bootstrap_group_metrics(q, S.SEX, n_boot=50) for m, q in methods.items()}
    comparison = M.compare_methods(methods, S.SEX, n_boot=50)
    grid = M.comparison_wide(comparison).assign(label=lambda d: d["method"].map(charts.method_label))
    built = [charts.rates_by_group_chart(rates), charts.tradeoff_chart(comparison),
             charts.pareto_chart(grid, color_col="method"), charts.pareto_chart(grid, show_labels=False)]
    for chart in built:
        spec = chart.to_dict()
        assert "Femme" in chart.to_json() or "Uniforme" in chart.to_json()
        assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    assert "Femme" in built[0].to_json() and "Reweighing" in built[1].to_json()


# ---------------------------------------------------------------- small groups


def test_a_rate_needs_min_per_class_images_and_a_gap_is_nan_when_a_defined_group_drops_out():
    p = make_preds(200, seed=21)
    sick_f = p[(p[S.SEX] == "F") & (p[S.LABEL] == 1)]
    small = p.drop(index=sick_f.index[12:])  # F keeps 12 positives: TPR defined at 10, not at 15
    assert np.isfinite(M.group_metrics(small, S.SEX).loc["F", "tpr"])
    assert np.isnan(M.group_metrics(small, S.SEX, min_per_class=15).loc["F", "tpr"])
    assert np.isnan(M.point_metrics(small, S.SEX, min_per_class=15)["tpr_signed"])
    assert M.undefined_groups(small, S.SEX, 15) == [{"group": "F", "class": "positifs", "count": 12, "min": 15,
                                                     "unit": "images"}]
    # with 12 positives, many resamples hold fewer than 10: the gap is NaN there, not a gap over M alone
    design = M._design(small, S.SEX, M.DECISION, S.PROBA)
    reps = M.replicates_of(design, M.draw_counts(design.n_clusters, 300, 0))
    f_undefined = np.isnan(reps["group:tpr"][:, 0])
    assert 0.05 < f_undefined.mean() < 0.95
    assert np.isnan(reps["eopp_diff"][f_undefined]).all() and np.isfinite(reps["eopp_diff"][~f_undefined]).all()
    low, _, share = M._interval(reps["eopp_diff"])
    assert share < M.MIN_DEFINED_SHARE and np.isnan(low)  # too often undefined: no interval, said so


def test_a_pareto_chart_of_an_empty_front_still_draws():
    """A front with no eligible rule (every rule degenerate, or every gap n.d.) shows the cloud alone."""
    p = make_preds(seed=19)
    comparison = M.compare_methods({"uniform": p}, S.SEX, n_boot=20)
    grid = M.comparison_wide(comparison).assign(label="Uniforme", frontier_eo_diff=False)
    spec = charts.pareto_chart(grid, frontier_col="frontier_eo_diff").to_dict()
    assert len(spec["layer"]) == 2  # the line and the cloud, no end labels


def _few_patients(patients_per_group: int) -> pd.DataFrame:
    """Women: 12 malades and 40 sains; the 12 malade images come from `patients_per_group` patients. Men: many."""
    rng = np.random.default_rng(0)
    women_sick = pd.DataFrame({S.PATIENT: [f"fs{i % patients_per_group}" for i in range(12)], S.SEX: "F",
                               S.LABEL: 1})
    women_healthy = pd.DataFrame({S.PATIENT: [f"fh{i}" for i in range(40)], S.SEX: "F", S.LABEL: 0})
    men = pd.DataFrame({S.PATIENT: [f"m{i}" for i in range(200)], S.SEX: "M", S.LABEL: rng.integers(0, 2, 200)})
    frame = pd.concat([women_sick, women_healthy, men], ignore_index=True)
    frame[S.PROBA] = np.clip(0.3 + 0.4 * frame[S.LABEL] + rng.normal(0, 0.2, len(frame)), 0, 1)
    frame[M.DECISION] = (frame[S.PROBA] >= 0.5).astype(float)
    return frame


def test_a_rate_needs_patients_not_only_images():
    """Twelve malade images of three women are three observations: their TPR is « n.d. » (min_per_class 10, so at
    least 5 patients); from twelve women it is defined. The bootstrap's fast path applies the same rule."""
    few, many = _few_patients(3), _few_patients(12)
    for frame, defined in ((few, False), (many, True)):
        table = M.group_metrics(frame, S.SEX, min_per_class=10)
        assert np.isfinite(table.loc["F", "tpr"]) == defined and np.isfinite(table.loc["F", "fpr"])
        assert np.isfinite(table.loc["F", "auc"]) == defined
        point, fast = M.point_metrics(frame, S.SEX), M.point_metrics_fast(frame, S.SEX)
        assert np.isfinite(point["eopp_diff"]) == defined
        for key in ("eopp_diff", "fpr_diff", "tpr_signed", "worst_group_tpr"):
            assert point[key] == pytest.approx(fast[key], nan_ok=True), key
    assert M.group_metrics(few, S.SEX).loc["F", "n_patients_positive"] == 3
    boot = M.bootstrap_group_metrics(few, S.SEX, n_boot=50).set_index(["group", "metric"])
    assert np.isnan(boot.loc[("F", "tpr"), ["estimate", "low", "high"]].astype(float)).all()


def test_precision_needs_enough_predicted_positives():
    frame = _few_patients(12)
    frame.loc[frame[S.SEX] == "F", M.DECISION] = 0.0
    frame.loc[frame.index[:4], M.DECISION] = 1.0  # four women predicted malade
    table = M.group_metrics(frame, S.SEX, min_per_class=10)
    assert np.isnan(table.loc["F", "precision"]) and np.isfinite(table.loc["M", "precision"])
