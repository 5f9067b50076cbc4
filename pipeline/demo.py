"""A synthetic dataset in the users' layout, with known biases planted in it.

`make_demo(DIR)` writes DIR/{train,valid}/{malade,sain}/*.png, DIR/metadata.csv (NIH columns) and
DIR/planted_biases.json. Base rates are calibrated on the official NIH ChestX-ray14 metadata
(`calibrate` recomputes them); the effects are amplified so that a few hundred patients show them:

- prevalence rises with the age band and is higher in AP than in PA views;
- women are younger than men, and within every age band more often sick: the crude sex difference
  has the opposite sign of the within-band one (Simpson's paradox);
- AP images carry a bright corner marker and a brighter exposure (a shortcut correlated with view);
- lesions are drawn with lower contrast for women, so a model under-diagnoses them (lower TPR).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import schema as S

# Calibration on Data_Entry_2017_v2020.csv.gz (112,120 images, 30,805 patients): share of women,
# share of AP views, prevalence of any finding by age band (0-39, 40-59, 60+) and by view,
# and the relative frequency of each finding among findings.
NIH_SHARE_FEMALE = 0.435
NIH_SHARE_AP = 0.400
NIH_PREVALENCE_BY_BAND = {"0-39": 0.419, "40-59": 0.463, "60+": 0.517}
NIH_PREVALENCE_BY_VIEW = {"AP": 0.530, "PA": 0.416}
NIH_FINDINGS = {
    "Infiltration": 0.141, "Effusion": 0.094, "Atelectasis": 0.082, "Nodule": 0.045, "Mass": 0.041,
    "Pneumothorax": 0.037, "Consolidation": 0.033, "Pleural_Thickening": 0.024, "Cardiomegaly": 0.020,
    "Emphysema": 0.018, "Edema": 0.016, "Fibrosis": 0.012, "Pneumonia": 0.010, "Hernia": 0.002,
}

BANDS = (0, 40, 60, 200)
BAND_LABELS = ("0-39", "40-59", "60+")
# Planted effects (log-odds), amplified from the NIH values so that they are detectable.
BAND_LOGIT = (-1.4, -0.5, 0.4)  # base prevalence by age band before the view and sex terms
AP_LOGIT = 0.8  # NIH: logit(0.530) - logit(0.416) = 0.46
FEMALE_WITHIN_BAND_LOGIT = 0.6  # women more often sick within each band...
AGE_MEAN = {"F": 36.0, "M": 62.0}  # ...but much younger, so crude prevalence is lower for women
AGE_SD = 13.0
AP_SHARE_BY_BAND = (0.30, 0.40, 0.55)  # older patients are more often imaged AP (bedside)
PATIENT_EFFECT_SD = 0.8  # images of one patient are correlated
LESION_CONTRAST = {"M": 0.16, "F": 0.07}  # women's lesions are harder to see
DISTRACTOR_CONTRAST = 0.07  # overlapping normal structures: every image has some blobs
AP_MARKER_INTENSITY = 0.95
AP_EXPOSURE_SHIFT = 0.06
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def _band_index(age: np.ndarray) -> np.ndarray:
    return np.digitize(age, BANDS[1:-1])


def _patients(rng: np.random.Generator, n_patients: int) -> pd.DataFrame:
    sex = np.where(rng.random(n_patients) < NIH_SHARE_FEMALE, "F", "M")
    age = rng.normal([AGE_MEAN[s] for s in sex], AGE_SD).round().clip(1, 90).astype(int)
    n_images = np.minimum(1 + rng.geometric(0.45, n_patients) - 1, 8)
    effect = rng.normal(0, PATIENT_EFFECT_SD, n_patients)
    return pd.DataFrame({"pid": np.arange(1, n_patients + 1), "sex": sex, "age": age,
                         "n_images": n_images, "effect": effect})


def _images(rng: np.random.Generator, patients: pd.DataFrame) -> pd.DataFrame:
    rows = patients.loc[patients.index.repeat(patients["n_images"])].reset_index(drop=True)
    rows["follow_up"] = rows.groupby("pid").cumcount()
    rows["age"] = (rows["age"] + rows["follow_up"] // 2).clip(1, 95)
    band = _band_index(rows["age"].to_numpy())
    rows["view"] = np.where(rng.random(len(rows)) < np.take(AP_SHARE_BY_BAND, band), "AP", "PA")
    logit = (np.take(BAND_LOGIT, band) + AP_LOGIT * (rows["view"] == "AP")
             + FEMALE_WITHIN_BAND_LOGIT * (rows["sex"] == "F") + rows["effect"])
    rows["label"] = (rng.random(len(rows)) < 1 / (1 + np.exp(-logit))).astype(int)
    names, freq = list(NIH_FINDINGS), np.array(list(NIH_FINDINGS.values()))
    findings = []
    for sick in rows["label"]:
        k = rng.integers(1, 4) if sick else 0
        chosen = rng.choice(len(names), size=k, replace=False, p=freq / freq.sum())
        findings.append("|".join(names[i] for i in sorted(chosen)) if k else S.NO_FINDING)
    rows["findings"] = findings
    return rows


def _split(rng: np.random.Generator, patients: pd.DataFrame, share_valid: float = 0.3) -> dict[int, str]:
    pids = patients["pid"].to_numpy()
    valid = set(rng.choice(pids, size=max(2, round(share_valid * len(pids))), replace=False))
    return {int(p): ("valid" if p in valid else "train") for p in pids}


def _chest(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey chest-like image in [0, 1] and the mask of its lung fields."""
    y, x = np.mgrid[0:size, 0:size] / size
    body = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.5) ** 2 < 1
    lungs = np.zeros_like(body)
    for cx in (0.32, 0.68):
        lungs |= ((x - cx + rng.normal(0, 0.01)) / 0.14) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1
    img = 0.08 + 0.55 * body - 0.35 * lungs
    img += 0.25 * (np.abs(x - 0.5) < 0.05) * (y > 0.15)  # spine and mediastinum
    img += 0.06 * lungs * (np.sin(2 * np.pi * (y * 9 + 0.5 * np.abs(x - 0.5))) > 0.6)  # ribs
    img += rng.normal(0, 0.03, img.shape)
    return img, lungs


def _draw_blobs(rng: np.random.Generator, img: np.ndarray, lungs: np.ndarray, contrast: float,
                count: int, signed: bool = False) -> None:
    """Gaussian opacities inside the lungs: lesions (bright) or normal overlapping structures."""
    size = img.shape[0]
    y, x = np.mgrid[0:size, 0:size] / size
    inside = np.argwhere(lungs)
    for _ in range(count):
        cy, cx = inside[rng.integers(len(inside))] / size
        radius = rng.uniform(0.04, 0.09)
        sign = rng.choice([-1.0, 1.0]) if signed else 1.0
        img += sign * contrast * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)))


def render_image(rng: np.random.Generator, size: int, sick: bool, sex: str, view: str) -> np.ndarray:
    """One 8-bit grey image with the planted lesion contrast and view artifact."""
    img, lungs = _chest(rng, size)
    _draw_blobs(rng, img, lungs, DISTRACTOR_CONTRAST, int(rng.integers(2, 6)), signed=True)
    if sick:
        _draw_blobs(rng, img, lungs, LESION_CONTRAST[sex], int(rng.integers(1, 4)))
    if view == "AP":
        img += AP_EXPOSURE_SHIFT
        m = max(2, size // 10)
        img[m : 2 * m, m : 3 * m] = AP_MARKER_INTENSITY
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _metadata(rows: pd.DataFrame, rng: np.random.Generator) -> str:
    width = rng.integers(2500, 3057, len(rows))
    height = rng.integers(2048, 3057, len(rows))
    spacing = rng.choice([0.139, 0.143, 0.168], len(rows))
    lines = [HEADER]
    for r, w, h, sp in zip(rows.itertuples(), width, height, spacing, strict=True):
        lines.append(f"{r.image},{r.findings},{r.follow_up},{r.pid},{r.age},{r.sex},{r.view},"
                     f"{w},{h},{sp},{sp}")
    return "\n".join(lines) + "\n"


def planted_biases(params: dict, rows: pd.DataFrame) -> dict:
    return {
        **params,
        "prevalence_by_age_band": {"direction": "increasing", "logit": dict(zip(BAND_LABELS, BAND_LOGIT,
                                                                             strict=True))},
        "prevalence_by_view": {"higher": "AP", "logit_AP_vs_PA": AP_LOGIT},
        "simpson": {"attribute": "sex", "stratifier": "age_band", "crude_direction": "F<M",
                    "within_direction": "F>M", "within_logit_F_vs_M": FEMALE_WITHIN_BAND_LOGIT,
                    "mean_age": AGE_MEAN},
        "shortcut": {"attribute": "view", "group": "AP",
                     "artifact": "bright rectangular corner marker and brighter exposure",
                     "exposure_shift": AP_EXPOSURE_SHIFT},
        "underdiagnosed_group": {"attribute": "sex", "group": "F", "lesion_contrast": LESION_CONTRAST},
        "view_by_age_band": dict(zip(BAND_LABELS, AP_SHARE_BY_BAND, strict=True)),
        "sizes": {"patients": int(rows["pid"].nunique()), "images": len(rows),
                  "train": int((rows["split"] == "train").sum()),
                  "valid": int((rows["split"] == "valid").sum())},
    }


def _write(out: Path, rows: pd.DataFrame, params: dict, rng: np.random.Generator) -> None:
    for split in S.SPLITS:
        for folder in (S.POSITIVE_DIR, S.NEGATIVE_DIR):
            (out / split / folder).mkdir(parents=True)
    for r in rows.itertuples():
        pixels = render_image(rng, params["image_size"], bool(r.label), r.sex, r.view)
        folder = S.POSITIVE_DIR if r.label else S.NEGATIVE_DIR
        Image.fromarray(pixels, mode="L").save(out / r.split / folder / r.image, optimize=False)
    (out / "metadata.csv").write_text(_metadata(rows, rng), encoding="utf-8")
    (out / "planted_biases.json").write_text(json.dumps(planted_biases(params, rows), indent=2))
    (out / "demo.json").write_text(json.dumps(params, sort_keys=True))


def make_demo(out_dir: Path, n_patients: int = 400, seed: int = 0, image_size: int = 256) -> Path:
    """Write the demo dataset to `out_dir` (atomically); return `out_dir`.

    Deterministic from `seed`. An identical previous demo is reused; any other non-empty folder
    is refused, so nothing of the user's is overwritten. 400 patients give about 1,000 images.
    """
    out = Path(out_dir)
    params = {"n_patients": int(n_patients), "seed": int(seed), "image_size": int(image_size), "version": 2}
    if out.exists() and any(out.iterdir()):
        stamp = out / "demo.json"
        if stamp.exists() and json.loads(stamp.read_text()) == params:
            return out
        raise FileExistsError(f"{out} exists and is not an identical demo dataset; choose an empty folder.")
    if n_patients < 10:
        raise ValueError("the demo needs at least 10 patients")
    rng = np.random.default_rng(seed)
    patients = _patients(rng, n_patients)
    rows = _images(rng, patients)
    rows["split"] = rows["pid"].map(_split(rng, patients))
    rows["image"] = [f"{p:08d}_{k:03d}.png" for p, k in zip(rows["pid"], rows["follow_up"], strict=True)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        _write(tmp, rows, params, rng)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def calibrate(metadata_csv: Path) -> dict:
    """Recompute the calibration constants from an NIH metadata file (used by the tests)."""
    meta = pd.read_csv(metadata_csv)
    sick = meta[S.FINDINGS] != S.NO_FINDING
    band = pd.cut(meta[S.AGE_RAW], list(BANDS), right=False, labels=list(BAND_LABELS))
    findings = meta.loc[sick, S.FINDINGS].str.split("|").explode()
    return {
        "share_female": float((meta[S.SEX_RAW] == "F").mean()),
        "share_ap": float((meta[S.VIEW_RAW] == "AP").mean()),
        "prevalence_by_band": sick.groupby(band, observed=True).mean().to_dict(),
        "prevalence_by_view": sick.groupby(meta[S.VIEW_RAW]).mean().to_dict(),
        "findings": (findings.value_counts() / len(meta[S.FINDINGS].str.split("|").explode())).to_dict(),
    }
