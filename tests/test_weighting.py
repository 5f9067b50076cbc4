"""Weighting registry: exact properties of each scheme, on the real NIH subset and generated frames."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import StudyConfig
from pipeline.data import folder
from pipeline.data import schema as S
from pipeline.fairness import weighting as W

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NIH_SUBSET = SHARED / "nih1000-64px"
CONFIG = StudyConfig()
ATTRS = list(CONFIG.sensitive_attributes)  # sex, age_band, view


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def nih_train(tmp_path_factory) -> pd.DataFrame:
    """Train rows of the real NIH subset, canonical columns derived by pipeline.data."""
    if not (NIH_SUBSET / "metadata.csv").exists():
        pytest.skip(f"real NIH subset not found at {NIH_SUBSET}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAIRCXR_CACHE", str(tmp_path_factory.mktemp("cache")))
        report = folder.check_dataset(NIH_SUBSET, CONFIG)
    assert report.frame is not None, report.format()
    return report.frame[report.frame[S.SPLIT] == "train"].reset_index(drop=True)


def generated(n: int = 3000, seed: int = 0, missing: float = 0.05) -> pd.DataFrame:
    """Train-like frame: label depends on sex, age band and view; some sensitive values missing."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["M", "F"], n, p=[0.55, 0.45])
    band = pd.Categorical(rng.choice(["0-39", "40-59", "60+"], n, p=[0.3, 0.4, 0.3]),
                          categories=["0-39", "40-59", "60+"], ordered=True)
    view = rng.choice(["PA", "AP"], n, p=[0.6, 0.4])
    logit = -1.3 + 0.5 * (sex == "F") + 0.4 * (np.asarray(band) == "60+") + 0.8 * (view == "AP")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({S.IMAGE: [f"{i:08d}_000.png" for i in range(n)], S.LABEL: y, S.SEX: sex,
                          S.AGE_BAND: band, S.VIEW: view, S.PATIENT: [str(i // 2) for i in range(n)]},
                         index=pd.RangeIndex(100, 100 + n))  # not 0..n-1: weights must keep the index
    for col in (S.SEX, S.AGE_BAND, S.VIEW):
        frame.loc[rng.random(n) < missing, col] = np.nan
    return frame


def erm_proba(train: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A fake first model: informative but wrong on a fair share of rows."""
    rng = np.random.default_rng(seed)
    return np.clip(0.35 * train[S.LABEL].to_numpy() + rng.random(len(train)) * 0.65, 0, 1)


def weighted_positive_rate(train: pd.DataFrame, w: pd.Series, attributes: list[str]) -> pd.Series:
    """Weighted P(y = 1 | g) for each cell of `attributes` (rows with a missing value left out)."""
    known = train[attributes].notna().all(axis=1)
    t = train[known].assign(w=w[known], wy=w[known] * train.loc[known, S.LABEL])
    g = t.groupby([t[a].astype(str) for a in attributes])[["w", "wy"]].sum()
    return g["wy"] / g["w"]


# ---------------------------------------------------------------- every method


@pytest.mark.parametrize("method", sorted(W.WEIGHTINGS))
@pytest.mark.parametrize("source", ["nih", "generated"])
def test_weights_positive_finite_mean_one(method, source, request):
    train = request.getfixturevalue("nih_train") if source == "nih" else generated()
    w = W.compute_weights(method, train, [CONFIG.weighting.attribute], all_attributes=ATTRS,
                          train_proba=erm_proba(train))
    assert isinstance(w, pd.Series) and w.index.equals(train.index)
    assert np.all(np.isfinite(w)) and (w > 0).all()
    assert w.mean() == pytest.approx(1.0, abs=1e-12)


def test_registry_entries_document_formula_and_reference():
    for name, m in W.WEIGHTINGS.items():
        assert m.name == name and m.label_fr and m.formula
        assert name == "uniform" or m.reference, name
        doc = m.fn.__doc__ or ""
        assert "Formula" in doc and "Reference" in doc, f"{name}: docstring lacks formula/reference"


def test_adding_a_method_is_one_decorated_function():
    @W.register("_test_double_positives", "Test", r"w = 1 + y")
    def _double(train, attributes, **_):
        return 1.0 + train[S.LABEL].to_numpy()

    try:
        train = generated(200)
        w = W.compute_weights("_test_double_positives", train, ["sex"])
        y = train[S.LABEL].to_numpy()
        assert w[y == 1].iloc[0] / w[y == 0].iloc[0] == pytest.approx(2.0)
    finally:
        del W.WEIGHTINGS["_test_double_positives"]


def test_invalid_weights_and_unknown_names_are_refused():
    train = generated(100)
    with pytest.raises(ValueError, match="unknown weighting"):
        W.compute_weights("nope", train, ["sex"])
    with pytest.raises(ValueError, match="not in the training frame"):
        W.compute_weights("group_balanced", train, ["ethnicity"])
    W.register("_test_zero", "Test", "w = 0")(lambda train, attributes, **_: np.zeros(len(train)))
    try:
        with pytest.raises(ValueError, match="invalid weights"):
            W.compute_weights("_test_zero", train, ["sex"])
    finally:
        del W.WEIGHTINGS["_test_zero"]


# ---------------------------------------------------------------- exact properties


@pytest.mark.parametrize("source", ["nih", "generated"])
def test_reweighing_makes_label_and_group_exactly_independent(source, request):
    train = request.getfixturevalue("nih_train") if source == "nih" else generated()
    w = W.compute_weights("reweighing", train, ["sex"])
    rates = weighted_positive_rate(train, w, ["sex"])
    known = train["sex"].notna()
    overall = train.loc[known, S.LABEL].mean()
    assert len(rates) == 2
    assert np.abs(rates - overall).max() < 1e-9
    raw = weighted_positive_rate(train, pd.Series(1.0, index=train.index), ["sex"])
    assert np.ptp(raw) > 0.01  # the raw rates did differ: the test can fail


@pytest.mark.parametrize("source", ["nih", "generated"])
def test_intersectional_reweighing_exact_on_every_cell(source, request):
    train = request.getfixturevalue("nih_train") if source == "nih" else generated()
    w = W.compute_weights("reweighing_intersectional", train, ["sex"], all_attributes=ATTRS)
    known = train[ATTRS].notna().all(axis=1)
    cells = train[known].groupby([train.loc[known, a].astype(str) for a in ATTRS])[S.LABEL]
    both = cells.nunique() == 2  # a one-class cell cannot be made independent of the label
    rates = weighted_positive_rate(train, w, ATTRS)[both]
    overall = train.loc[known, S.LABEL].mean()
    assert len(rates) >= (6 if source == "nih" else 12)
    assert np.abs(rates - overall).max() < 1e-9
    single = weighted_positive_rate(train, W.compute_weights("reweighing", train, ["sex"]), ATTRS)[both]
    assert np.abs(single - overall).max() > 0.02  # sex-only reweighing leaves the cells dependent


def test_kamiran_calders_formula_cell_by_cell():
    train = generated(missing=0.0)
    raw = W.kamiran_calders(train[S.LABEL], W.group_keys(train, ["sex"]))
    n = len(train)
    for (g, y), idx in train.groupby(["sex", S.LABEL]).groups.items():
        p_g = (train["sex"] == g).mean()
        p_y = (train[S.LABEL] == y).mean()
        p_gy = len(idx) / n
        assert np.allclose(raw[train.index.get_indexer(idx)], p_g * p_y / p_gy, rtol=1e-12)


def test_class_balanced_equalises_class_totals():
    for train in (generated(), generated(500, seed=3)):
        w = W.compute_weights("class_balanced", train, ["sex"])
        totals = w.groupby(train[S.LABEL]).sum()
        assert totals[0] == pytest.approx(totals[1], rel=1e-12)
        assert train[S.LABEL].mean() != pytest.approx(0.5, abs=0.02)


def test_group_and_cell_balanced_equalise_totals():
    train = generated()
    known = train["sex"].notna()
    w = W.compute_weights("group_balanced", train, ["sex"])
    totals = w[known].groupby(train.loc[known, "sex"]).sum()
    assert totals.max() == pytest.approx(totals.min(), rel=1e-12)
    w = W.compute_weights("group_class_balanced", train, ["sex"])
    totals = w[known].groupby([train.loc[known, "sex"], train.loc[known, S.LABEL]]).sum()
    assert len(totals) == 4 and totals.max() == pytest.approx(totals.min(), rel=1e-12)


def test_missing_group_gets_the_weight_without_the_group():
    train = generated(missing=0.1)
    missing = train["sex"].isna()
    y = train[S.LABEL]
    for method in ("group_balanced", "reweighing"):  # ignoring the group: uniform
        w = W.compute_weights(method, train, ["sex"])
        assert np.ptp(w[missing]) < 1e-12, method
    w = W.compute_weights("group_class_balanced", train, ["sex"])  # ignoring the group: class-balanced
    n1, n0 = (y == 1).sum(), (y == 0).sum()
    assert np.ptp(w[missing & (y == 1)]) < 1e-12 and np.ptp(w[missing & (y == 0)]) < 1e-12
    assert w[missing & (y == 1)].iloc[0] / w[missing & (y == 0)].iloc[0] == pytest.approx(n0 / n1, rel=1e-12)


@pytest.mark.parametrize("beta", [None, 0.99, 0.9999])
def test_effective_number_matches_formula(beta):
    train = generated(2000, seed=1)
    w = W.compute_weights("effective_number", train, ["sex"], **({} if beta is None else {"beta": beta}))
    y = train[S.LABEL].to_numpy()
    b = 1 - 1 / len(y) if beta is None else beta
    per_class = {c: (1 - b) / (1 - b ** (y == c).sum()) for c in (0, 1)}
    expected = np.array([per_class[c] for c in y])
    assert np.allclose(w.to_numpy(), expected / expected.mean(), rtol=1e-12)


def test_effective_number_sits_between_uniform_and_inverse_frequency():
    train = generated(2000, seed=1)
    y = train[S.LABEL]
    ratio = {m: (lambda w: w[y == 0].iloc[0] / w[y == 1].iloc[0])(W.compute_weights(m, train, ["sex"]))
             for m in ("uniform", "effective_number", "class_balanced")}
    assert ratio["uniform"] < ratio["effective_number"] < ratio["class_balanced"] or \
        ratio["uniform"] > ratio["effective_number"] > ratio["class_balanced"]


@pytest.mark.parametrize("threshold", [0.5, 0.3, "balanced"])
def test_jtt_upweights_exactly_the_misclassified_rows(threshold):
    train = generated(1000, seed=2)
    proba = erm_proba(train, seed=5)
    w = W.compute_weights("jtt", train, ["sex"], train_proba=proba, jtt_upweight=7.0, jtt_threshold=threshold)
    y = train[S.LABEL].to_numpy()
    t = W.balanced_threshold(y, proba) if threshold == "balanced" else threshold
    wrong = (proba >= t).astype(int) != y
    assert 0 < wrong.sum() < len(y)
    assert np.ptp(w[wrong]) < 1e-12 and np.ptp(w[~wrong]) < 1e-12
    assert w[wrong].iloc[0] / w[~wrong].iloc[0] == pytest.approx(7.0, rel=1e-12)


def test_jtt_balanced_threshold_maximises_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    train = generated(800, seed=4)
    y, proba = train[S.LABEL].to_numpy(), erm_proba(train) ** 2  # skewed scores: 0.5 is a poor cut
    t = W.balanced_threshold(y, proba)
    best = balanced_accuracy_score(y, proba >= t)
    assert best >= max(balanced_accuracy_score(y, proba >= c) for c in np.linspace(0, 1, 101)) - 1e-12


def test_jtt_needs_the_first_models_probabilities():
    train = generated(100)
    with pytest.raises(ValueError, match="train_proba"):
        W.compute_weights("jtt", train, ["sex"])
    with pytest.raises(ValueError, match="one per train row"):
        W.compute_weights("jtt", train, ["sex"], train_proba=np.full(99, 0.5))
    assert W.WEIGHTINGS["jtt"].needs == ("train_proba",)


def test_effective_sample_size_and_weighted_prevalence():
    train = generated(missing=0.0)
    assert W.effective_sample_size(np.ones(50)) == pytest.approx(50)
    w = W.compute_weights("reweighing", train, ["sex"])
    assert W.effective_sample_size(w) < len(train)
    table = W.weighted_prevalence(train, w, "sex")
    assert np.ptp(table["weighted_prevalence"]) < 1e-9 and np.ptp(table["prevalence"]) > 0.01


# ---------------------------------------------------------------- weights CSV for the course's script


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_write_weights_csv_copies_and_never_touches_the_source(nih_train, tmp_path):
    source = NIH_SUBSET / "metadata.csv"
    before = _digest(source)
    w = W.compute_weights("reweighing", nih_train, ["sex"])
    out = W.write_weights_csv(source, nih_train, w, CONFIG.weighting.weights_col, tmp_path / "meta_w.csv")
    assert _digest(source) == before
    copy = pd.read_csv(out, dtype={CONFIG.weighting.weights_col: float})
    original = pd.read_csv(source)
    pd.testing.assert_frame_equal(copy.drop(columns=CONFIG.weighting.weights_col), original)
    by_image = copy.set_index(S.IMAGE)[CONFIG.weighting.weights_col]
    assert np.allclose(by_image.loc[nih_train[S.IMAGE]].to_numpy(), w.to_numpy(), rtol=1e-15)
    others = ~copy[S.IMAGE].isin(nih_train[S.IMAGE])
    assert others.any() and (copy.loc[others, CONFIG.weighting.weights_col] == 1.0).all()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary file left


def test_write_weights_csv_keeps_separator_and_refuses_overwrite(tmp_path):
    train = generated(6, missing=0.0)
    source = tmp_path / "metadata.csv"
    meta = pd.DataFrame({S.IMAGE: [*train[S.IMAGE], "valid.png"], "Patient Age": ["061"] * 7})
    meta.to_csv(source, sep=";", index=False)
    before = source.read_bytes()
    w = pd.Series(np.arange(1.0, 7.0), index=train.index)
    out = W.write_weights_csv(source, train, w, "POIDS", tmp_path / "out.csv")
    text = out.read_text()
    assert text.splitlines()[0] == f"{S.IMAGE};Patient Age;POIDS" and ";061;" in text  # cells kept as text
    assert source.read_bytes() == before
    with pytest.raises(ValueError, match="refusing to overwrite"):
        W.write_weights_csv(source, train, w, "POIDS", source)
    assert source.read_bytes() == before


# ---------------------------------------------------------------- the rows a model is fitted on


@pytest.mark.parametrize("mode", ["last_layer", "full"])
def test_weights_by_part_equalise_prevalence_on_the_rows_each_model_is_fitted_on(nih_train, mode):
    """Reweighing computed on every train row and applied to the heads' quarter leaves the groups'
    weighted prevalence unequal there; computed on each part's own rows, it is equal in each part."""
    from pipeline.config import TrainingConfig
    from pipeline.model.training import protocol_roles

    roles = protocol_roles(nih_train, TrainingConfig(mode=mode), seed=0)
    weights = W.weights_by_part("reweighing", nih_train, roles, ["sex"])
    on_all_rows = W.compute_weights("reweighing", nih_train, ["sex"])
    for part in ("fit", "inner_val"):
        rows = roles == part
        assert np.ptp(weighted_positive_rate(nih_train[rows], weights[rows], ["sex"])) < 1e-9, part
        assert weights[rows].mean() == pytest.approx(1.0)
    fit = roles == "fit"
    assert np.ptp(weighted_positive_rate(nih_train[fit], on_all_rows[fit], ["sex"])) > 0.005  # the old way
    assert (weights[roles == "backbone"] == 1).all() and (mode == "last_layer") == (roles == "backbone").any()


def test_weights_by_part_cut_jtt_context_to_each_part():
    train = generated(600, seed=5)
    roles = np.where(np.arange(len(train)) % 4 == 0, "inner_val", np.where(np.arange(len(train)) % 4 == 1,
                                                                          "backbone", "fit"))
    proba = erm_proba(train, seed=5)
    weights = W.weights_by_part("jtt", train, roles, ["sex"], train_proba=proba, jtt_threshold=0.5)
    wrong = (proba >= 0.5).astype(int) != train[S.LABEL].to_numpy()
    for part in ("fit", "inner_val"):
        rows = roles == part
        part_weights = weights[rows].to_numpy()
        assert np.ptp(part_weights[wrong[rows]]) < 1e-12 and np.ptp(part_weights[~wrong[rows]]) < 1e-12
        assert part_weights[wrong[rows]][0] == pytest.approx(W.JTT_UPWEIGHT * part_weights[~wrong[rows]][0])
    with pytest.raises(ValueError, match="one part per train row"):
        W.weights_by_part("uniform", train, roles[:-1], ["sex"])


# ---------------------------------------------------------------- diagnostics


def test_diagnostics_name_weightings_that_are_uniform_on_a_class_balanced_set():
    train = generated(2000, seed=4, missing=0.0)
    positives = train[train[S.LABEL] == 1].iloc[:600]
    negatives = train[train[S.LABEL] == 0].iloc[:600]
    balanced = pd.concat([positives, negatives]).reset_index(drop=True)  # as the course's subsets are
    methods = ["uniform", "class_balanced", "effective_number", "group_balanced", "reweighing"]
    weights = {m: W.compute_weights(m, balanced, ["sex"]) for m in methods}
    d = W.diagnostics(balanced, weights, "sex").set_index("method")
    assert d.loc["class_balanced", "cv"] < 1e-12 and d.loc["effective_number", "cv"] < 1e-12
    assert d.loc[["uniform", "class_balanced", "effective_number"], "nearly_uniform"].all()
    assert d.loc["class_balanced", "ess"] == pytest.approx(len(balanced))
    # reweighing makes the weighted prevalence the same in every group (Kamiran & Calders)
    assert d.loc["reweighing", "prevalence:F"] == pytest.approx(d.loc["reweighing", "prevalence:M"])
    assert d.loc["uniform", "prevalence:F"] == pytest.approx(balanced.loc[balanced["sex"] == "F", S.LABEL].mean())
    assert d.loc["reweighing", "ess"] < len(balanced) and not d.loc["reweighing", "nearly_uniform"]
    fitted = np.arange(len(balanced)) % 2 == 0  # only the rows a head is fitted on
    part = W.diagnostics(balanced, weights, "sex", fitted).set_index("method")
    assert (part["n"] == fitted.sum()).all()


def test_group_weighting_citations_match_the_methods():
    assert W.WEIGHTINGS["group_class_balanced"].reference == "idrissi2022"  # Idrissi et al.'s RWG: group x class
    assert W.WEIGHTINGS["group_balanced"].reference != "idrissi2022"
