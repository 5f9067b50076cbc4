"""Data chapter: planted biases recovered, cluster-aware intervals, Simpson detector, French text.

Data: the synthetic demo (planted_biases.json says what must be found), the real NIH subset in the
users' layout, and the full official NIH metadata (112,120 images) for the scale test.
"""

from __future__ import annotations

import json
import re
import time
import types
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import pytest
from scipy.stats.contingency import association
from sklearn.metrics import roc_auc_score

from pipeline.config import StudyConfig
from pipeline.data import folder, quality
from pipeline.data import schema as S
from pipeline.fairness import data_analysis, simpson
from pipeline.fairness import data_bias as A
from pipeline.report import data as data_chapter
from pipeline.report import display, style
from pipeline.report import french as fr

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NIH_FULL = SHARED / "nih-metadata" / "Data_Entry_2017_v2020.csv.gz"
NIH_SUBSET = SHARED / "nih1000-64px"
CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "02-data.qmd"
CONFIG = StudyConfig()
NB = fr.NBSP


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Keep the validator's probe memo out of the project cache."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("FAIRCXR_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def demo(tmp_path_factory, cache):
    """A demo dataset of 1,500 patients (tiny images: the metadata is what matters here)."""
    make_demo = pytest.importorskip("pipeline.data.demo").make_demo
    out = make_demo(tmp_path_factory.mktemp("demo") / "data", n_patients=1500, seed=1, image_size=16)
    report = folder.check_dataset(out, CONFIG)
    assert report.frame is not None, report.format()
    planted = json.loads((Path(out) / "planted_biases.json").read_text())
    return types.SimpleNamespace(frame=report.frame, check=report, planted=planted)


@pytest.fixture(scope="module")
def demo_an(demo):
    return data_analysis.analyse(demo.frame, CONFIG, demo.check)


@pytest.fixture(scope="module")
def nih():
    if not NIH_FULL.exists():
        pytest.skip(f"full NIH metadata not found at {NIH_FULL}")
    t0 = time.perf_counter()
    frame, report = A.read_metadata_frame(NIH_FULL, CONFIG)
    an = data_analysis.analyse(frame, CONFIG, report)
    print(f"\nfull NIH ({len(frame)} images): read + analyse in {time.perf_counter() - t0:.1f} s; {an.timings}")
    return an


def _row(df: pd.DataFrame, **where) -> pd.Series:
    mask = np.logical_and.reduce([df[k] == v for k, v in where.items()])
    assert mask.sum() == 1, f"expected one row for {where}, got {mask.sum()}"
    return df[mask].iloc[0]


# ---------------------------------------------------------------- planted biases of the demo


def test_demo_prevalence_rises_with_age(demo, demo_an):
    assert demo.planted["prevalence_by_age_band"]["direction"] == "increasing"
    prev = demo_an.prevalence[demo_an.prevalence["attribute"] == S.AGE_BAND]
    assert list(prev["group"]) == CONFIG.age_band_labels()
    assert prev["prevalence"].is_monotonic_increasing
    oldest = prev.iloc[-1]
    assert oldest["rd_low"] > 0 and oldest["or_low"] > 1
    assert demo_an.age_trend["low"] > 1  # odds ratio per decade, cluster-robust interval


def test_demo_ap_views_are_more_often_sick(demo, demo_an):
    higher = demo.planted["prevalence_by_view"]["higher"]
    row = _row(demo_an.prevalence, attribute=S.VIEW, group=higher)
    assert row["reference"] == "PA" and row["rd_low"] > 0
    assert _row(demo_an.tests, attribute=S.VIEW)["p_value"] < 0.001


def test_demo_simpson_reversal_is_flagged_and_only_it(demo, demo_an):
    planted = demo.planted["simpson"]
    assert (planted["attribute"], planted["stratifier"]) == (S.SEX, S.AGE_BAND)
    assert planted["crude_direction"] == "F<M" and planted["within_direction"] == "F>M"
    crude = _row(demo_an.prevalence, attribute=S.SEX, group="F")
    assert crude["rd_high"] < 0  # crude: women less often sick
    row = _row(demo_an.simpson, attribute=S.SEX, stratifier=S.AGE_BAND)
    assert row["crude_rd_high"] < 0 < row["adj_rd_low"] and row["adj_or_low"] > 1
    assert row["reversal_clear"] and row["verdict"] == "reversal"
    others = demo_an.simpson.drop(index=row.name)
    assert not others["reversal"].any(), others[["attribute", "stratifier", "crude_rd", "adj_rd"]]
    # The mechanism: women are younger, so the oldest (most often sick) band holds few of their images.
    assert row["driver_stratum"] == "60+" and row["driver_share_group"] < row["driver_share_reference"]


def test_simpson_sentence_explains_the_reversal_with_its_numbers(demo_an):
    text = data_chapter.simpson_text(demo_an)
    row = _row(demo_an.simpson, attribute=S.SEX, stratifier=S.AGE_BAND)
    assert "Paradoxe de Simpson" in text and data_chapter.FACT_SENTENCE in text
    for value in (fr.points_ci(row["crude_rd"], row["crude_rd_low"], row["crude_rd_high"]),
                  fr.points_ci(row["adj_rd"], row["adj_rd_low"], row["adj_rd_high"]),
                  fr.percent(row["driver_share_group"]), fr.percent(row["driver_share_reference"])):
        assert value in text


# ---------------------------------------------------------------- estimators against references


def _kidney_stones(copies: int = 4) -> pd.DataFrame:
    """Charig et al. (1986): treatment A (here 'AP') better in both stone sizes, worse overall."""
    cells = [("AP", "M", 81, 87), ("AP", "F", 192, 263), ("PA", "M", 234, 270), ("PA", "F", 55, 80)]
    rows = [(view, sex, int(k < success)) for view, sex, success, n in cells for k in range(n)] * copies
    f = pd.DataFrame(rows, columns=[S.VIEW, S.SEX, S.LABEL])
    return f.assign(**{S.PATIENT: [str(i) for i in range(len(f))], S.SPLIT: "train"})


def test_mantel_haenszel_and_reversal_on_a_textbook_paradox():
    f = _kidney_stones()
    config = CONFIG.replace(sensitive_attributes=(S.VIEW, S.SEX))
    boot = A.patient_bootstrap(f, 500, 0)
    summary, _, _ = simpson.simpson(f, config, boot)
    row = _row(summary, attribute=S.VIEW, stratifier=S.SEX)
    # Hand computation: strata (a, b, c, d) = (cases A, non-cases A, cases B, non-cases B) x 4.
    strata = [(81, 6, 234, 36), (192, 71, 55, 25)]
    strata = [tuple(4 * x for x in s) for s in strata]
    w = [(a + b) * (c + d) / (a + b + c + d) for a, b, c, d in strata]
    rd = sum(wk * (a / (a + b) - c / (c + d)) for wk, (a, b, c, d) in zip(w, strata, strict=True)) / sum(w)
    odds = (sum(a * d / (a + b + c + d) for a, b, c, d in strata)
            / sum(b * c / (a + b + c + d) for a, b, c, d in strata))
    assert row["adj_rd"] == pytest.approx(rd) and row["adj_or"] == pytest.approx(odds)
    assert row["crude_rd"] == pytest.approx(273 / 350 - 289 / 350)
    assert row["verdict"] == "reversal" and row["reversal_clear"]


def test_our_pooled_odds_ratio_equals_statsmodels(demo):
    boot = A.patient_bootstrap(demo.frame, 50, 0)
    t = simpson._stratified(demo.frame, S.SEX, ("F", "M"), S.AGE_BAND, boot, CONFIG)
    _, odds = A.mantel_haenszel(t.observed)
    assert float(odds) == pytest.approx(simpson.statsmodels_pooled_or(t.observed), rel=1e-10)


def test_vectorised_bootstrap_tables_equal_explicitly_resampled_data(demo):
    f = demo.frame
    boot = A.patient_bootstrap(f, 5, 3)
    t = A.tables(f, [S.SEX, S.LABEL], boot, config=CONFIG)
    by_patient = {p: g for p, g in f.groupby(S.PATIENT)}
    for b in range(boot.n_boot):
        drawn = [by_patient[p] for p, k in zip(boot.patients, boot.weights[b], strict=True) for _ in range(int(k))]
        resampled = pd.concat(drawn)
        counts = pd.crosstab(resampled[S.SEX], resampled[S.LABEL]).loc[["M", "F"], [0, 1]].to_numpy()
        np.testing.assert_array_equal(t.replicates[b], counts)
    assert boot.weights.sum(axis=1).tolist() == [len(boot.patients)] * boot.n_boot


def test_cramers_v_and_attribute_only_auc_match_scipy_and_sklearn(demo_an, demo):
    f = demo.frame
    table = pd.crosstab(f[S.AGE_BAND], f[S.LABEL]).to_numpy()
    row = _row(demo_an.tests, attribute=S.AGE_BAND)
    assert row["cramers_v"] == pytest.approx(association(table, method="cramer"))
    score = A.attribute_scores_oof(f, [S.AGE_BAND], seed=demo_an.bootstrap["seed"])  # out of sample, by patient
    assert row["auc"] == pytest.approx(roc_auc_score(f[S.LABEL], score))


def test_data_chapter_describes_the_evaluation_patients_after_exclusions():
    """Valid images of patients also in train are left out of evaluation: the chapter describes what is left."""
    rows = [{"Image Index": f"{i}.png", S.PATIENT: str(i % 80), S.SPLIT: "train" if i < 60 else "valid",
             S.LABEL: i % 2} for i in range(100)]
    frame = pd.DataFrame(rows)  # patients 0-19 have train images (i < 20) and valid ones (i >= 80)
    evaluation = frame[(frame[S.SPLIT] == "valid") & ~frame[S.PATIENT].isin(frame.loc[:59, S.PATIENT])]
    ctx = types.SimpleNamespace(frame=frame, evaluation=evaluation)
    used, excluded = data_analysis.used_frame(ctx)
    assert excluded == {"images": 20, "patients": 20} and len(used) == 80
    assert set(used.loc[used[S.SPLIT] == "valid", "Image Index"]) == set(evaluation["Image Index"])


# ---------------------------------------------------------------- clustering


def test_cluster_intervals_and_test_ignore_duplicated_images(demo):
    """Copying each patient's images 5 times adds no information: the patient bootstrap interval and
    the cluster test barely move, while an image-level analysis becomes falsely ~2.2x more precise."""
    f = demo.frame
    dup = pd.concat([f] * 5, ignore_index=True)
    naive = dup.assign(**{S.PATIENT: [str(i) for i in range(len(dup))]})
    width = {}
    for name, frame in {"original": f, "duplicated": dup, "image-level": naive}.items():
        prev = A.prevalence(frame, S.SEX, A.patient_bootstrap(frame, 500, 0), CONFIG)
        width[name] = (prev["high"] - prev["low"]).to_numpy()
    assert np.all(np.abs(width["duplicated"] / width["original"] - 1) < 0.2), width
    assert np.all(width["image-level"] / width["original"] < 0.6), width
    chi2 = {name: A._outcome_test(frame, S.LABEL, [S.SEX], CONFIG)[0]
            for name, frame in {"original": f, "duplicated": dup, "image-level": naive}.items()}
    assert chi2["duplicated"] == pytest.approx(chi2["original"], rel=0.05)
    assert chi2["image-level"] > 4 * chi2["original"]


# ---------------------------------------------------------------- the full NIH metadata


def test_full_nih_runs_at_scale_and_shows_the_real_age_sex_interplay(nih):
    assert len(nih.frame) == 112_120 and nih.frame[S.PATIENT].nunique() == 30_805
    assert nih.bootstrap["n_boot"] >= 500
    sex = _row(nih.prevalence, attribute=S.SEX, group="F")
    assert sex["rd_low"] < 0 < sex["rd_high"]  # crude F vs M: about -0.6 points, not distinguishable from 0
    row = _row(nih.simpson, attribute=S.SEX, stratifier=S.AGE_BAND)
    assert row["adj_rd_low"] < 0 < row["adj_rd_high"] and not row["reversal"]
    strata = nih.simpson_strata.query("attribute == 'sex' and stratifier == 'age_band'").set_index("stratum")
    assert strata.loc["0-39", "rd"] < 0 < strata.loc["60+", "rd"]  # women: less often sick young, more old
    assert row["effect_modification"] and row["gap_low"] > 0 and (row["gap_max"], row["gap_min"]) == ("60+", "0-39")
    # Prevalence by view and age agrees with the demo's independent NIH calibration.
    from pipeline.data.demo import NIH_PREVALENCE_BY_BAND, NIH_PREVALENCE_BY_VIEW

    for attribute, expected in ((S.VIEW, NIH_PREVALENCE_BY_VIEW), (S.AGE_BAND, NIH_PREVALENCE_BY_BAND)):
        for group, p in expected.items():
            assert _row(nih.prevalence, attribute=attribute, group=group)["prevalence"] == pytest.approx(p, abs=5e-4)
    assert (nih.prevalence["deff"] > 2).all()  # half the images come from patients with 10+ images


# ---------------------------------------------------------------- data quality on the real subset


def test_quality_table_lists_validator_issues_in_french(cache):
    if not NIH_SUBSET.exists():
        pytest.skip(f"NIH subset not found at {NIH_SUBSET}")
    report = folder.check_dataset(NIH_SUBSET, CONFIG)
    table = quality.quality_table(report, CONFIG)
    assert list(table["code"]) == [i.code for i in report.issues] and len(table) > 0
    for issue in report.issues:
        row = _row(table, code=issue.code)
        assert row["count"] == len(issue.files) and row["action"] and row["problem"] != issue.message
    if "patient-leakage" in report.codes():
        assert "exclues" in _row(table, code="patient-leakage")["action"]
        keep = CONFIG.replace(evaluation=CONFIG.evaluation.__class__(exclude_leaking_patients=False))
        assert "optimistes" in _row(quality.quality_table(report, keep), code="patient-leakage")["action"]
    shown = data_chapter.quality_table(types.SimpleNamespace(quality=table))
    assert list(shown.columns) == ["Niveau", "Problème", "Nombre", "Ce que fait l'étude"]


def test_metadata_only_frame_matches_the_validator(cache):
    if not NIH_SUBSET.exists():
        pytest.skip(f"NIH subset not found at {NIH_SUBSET}")
    report = folder.check_dataset(NIH_SUBSET, CONFIG)
    meta = pd.read_csv(NIH_SUBSET / "metadata.csv", dtype=str, keep_default_na=False)
    frame, _ = A.frame_from_metadata(meta, CONFIG)
    merged = report.frame.merge(frame, on=S.IMAGE, suffixes=("", "_meta"))
    assert len(merged) == len(report.frame)
    for col in (S.PATIENT, S.SEX, S.VIEW, S.AGE, S.N_FINDINGS):
        pd.testing.assert_series_equal(merged[col], merged[f"{col}_meta"], check_names=False)
    assert (frame.groupby(S.PATIENT)[S.SPLIT].nunique() == 1).all()  # random split is by patient


# ---------------------------------------------------------------- univariate


def test_univariate_shares_sum_to_one_and_imbalance_ratios(demo_an):
    u = demo_an.univariate
    sums = u.groupby(["variable", "split"])["share"].sum()
    np.testing.assert_allclose(sums, 1.0)
    imb = _row(demo_an.imbalance, variable=S.SEX, split="train")
    counts = u[(u["variable"] == S.SEX) & (u["split"] == "train")].set_index("group")["n_images"]
    assert imb["ratio"] == pytest.approx(counts.max() / counts.min()) and imb["majority"] != imb["minority"]
    ipp = demo_an.images_per_patient.query("split == 'total'")
    assert ipp["n_patients"].sum() == demo_an.frame[S.PATIENT].nunique()
    assert ipp["n_images"].sum() == len(demo_an.frame)


# ---------------------------------------------------------------- French formatting


@pytest.mark.parametrize("value, text", [
    (fr.number(1234.5), f"1{NB}234,5"),
    (fr.integer(112120), f"112{NB}120"),
    (fr.number(-0.04, 1), "0,0"),
    (fr.number(-2.5, 1), "−2,5"),
    (fr.number(float("nan")), "—"),
    (fr.percent(0.623), f"62{NB}%"),
    (fr.percent_ci(0.62, 0.58, 0.66), f"62{NB}% [58{NB};{NB}66]"),
    (fr.percent_ci(0.4633, 0.4532, 0.4721), f"46,3{NB}% [45,3{NB};{NB}47,2]"),
    (fr.points(0.052), f"+5,2{NB}points"),
    (fr.points(-0.006), f"−0,6{NB}point"),
    (fr.ratio_ci(1.5234, 1.31, 1.771), f"1,52 [1,31{NB};{NB}1,77]"),
    (fr.p_value(0.00002), f"p{NB}<{NB}0,001"),
    (fr.p_value(0.3134), f"p{NB}={NB}0,31"),
    (fr.p_value(0.0034), f"p{NB}={NB}0,003"),
    (fr.count(1, "images"), f"1{NB}image"),
    (fr.count(15, "patients"), f"15{NB}patients"),
    (fr.group_label(S.AGE_BAND, "60+"), "60 ans et plus"),
    (fr.group_label(S.AGE_BAND, "0-39"), "0–39 ans"),
    (fr.ci(0.78, 0.74, 0.82), f"0,78 [0,74{NB};{NB}0,82]"),
    (fr.ci(0.04, float("nan"), float("nan")), "0,04 [IC n.d.]"),  # never an estimate that looks exact
    (fr.ci(float("nan"), float("nan"), float("nan")), "n.d."),
    (fr.ci(0.0, 0.0, 0.0), "0,00 (IC de largeur nulle : non interprétable)"),
])
def test_french_formatting(value, text):
    assert value == text


def test_prevalence_sentence_quotes_both_groups_with_intervals(demo_an):
    sentence = data_chapter.prevalence_sentence(demo_an, S.VIEW)
    prev = demo_an.prevalence[demo_an.prevalence["attribute"] == S.VIEW].set_index("group")
    d = min(fr.precision(lo, hi) for lo, hi in zip(prev["low"], prev["high"], strict=True))
    for group in ("AP", "PA"):
        r = prev.loc[group]
        assert f"{fr.percent_ci(r['prevalence'], r['low'], r['high'], d)} en {group}" in sentence
    assert "." not in re.sub(r"\d\.\d", "", sentence[:-1])  # no English decimal point
    assert sentence.startswith("Selon l'incidence") and sentence.endswith(".")


def test_generated_text_has_no_english_number_format(demo_an):
    text = data_chapter.chapter_summary(demo_an)
    assert not re.search(r"\d\.\d", text) and not re.search(r"\d%", text) and not re.search(r"\bnan\b", text)


# ---------------------------------------------------------------- figures and chapter


def test_one_colour_per_group_everywhere():
    sex = style.group_colors(S.SEX, ["M", "F"])
    assert sex == style.PALETTE[S.SEX]
    assert style.color_scale(S.SEX, ["M", "F"]).to_dict() == {"domain": ["Homme", "Femme"],
                                                               "range": [sex["M"], sex["F"]]}
    assert style.label_scale(["Femme", "AP"]).to_dict()["range"] == [sex["F"], style.PALETTE[S.VIEW]["AP"]]
    bands = style.age_band_colors(CONFIG.age_band_labels())
    assert len(set(bands.values())) == 3
    spare = style.group_colors("hospital", ["a", "b", "c"])
    assert len(set(spare.values())) == 3


def test_charts_render_with_tooltips(demo_an):
    import vl_convert as vlc

    an = demo_an
    charts = [data_chapter.univariate_chart(an.univariate, an.images_per_patient),
              data_chapter.prevalence_chart(an.prevalence, an.overall),
              data_chapter.intersection_chart(an.intersections),
              data_chapter.association_chart(an.composition, an.associations),
              data_chapter.simpson_chart(an.simpson, an.simpson_strata)]
    for chart in charts:
        spec = chart.to_dict()
        assert "tooltip" in json.dumps(spec)
        assert vlc.vegalite_to_png(spec, scale=1)[:4] == b"\x89PNG"
    assert alt.theme.active == "faircxr"


def test_chapter_cells_run_on_the_demo(demo, monkeypatch, capsys):
    """Execute the chapter's cells and inline expressions with a study context built from the demo."""
    text = CHAPTER.read_text(encoding="utf-8")
    assert text.startswith("# Préparation des données et analyse {#sec-data}")
    cell = re.compile(r"^```\{python\}[^\n]*\n(.*?)^```\s*$", re.M | re.S)
    from pipeline.study import _evaluation_rows

    ctx = types.SimpleNamespace(config=CONFIG, frame=demo.frame, check=demo.check, data_fingerprint="demo-test",
                                evaluation=_evaluation_rows(demo.frame, CONFIG))
    shown = []
    monkeypatch.setattr(display, "chart", lambda c: shown.append(c.to_dict()))
    namespace: dict = {}
    for match in cell.finditer(text):
        exec(match.group(1).replace("ctx = study.context()", "ctx = _ctx"), {**namespace, "_ctx": ctx}, namespace)
    for expr in re.findall(r"`\{python\}\s+([^`]+)`", cell.sub("", text)):
        assert str(eval(expr, namespace))
    out = capsys.readouterr().out
    labels = re.findall(r"#\| label: (\S+)", text)
    assert len(shown) == sum(x.startswith("fig-") for x in labels) and 3 <= len(labels) <= 7  # the rest in the appendix
    assert "Paradoxe de Simpson" in out and "par patient" in out  # the effects table is in the appendix
    for key in re.findall(r"@([\w-]+\d{4}\w*)", text):
        assert key in (CHAPTER.parents[1] / "references.bib").read_text(), key


def test_the_data_chapter_reads_its_verdicts_instead_of_the_interval(demo_an):
    """The view gap is established on the demo; if its verdict says otherwise (as after a correction over a
    larger table), the sentence, the table's mark and the slide's message follow the verdict, not the interval."""
    import dataclasses

    row = _row(demo_an.prevalence, attribute=S.VIEW, group="AP")
    v = demo_an.prevalence_verdict(row)
    assert v.established and v.direction == 1 and row["rd_low"] > 0
    assert "notable †" in data_chapter.prevalence_sentence(demo_an, S.VIEW)
    index = demo_an.verdicts.index(v)
    demo_an.verdicts[index] = dataclasses.replace(v, status="not_established", direction=0)
    try:
        sentence = data_chapter.prevalence_sentence(demo_an, S.VIEW)
        assert "n'est pas notable" in sentence and "notable †" not in sentence
        table = data_chapter.effects_table(demo_an)
        assert not table.loc[table["Groupe"] == "AP", "Écart (points)"].iloc[0].endswith("†")
    finally:
        demo_an.verdicts[index] = v


def test_a_reversal_needs_both_differences_established_in_the_table_family(demo_an):
    """The planted paradox is a reversal; with its adjusted difference not established it is only possible."""
    import dataclasses

    row = _row(demo_an.simpson, attribute=S.SEX, stratifier=S.AGE_BAND)
    assert row["verdict"] == "reversal"
    adjusted = demo_an.simpson_verdict(row, "adjusted")
    assert adjusted.established and adjusted.family == simpson.SIMPSON_FAMILY
    found = [dataclasses.replace(v, status="not_established", direction=0) if v.key == adjusted.key else v
             for v in demo_an.verdicts]
    again = simpson.classify(demo_an.simpson, found)
    assert _row(again, attribute=S.SEX, stratifier=S.AGE_BAND)["verdict"] == "weak_reversal"


def test_the_strongest_imbalance_names_every_ratio_tied_at_the_printed_precision():
    def imbalance(*ratios: tuple[str, float, str, str]) -> types.SimpleNamespace:
        return types.SimpleNamespace(imbalance=pd.DataFrame(
            [{"split": "train", "variable": v, "ratio": r, "majority": a, "minority": b} for v, r, a, b in ratios]
            + [{"split": "valid", "variable": "sex", "ratio": 9.0, "majority": "M", "minority": "F"}]))

    one = data_chapter.strongest_imbalance(imbalance(("view", 1.44, "PA", "AP"), ("sex", 1.2, "M", "F")))
    assert one.startswith("Le déséquilibre le plus fort en apprentissage porte sur") and "1,4 PA pour 1 AP" in one
    assert "sexe" not in one and "9,0" not in one  # the weaker ratio, and the evaluation split's, are not named
    tied = data_chapter.strongest_imbalance(imbalance(("view", 1.44, "PA", "AP"), ("sex", 1.36, "M", "F")))
    assert tied.startswith("Les déséquilibres les plus forts") and "1,4 PA pour 1 AP" in tied
    assert tied.endswith("portent, à égalité, sur l'incidence (1,4 PA pour 1 AP) et le sexe (1,4 Homme pour 1 Femme).")


def _sick_runs(rng: np.random.Generator, sex_effect: float, n: int = 600) -> list[pd.DataFrame]:
    """Five training runs on the same malades: women mostly young, the miss rate set by age (and by sex when
    `sex_effect`), each run deciding its own draws."""
    sex = rng.choice(["F", "M"], n)
    young = rng.random(n) < np.where(sex == "F", 0.8, 0.2)
    frame = pd.DataFrame({S.IMAGE: [f"{i}.png" for i in range(n)], S.PATIENT: [str(i) for i in range(n)],
                          S.LABEL: 1, S.SEX: sex, S.AGE_BAND: np.where(young, "0-39", "60+")})
    miss = np.where(young, 0.5, 0.1) + np.where(sex == "F", sex_effect, 0.0)
    return [frame.assign(decision=(rng.random(n) >= miss).astype(float)) for _ in range(5)]


def test_the_under_diagnosis_gap_at_equal_age_separates_an_age_effect_from_a_sex_effect():
    from pipeline.fairness.simpson import model_gap_adjusted

    config = StudyConfig()
    age_only = model_gap_adjusted(_sick_runs(np.random.default_rng(1), 0.0), S.SEX, S.AGE_BAND, config, 200, 0)
    assert (age_only["group"], age_only["reference"], age_only["n_seeds"]) == ("F", "M", 5)
    assert age_only["crude_low"] > 0.1  # women missed more often, because younger
    assert age_only["adjusted_low"] < 0 < age_only["adjusted_high"]  # at equal age: no gap
    assert len(age_only["adjusted_per_seed"]) == 5
    both = model_gap_adjusted(_sick_runs(np.random.default_rng(2), 0.2), S.SEX, S.AGE_BAND, config, 200, 0)
    assert both["adjusted_low"] > 0.1 and both["adjusted"] < both["crude"]  # a sex effect remains, smaller
