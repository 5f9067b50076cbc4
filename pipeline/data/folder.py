"""Load a data folder in the course's layout, validate it, and build the canonical frame.

Layout: DIR/train/{malade,sain}/*.png, DIR/valid/{malade,sain}/*.png, DIR/metadata.csv.
Labels come from the folders. Problems are collected as `Issue`s instead of raised one by one,
so `python -m pipeline check DIR` can report them all; the data folder is only ever read.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from pipeline.cache import atomic_write_text, cache_dir, combined_digest, file_digest
from pipeline.config import StudyConfig
from pipeline.data import schema as S


@dataclass(frozen=True)
class Issue:
    level: str  # "error": the study cannot run; "warning": it runs, with a documented exclusion
    code: str
    message: str
    fix: str
    files: tuple[str, ...] = ()

    def format(self, limit: int = 5) -> str:
        shown = ", ".join(self.files[:limit]) + (" ..." if len(self.files) > limit else "")
        where = f"\n    files: {shown}" if self.files else ""
        return f"[{self.level}] {self.code}: {self.message}{where}\n    fix: {self.fix}"


@dataclass
class CheckReport:
    data_dir: Path
    issues: list[Issue] = field(default_factory=list)
    frame: pd.DataFrame | None = None

    @property
    def exit_code(self) -> int:
        if any(i.level == "error" for i in self.issues):
            return 2
        return 1 if self.issues else 0

    def add(self, level: str, code: str, message: str, fix: str, files=()) -> None:
        self.issues.append(Issue(level, code, message, fix, tuple(str(f) for f in files)))

    def codes(self) -> set[str]:
        return {i.code for i in self.issues}

    def format(self) -> str:
        lines = [f"Checked {self.data_dir}"]
        if self.frame is not None:
            f = self.frame
            lines.append(
                f"  {len(f)} images, {f[S.PATIENT].nunique()} patients "
                f"(train {int((f[S.SPLIT] == 'train').sum())}, valid {int((f[S.SPLIT] == 'valid').sum())})"
            )
        lines += [i.format() for i in self.issues] or ["  no problem found"]
        status = {0: "clean", 1: "usable, with warnings", 2: "unusable"}[self.exit_code]
        lines.append(f"Result: {status} (exit code {self.exit_code})")
        return "\n".join(lines)


class DataError(RuntimeError):
    """The data folder cannot be used; the message lists every blocking problem and its fix."""

    def __init__(self, report: CheckReport):
        self.report = report
        super().__init__(report.format())


def read_metadata(path: Path, report: CheckReport, mapping: dict[str, str]) -> pd.DataFrame | None:
    """Read metadata.csv whatever its separator (`,` or `;`) and encoding (UTF-8 or Latin-1)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        report.add("warning", "metadata-encoding", f"{path.name} is not UTF-8; read as Latin-1.",
                   "Save it as UTF-8 to silence this warning.", [path])
    header = text.split("\n", 1)[0]
    sep = ";" if header.count(";") > header.count(",") else ","
    from io import StringIO

    try:
        meta = pd.read_csv(StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        report.add("error", "metadata-unreadable", f"{path} cannot be parsed as CSV ({err}).",
                   "Export it again as a comma-separated CSV with one header line.", [path])
        return None
    meta.columns = [str(c).strip() for c in meta.columns]
    meta = meta.rename(columns=mapping)
    missing = [c for c in S.REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        hints = []
        for col in missing:
            close = difflib.get_close_matches(col, meta.columns, n=1, cutoff=0.5)
            hints.append(f"'{close[0]}' -> '{col}'" if close else f"(none close to '{col}')")
        report.add("error", "metadata-columns", f"{path.name} lacks column(s) {missing}; "
                   f"found {list(meta.columns)}.",
                   "Rename the columns, or map them in study.yml under column_mapping: "
                   + "; ".join(hints), [path])
        return None
    return meta


def list_images(data_dir: Path, report: CheckReport) -> pd.DataFrame:
    """Every PNG under DIR/{train,valid}/{malade,sain}, with its split and folder label."""
    rows, strays = [], []
    for split in S.SPLITS:
        for folder, label in ((S.POSITIVE_DIR, 1), (S.NEGATIVE_DIR, 0)):
            sub = data_dir / split / folder
            if not sub.is_dir():
                report.add("error", "missing-folder", f"Folder {sub} does not exist.",
                           f"Create {split}/{folder}/ with the {folder} images of {split}.", [sub])
                continue
            for p in sorted(sub.iterdir()):
                if p.is_file() and p.suffix.lower() == ".png":
                    rows.append((p.name, str(p.resolve()), split, label))
                elif not p.name.startswith("."):
                    strays.append(p)
    if strays:
        report.add("warning", "stray-files", f"{len(strays)} file(s) that are not PNG images are ignored.",
                   "Move them out of the image folders, or convert them to PNG.", strays)
    return pd.DataFrame(rows, columns=[S.IMAGE, S.PATH, S.SPLIT, S.LABEL])


def _probe_image(path: str) -> tuple[str, int, int, str]:
    """(problem or '', width, height, mode) for one file."""
    try:
        with Image.open(path) as im:
            im.load()
            return ("", im.width, im.height, im.mode)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        return (f"{type(err).__name__}: {err}", 0, 0, "")


def probe_images(paths: pd.Series) -> pd.DataFrame:
    """Decode every image once (memoised on path, size and mtime) to find unreadable ones."""
    memo_file = cache_dir() / "probe-memo.json"
    try:
        memo = json.loads(memo_file.read_text()) if memo_file.exists() else {}
    except (ValueError, OSError):
        memo = {}  # a corrupt memo is only a cache: rebuild it
    out = []
    for path in paths:
        st = Path(path).stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = [*_probe_image(path), file_digest(Path(path))]
        out.append(memo[key])
    atomic_write_text(memo_file, json.dumps(memo))
    return pd.DataFrame(out, columns=["problem", "width", "height", "mode", "digest"], index=paths.index)


def derive_columns(frame: pd.DataFrame, config: StudyConfig, report: CheckReport) -> pd.DataFrame:
    """Add the canonical columns (patient, age, sex, view, age_band, n_findings)."""
    f = frame.copy()
    f[S.PATIENT] = f[S.PATIENT_ID].astype(str).str.strip()
    age = pd.to_numeric(f[S.AGE_RAW].astype(str).str.extract(r"(-?\d+(?:\.\d+)?)")[0], errors="coerce")
    bad_age = age.isna() | (age < S.AGE_MIN) | (age > S.AGE_MAX)
    if bad_age.any():
        report.add("warning", "bad-age", f"{int(bad_age.sum())} image(s) have a missing or implausible age "
                   f"(outside {S.AGE_MIN}-{S.AGE_MAX}); they are left out of age-band analyses.",
                   "Correct 'Patient Age' in metadata.csv.", f.loc[bad_age, S.IMAGE])
    f[S.AGE] = age.where(~bad_age)
    sex = f[S.SEX_RAW].astype(str).str.strip().str.upper().map(S.SEX_CODES)
    if sex.isna().any():
        codes = sorted(set(f.loc[sex.isna(), S.SEX_RAW].astype(str)))
        report.add("warning", "bad-sex", f"{int(sex.isna().sum())} image(s) have an unknown sex code "
                   f"{codes[:5]}; they are left out of sex analyses.",
                   "Use M or F in 'Patient Gender'.", f.loc[sex.isna(), S.IMAGE])
    f[S.SEX] = sex
    view = f[S.VIEW_RAW].astype(str).str.strip().str.upper()
    bad_view = ~view.isin(S.VIEW_CODES)
    if bad_view.any():
        report.add("warning", "bad-view", f"{int(bad_view.sum())} image(s) have a view position other "
                   "than PA/AP; they are left out of view analyses.",
                   "Use PA or AP in 'View Position'.", f.loc[bad_view, S.IMAGE])
    f[S.VIEW] = view.where(~bad_view)
    labels = config.age_band_labels()
    f[S.AGE_BAND] = pd.cut(f[S.AGE], bins=list(config.age_bands), right=False, labels=labels)
    findings = f[S.FINDINGS].astype(str).str.strip()
    f[S.N_FINDINGS] = np.where(findings == S.NO_FINDING, 0, findings.str.count(r"\|") + 1)
    return f


def _check_consistency(f: pd.DataFrame, report: CheckReport) -> None:
    """Folder labels vs Finding Labels, and patients present in both splits."""
    says_sick = f[S.FINDINGS].astype(str).str.strip() != S.NO_FINDING
    disagree = says_sick != (f[S.LABEL] == 1)
    if disagree.any():
        report.add("warning", "label-disagreement",
                   f"{int(disagree.sum())} image(s) are filed in a folder that disagrees with "
                   "'Finding Labels'; the folder label is used, as in the course.",
                   "Move each image to the right folder (malade = any finding, sain = No Finding) "
                   "if the folder is wrong.", f.loc[disagree, S.PATH])
    splits = f.groupby(S.PATIENT)[S.SPLIT].nunique()
    leaking = sorted(splits[splits > 1].index)
    if leaking:
        report.add("warning", "patient-leakage",
                   f"{len(leaking)} patient(s) have images in both train and valid; their valid images "
                   "are excluded from evaluation (evaluation.exclude_leaking_patients).",
                   "Keep all images of a patient in one split.", leaking)


def _check_groups(f: pd.DataFrame, config: StudyConfig, report: CheckReport) -> None:
    """Groups of a sensitive attribute that evaluation cannot measure: absent from valid, or one class."""
    valid = f[f[S.SPLIT] == "valid"]
    for attribute in config.sensitive_attributes:
        if attribute not in f.columns:
            report.add("error", "unknown-attribute", f"Sensitive attribute '{attribute}' is not a column of the "
                       "dataset.", f"Use some of {[S.SEX, S.AGE_BAND, S.VIEW]} in study.yml > sensitive_attributes.")
            continue
        absent = sorted(set(f[attribute].dropna().astype(str)) - set(valid[attribute].dropna().astype(str)))
        if absent:
            report.add("warning", "group-absent-from-valid", f"Group(s) {absent} of '{attribute}' have no valid "
                       "image: their metrics are reported as undefined.",
                       "Move some patients of that group to valid, or accept undefined metrics for it.")
        classes = valid.groupby(valid[attribute].astype(str))[S.LABEL].nunique()
        single = sorted(classes[classes < 2].index)
        if single:
            report.add("warning", "group-one-class", f"In valid, group(s) {single} of '{attribute}' have images "
                       "of one class only: their TPR or FPR is undefined (reported as n.d.).",
                       "Nothing to fix if that is your data; more patients of that group would help.")


def check_dataset(data_dir: Path, config: StudyConfig) -> CheckReport:
    """Validate a data folder and build the canonical frame (None when unusable)."""
    data_dir = Path(data_dir)
    report = CheckReport(data_dir)
    if not data_dir.is_dir():
        report.add("error", "missing-data-dir", f"Data folder {data_dir} does not exist.",
                   "Set data_dir in study.yml (or --data / $FAIRCXR_DATA) to your folder.", [data_dir])
        return report
    meta_path = data_dir / "metadata.csv"
    if not meta_path.is_file():
        report.add("error", "missing-metadata", f"{meta_path} does not exist.",
                   "Put the NIH metadata.csv of your subset at the root of the data folder.", [meta_path])
    images = list_images(data_dir, report)
    meta = read_metadata(meta_path, report, config.column_mapping) if meta_path.is_file() else None
    if meta is None or images.empty:
        if images.empty:
            report.add("error", "no-images", f"No PNG image found under {data_dir}/train or /valid.",
                       "Check the layout: train/{malade,sain}/*.png and valid/{malade,sain}/*.png.")
        return report
    dup = meta[S.IMAGE].duplicated(keep="first")
    if dup.any():
        report.add("warning", "duplicate-rows", f"{int(dup.sum())} duplicated 'Image Index' row(s) in "
                   "metadata.csv; the first row of each is used.", "Remove the duplicated rows.",
                   meta.loc[dup, S.IMAGE])
        meta = meta[~dup]
    frame = images.merge(meta, on=S.IMAGE, how="left", indicator=True)
    no_row = frame["_merge"] == "left_only"
    if no_row.any():
        report.add("warning", "image-without-row", f"{int(no_row.sum())} image(s) have no row in "
                   "metadata.csv; they are excluded.", "Add their rows to metadata.csv.",
                   frame.loc[no_row, S.PATH])
    no_file = ~meta[S.IMAGE].isin(images[S.IMAGE])
    if no_file.any():
        report.add("warning", "row-without-image", f"{int(no_file.sum())} row(s) of metadata.csv have no "
                   "image file; they are ignored.", "Nothing to do if those images are not in your subset.",
                   meta.loc[no_file, S.IMAGE])
    frame = frame[~no_row].drop(columns="_merge").reset_index(drop=True)
    probe = probe_images(frame[S.PATH])
    broken = probe["problem"] != ""
    if broken.any():
        report.add("warning", "unreadable-image", f"{int(broken.sum())} image(s) cannot be decoded; "
                   "they are excluded.", "Replace them with valid PNG files.", frame.loc[broken, S.PATH])
    probe_cols = probe[["digest", "width", "height", "mode"]]
    frame = pd.concat([frame, probe_cols], axis=1)[~broken].reset_index(drop=True)
    frame = derive_columns(frame, config, report)
    _check_consistency(frame, report)
    _check_groups(frame, config, report)
    for split in S.SPLITS:
        classes = set(frame.loc[frame[S.SPLIT] == split, S.LABEL])
        if classes != {0, 1}:
            report.add("error", "missing-class", f"The {split} split has images of one class only.",
                       f"Put images in both {split}/malade and {split}/sain.")
    report.frame = frame
    return report


def load_dataset(data_dir: Path, config: StudyConfig) -> tuple[pd.DataFrame, CheckReport]:
    """The canonical frame of a usable data folder; raises DataError listing what to fix."""
    report = check_dataset(data_dir, config)
    if report.exit_code == 2 or report.frame is None:
        raise DataError(report)
    return report.frame, report


def fingerprint(frame: pd.DataFrame) -> str:
    """Content fingerprint of a dataset: image bytes, split, labels and metadata cells."""
    cols = [c for c in frame.columns if c not in (S.PATH,)]
    return combined_digest(frame[cols].astype(str).agg("|".join, axis=1))
