"""A synthetic dataset in the users' layout, with known biases planted in it.

`make_demo(DIR)` writes DIR/{train,valid}/{malade,sain}/*.png (8-bit grey, split by patient, ~70/30),
DIR/metadata.csv (the official NIH columns), DIR/planted_biases.json (what was planted, and what a
correct analysis must find) and DIR/demo.json (the parameters). Same seed, same bytes.

Base rates are calibrated on the official NIH ChestX-ray14 metadata (`calibrate` recomputes them);
the effects are amplified so that a few hundred patients show them:

1. prevalence of `malade` rises with age and is higher in AP than in PA views (logistic model);
2. women are younger than men, and within every age band more often sick: the crude sex difference
   has the opposite sign of the within-band one (Simpson's paradox);
3. AP images mostly carry a bright "AP" marker in a corner and a brighter, flatter exposure: a
   shortcut correlated with the view, hence with the label;
4. lesions are drawn with lower contrast for women, so a model under-diagnoses them (lower TPR).

Defaults: 500 patients (about 1,000 images, 1 to 8 per patient, 42 MB), 256 px: about 8 s on one CPU core.
Lesions are faint, as on real radiographs: the default small CNN at 128 px reaches an AUC of 0.78-0.91
(published NIH results are near 0.8) with a sensitivity 37-57 points lower for women than for men.
What a trained network shows changes with the seed and the CPU kernels: docs/DEMO.md says which
planted effects appear on every run (the marker, women's under-diagnosis) and which are marginal (the
amplification of the sex and view gaps), measured by `python -m pipeline.planted`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.config import DEMO_GENERATOR_VERSION
from pipeline.data import schema as S

DEFAULT_PATIENTS = 500


MIN_PATIENTS, MIN_SIZE = 10, 16


GENERATOR_VERSION = DEMO_GENERATOR_VERSION  # defined in config: the demo folder's name carries it


HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


BANDS = (0, 40, 60, 200)


BAND_LABELS = ("0-39", "40-59", "60+")


AGE_CENTRE = 50  # the logistic models use (age - 50) / 10: log-odds per decade


NIH_SHARE_FEMALE = 0.460  # patients


NIH_SHARE_AP = 0.400


NIH_PREVALENCE = 0.462  # any finding


NIH_PREVALENCE_BY_BAND = {"0-39": 0.419, "40-59": 0.463, "60+": 0.517}


NIH_PREVALENCE_BY_VIEW = {"AP": 0.530, "PA": 0.416}


NIH_PREVALENCE_BY_SEX = {"F": 0.458, "M": 0.464}


NIH_PREVALENCE_BY_SEX_BAND = {"F": {"0-39": 0.405, "40-59": 0.462, "60+": 0.531},
                              "M": {"0-39": 0.431, "40-59": 0.465, "60+": 0.507}}


NIH_AGE = {"F": (44.7, 16.1), "M": (46.2, 17.2)}  # patients' age at first image: mean, sd


NIH_AP_SHARE_BY_BAND = {"0-39": 0.423, "40-59": 0.389, "60+": 0.387}


NIH_LOGIT = {"intercept": -0.311, "age_per_decade": 0.097, "AP": 0.474, "F": -0.005}


NIH_IMAGES_PER_PATIENT = (0.568, 0.134, 0.068, 0.043, 0.030, 0.026, 0.020, 0.016)  # 1..8 images, patients


NIH_N_FINDINGS = (0.598, 0.276, 0.094, 0.032)  # 1, 2, 3, 4+ findings, among sick images


NIH_FINDINGS = {  # share of all images that carry each finding
    "Infiltration": 0.177, "Effusion": 0.119, "Atelectasis": 0.103, "Nodule": 0.056, "Mass": 0.052,
    "Pneumothorax": 0.047, "Consolidation": 0.042, "Pleural_Thickening": 0.030, "Cardiomegaly": 0.025,
    "Emphysema": 0.022, "Edema": 0.021, "Fibrosis": 0.015, "Pneumonia": 0.013, "Hernia": 0.002,
}


NIH_PIXEL_SPACING = {0.139: 0.210, 0.143: 0.416, 0.168: 0.374}  # shares among these three values


LOGIT = {"intercept": -1.0, "age_per_decade": 0.90, "AP": 0.80, "F": 1.60}


PATIENT_EFFECT_SD = 0.4  # a patient's images are correlated; labels still change between follow-ups


AGE_MEAN = {"F": 35.0, "M": 63.0}  # women much younger: the crude F-M difference becomes negative


AGE_SD = 14.0


MARKER_PROBABILITY = {"AP": 0.90, "PA": 0.03}  # bright "AP" text block, top-left corner


AP_EXPOSURE = (0.88, 0.08)  # AP: img * gain + offset (brighter, flatter)


LESION_CONTRAST = 0.065  # peak opacity of a lesion for men (image in [0, 1]); 0.16 made the task too easy, 0.05 left
# the image model no better than the attributes on some machines (mean AUC 0.81 against 0.78)


LESION_CONTRAST_FACTOR_F = 0.3  # women's lesions: 30 % of men's contrast (0.45: under-diagnosis on 5 of 8 runs)


DISTRACTOR_CONTRAST = 0.05  # normal overlapping structures (vessels), signed, in every image


NOISE_SD = 0.02


def _p(values: Any) -> np.ndarray:
    """Rounded shares as probabilities that sum to one."""
    p = np.asarray(list(values), float)
    return p / p.sum()


def _band(age: np.ndarray) -> np.ndarray:
    return np.digitize(age, BANDS[1:-1])


def _logit(age: np.ndarray, ap: np.ndarray, female: np.ndarray, coef: dict) -> np.ndarray:
    return (coef["intercept"] + coef["age_per_decade"] * (age - AGE_CENTRE) / 10
            + coef["AP"] * ap + coef["F"] * female)


def _patients(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """One row per patient: sex, age at first image, number of images, random effect, anatomy."""
    female = rng.random(n) < NIH_SHARE_FEMALE
    age = rng.normal(np.where(female, AGE_MEAN["F"], AGE_MEAN["M"]), AGE_SD).round().clip(1, 95)
    p = _p(NIH_IMAGES_PER_PATIENT)
    return pd.DataFrame({
        "pid": np.arange(1, n + 1), "sex": np.where(female, "F", "M"), "age0": age.astype(int),
        "n_images": rng.choice(np.arange(1, len(p) + 1), size=n, p=p),
        "effect": rng.normal(0, PATIENT_EFFECT_SD, n),
        "lung_w": rng.normal(1, 0.06, n), "lung_h": rng.normal(1, 0.06, n),
        "heart": rng.normal(1, 0.08, n), "shift": rng.normal(0, 0.015, n),
    })


def _findings(rng: np.random.Generator, sick: np.ndarray) -> list[str]:
    """'No Finding' or 1-4 NIH findings, weighted without replacement (Gumbel top-k), sorted by name."""
    names = np.array(sorted(NIH_FINDINGS))
    weights = np.array([NIH_FINDINGS[n] for n in names])
    k = np.where(sick, 1 + rng.choice(4, size=len(sick), p=_p(NIH_N_FINDINGS)), 0)
    keys = np.log(weights) + rng.gumbel(size=(len(sick), len(names)))
    top = np.argsort(-keys, axis=1)
    chosen = [sorted(names[top[i, :k[i]]]) for i in range(len(sick))]
    return ["|".join(c) if c else S.NO_FINDING for c in chosen]


def _images(rng: np.random.Generator, patients: pd.DataFrame) -> pd.DataFrame:
    """One row per image: follow-up, age, view, label (logistic model), findings, AP marker."""
    rows = patients.loc[patients.index.repeat(patients["n_images"])].reset_index(drop=True)
    rows["follow_up"] = rows.groupby("pid").cumcount()
    rows["age"] = (rows["age0"] + rows["follow_up"] // 2).clip(upper=95)
    ap_share = np.take(list(NIH_AP_SHARE_BY_BAND.values()), _band(rows["age"].to_numpy()))
    ap = rng.random(len(rows)) < ap_share
    rows["view"] = np.where(ap, "AP", "PA")
    logit = _logit(rows["age"].to_numpy(), ap, rows["sex"].to_numpy() == "F", LOGIT) + rows["effect"]
    rows["label"] = (rng.random(len(rows)) < 1 / (1 + np.exp(-logit))).astype(int)
    rows["findings"] = _findings(rng, rows["label"].to_numpy() == 1)
    rows["n_findings"] = np.where(rows["label"] == 1, rows["findings"].str.count("[|]") + 1, 0)
    marker_p = np.where(ap, MARKER_PROBABILITY["AP"], MARKER_PROBABILITY["PA"])
    rows["marker"] = rng.random(len(rows)) < marker_p
    rows["image"] = [f"{p:08d}_{k:03d}.png" for p, k in zip(rows["pid"], rows["follow_up"], strict=True)]
    return rows


def _split(rng: np.random.Generator, rows: pd.DataFrame, share_valid: float = 0.3) -> pd.Series:
    """train/valid by patient, stratified on sex and ever-sick so both splits hold every group."""
    per_patient = rows.groupby("pid").agg(sex=("sex", "first"), sick=("label", "max"))
    split = pd.Series("train", index=per_patient.index)
    for _, group in per_patient.groupby(["sex", "sick"]):
        pids = rng.permutation(group.index.to_numpy())
        split[pids[: round(share_valid * len(pids))]] = "valid"
    return rows["pid"].map(split)


def _sample_rows(n_patients: int, seed: int) -> pd.DataFrame:
    """The image-level table of a demo (no pixels): everything metadata.csv and the images need."""
    rng = np.random.default_rng(seed)
    rows = _images(rng, _patients(rng, n_patients))
    rows["split"] = _split(rng, rows)
    rows["width"] = rng.integers(2500, 3057, len(rows))
    rows["height"] = rng.integers(2500, 3057, len(rows))
    rows["spacing"] = rng.choice(list(NIH_PIXEL_SPACING), size=len(rows), p=_p(NIH_PIXEL_SPACING.values()))
    return rows


def _metadata_csv(rows: pd.DataFrame) -> str:
    lines = [HEADER] + [
        f"{r.image},{r.findings},{r.follow_up},{r.pid},{r.age},{r.sex},{r.view},"
        f"{r.width},{r.height},{r.spacing},{r.spacing}" for r in rows.itertuples()]
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [0, 1]: column vector y, row vector x (broadcast, never materialised twice)."""
    t = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    return t[:, None], t[None, :]


def _soft(r2: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-mask of an ellipse given its normalised squared radius."""
    return 0.5 - 0.5 * np.tanh((r2 - 1) / (2 * width))  # = logistic, without overflow


def _lungs(a: Any) -> list[tuple[float, float, float, float]]:
    """Lung ellipses (cx, cy, rx, ry) of a patient's anatomy."""
    rx, ry = 0.14 * a.lung_w, 0.30 * a.lung_h
    return [(0.5 + a.shift + side * 0.175 * a.lung_w, 0.47, rx, ry) for side in (-1, 1)]


def _chest(rng: np.random.Generator, size: int, a: Any) -> np.ndarray:
    """A chest-like radiograph in [0, 1]: torso, dark lungs, mediastinum, heart, clavicles, ribs, noise."""
    y, x = _grid(size)
    dx = x - (0.5 + a.shift)
    torso = _soft((dx / 0.45) ** 4 + ((y - 0.72) / 0.62) ** 4, 0.1) + _soft((dx / 0.09) ** 2 + (y / 0.2) ** 2, 0.1)
    lungs = sum(_soft(((x - lx) / rx) ** 2 + ((y - ly) / ry) ** 2 * (1 + 0.6 * (y < ly)), 0.05)
                for lx, ly, rx, ry in _lungs(a))
    heart = _soft(((dx - 0.05) / (0.13 * a.heart)) ** 2 + ((y - 0.63) / 0.11) ** 2, 0.15)
    mediastinum = np.exp(-((dx / 0.05) ** 2)) * (y > 0.08)
    ribs = (0.5 + 0.5 * np.sin(2 * np.pi * (8.5 * y + 2.5 * dx**2))) ** 6
    clavicles = np.exp(-(((y - 0.2 + 0.2 * np.abs(dx)) / 0.014) ** 2)) * (np.abs(dx) > 0.03) * (np.abs(dx) < 0.32)
    img = 0.05 + 0.55 * np.minimum(torso, 1) - 0.38 * lungs * (1 - heart) + 0.14 * mediastinum + 0.06 * heart
    img = img + torso * (0.04 * ribs + 0.10 * clavicles) + 0.04 * lungs * ribs
    return img + rng.normal(0, NOISE_SD, (size, size)).astype(np.float32)


def _blobs(rng: np.random.Generator, size: int, a: Any, count: int, contrast: np.ndarray,
           radius: tuple[float, float]) -> np.ndarray:
    """Sum of Gaussian opacities (separable, so each costs two vectors) centred inside the lungs."""
    y, x = _grid(size)
    out = np.zeros((size, size), np.float32)
    lungs = _lungs(a)
    for k in range(count):
        lx, ly, rx, ry = lungs[rng.integers(2)]
        angle, rho = rng.uniform(0, 2 * np.pi), 0.8 * np.sqrt(rng.random())
        px, py, s = lx + rho * rx * np.cos(angle), ly + rho * ry * np.sin(angle), rng.uniform(*radius)
        out += contrast[k] * np.exp(-((y - py) ** 2) / (2 * s * s)) * np.exp(-((x - px) ** 2) / (2 * s * s))
    return out


def _lesion_contrast(sex: str) -> float:
    return LESION_CONTRAST * (LESION_CONTRAST_FACTOR_F if sex == "F" else 1.0)


def _marker(img: np.ndarray, rng: np.random.Generator) -> None:
    """A bright text-like "AP" block in the top-left corner (a portable-unit marker)."""
    glyphs = np.array([[0, 1, 1, 0, 0, 1, 1, 1, 0], [1, 0, 0, 1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 0, 1, 1, 1, 0],
                       [1, 0, 0, 1, 0, 1, 0, 0, 0], [1, 0, 0, 1, 0, 1, 0, 0, 0]], bool)
    size = img.shape[0]
    h, w = max(3, round(size * 0.06)), max(5, round(size * 0.13))
    top, left = (round(size * (0.04 + rng.uniform(0, 0.02))) for _ in range(2))
    cells = glyphs[np.arange(h) * 5 // h][:, np.arange(w) * 9 // w]
    block = img[top : top + h, left : left + w]
    block[cells] = 0.97


def _render(row: Any, size: int, seed: int, lesions: bool = True) -> np.ndarray:
    """One 8-bit grey image. Lesions come from their own random stream, so `lesions=False` renders
    exactly the same image without them (tests measure the lesion contrast that way)."""
    base, lesion_rng = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, row.Index]).spawn(2))
    img = _chest(base, size, row)
    n = int(base.integers(2, 6))
    img += _blobs(base, size, row, n, DISTRACTOR_CONTRAST * base.uniform(-1, 1, n), (0.015, 0.04))
    if lesions and row.label:
        n = int(row.n_findings) + 1
        contrast = _lesion_contrast(row.sex) * lesion_rng.uniform(0.8, 1.2, n)
        img += _blobs(lesion_rng, size, row, n, contrast, (0.03, 0.07))
    if row.view == "AP":
        img = img * AP_EXPOSURE[0] + AP_EXPOSURE[1]
    if row.marker:
        _marker(img, base)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _rd(rows: pd.DataFrame, mask: np.ndarray | pd.Series | None = None) -> float:
    """Prevalence difference F - M (images)."""
    r = rows if mask is None else rows[mask]
    by_sex = r.groupby("sex")["label"].mean()
    return round(float(by_sex.get("F", np.nan) - by_sex.get("M", np.nan)), 4)


def _phi(a: pd.Series, b: pd.Series) -> float:
    return round(float(np.corrcoef(a.astype(float), b.astype(float))[0, 1]), 4)


def _prevalence(rows: pd.DataFrame, by: pd.Series | np.ndarray) -> dict:
    return {str(k): round(float(v), 4) for k, v in rows.groupby(by)["label"].mean().items()}


def planted_biases(params: dict, rows: pd.DataFrame) -> dict:
    """The true parameters, the expected directions and what this sample shows (planted_biases.json)."""
    band = pd.Series(np.take(BAND_LABELS, _band(rows["age"].to_numpy())), index=rows.index)
    patients = rows.groupby("pid").first()
    return {
        **params,
        "model": {"logit": LOGIT, "age_centre": AGE_CENTRE, "patient_effect_sd": PATIENT_EFFECT_SD,
                  "nih_logit": NIH_LOGIT},
        "prevalence_by_age_band": {"direction": "increasing", "logit_per_decade": LOGIT["age_per_decade"],
                                   "observed": _prevalence(rows, band), "nih": NIH_PREVALENCE_BY_BAND},
        "prevalence_by_view": {"higher": "AP", "reference": "PA", "logit_AP_vs_PA": LOGIT["AP"],
                               "observed": _prevalence(rows, rows["view"]), "nih": NIH_PREVALENCE_BY_VIEW},
        "simpson": {"attribute": S.SEX, "stratifier": S.AGE_BAND, "group": "F", "reference": "M",
                    "crude_direction": "F<M", "within_direction": "F>M", "within_logit_F_vs_M": LOGIT["F"],
                    "mean_age": AGE_MEAN, "age_sd": AGE_SD, "observed_crude_rd": _rd(rows),
                    "observed_within_rd": {b: _rd(rows, band == b) for b in BAND_LABELS}},
        "shortcut": {"attribute": S.VIEW, "group": "AP",
                     "artifact": "bright 'AP' text block in the top-left corner; brighter, flatter exposure",
                     "marker_probability": MARKER_PROBABILITY, "exposure_gain_offset": AP_EXPOSURE,
                     "correlation": {"marker_view": _phi(rows["marker"], rows["view"] == "AP"),
                                     "marker_label": _phi(rows["marker"], rows["label"])}},
        "underdiagnosed_group": {"attribute": S.SEX, "group": "F", "expected": "lower TPR for F",
                                 "lesion_contrast_factor": LESION_CONTRAST_FACTOR_F,
                                 "lesion_contrast": {s: _lesion_contrast(s) for s in ("M", "F")},
                                 "distractor_contrast": DISTRACTOR_CONTRAST},
        "sizes": {"patients": len(patients), "images": len(rows),
                  **{f"{s}_images": int((rows["split"] == s).sum()) for s in S.SPLITS},
                  **{f"{s}_patients": int((patients["split"] == s).sum()) for s in S.SPLITS},
                  "malade": int(rows["label"].sum()), "sain": int((rows["label"] == 0).sum())},
    }


def _write(out: Path, rows: pd.DataFrame, params: dict) -> None:
    for split in S.SPLITS:
        for folder in (S.POSITIVE_DIR, S.NEGATIVE_DIR):
            (out / split / folder).mkdir(parents=True)
    for r in rows.itertuples():
        folder = S.POSITIVE_DIR if r.label else S.NEGATIVE_DIR
        img = Image.fromarray(_render(r, params["image_size"], params["seed"]))
        img.save(out / r.split / folder / r.image, format="PNG", optimize=False, compress_level=6)
    (out / "metadata.csv").write_text(_metadata_csv(rows), encoding="utf-8", newline="\n")
    (out / "planted_biases.json").write_text(json.dumps(planted_biases(params, rows), indent=2) + "\n")
    (out / "demo.json").write_text(json.dumps(params, sort_keys=True) + "\n")  # last: marks a complete demo


def _same_demo(out: Path, params: dict) -> bool:
    try:
        return json.loads((out / "demo.json").read_text()) == params
    except (OSError, ValueError):
        return False


def _occupied(out: Path) -> bool:
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


def _publish(tmp: Path, out: Path, params: dict) -> None:
    """Rename the finished folder into place; a concurrent identical demo is as good as ours."""
    try:
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        os.replace(tmp, out)
    except OSError as err:
        if not _same_demo(out, params):
            raise FileExistsError(f"{out} appeared while the demo was being written; not overwritten.") from err


def make_demo(out_dir: Path, n_patients: int = DEFAULT_PATIENTS, seed: int = 0, image_size: int = 256) -> Path:
    """Write the demo dataset to `out_dir` (atomically) and return it.

    Deterministic from `seed` (same arguments, same bytes). An identical previous demo (same
    `demo.json`) is returned as is; any other non-empty `out_dir` raises FileExistsError, so nothing
    of the user's is ever overwritten. Defaults: 500 patients, about 1,000 images, 256 px.
    """
    out = Path(out_dir)
    params = {"generator_version": GENERATOR_VERSION, "n_patients": int(n_patients), "seed": int(seed),
              "image_size": int(image_size)}
    if _same_demo(out, params):
        return out
    if _occupied(out):
        raise FileExistsError(f"{out} exists and is not a demo with these parameters ({params}); "
                              "choose an empty or new folder.")
    if n_patients < MIN_PATIENTS or image_size < MIN_SIZE:
        raise ValueError(f"the demo needs at least {MIN_PATIENTS} patients and {MIN_SIZE} px images")
    rows = _sample_rows(int(n_patients), int(seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        tmp.mkdir()
        _write(tmp, rows, params)
        _publish(tmp, out, params)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _fit_logit(X: np.ndarray, y: np.ndarray, iterations: int = 25) -> np.ndarray:
    """Maximum-likelihood logistic regression (Newton-Raphson)."""
    beta = np.zeros(X.shape[1])
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-X @ beta))
        step = np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (y - p))
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta


def calibrate(metadata_csv_gz: Path) -> dict:
    """Recompute the NIH_* constants from an official NIH metadata file (the tests compare them)."""
    m = pd.read_csv(metadata_csv_gz)
    sick = (m[S.FINDINGS] != S.NO_FINDING).astype(float)
    band = pd.Series(np.take(BAND_LABELS, _band(m[S.AGE_RAW].to_numpy())), index=m.index)
    sex, ap, age = m[S.SEX_RAW], (m[S.VIEW_RAW] == "AP").astype(float), m[S.AGE_RAW]
    first = m.sort_values(S.FOLLOW_UP).groupby(S.PATIENT_ID).first()
    per_patient = m.groupby(S.PATIENT_ID).size().value_counts(normalize=True)
    counts = m.loc[sick == 1, S.FINDINGS].str.count("[|]").add(1).clip(upper=4).value_counts(normalize=True)
    spacing = m["OriginalImagePixelSpacing[x"].round(3).value_counts()
    X = np.column_stack([np.ones(len(m)), (age - AGE_CENTRE) / 10, ap, (sex == "F").astype(float)])
    return {
        "share_female": float((first[S.SEX_RAW] == "F").mean()), "share_ap": float(ap.mean()),
        "prevalence": float(sick.mean()),
        "prevalence_by_band": sick.groupby(band).mean().to_dict(),
        "prevalence_by_view": sick.groupby(m[S.VIEW_RAW]).mean().to_dict(),
        "prevalence_by_sex": sick.groupby(sex).mean().to_dict(),
        "prevalence_by_sex_band": {s: sick[sex == s].groupby(band[sex == s]).mean().to_dict() for s in ("F", "M")},
        "age": {s: (float(g.mean()), float(g.std())) for s, g in first.groupby(S.SEX_RAW)[S.AGE_RAW]},
        "ap_share_by_band": ap.groupby(band).mean().to_dict(),
        "logit": dict(zip(NIH_LOGIT, _fit_logit(X, sick.to_numpy()).tolist(), strict=True)),
        "images_per_patient": tuple(float(per_patient.get(k, 0.0)) for k in range(1, 9)),
        "n_findings": tuple(float(counts.get(k, 0.0)) for k in range(1, 5)),
        "findings": (m[S.FINDINGS].str.split("|").explode().value_counts() / len(m)).drop(S.NO_FINDING).to_dict(),
        "pixel_spacing": (spacing[list(NIH_PIXEL_SPACING)] / spacing[list(NIH_PIXEL_SPACING)].sum()).to_dict(),
    }


NIH_CALIBRATION = {
    "share_female": NIH_SHARE_FEMALE, "share_ap": NIH_SHARE_AP, "prevalence": NIH_PREVALENCE,
    "prevalence_by_band": NIH_PREVALENCE_BY_BAND, "prevalence_by_view": NIH_PREVALENCE_BY_VIEW,
    "prevalence_by_sex": NIH_PREVALENCE_BY_SEX, "prevalence_by_sex_band": NIH_PREVALENCE_BY_SEX_BAND,
    "age": NIH_AGE, "ap_share_by_band": NIH_AP_SHARE_BY_BAND, "logit": NIH_LOGIT,
    "images_per_patient": NIH_IMAGES_PER_PATIENT, "n_findings": NIH_N_FINDINGS, "findings": NIH_FINDINGS,
    "pixel_spacing": NIH_PIXEL_SPACING,
}
