"""Load a data folder in the course's layout, validate it, and build the canonical frame.

Layout: DIR/train/{malade,sain}/*.png, DIR/valid/{malade,sain}/*.png, DIR/metadata.csv.
Labels come from the folders. Problems are collected as `Issue`s instead of raised one by one,
so `python -m pipeline check DIR` can report them all; the data folder is only ever read.
"""

from __future__ import annotations

import codecs
import difflib
import io
import json
import re
import unicodedata
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


class TableError(ValueError):
    """A metadata file that cannot be read as a table; the message names the cause and the fix."""


XLSX_MAGIC, XLS_MAGIC = b"PK\x03\x04", b"\xd0\xcf\x11\xe0"


EXPORT_FIX = "Open it in your spreadsheet and save it as « CSV UTF-8 (comma-separated) » under the name metadata.csv."


def _decode(raw: bytes) -> tuple[str, str]:
    """(text, encoding) of a CSV as spreadsheets save it: UTF-8 (BOM or not), UTF-16 (BOM or not), Latin-1."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16"), "UTF-16"
    if len(raw) >= 4 and raw[1:4:2] == b"\0\0" and raw[0:4:2] != b"\0\0":  # UTF-16 LE without BOM
        return raw.decode("utf-16-le", errors="replace"), "UTF-16"
    try:
        return raw.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "Latin-1"


def read_table(path: Path) -> tuple[pd.DataFrame, str, str]:
    """(cells as stripped text, separator, encoding or 'xlsx') of a metadata file, whatever the
    spreadsheet saved: comma, semicolon or tab separators, UTF-8/UTF-16/Latin-1, blank rows, an xlsx
    workbook under a .csv name (read when openpyxl is installed). Raises TableError naming the fix."""
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise TableError(f"{path} is empty. {EXPORT_FIX}")
    if raw.startswith(XLS_MAGIC):
        raise TableError(f"{path} is an old Excel workbook (.xls), not a CSV file. {EXPORT_FIX}")
    if raw.startswith(XLSX_MAGIC):
        try:
            table = pd.read_excel(io.BytesIO(raw), dtype=str, keep_default_na=False, engine="openpyxl")
        except ImportError as err:
            raise TableError(f"{path} is an Excel workbook (xlsx) saved under a .csv name. {EXPORT_FIX}") from err
        except (ValueError, KeyError, OSError) as err:
            raise TableError(f"{path} looks like a zip or xlsx file but cannot be read ({err}). {EXPORT_FIX}") from err
        sep, encoding = ",", "xlsx"
    else:
        text, encoding = _decode(raw)
        header = text.lstrip("\ufeff").split("\n", 1)[0]
        sep = max((",", ";", "\t"), key=header.count)
        try:
            table = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as err:
            raise TableError(f"{path} cannot be parsed as CSV ({err}). {EXPORT_FIX}") from err
    table.columns = [str(c).strip().lstrip("\ufeff").strip() for c in table.columns]
    table = table.apply(lambda col: col.astype(str).str.strip())
    blank = (table == "").all(axis=1)  # rows a spreadsheet leaves at the end: ",,,,"
    return table[~blank].reset_index(drop=True), sep, encoding


def _squeeze(name: str) -> str:
    """'Patient ID', 'patient_id', 'PATIENT ID ' -> 'patientid': header names compared loosely."""
    return re.sub(r"[^0-9a-z#]", "", name.lower())


def canonical_headers(table: pd.DataFrame) -> pd.DataFrame:
    """Headers that differ from the NIH names only by case, spaces or underscores get the NIH name."""
    wanted = {_squeeze(c): c for c in S.NIH_COLUMNS}
    rename = {c: wanted[_squeeze(c)] for c in table.columns if _squeeze(c) in wanted and c not in S.NIH_COLUMNS}
    rename = {c: n for c, n in rename.items() if n not in table.columns}
    return table.rename(columns=rename)


def read_metadata(path: Path, report: CheckReport, mapping: dict[str, str]) -> pd.DataFrame | None:
    """Read metadata.csv as spreadsheets save it (see `read_table`); NIH headers matched loosely."""
    try:
        meta, _, encoding = read_table(path)
    except TableError as err:
        report.add("error", "metadata-unreadable", str(err).split(". ")[0] + ".", EXPORT_FIX, [path])
        return None
    if encoding == "Latin-1":
        report.add("warning", "metadata-encoding", f"{path.name} is not UTF-8; read as Latin-1.",
                   "Save it as UTF-8 to silence this warning.", [path])
    if encoding == "xlsx":
        report.add("warning", "metadata-workbook", f"{path.name} is an Excel workbook (xlsx) under a .csv name; "
                   "read as a workbook, but the course's script (pandas.read_csv) cannot read it.", EXPORT_FIX, [path])
    meta = canonical_headers(meta.rename(columns=mapping))
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
    findings = meta[S.FINDINGS]
    meta[S.FINDINGS] = findings.where(findings.str.lower() != S.NO_FINDING.lower(), S.NO_FINDING)
    return meta


# Files that archive tools and operating systems leave: ignored without a word.
JUNK_NAMES = {"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", "$recycle.bin",
              "system volume information"}


def is_junk(path: Path | str) -> bool:
    name = Path(path).name
    return name.startswith(".") or name.lower() in JUNK_NAMES


# Names students give the split and class folders: compared without case, accents or punctuation.
FOLDER_ALIASES = {
    "train": ("train", "training", "trainset", "entrainement", "apprentissage", "trn"),
    "valid": ("valid", "validation", "val", "validset", "test", "testing", "eval", "evaluation", "dev"),
    S.POSITIVE_DIR: ("malade", "malades", "sick", "disease", "diseased", "abnormal", "pathologique", "anormal",
                     "positive", "positif", "pos", "finding", "findings"),
    S.NEGATIVE_DIR: ("sain", "sains", "saine", "saines", "healthy", "normal", "normale", "nofinding", "negative",
                     "negatif", "neg"),
}


def _plain(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return re.sub(r"[^0-9a-z]", "", "".join(c for c in decomposed if not unicodedata.combining(c)).lower())


def find_folder(parent: Path, canonical: str) -> tuple[Path | None, list[Path]]:
    """(the subfolder of `parent` that plays `canonical`, the other candidates ignored): the exact name
    first, then a name equal up to case, accents or punctuation, then the aliases in their order."""
    if not parent.is_dir():
        return None, []
    children = [c for c in sorted(parent.iterdir()) if c.is_dir() and not is_junk(c)]
    aliases = FOLDER_ALIASES[canonical]
    ranked = sorted((c for c in children if _plain(c.name) in aliases),
                    key=lambda c: (c.name != canonical, aliases.index(_plain(c.name))))
    return (ranked[0], ranked[1:]) if ranked else (None, [])


def _has_splits(folder: Path) -> bool:
    return all(find_folder(folder, split)[0] is not None for split in S.SPLITS)


def locate_data_folder(data_dir: Path, depth: int = 3) -> Path | None:
    """The folder with the train and valid folders: `data_dir`, a folder inside it (an archive unzipped
    into NAME/NAME/), or a folder above it (the user pointed at train/ or train/malade/)."""
    if _has_splits(data_dir):
        return data_dir
    for parent in list(data_dir.parents)[:2]:
        if _has_splits(parent):
            return parent
    level = [data_dir]
    for _ in range(depth):
        level = [c for f in level for c in sorted(f.iterdir()) if c.is_dir() and not is_junk(c)]
        found = [c for c in level if _has_splits(c)]
        if found:
            return found[0]
    return None


def _layout_problems(data_dir: Path, report: CheckReport) -> bool:
    """Report a data folder pointed above, below or beside the real one; True when it is the real one."""
    root = locate_data_folder(data_dir)
    partial = any(find_folder(data_dir, split)[0] for split in S.SPLITS) or (data_dir / "metadata.csv").is_file()
    if root == data_dir or (root is None and partial):
        return True  # the data folder, maybe incomplete: the folder check names what is missing
    meta = next(iter(sorted(data_dir.rglob("metadata.csv"))), None) if root is None else None
    if root is None:
        where = f"; a metadata.csv is at {meta.parent}" if meta else ""
        report.add("error", "no-split-folders", f"No train/ and valid/ folders in {data_dir} nor in the folders "
                   f"inside it{where}.", "Point at the folder that holds train/{malade,sain}/, valid/{malade,sain}/ "
                   "and metadata.csv (the course's layout).", [data_dir])
        return False
    fix = f"Point at {root}: data_dir: {root} in study.yml, or --data {root} (check {root})."
    if not (root / "metadata.csv").is_file() and (data_dir / "metadata.csv").is_file():
        fix += f" Move (or copy) {data_dir / 'metadata.csv'} into {root} too."
    report.add("error", "wrong-data-folder", f"{data_dir} is not the data folder: its train/ and valid/ folders "
               f"are in {root}.", fix, [root])
    return False


def _required_folder(parent: Path, name: str, fix: str, report: CheckReport, ignored: list[Path],
                     renamed: list[tuple[Path, str]]) -> Path | None:
    """`parent`'s folder playing `name` (matched loosely, `find_folder`), else an error naming it and the fix;
    the folders it leaves aside go to `ignored`, a differently spelt match to `renamed`."""
    found, others = find_folder(parent, name)
    ignored += others
    if found is None:
        report.add("error", "missing-folder", f"Folder {parent / name} does not exist.", fix, [parent / name])
    elif found.name != name:
        renamed.append((found, name))
    return found


def list_images(data_dir: Path, report: CheckReport) -> pd.DataFrame:
    """Every PNG under DIR/{train,valid}/{malade,sain} (folder names matched loosely, subfolders included),
    with its split and folder label; junk left by archive tools and operating systems is skipped."""
    rows, strays, nested, renamed, ignored = [], [], set(), [], []
    for split in S.SPLITS:
        split_dir = _required_folder(data_dir, split, f"Create {split}/ with malade/ and sain/ inside, holding the "
                                     f"images of {split}.", report, ignored, renamed)
        if split_dir is None:
            continue
        for folder, label in ((S.POSITIVE_DIR, 1), (S.NEGATIVE_DIR, 0)):
            sub = _required_folder(split_dir, folder, f"Create {split_dir.name}/{folder}/ with the {folder} images "
                                   f"of {split}.", report, ignored, renamed)
            if sub is None:
                continue
            for p in sorted(sub.rglob("*")):
                if any(is_junk(part) for part in p.relative_to(sub).parts) or not p.is_file():
                    continue
                if p.suffix.lower() == ".png":
                    rows.append((p.name, str(p.resolve()), split, label))
                    if p.parent != sub:
                        nested.add(p.parent)
                else:
                    strays.append(p)
    if renamed:
        report.add("warning", "folder-name", "Folder(s) read under the course's name: "
                   + ", ".join(f"{p.relative_to(data_dir)}/ as {name}/" for p, name in renamed) + ".",
                   "Rename them train, valid, malade, sain (lower case) so the course's script finds them too.",
                   [p for p, _ in renamed])
    if ignored:
        report.add("warning", "extra-folder", f"Folder(s) {[str(p.relative_to(data_dir)) for p in ignored]} "
                   "are ignored: another folder plays their part.",
                   "Merge them into train/ or valid/ (malade/ or sain/) if they hold images of the study.", ignored)
    if nested:
        report.add("warning", "nested-images", f"Images found one folder (or more) deeper than "
                   f"split/class/: {sorted(str(p.relative_to(data_dir)) for p in nested)[:3]}; they are read.",
                   "Move them up into train/malade, train/sain, valid/malade or valid/sain.", sorted(nested))
    if strays:
        report.add("warning", "stray-files", f"{len(strays)} file(s) that are not PNG images are ignored.",
                   "Move them out of the image folders, or convert them to PNG.", strays)
    images = pd.DataFrame(rows, columns=[S.IMAGE, S.PATH, S.SPLIT, S.LABEL])
    twice = images[S.IMAGE].str.lower().duplicated(keep=False)
    if twice.any():
        n_names = images.loc[twice, S.IMAGE].str.lower().nunique()
        report.add("warning", "image-in-two-folders", f"{int(twice.sum())} files share {n_names} image name(s) "
                   "across folders (two splits or two classes); every "
                   "copy is excluded (its label or split is ambiguous).",
                   "Keep each image in one folder only.", images.loc[twice, S.PATH])
        images = images[~twice].reset_index(drop=True)
    return images


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


def _missing_folder_hint(data_dir: Path) -> tuple[str, str]:
    """(message, fix) for a data folder that is not a folder: an archive, or a near miss of a sibling."""
    fix = "Set data_dir in study.yml (or --data / $FAIRCXR_DATA) to your folder."
    if data_dir.is_file():
        kind = "an archive: unzip it first, then point at the unzipped folder" if data_dir.suffix.lower() in (
            ".zip", ".tar", ".gz", ".7z", ".rar") else "a file, not a folder"
        return f"{data_dir} is {kind}.", fix
    parent = data_dir.parent
    siblings = [c.name for c in parent.iterdir() if c.is_dir()] if parent.is_dir() else []
    close = difflib.get_close_matches(data_dir.name, siblings, n=1, cutoff=0.6)
    if close:
        fix = f"Did you mean {parent / close[0]}? " + fix
    return f"Data folder {data_dir} does not exist.", fix


def check_dataset(data_dir: Path, config: StudyConfig) -> CheckReport:
    """Validate a data folder and build the canonical frame (None when unusable)."""
    data_dir = Path(data_dir)
    report = CheckReport(data_dir)
    if not data_dir.is_dir():
        report.add("error", "missing-data-dir", *_missing_folder_hint(data_dir), [data_dir])
        return report
    if not _layout_problems(data_dir, report):
        return report
    meta_path = data_dir / "metadata.csv"
    if not meta_path.is_file():
        close = [p.name for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".xlsx", ".tsv")]
        hint = f" ({', '.join(sorted(close))} found there: rename or export it as metadata.csv)" if close else ""
        report.add("error", "missing-metadata", f"{meta_path} does not exist{hint}.",
                   "Put the NIH metadata.csv of your subset at the root of the data folder.", [meta_path])
    images = list_images(data_dir, report)
    meta = read_metadata(meta_path, report, config.column_mapping) if meta_path.is_file() else None
    if meta is None or images.empty:
        if images.empty:
            report.add("error", "no-images", f"No PNG image found under {data_dir}/train or /valid.",
                       "Check the layout: train/{malade,sain}/*.png and valid/{malade,sain}/*.png.")
        return report
    key = "_name"  # image names match the metadata up to case (00001_000.PNG) and a missing extension
    meta[key] = meta[S.IMAGE].str.lower().where(meta[S.IMAGE].str.lower().str.endswith(".png"),
                                                 meta[S.IMAGE].str.lower() + ".png")
    dup = meta[key].duplicated(keep="first")
    if dup.any():
        report.add("warning", "duplicate-rows", f"{int(dup.sum())} duplicated 'Image Index' row(s) in "
                   "metadata.csv; the first row of each is used.", "Remove the duplicated rows.",
                   meta.loc[dup, S.IMAGE])
        meta = meta[~dup]
    frame = images.assign(**{key: images[S.IMAGE].str.lower()}).drop(columns=S.IMAGE)
    frame = frame.merge(meta, on=key, how="left", indicator=True)
    no_row = frame["_merge"] == "left_only"
    frame[S.IMAGE] = frame[S.IMAGE].where(~no_row, images[S.IMAGE])
    recased = ~no_row & (frame[S.IMAGE] != images[S.IMAGE])
    if recased.any():
        report.add("warning", "name-case", f"{int(recased.sum())} image file name(s) differ from their "
                   "'Image Index' only by case or extension; they are matched.",
                   "Rename the files (or the cells) to the same spelling: the course's script compares them exactly.",
                   frame.loc[recased, S.PATH])
    frame = frame[[S.IMAGE, *[c for c in frame.columns if c != S.IMAGE]]]
    if no_row.any():
        report.add("warning", "image-without-row", f"{int(no_row.sum())} image(s) have no row in "
                   "metadata.csv; they are excluded.", "Add their rows to metadata.csv.",
                   frame.loc[no_row, S.PATH])
    doubled = {Path(f).name.lower() for i in report.issues if i.code == "image-in-two-folders" for f in i.files}
    no_file = ~meta[key].isin(frame[key]) & ~meta[key].isin(doubled)  # a doubled image is named already
    if no_file.any():
        report.add("warning", "row-without-image", f"{int(no_file.sum())} row(s) of metadata.csv have no "
                   "image file; they are ignored.", "Nothing to do if those images are not in your subset.",
                   meta.loc[no_file, S.IMAGE])
    frame = frame.drop(columns=key)
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
