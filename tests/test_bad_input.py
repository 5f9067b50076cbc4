"""Hand-made data folders: every flaw gets a clear message naming the file and the fix, never a
traceback; exit code 2 when unusable, a warning and a documented exclusion otherwise; the folder is
never modified."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.data.demo import make_demo
from pipeline.data.folder import check_dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("pristine") / "demo", n_patients=60, seed=2, image_size=32)


@pytest.fixture()
def data(pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    return Path(shutil.copytree(pristine, tmp_path / "NOM_PRÉNOM"))


def check(folder: Path, config_text: str | None = None, tmp: Path | None = None):
    config = None
    if config_text is not None:
        path = (tmp or folder.parent) / "study.yml"
        path.write_text(config_text, encoding="utf-8")
        config = load_config(path, data_dir=str(folder))
    return check_dataset(folder, config or load_config(data_dir=str(folder)))


def cli(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *extra, "check", str(folder)], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def rewrite_metadata(folder: Path, edit) -> None:
    path = folder / "metadata.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")


def one_image(folder: Path, split: str = "train", cls: str = "malade") -> Path:
    return sorted((folder / split / cls).glob("*.png"))[0]


def test_clean_demo_in_an_accented_folder_is_clean(data: Path):
    report = check(data)
    assert report.exit_code == 0, report.format()
    done = cli(data)
    assert done.returncode == 0 and "Result: clean" in done.stdout


def test_missing_folder_and_missing_metadata_are_unusable(data: Path, tmp_path: Path):
    done = cli(tmp_path / "mes données")
    assert done.returncode == 2 and "does not exist" in done.stdout and "Traceback" not in done.stderr
    (data / "metadata.csv").unlink()
    report = check(data)
    assert report.exit_code == 2 and "missing-metadata" in report.codes()
    assert str(data / "metadata.csv") in report.format()


def test_renamed_column_suggests_the_fix_and_column_mapping_fixes_it(data: Path, tmp_path: Path):
    rewrite_metadata(data, lambda lines: [lines[0].replace("Patient Gender", "Patient Sex"), *lines[1:]])
    report = check(data)
    assert report.exit_code == 2 and "metadata-columns" in report.codes()
    assert "'Patient Sex' -> 'Patient Gender'" in report.format() and "column_mapping" in report.format()
    done = cli(data)
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    fixed = check(data, 'column_mapping: {"Patient Sex": "Patient Gender"}\n', tmp_path)
    assert fixed.exit_code == 0, fixed.format()


def test_semicolons_extra_and_reordered_columns_are_read(data: Path):
    def edit(lines):
        rows = [line.split(",") for line in lines]
        rows = [[r[6], r[0], r[1], r[2], r[3], r[4], r[5], "extra"] for r in rows]
        return [";".join(r) for r in rows]

    rewrite_metadata(data, edit)
    report = check(data)
    assert report.exit_code == 0, report.format()
    assert len(report.frame) == len(list(data.rglob("*.png")))


def test_latin1_metadata_is_read_with_a_warning(data: Path):
    path = data / "metadata.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0] + ",Commentaire"
    lines[1:] = [line + ",vérifié" for line in lines[1:]]
    path.write_bytes("\n".join(lines).encode("latin-1"))
    report = check(data)
    assert report.exit_code == 1 and report.codes() == {"metadata-encoding"}


def test_duplicated_rows_and_unmatched_rows_or_images_are_warnings(data: Path):
    image = one_image(data)
    rewrite_metadata(data, lambda lines: [*lines, lines[1], "99999999_000.png,No Finding,0,99999999,40,M,PA,1,1,1,1"])
    row_of = next(line for line in (data / "metadata.csv").read_text().splitlines() if line.startswith(image.name))
    rewrite_metadata(data, lambda lines: [line for line in lines if line != row_of])
    report = check(data)
    assert report.exit_code == 1
    assert {"duplicate-rows", "row-without-image", "image-without-row"} <= report.codes()
    assert str(image) in report.format()
    assert image.name not in set(report.frame["Image Index"])


def test_broken_images_are_excluded_and_named(data: Path):
    truncated, empty, fake = sorted((data / "train" / "sain").glob("*.png"))[:3]
    truncated.write_bytes(truncated.read_bytes()[:60])
    empty.write_bytes(b"")
    fake.write_text("not an image")
    (data / "train" / "sain" / "notes.txt").write_text("stray")
    report = check(data)
    assert report.exit_code == 1
    assert {"unreadable-image", "stray-files"} <= report.codes()
    text = report.format()
    for path in (truncated, empty, fake):
        assert path.name in text
        assert path.name not in set(report.frame["Image Index"])
    assert cli(data).returncode == 1


def test_other_sizes_and_modes_are_accepted(data: Path):
    big = one_image(data, "valid", "sain")
    Image.new("L", (1024, 1024), 90).save(big)
    rgba = one_image(data, "train", "sain")
    Image.new("RGBA", (256, 256), (10, 20, 30, 255)).save(rgba)
    report = check(data)
    assert report.exit_code == 0, report.format()
    assert {"L", "RGBA"} <= set(report.frame["mode"])


def test_bad_ages_and_sex_codes_are_excluded_from_those_analyses(data: Path):
    def edit(lines):
        rows = [line.split(",") for line in lines]
        rows[1][4], rows[2][4], rows[3][4], rows[4][5] = "", "-3", "412", "X"
        return [",".join(r) for r in rows]

    rewrite_metadata(data, edit)
    report = check(data)
    assert report.exit_code == 1 and {"bad-age", "bad-sex"} <= report.codes()
    frame = report.frame
    assert frame["age"].isna().sum() == 3 and frame["sex"].isna().sum() == 1
    assert len(frame) == len(list(data.rglob("*.png")))  # nothing else is dropped


def test_group_absent_from_valid_and_group_with_one_class_are_warned(data: Path):
    def edit(lines):
        rows = [line.split(",") for line in lines]
        valid = {p.name for p in (data / "valid").rglob("*.png")}
        sick_valid = {p.name for p in (data / "valid" / "malade").glob("*.png")}
        for r in rows[1:]:
            if r[0] in valid:
                r[6] = "PA"  # no AP image left in valid
            if r[0] in valid and r[0] not in sick_valid:
                r[5] = "M"  # valid women are all sick: one class
        return [",".join(r) for r in rows]

    rewrite_metadata(data, edit)
    report = check(data)
    assert {"group-absent-from-valid", "group-one-class"} <= report.codes()
    assert report.exit_code == 1
    assert "AP" in report.format()


def test_a_split_with_one_class_or_no_images_is_unusable(data: Path):
    for p in (data / "valid" / "malade").glob("*.png"):
        p.unlink()
    report = check(data)
    assert report.exit_code == 2 and "missing-class" in report.codes()
    shutil.rmtree(data / "valid" / "malade")
    done = cli(data)
    assert done.returncode == 2 and "valid/malade" in done.stdout and "Traceback" not in done.stderr


@pytest.mark.parametrize("content", [b"", b"\x89PNG\x00\x01\x02garbage\xff\xfe"])
def test_empty_or_binary_metadata_is_unusable(data: Path, content: bytes):
    (data / "metadata.csv").write_bytes(content)
    report = check(data)
    assert report.exit_code == 2
    assert report.codes() & {"metadata-unreadable", "metadata-columns"}
    done = cli(data)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_the_data_folder_is_never_modified(data: Path):
    before = tree_hash(data)
    os.chmod(data / "metadata.csv", 0o444)
    check(data)
    load_dataset(data, load_config(data_dir=str(data)))
    cli(data)
    assert tree_hash(data) == before


def test_a_corrupt_probe_memo_in_the_cache_is_rebuilt(data: Path, tmp_path: Path):
    check(data)
    memo = tmp_path / "cache" / "probe-memo.json"
    memo.write_text("{not json")
    assert check(data).exit_code == 0
    assert memo.read_text().startswith("{\"")


@pytest.mark.skipif(not (SHARED / "nih1000-64px").exists(), reason="../shared/data/nih1000-64px absent")
def test_the_real_subset_reports_its_leak_and_its_mislabelled_image(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    data = Path(shutil.copytree(SHARED / "nih1000-64px", tmp_path / "mes données NIH"))
    before = tree_hash(data)
    report = check(data)
    assert report.exit_code == 1
    leak = next(i for i in report.issues if i.code == "patient-leakage")
    assert len(leak.files) == 15
    label = next(i for i in report.issues if i.code == "label-disagreement")
    assert [Path(f).name for f in label.files] == ["00000193_019.png"] and "valid/sain" in label.files[0]
    assert tree_hash(data) == before


# ------------------------------------------------------------------ students' folders as they arrive (issue 15)
# Each variant rearranges a copy of the real 256 px subset (or the small demo when ../shared is absent) as
# unzipping, an operating system or a spreadsheet does; `check` must name the cause and the fix, exit with
# the right code, never print a traceback, and leave the folder byte-for-byte as it was.

REAL50 = SHARED / "nih50-256px"


@pytest.fixture()
def real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pristine: Path) -> Path:
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    source = REAL50 if REAL50.exists() else pristine
    return Path(shutil.copytree(source, tmp_path / "NOM_Prénom"))


def run_check(target: Path, *extra: str) -> tuple[int, str]:
    done = cli(target, *extra)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    return done.returncode, out


def baseline(folder: Path) -> tuple[int, set[str]]:
    report = check(folder)
    return report.exit_code, report.codes()


def test_pointing_above_the_data_folder_names_the_right_path(real: Path):
    outer = real.parent / "archive"
    outer.mkdir()
    inner = Path(shutil.move(real, outer / "NOM_Prénom"))  # NAME.zip unzipped into NAME/NAME/
    (outer / "__MACOSX").mkdir()
    before = tree_hash(outer)
    code, out = run_check(outer)
    assert code == 2 and "wrong-data-folder" in out and f"Point at {inner}" in out
    assert tree_hash(outer) == before


def test_pointing_below_or_beside_the_data_folder_names_the_right_path(real: Path):
    code, out = run_check(real / "train" / "malade")
    assert code == 2 and f"Point at {real}" in out
    code, out = run_check(real.parent / (real.name + "_"))  # a typo: a sibling is close
    assert code == 2 and "does not exist" in out and f"Did you mean {real}" in out
    archive = real.parent / "NOM_Prénom.zip"
    archive.write_bytes(b"PK\x03\x04")
    code, out = run_check(archive)
    assert code == 2 and "archive: unzip it first" in out


def test_metadata_beside_the_image_folders_is_named(real: Path):
    outer = real.parent / "rendu"
    inner = outer / "NOM_Prénom"
    inner.mkdir(parents=True)
    for split in ("train", "valid"):
        shutil.move(real / split, inner / split)
    shutil.move(real / "metadata.csv", outer / "metadata.csv")
    code, out = run_check(outer)
    assert code == 2 and f"Point at {inner}" in out and f"Move (or copy) {outer / 'metadata.csv'} into {inner}" in out


@pytest.mark.parametrize("names", [
    {"train": "Train", "valid": "VALID", "malade": "Malade", "sain": "SAIN"},
    {"train": "training", "valid": "validation", "malade": "sick", "sain": "healthy"},
    {"train": "Entraînement", "valid": "val", "malade": "disease", "sain": "normal"},
    {"train": "train", "valid": "test", "malade": "malade", "sain": "No Finding"},
])
def test_split_and_class_folders_named_otherwise_are_read_with_the_rename_to_do(real: Path, names: dict):
    code0, codes0 = baseline(real)
    n_images = len(check(real).frame)
    for split in ("train", "valid"):
        for cls in ("malade", "sain"):
            (real / split / cls).rename(real / split / names[cls])
        (real / split).rename(real / names[split])
    before = tree_hash(real)
    report = check(real)
    assert report.exit_code == max(code0, 1) and report.codes() - codes0 == {"folder-name"}
    assert len(report.frame) == n_images
    text = report.format()
    assert f"{names['valid']}/ as valid/" in text and "Rename them train, valid, malade, sain" in text
    code, out = run_check(real)
    assert code == report.exit_code and "folder-name" in out
    assert tree_hash(real) == before


def test_test_folder_beside_valid_is_ignored_and_named(real: Path):
    shutil.copytree(real / "valid", real / "test")
    report = check(real)
    assert "extra-folder" in report.codes() and "['test']" in report.format()
    assert set(report.frame["split"]) == {"train", "valid"}


def test_images_one_folder_deeper_are_read(real: Path):
    n_images = len(check(real).frame)
    for split in ("train", "valid"):
        for cls in ("malade", "sain"):
            sub = real / split / cls
            (sub / "images").mkdir()
            for p in sub.glob("*.png"):
                p.rename(sub / "images" / p.name)
    report = check(real)
    assert "nested-images" in report.codes() and len(report.frame) == n_images
    assert "Move them up into train/malade" in report.format()


def test_names_and_extensions_differing_only_by_case_are_matched(real: Path):
    code0, codes0 = baseline(real)
    renamed = sorted((real / "train" / "sain").glob("*.png"))[:3]
    for p in renamed:
        p.rename(p.with_name(p.stem.upper() + ".PNG"))
    before = tree_hash(real)
    report = check(real)
    assert report.codes() - codes0 == {"name-case"} and report.exit_code == max(code0, 1)
    assert len(report.frame) == len(list(real.rglob("*.[pP][nN][gG]")))
    assert {p.name for p in renamed} <= set(report.frame["Image Index"])  # the metadata's spelling is kept
    assert tree_hash(real) == before


def test_files_left_by_archive_tools_and_systems_are_ignored_silently(real: Path):
    code0, codes0 = baseline(real)
    sain = real / "train" / "sain"
    (real / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (sain / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (sain / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (sain / "desktop.ini").write_text("[.ShellClassInfo]")
    (sain / f"._{one_image(real, 'train', 'sain').name}").write_bytes(b"\0\5\26\7 resource fork")
    (real / "__MACOSX" / "train" / "sain").mkdir(parents=True)
    (real / "__MACOSX" / "train" / "sain" / "._x.png").write_bytes(b"\0\5\26\7")
    report = check(real)
    assert (report.exit_code, report.codes()) == (code0, codes0), report.format()


def test_the_same_image_in_two_splits_or_two_classes_is_named_and_excluded(real: Path):
    image = one_image(real, "train", "malade")
    shutil.copy(image, real / "valid" / "sain" / image.name)
    other = one_image(real, "valid", "malade")
    shutil.copy(other, real / "valid" / "sain" / other.name)
    report = check(real)
    assert "image-in-two-folders" in report.codes() and report.exit_code >= 1
    assert image.name not in set(report.frame["Image Index"]) and other.name not in set(report.frame["Image Index"])
    assert str(real / "valid" / "sain" / image.name) in "".join(
        next(i for i in report.issues if i.code == "image-in-two-folders").files)
    assert "row-without-image" not in report.codes()  # its row has files: it is named once, as doubled
    code, out = run_check(real)
    assert code == report.exit_code and "Keep each image in one folder only" in out


def _table(folder: Path):
    import pandas as pd

    return pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)


@pytest.mark.parametrize("save", [
    "utf16", "utf16_tabs", "tabs", "semicolons_crlf", "blank_rows", "spaces", "header_case", "no_finding_case",
])
def test_metadata_as_spreadsheets_save_it_is_read(real: Path, save: str):
    code0, codes0 = baseline(real)
    frame0 = check(real).frame
    table, path = _table(real), real / "metadata.csv"
    if save == "utf16":
        path.write_bytes(table.to_csv(index=False).encode("utf-16"))  # with its BOM, as Excel's « Unicode text »
    elif save == "utf16_tabs":
        path.write_bytes(table.to_csv(index=False, sep="\t").encode("utf-16"))
    elif save == "tabs":
        table.to_csv(path, index=False, sep="\t")
    elif save == "semicolons_crlf":
        table.to_csv(path, index=False, sep=";", lineterminator="\r\n")
    elif save == "blank_rows":
        path.write_text(table.to_csv(index=False) + ",,,,,,,,,,\n,,,,,,,,,,\n\n", encoding="utf-8")
    elif save == "spaces":
        table.map(lambda cell: f" {cell}  ").to_csv(path, index=False)
    elif save == "header_case":
        table.rename(columns={"Image Index": "image index", "Patient ID": "PATIENT_ID",
                              "Finding Labels": "finding labels"}).to_csv(path, index=False)
    elif save == "no_finding_case":
        table.assign(**{"Finding Labels": table["Finding Labels"].replace("No Finding", "no finding")}).to_csv(
            path, index=False)
    before = tree_hash(real)
    report = check(real)
    assert (report.exit_code, report.codes()) == (code0, codes0), report.format()
    columns = ["Image Index", "patient", "sex", "view", "age", "label"]
    assert report.frame[columns].equals(frame0[columns])
    assert tree_hash(real) == before


def test_a_workbook_saved_as_metadata_csv_is_read_or_refused_with_the_fix(real: Path):
    pytest.importorskip("openpyxl")
    codes0 = baseline(real)[1]
    _table(real).to_excel(real / "metadata.csv", index=False, engine="openpyxl")
    report = check(real)
    assert report.codes() - codes0 == {"metadata-workbook"} and len(report.frame) == len(check(real).frame)
    assert "pandas.read_csv) cannot read it" in report.format() and "CSV UTF-8" in report.format()
    (real / "metadata.csv").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))  # an old .xls
    code, out = run_check(real)
    assert code == 2 and ".xls" in out and "save it as « CSV UTF-8" in out


def test_a_workbook_is_refused_with_the_fix_without_openpyxl(real: Path, monkeypatch: pytest.MonkeyPatch):
    import builtins

    pytest.importorskip("openpyxl")
    _table(real).to_excel(real / "metadata.csv", index=False, engine="openpyxl")
    real_import = builtins.__import__

    def no_openpyxl(name, *args, **kwargs):
        if name.startswith("openpyxl"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openpyxl)
    report = check(real)
    assert report.exit_code == 2 and "metadata-unreadable" in report.codes()
    assert "Excel workbook (xlsx) saved under a .csv name" in report.format() and "CSV UTF-8" in report.format()


def test_a_missing_split_is_named_not_taken_for_a_wrong_folder(real: Path):
    shutil.rmtree(real / "valid")
    code, out = run_check(real)
    assert code == 2 and f"Folder {real / 'valid'} does not exist" in out and "wrong-data-folder" not in out
