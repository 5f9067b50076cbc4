"""The synthetic demo: users' layout, NIH columns, determinism, atomic writes, the planted biases
(prevalence by age and view, Simpson's paradox on sex, view shortcut, low-contrast lesions for women)
and the calibration constants against the official NIH metadata."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data import demo as D
from pipeline.data import schema as S

NIH_FULL = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-metadata" / "Data_Entry_2017_v2020.csv.gz"
COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
           "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
TINY = {"n_patients": 60, "seed": 5, "image_size": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return D.make_demo(tmp_path_factory.mktemp("tiny") / "demo", **TINY)


@pytest.fixture(scope="module")
def meta(tiny: Path) -> pd.DataFrame:
    """metadata.csv with each image's folder (split, class) attached."""
    m = pd.read_csv(tiny / "metadata.csv")
    where = {p.name: p.parent.relative_to(tiny).parts for p in tiny.glob("*/*/*.png")}
    assert set(where) == set(m["Image Index"]), "metadata rows and PNG files differ"
    return m.assign(split=m["Image Index"].map(lambda n: where[n][0]),
                    folder=m["Image Index"].map(lambda n: where[n][1]))


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> pd.DataFrame:
    """The metadata of a 600-patient demo (16 px images: only the metadata matters here)."""
    out = D.make_demo(tmp_path_factory.mktemp("medium") / "demo", n_patients=600, seed=0, image_size=16)
    m = pd.read_csv(out / "metadata.csv")
    band = pd.cut(m["Patient Age"], list(D.BANDS), right=False, labels=list(D.BAND_LABELS))
    return m.assign(label=(m["Finding Labels"] != S.NO_FINDING).astype(int), band=band)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- layout and columns


def test_layout_header_and_columns_are_the_users(tiny: Path, meta: pd.DataFrame):
    assert sorted(str(p.relative_to(tiny)) for p in tiny.glob("*/*") if p.is_dir()) == [
        "train/malade", "train/sain", "valid/malade", "valid/sain"]
    assert {p.name for p in tiny.iterdir() if p.is_file()} == {"metadata.csv", "planted_biases.json", "demo.json"}
    lines = (tiny / "metadata.csv").read_text().splitlines()
    assert lines[0] == D.HEADER == ",".join(COLUMNS)
    assert all(len(line.split(",")) == 11 for line in lines)
    assert list(meta.columns[:11]) == COLUMNS
    assert meta["Image Index"].str.fullmatch(r"\d{8}_\d{3}\.png").all()
    ids = meta["Image Index"].str.extract(r"(\d{8})_(\d{3})").astype(int)
    assert (ids[0] == meta["Patient ID"]).all() and (ids[1] == meta["Follow-up #"]).all()
    assert meta["Patient Age"].between(1, 95).all() and meta["Patient Age"].dtype.kind == "i"
    assert set(meta["Patient Gender"]) == {"M", "F"} and set(meta["View Position"]) == {"PA", "AP"}
    for col in ("OriginalImage[Width", "Height]"):
        assert meta[col].between(2500, 3056).all()
    assert set(meta["y]"]) <= {0.139, 0.143, 0.168} and (meta["OriginalImagePixelSpacing[x"] == meta["y]"]).all()


def test_metadata_is_the_sampled_table(tiny: Path):
    """The written CSV is `_sample_rows` (which the metadata-only tests below rely on)."""
    rows = D._sample_rows(TINY["n_patients"], TINY["seed"])
    assert (tiny / "metadata.csv").read_text() == D._metadata_csv(rows)


def test_images_are_8bit_grey_of_the_asked_size(tiny: Path):
    for path in sorted(tiny.glob("*/*/*.png"))[:40]:
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "L", (64, 64)), path
            pixels = np.asarray(img)
        assert pixels.std() > 10  # not a blank image


def test_folder_label_agrees_with_finding_labels(meta: pd.DataFrame):
    sick = meta["Finding Labels"] != S.NO_FINDING
    assert ((meta["folder"] == S.POSITIVE_DIR) == sick).all()
    assert 0.2 < sick.mean() < 0.8
    findings = meta.loc[sick, "Finding Labels"].str.split("|")
    assert findings.map(lambda f: set(f) <= set(D.NIH_FINDINGS) and f == sorted(set(f))).all()
    assert findings.str.len().max() >= 2  # several findings occur


def test_patients_have_several_images_and_one_split(meta: pd.DataFrame):
    per = meta.groupby("Patient ID")
    counts = per.size()
    assert counts.max() >= 3 and counts.max() <= 8 and (counts == 1).any()
    assert per["split"].nunique().max() == 1, "a patient is in both splits"
    assert per["Follow-up #"].apply(lambda f: list(f) == list(range(len(f)))).all()
    assert per["Patient Age"].apply(lambda a: a.is_monotonic_increasing).all()
    assert per[["Patient Gender"]].nunique().max().item() == 1
    valid_share = (per["split"].first() == "valid").mean()
    assert 0.2 < valid_share < 0.4
    assert meta.groupby(["split", "folder"]).size().shape[0] == 4  # both classes in both splits


# ---------------------------------------------------------------- determinism and atomic writes


def test_same_seed_same_bytes_other_seed_other_data(tiny: Path, tmp_path: Path):
    again = D.make_demo(tmp_path / "again", **TINY)
    assert _digests(again) == _digests(tiny)
    other = _digests(D.make_demo(tmp_path / "other", **{**TINY, "seed": 6}))
    first = _digests(tiny)
    assert other["metadata.csv"] != first["metadata.csv"]
    shared = set(other) & set(first) - {"metadata.csv", "planted_biases.json", "demo.json"}
    assert sum(other[k] != first[k] for k in shared) > 0.9 * len(shared)


def test_identical_demo_is_reused_and_anything_else_refused(tmp_path: Path):
    out = D.make_demo(tmp_path / "demo", n_patients=12, seed=0, image_size=16)
    stamp = (out / "metadata.csv").stat().st_mtime_ns
    assert D.make_demo(out, n_patients=12, seed=0, image_size=16) == out
    assert (out / "metadata.csv").stat().st_mtime_ns == stamp  # returned, not rewritten
    with pytest.raises(FileExistsError, match="not a demo with these parameters"):
        D.make_demo(out, n_patients=12, seed=1, image_size=16)
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        D.make_demo(user, n_patients=12)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert (D.make_demo(tmp_path / "empty", n_patients=12, image_size=16) / "demo.json").exists()
    with pytest.raises(ValueError):
        D.make_demo(tmp_path / "small", n_patients=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "empty", "user"]  # no temporary leftovers


def test_planted_biases_json_describes_the_sample(tiny: Path, meta: pd.DataFrame):
    planted = json.loads((tiny / "planted_biases.json").read_text())
    assert json.loads((tiny / "demo.json").read_text()) == {
        k: planted[k] for k in ("generator_version", "n_patients", "seed", "image_size")}
    assert planted["seed"] == TINY["seed"] and planted["prevalence_by_age_band"]["direction"] == "increasing"
    assert planted["prevalence_by_view"]["higher"] == "AP"
    simpson = {"attribute": S.SEX, "stratifier": S.AGE_BAND, "crude_direction": "F<M", "within_direction": "F>M"}
    assert simpson.items() <= planted["simpson"].items()
    assert planted["shortcut"]["attribute"] == S.VIEW and planted["shortcut"]["correlation"]["marker_view"] > 0.7
    under = planted["underdiagnosed_group"]
    assert (under["attribute"], under["group"]) == (S.SEX, "F") and under["lesion_contrast_factor"] < 0.6
    sizes = planted["sizes"]
    assert sizes["images"] == len(meta) and sizes["patients"] == meta["Patient ID"].nunique() == TINY["n_patients"]
    assert sizes["valid_images"] == (meta["split"] == "valid").sum()
    assert sizes["malade"] == (meta["folder"] == S.POSITIVE_DIR).sum()


# ---------------------------------------------------------------- planted prevalence effects


def test_prevalence_rises_with_age_and_is_higher_in_ap(medium: pd.DataFrame):
    by_band = medium.groupby("band", observed=True)["label"].mean()
    assert list(by_band.index) == list(D.BAND_LABELS) and by_band.is_monotonic_increasing
    assert by_band.iloc[-1] - by_band.iloc[0] > 0.2
    by_view = medium.groupby("View Position")["label"].mean()
    assert by_view["AP"] - by_view["PA"] > 0.05
    assert medium.groupby("Patient ID")["label"].nunique().max() == 2  # labels change between follow-ups


def _f_minus_m(frame: pd.DataFrame, sex: str = "Patient Gender") -> float:
    by_sex = frame.groupby(sex)["label"].mean()
    return by_sex["F"] - by_sex["M"]


def test_simpson_crude_difference_in_the_written_metadata(medium: pd.DataFrame):
    assert _f_minus_m(medium) < -0.1  # crude: women less often sick...
    ages = medium.groupby("Patient Gender")["Patient Age"].mean()
    assert ages["F"] < ages["M"] - 15  # ...because they are much younger
    within = medium.groupby("band", observed=True)[["Patient Gender", "label"]].apply(_f_minus_m)
    assert (within.drop("0-39") > 0.05).all(), within  # the two bands with enough of both sexes


def test_simpson_reversal_within_every_age_band():
    """Within each band women are MORE often sick (5,000 patients: every band holds 200+ of each sex)."""
    rows = D._sample_rows(5000, seed=0)
    band = np.take(D.BAND_LABELS, D._band(rows["age"].to_numpy()))
    assert _f_minus_m(rows, "sex") < -0.1
    within = rows.groupby(band)[["sex", "label"]].apply(_f_minus_m, sex="sex")
    assert list(within.index) == list(D.BAND_LABELS) and (within > 0.08).all(), within


@pytest.mark.parametrize("n_patients", [400, D.DEFAULT_PATIENTS])
def test_crude_sex_difference_interval_excludes_zero_at_default_sizes(n_patients: int):
    """Patient-level cluster bootstrap (1,000 replicates) of the crude F-M prevalence difference."""
    rows = D._sample_rows(n_patients, seed=0)
    patients, index = np.unique(rows["pid"], return_inverse=True)
    draws = np.random.default_rng(0).multinomial(len(patients), np.full(len(patients), 1 / len(patients)), 1000)
    w = draws[:, index]
    female, sick = (rows["sex"] == "F").to_numpy(), rows["label"].to_numpy()
    rd = (w * sick * female).sum(1) / (w * female).sum(1) - (w * sick * ~female).sum(1) / (w * ~female).sum(1)
    assert np.percentile(rd, 97.5) < 0, np.percentile(rd, [2.5, 97.5])


# ---------------------------------------------------------------- images: shortcut and lesion contrast


def test_ap_marker_makes_a_bright_corner(tiny: Path, meta: pd.DataFrame):
    def bright_corner_pixels(name: str) -> int:
        split, folder = meta.set_index("Image Index").loc[name, ["split", "folder"]]
        return int((np.asarray(Image.open(tiny / split / folder / name))[:8, :13] > 200).sum())

    bright = meta["Image Index"].map(bright_corner_pixels) >= 6
    share = bright.groupby(meta["View Position"]).mean()
    assert share["AP"] > 0.75 and share["PA"] < 0.1, share


def test_lesions_have_lower_contrast_for_women(tiny: Path, meta: pd.DataFrame):
    """Written image minus the same image rendered without lesions: zero when healthy, fainter for F."""
    rows = D._sample_rows(TINY["n_patients"], TINY["seed"])
    diff = {}
    for r, m in zip(rows.itertuples(), meta.itertuples(), strict=True):
        written = np.asarray(Image.open(tiny / m.split / m.folder / r.image), dtype=float)
        diff[r.Index] = np.abs(written - D._render(r, TINY["image_size"], TINY["seed"], lesions=False)).mean()
    rows["diff"] = pd.Series(diff)
    assert (rows.loc[rows["label"] == 0, "diff"] == 0).all()
    by_sex = rows[rows["label"] == 1].groupby("sex")["diff"].mean()
    assert by_sex["M"] > 0.5 and by_sex["F"] < 0.6 * by_sex["M"], by_sex


# ---------------------------------------------------------------- calibration on the real metadata


def _close(computed, constant, tol: float, key: str) -> None:
    if isinstance(constant, dict):
        assert set(computed) == set(constant), key
        for k in constant:
            _close(computed[k], constant[k], tol, f"{key}.{k}")
    elif isinstance(constant, tuple):
        assert len(computed) == len(constant), key
        for i, (a, b) in enumerate(zip(computed, constant, strict=True)):
            _close(a, b, tol, f"{key}[{i}]")
    else:
        assert computed == pytest.approx(constant, abs=tol), key


def test_calibration_constants_match_the_official_nih_metadata():
    if not NIH_FULL.exists():
        pytest.skip(f"official NIH metadata not found at {NIH_FULL} (../shared is not mounted)")
    real = D.calibrate(NIH_FULL)
    assert set(real) == set(D.NIH_CALIBRATION)
    for key, constant in D.NIH_CALIBRATION.items():
        _close(real[key], constant, 0.06 if key == "age" else 1e-3, key)
    assert real["prevalence_by_band"]["60+"] > real["prevalence_by_band"]["0-39"]
    assert real["logit"]["AP"] > 0.3
