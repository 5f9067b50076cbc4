"""Issue 16: bias amplification, what the features reveal, subgroups, class-activation maps, the defence slides.

Unit tests on generated predictions check each measure against its definition; the `demo_study`
fixtures train the study's network on a small demo (planted biases) with several seeds and check the
planted effects that every run recovers: the view read from the image features far better than from
the other attributes (the AP marker), and attribution maps on AP images drawn to the marker's corner;
the amplification of the sex gap is within one run's noise at that scale, and a test shows it.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data import schema as S
from pipeline.fairness.amplification import amplification, amplification_table
from pipeline.fairness.probing import probe
from pipeline.fairness.subgroups import subgroup_metrics, worst_subgroup

ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL = ROOT.parent / "shared" / "data" / "nih-real-256px"


def _preds(n_patients: int = 400, seed: int = 0, prevalence: dict | None = None) -> pd.DataFrame:
    """Two images per patient, a sex per patient, labels drawn with a per-sex prevalence."""
    rng = np.random.default_rng(seed)
    prevalence = prevalence or {"F": 0.3, "M": 0.5}
    sex = rng.choice(["F", "M"], n_patients)
    rows = pd.DataFrame({S.PATIENT: np.repeat(np.arange(n_patients).astype(str), 2), S.SEX: np.repeat(sex, 2)})
    rows[S.LABEL] = (rng.random(len(rows)) < rows[S.SEX].map(prevalence)).astype(int)
    rows[S.AGE_BAND] = rng.choice(["0-39", "40-59", "60+"], len(rows))
    rows[S.VIEW] = rng.choice(["AP", "PA"], len(rows))
    rows[S.IMAGE] = [f"{i}.png" for i in range(len(rows))]
    return rows


# ---------------------------------------------------------------- amplification


def test_a_model_that_copies_the_labels_amplifies_nothing():
    preds = _preds().pipe(lambda p: p.assign(decision=p[S.LABEL].astype(float)))
    r = amplification(preds, S.SEX, n_boot=100)
    assert r["high_group"] == "M" and r["low_group"] == "F"
    assert r["data_gap"]["estimate"] == pytest.approx(r["model_gap"]["estimate"])
    assert r["amplification"]["estimate"] == pytest.approx(0) and r["bias_amp"]["estimate"] == pytest.approx(0)
    assert r["data_gap"]["low"] < r["data_gap"]["estimate"] < r["data_gap"]["high"]


def test_missing_more_sick_women_amplifies_the_men_women_gap_and_matches_wang_russakovsky():
    preds = _preds(seed=1)
    rng = np.random.default_rng(2)
    missed = (preds[S.SEX] == "F") & (preds[S.LABEL] == 1) & (rng.random(len(preds)) < 0.5)
    preds["decision"] = np.where(missed, 0.0, preds[S.LABEL].astype(float))
    r = amplification(preds, S.SEX, n_boot=200)
    assert r["amplification"]["estimate"] > 0 and r["amplification"]["low"] > 0  # M - F gap widened, established
    # Directional BiasAmp A->T by its definition: mean over (a, t) of y_at Δ_at + (1 - y_at)(-Δ_at).
    terms = []
    for a, t in itertools.product(["F", "M"], [0, 1]):
        in_a = preds[S.SEX] == a
        p_at, p_a, p_t = ((preds[S.LABEL] == t) & in_a).mean(), in_a.mean(), (preds[S.LABEL] == t).mean()
        y_at = p_at > p_a * p_t
        predicted_t = preds.loc[in_a, "decision"] if t == 1 else 1 - preds.loc[in_a, "decision"]
        delta = predicted_t.mean() - (preds.loc[in_a, S.LABEL] == t).mean()
        terms.append(delta if y_at else -delta)
    assert r["bias_amp"]["estimate"] == pytest.approx(np.mean(terms))


def test_amplification_table_has_one_row_per_method_and_attribute():
    preds = _preds().pipe(lambda p: p.assign(decision=p[S.LABEL].astype(float)))
    t = amplification_table({"a": preds, "b": preds}, [S.SEX, S.AGE_BAND], n_boot=50)
    assert len(t) == 4 and {"amplification_low", "bias_amp_high"} <= set(t.columns)


def test_prevalence_matched_threshold_reproduces_the_training_prevalence():
    from pipeline.fairness.amplification import prevalence_matched_threshold

    scores = np.random.default_rng(0).beta(2, 3, 2000)
    for prevalence in (0.1, 0.47, 0.9):
        t = prevalence_matched_threshold(scores, prevalence)
        assert (scores >= t).mean() == pytest.approx(prevalence, abs=1e-3)


def test_amplification_over_seeds_is_the_mean_of_the_runs_with_the_seed_variance_in_its_interval():
    from pipeline.fairness.amplification import amplification_over_seeds

    base = _preds(seed=3)
    rng = np.random.default_rng(4)
    runs = []
    for shift in (0.0, 0.3, 0.6):  # three runs missing more and more sick women
        missed = (base[S.SEX] == "F") & (base[S.LABEL] == 1) & (rng.random(len(base)) < shift)
        runs.append(base.assign(decision=np.where(missed, 0.0, base[S.LABEL].astype(float))))
    r = amplification_over_seeds(runs, S.SEX, n_boot=200)
    one = [amplification(run, S.SEX, n_boot=200)["amplification"]["estimate"] for run in runs]
    assert r["n_seeds"] == 3 and r["amplification"]["per_seed"] == pytest.approx(one)
    assert r["amplification"]["estimate"] == pytest.approx(np.mean(one))
    same = amplification_over_seeds([runs[1]] * 3, S.SEX, n_boot=200)["amplification"]
    spread = r["amplification"]["high"] - r["amplification"]["low"]
    assert spread > 1.5 * (same["high"] - same["low"])  # the runs' disagreement widens the interval
    assert 0 < r["amplification"]["p_value"] < 1
    table = amplification_table({"w": runs, "one": runs[0]}, [S.SEX], n_boot=50)
    assert table.set_index("method")["n_seeds"].to_dict() == {"w": 3, "one": 1}
    with pytest.raises(ValueError, match="same patients"):
        amplification_over_seeds([runs[0], runs[1].iloc[:-20]], S.SEX, n_boot=20)


# ---------------------------------------------------------------- probing


def test_probe_reads_an_attribute_written_in_the_features_and_not_one_that_is_not():
    preds = _preds(n_patients=300, seed=3)
    rng = np.random.default_rng(4)
    features = np.c_[(preds[S.VIEW] == "AP") + rng.normal(0, 0.5, len(preds)), rng.normal(size=(len(preds), 5))]
    t = probe(features, preds, [S.SEX, S.VIEW]).set_index("attribute")
    assert t.loc[S.VIEW, "features"] > 0.8 and t.loc[S.VIEW, "diff_low"] > 0.2 and t.loc[S.VIEW, "diff_p"] < 0.001
    assert 0.4 < t.loc[S.SEX, "features"] < 0.6 and t.loc[S.SEX, "diff_p"] > 0.05


def test_a_probe_auc_interval_never_leaves_the_aucs_range():
    """nih-real: the image reads the view almost perfectly and the t interval of the folds' AUCs read
    « 0,99 [0,96 ; 1,01] ». An AUC interval stays within [0, 1], its estimate unchanged."""
    preds = _preds(n_patients=300, seed=3)
    rng = np.random.default_rng(5)
    features = np.c_[(preds[S.VIEW] == "AP") * 4.0 + rng.normal(0, 0.3, len(preds)), rng.normal(size=(len(preds), 3))]
    t = probe(features, preds, [S.VIEW]).set_index("attribute")
    for name in ("features", "combined"):
        assert t.loc[S.VIEW, name] > 0.97 and t.loc[S.VIEW, f"{name}_low"] <= t.loc[S.VIEW, name]
        assert t.loc[S.VIEW, f"{name}_high"] <= 1.0
    from pipeline.fairness.probing import corrected_interval

    mean, low, high, _ = corrected_interval(np.array([1.0, 0.97, 1.0, 0.99, 1.0]), 5, bounds=(0.0, 1.0))
    unbounded = corrected_interval(np.array([1.0, 0.97, 1.0, 0.99, 1.0]), 5)
    assert unbounded[2] > 1.0 and high == 1.0 and (mean, low) == unbounded[:2]


def test_features_that_only_encode_the_disease_carry_no_attribute_beyond_it():
    """Sex strongly predicts the label here and the features encode only the label: an image-only probe reads
    sex well (its old comparison with the attributes alone called that « beyond »); the image adds nothing
    once the label is among the baseline's attributes."""
    preds = _preds(n_patients=400, seed=5, prevalence={"F": 0.15, "M": 0.85})
    rng = np.random.default_rng(6)
    features = np.c_[preds[S.LABEL] + rng.normal(0, 0.3, len(preds)), rng.normal(size=(len(preds), 4))]
    t = probe(features, preds, [S.SEX, S.VIEW]).set_index("attribute")
    sex = t.loc[S.SEX]
    assert sex["features"] > 0.75 and sex["others"] > 0.75  # readable from the image, and from the label
    assert sex["diff_low"] < 0 < sex["diff_high"] and sex["diff_p"] > 0.05
    without_label = probe(features, preds.drop(columns=[S.LABEL]), [S.SEX]).set_index("attribute")
    assert without_label.loc[S.SEX, "others"] < 0.6 and without_label.loc[S.SEX, "diff_low"] > 0.1  # the old reading


def test_the_probe_test_keeps_its_level_when_the_image_adds_nothing():
    """40 studies where the features encode the disease and noise only: the one-sided test of combined − others
    rejects at 5 % in about 5 % of them (the bootstrap of fixed out-of-fold scores it replaces ignored the
    probes' fitting and called differences of 0.01 established)."""
    rejected = 0
    for seed in range(40):
        preds = _preds(n_patients=150, seed=100 + seed, prevalence={"F": 0.2, "M": 0.8})
        rng = np.random.default_rng(seed)
        features = np.c_[preds[S.LABEL] + rng.normal(0, 0.5, len(preds)), rng.normal(size=(len(preds), 3))]
        rejected += probe(features, preds, [S.SEX]).loc[0, "diff_p"] < 0.05
    assert rejected <= 6, rejected  # 15 %: the binomial's upper tail for a true 5 % to 7 % level


# ---------------------------------------------------------------- subgroups


def test_small_subgroups_are_not_rated_and_say_why():
    preds = _preds(n_patients=200, seed=5)
    preds["decision"] = preds[S.LABEL].astype(float)
    preds.loc[(preds[S.SEX] == "F") & (preds[S.VIEW] == "AP"), S.LABEL] = 0  # no sick woman in AP
    preds["proba"] = np.clip(preds["decision"] * 0.8 + 0.1, 0, 1)
    t = subgroup_metrics(preds, [S.SEX, S.VIEW], min_positives=10, n_boot=50)
    row = t[(t["group"] == "F × AP") & (t["metric"] == "fnr")].iloc[0]
    assert np.isnan(row["estimate"]) and row["reason"] == "moins de 10 malades"
    ok = t[(t["group"] == "M × PA") & (t["metric"] == "fnr")].iloc[0]
    assert ok["reason"] == "" and ok["estimate"] == pytest.approx(0)
    assert worst_subgroup(t)["group"] != "F × AP"


# ---------------------------------------------------------------- the defence


def test_every_main_slide_has_notes_with_a_time_budget_summing_to_ten_minutes():
    from pipeline.report import slides

    text = (ROOT / "slides.qmd").read_text(encoding="utf-8")
    chunks = re.split(r"\n(?=## )", text)
    slides_md = [c for c in chunks if c.startswith("## ")]
    assert all("::: {.notes}" in c for c in slides_md), [c.split("\n")[0] for c in slides_md if ".notes" not in c]
    main = [c for c in slides_md if not c.startswith("## Annexe")]
    keys = [re.search(r'slides\.timing\("(\w+)"\)', c).group(1) for c in main]
    assert keys == list(slides.BUDGET)
    assert sum(slides.BUDGET.values()) == slides.TALK_SECONDS == 600
    assert slides.timing("question") == "⏱ 0:40 (de 0:00 à 0:40)"
    assert slides.timing("group").endswith("à 10:00)")
    assert len(slides_md) - len(main) >= 4  # backup slides for the questions


def test_group_slide_reads_members_and_roles_from_the_config(tmp_path):
    from types import SimpleNamespace

    from pipeline.config import load_config
    from pipeline.report import slides

    (tmp_path / "empty.yml").write_text("seed: 0\n", encoding="utf-8")  # no `group:`: the placeholders
    default = load_config(tmp_path / "empty.yml")
    assert "compléter" in slides.group_members(SimpleNamespace(config=default))
    path = tmp_path / "study.yml"
    path.write_text("group:\n  name: Groupe 7\n  members:\n    - {name: Alice Martin, role: données}\n"
                    "    - {name: Bilal Diallo, role: modèle}\n", encoding="utf-8")
    ctx = SimpleNamespace(config=load_config(path))
    assert slides.group_name(ctx) == "Groupe 7"
    assert slides.group_members(ctx) == "- **Alice Martin** — données\n- **Bilal Diallo** — modèle"


def test_slides_pdf_prints_a_reveal_page_with_chromium(tmp_path):
    from pipeline.render import slides_pdf

    if slides_pdf.browser() is None:
        pytest.skip("no Chromium on PATH")
    html = tmp_path / "slides.html"
    html.write_text("<html><body><section><h2>Une diapositive</h2></section></body></html>", encoding="utf-8")
    assert slides_pdf.print_command("chromium", html, tmp_path / "x.pdf")[-1].endswith("slides.html?print-pdf")
    pdf = slides_pdf.write_slides_pdf(html)
    assert pdf == tmp_path / "slides.pdf" and pdf.read_bytes().startswith(b"%PDF")
    assert slides_pdf.slides_pdfs([tmp_path / "report.html"]) == []


def test_a_deck_that_reveal_js_never_laid_out_is_not_written_as_a_pdf(tmp_path, monkeypatch, capsys):
    """A reveal.js deck printed without its print layout comes out as the page cut at letter size (portrait), or
    as one blank page: that copy is refused and an older one removed, with a note on how to print it."""
    from pipeline.render import slides_pdf

    if slides_pdf.browser() is None:
        pytest.skip("no Chromium on PATH")
    monkeypatch.setattr(slides_pdf, "PRINT_ATTEMPTS", 2)
    html = tmp_path / "slides.html"
    deck = "".join(f"<section><h2>Diapositive {i}</h2><p>{'texte ' * 400}</p></section>" for i in range(6))
    html.write_text(f'<html><body><div class="reveal"><div class="slides">{deck}</div></div></body></html>',
                    encoding="utf-8")  # reveal.js itself is missing: nothing lays the slides out
    (tmp_path / "slides.pdf").write_bytes(b"%PDF-1.4 an older copy")
    assert slides_pdf.write_slides_pdf(html) is None
    assert not (tmp_path / "slides.pdf").exists() and "not written" in capsys.readouterr().err


def test_vectorised_auc_equals_scikit_learn_with_weights_and_ties():
    from sklearn.metrics import roc_auc_score

    from pipeline.fairness.probing import weighted_auc

    rng = np.random.default_rng(6)
    y, score = rng.random(80) < 0.4, rng.integers(0, 6, 80) / 5  # many ties
    w = rng.integers(0, 3, (4, 80)).astype(float)
    expected = [roc_auc_score(y, score, sample_weight=row) for row in w]
    assert weighted_auc(y, score, w) == pytest.approx(expected)


# ---------------------------------------------------------------- the planted effects of the demo, recovered
# These tests assert on what trained networks do, and a network's numbers change with the training seed
# and with torch's CPU kernels (AVX-512, AVX2, default): each asserts only what held on every seed and
# kernel we measured (marker `kernels`; `make test` reruns them capped at each kernel set).

PLANTED_SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory):
    """The study and its model analysis on a 300-patient demo at 64 px, one network per training seed.

    The first seed runs the fixture's whole study; the others train only the reference network (their
    other results are not read). About 25 s a seed on one core.
    """
    import dataclasses

    from pipeline import study
    from pipeline.config import load_config
    from pipeline.fairness.model_analysis import analyse_model

    config = load_config(ROOT / "tests" / "fixtures" / "planted_study.yml")
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        tmp = tmp_path_factory.mktemp("planted")
        for name, value in (("FAIRCXR_CACHE", tmp / "cache"), ("FAIRCXR_OUTPUT", tmp / "out"),
                            ("FAIRCXR_PROGRESS", "0")):
            mp.setenv(name, str(value))
        for seed in PLANTED_SEEDS:
            seeded = dataclasses.replace(config, training=dataclasses.replace(config.training, seeds=(seed,)))
            if runs:
                seeded = dataclasses.replace(
                    seeded, weighting=dataclasses.replace(seeded.weighting, methods=("uniform",)),
                    postprocessing=dataclasses.replace(seeded.postprocessing, methods=("none",)))
            ctx = study.run(seeded)
            runs.append((ctx, analyse_model(ctx)))
        yield runs


@pytest.fixture(scope="module")
def demo_study(planted_runs):
    return planted_runs[0]


def _sex_amplification(ma) -> pd.Series:
    return ma.amplification.set_index(["method", "attribute"]).loc[("uniform", S.SEX)]


@pytest.mark.kernels
def test_one_training_run_cannot_decide_the_sex_amplification_of_the_small_demo(planted_runs):
    """Why « amplification > 0.05 » on one run was fragile: at this scale the amplification of the men -
    women gap is within one run's own patient-bootstrap noise, and the seed (or the CPU kernels) moves
    the point by more than the old margin. Measured with `python -m pipeline.planted --config
    tests/fixtures/planted_study.yml --seeds 0 1 2 3 4 5 --bootstrap 100` on AVX2 and default kernels
    (demo generator 5): point values -0.04 to +0.21 (mean +0.05, standard deviation 0.08 between the 12
    runs), intervals 0.33 to 0.46 wide, none excluding 0; seed 0 gives +0.017 on AVX2 kernels (generator
    4: +0.073 on AVX2, +0.019 on default kernels, where the old assertion failed). docs/DEMO.md."""
    rows = [_sex_amplification(ma) for _, ma in planted_runs]
    values = [round(float(r["amplification"]), 3) for r in rows]
    assert all(r["amplification_high"] - r["amplification_low"] > 0.2 for r in rows), values  # 4x the old margin
    # not established: one run of four may exclude 0 by chance
    assert sum(r["amplification_low"] < 0 < r["amplification_high"] for r in rows) >= len(rows) - 1, values
    assert np.std(values, ddof=1) > 0.01, values  # the seed moves the point: one run is one draw


@pytest.mark.kernels
def test_demo_view_is_read_from_the_features_far_better_than_from_the_other_attributes(planted_runs):
    """The AP marker makes the view readable from every network's features (AUC 1.00 on all 12 measured
    runs, the AUC difference's interval starting at +0.38) and not from the other attributes (0.54)."""
    for _, ma in planted_runs:
        view = ma.probing.set_index("attribute").loc[S.VIEW]
        assert view["features"] > 0.9 and view["others"] < 0.7 and view["diff_low"] > 0.2, view


@pytest.mark.kernels
def test_demo_maps_on_ap_images_concentrate_on_the_marker_corner(planted_runs):
    """The AP - PA difference of the share of the map on the marker's corner, which the report states, is
    above the patient-bootstrap noise on every seed (interval's lower end +0.013 to +0.020 on the 12 runs
    measured with generator 5; generator 4: +0.012 to +0.026, AP share 6-9 times the PA share). With
    generator 6 (stronger lesions) the AP share is 2.97-6.05 times the PA share on the 12 runs of seeds 0-3
    under AVX-512, AVX2 and default kernels (seed 0 on AVX-512: 2.97, where « 3 times » failed in CI), and the
    difference's interval excludes 0 on 18/18 runs of `python -m pipeline.planted` (+0.021 to +0.045). The
    share against the corner's area (1.0-1.9 times with generator 4) is not a property of every run and is
    not asserted."""
    for _, ma in planted_runs:
        cams = ma.cams
        ap = cams["stats_view"] == "AP"
        share = cams["integrated_gradients"]["marker_share"]
        ratio = np.nanmean(share[ap]) / np.nanmean(share[~ap])
        assert ratio > 2, ratio  # PA images have no marker
        contrast = cams["marker_contrast"]["integrated_gradients"]
        assert contrast["diff_low"] > 0  # beyond the patient-bootstrap noise
        border = cams["border"]["integrated_gradients"]
        assert border["low"] < border["mean"] < border["high"]
        assert border["mean"] == pytest.approx(np.nanmean(cams["integrated_gradients"]["border_share"]))


@pytest.mark.kernels
def test_the_appendix_names_the_kernels_the_networks_were_trained_on(demo_study):
    import torch

    from pipeline.report import conclusion

    ctx, _ = demo_study
    kernels = conclusion.CPU_KERNELS[torch.backends.cpu.get_cpu_capability()]
    text = conclusion.reproducibility(ctx)
    assert f"Entraînement : processeur, noyaux CPU de torch {kernels}, précision 32-true." in text
    assert "au bit près" in text and "requirements.lock" in text


def _clustered_shares(rng: np.random.Generator, effect: float, n_patients: int = 150):
    """Marker shares of 1-4 images per patient, with a patient effect (images of a patient look alike)
    and the view drawn per patient; AP images get `effect` more of the map."""
    sizes = rng.integers(1, 5, n_patients)
    patients = np.repeat(np.arange(n_patients), sizes).astype(str)
    view = np.repeat(rng.choice(["AP", "PA"], n_patients), sizes)
    patient_effect = np.repeat(rng.normal(0, 0.01, n_patients), sizes)
    share = 0.02 + patient_effect + rng.normal(0, 0.005, len(patients)) + effect * (view == "AP")
    return share, view, pd.Series(patients)


def test_marker_contrast_interval_keeps_its_level_and_finds_a_real_difference():
    """Simulation: without any AP effect the 95 % interval of the AP - PA difference excludes zero in
    about 5 % of the studies (patients, not images, are resampled: images of a patient are correlated);
    with an effect it excludes zero."""
    from pipeline.fairness.model_analysis import marker_contrast

    rng = np.random.default_rng(7)
    false = [marker_contrast(*_clustered_shares(rng, 0.0), n_boot=200, seed=k) for k in range(200)]
    rejected = np.mean([c["diff_low"] > 0 or c["diff_high"] < 0 for c in false])
    assert rejected < 0.09, rejected
    found = [marker_contrast(*_clustered_shares(rng, 0.01), n_boot=200, seed=k) for k in range(20)]
    assert all(c["diff_low"] > 0 for c in found)


@pytest.mark.kernels
def test_demo_subgroups_follow_the_small_group_rule_and_the_report_texts_are_french(demo_study):
    from pipeline.report import analysis, slides, weak

    ctx, ma = demo_study
    fnr = ma.subgroups[ma.subgroups["metric"] == "fnr"]
    small = fnr["n_positive"] < ma.min_positives
    assert fnr.loc[small, "estimate"].isna().all() and (fnr.loc[small, "reason"] != "").all()
    assert fnr.loc[~small, "estimate"].notna().all()
    assert "n.d. (moins de 10 malades" in " ".join(analysis.subgroup_table(ctx)["FNR (sous-diagnostic)"])
    for text in (analysis.amplification_narrative(ctx), analysis.probing_narrative(ctx),
                 analysis.cam_narrative(ctx), slides.title_amplification(ctx), slides.title_sees(ctx),
                 slides.title_subgroup(ctx), slides.title_groups(ctx), analysis.subgroup_narrative(ctx)):
        assert text and not re.search(r"\bnan\b", text.lower()) and "{" not in text
    worst = analysis.worst_subgroup(ctx)
    # the counts go with the rate: in the title, or (a weak model, nothing crowned) in the line under it
    where = slides.subgroup_number(ctx) if weak.is_weak(ctx) else slides.title_subgroup(ctx)
    assert f"({worst['missed']}/{int(worst['n_positive'])})" in where
    assert "corrigé de la sélection" in slides.subgroup_number(ctx) and worst["shrunken"] <= worst["fnr"]
    assert re.search(r"\(\d+/\d+\) chez les", slides.title_groups(ctx))  # the counts behind the rates
    for method in analysis.MAP_LABELS_FR:  # the lung fields' share, a stated region beside the border's
        stats = analysis.cam_stats(ctx, method)
        assert 0 < stats["lung_share"] < 1 and stats["lung_low"] <= stats["lung_share"] <= stats["lung_high"]
        assert 0.3 < stats["lung_area"] < 0.5
    assert analysis.cam_narrative(ctx).count("zone pulmonaire approximative") == 2
    assert analysis.cam_png(ctx).startswith(b"\x89PNG")
    assert analysis.marker_shows(analysis.cam_stats(ctx))
    message = slides.images_message(ctx)  # the AP - PA difference with its interval, on the slide
    assert "IC n.d." not in message and re.search(r"points? \[\+\d", message), message


def test_group_table_shows_the_counts_behind_each_rate_and_a_calibration_with_valid_intervals(demo_study):
    """FNR and FPR carry « faux négatifs / malades » computed from the decisions; calibration is the intercept
    and slope (patient-clustered intervals containing their estimate), not the ECE."""
    from pipeline.report import analysis

    ctx, ma = demo_study
    reference = ma.calibration_fit[ma.calibration_fit["model"] == "reference"]
    assert set(reference["metric"]) == {"calibration_intercept", "calibration_slope"}
    defined = reference.dropna(subset=["low", "high"])
    assert len(defined) and ((defined["low"] <= defined["estimate"]) & (defined["estimate"] <= defined["high"])).all()
    table = analysis.group_performance_table(ctx, S.SEX)
    decided = ctx.valid_predictions["uniform"]
    decision = decided[S.PROBA] >= ctx.threshold("uniform")
    for row in table.itertuples():
        group = "F" if row.Groupe.startswith("F") else "M"
        sick = (decided[S.SEX] == group) & (decided[S.LABEL] == 1)
        cell = table.loc[row.Index, "FNR (sous-diagnostic)"]
        assert f"({int((sick & ~decision).sum())}/{int(sick.sum())})" in cell, cell
    assert "ECE" not in " ".join(table.columns) and "Pente (1)" in table.columns
    assert "ECE" not in analysis.calibration_narrative(ctx).split("n'est pas utilisée")[1]


def test_integrated_gradients_attribute_dark_pixels_from_the_blurred_baseline():
    """A model that reads one black pixel inside a bright image: from a black baseline the pixel's attribution
    is (x − 0) × gradient = 0 by construction; from the blurred image it is the map's peak."""
    import torch
    from torch import nn

    from pipeline.model.cam import integrated_gradients

    size, where = 32, (16, 12)
    image = np.full((1, size, size), 200, np.uint8)
    image[0, where[0], where[1]] = 0
    model = nn.Module()
    model.backbone = nn.Flatten()
    model.head = nn.Linear(size * size, 1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[0, where[0] * size + where[1]] = 1.0
    maps = integrated_gradients(model, image)
    assert np.unravel_index(np.argmax(maps[0]), maps[0].shape) == where and maps[0].max() == 1


def test_the_worst_subgroup_is_shrunk_towards_the_pooled_rate_when_subgroups_do_not_differ():
    """Twelve subgroups with the same true FNR 0.30 and 15 malades each: the raw maximum is biased upwards by
    the selection (about +0.18); the empirical-Bayes estimate of the selected subgroup is not."""
    from pipeline.fairness.subgroups import shrunken_rates

    rng = np.random.default_rng(0)
    raw, shrunk = [], []
    for _ in range(400):
        events = rng.binomial(15, 0.30, 12)
        raw.append(events.max() / 15)
        shrunk.append(shrunken_rates(events, np.full(12, 15)).max())
    assert np.mean(raw) - 0.30 > 0.12 and abs(np.mean(shrunk) - 0.30) < 0.04
    # real differences survive: one subgroup at 0.70 among eleven at 0.20, 40 malades each
    events = np.r_[28, rng.binomial(40, 0.20, 11)]
    estimate = shrunken_rates(events, np.full(12, 40))
    assert int(np.argmax(estimate)) == 0 and estimate[0] > 0.55
