"""Decode once: any PNG to grey at the training size, a cache that is re-used, rebuilt when corrupt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cache import file_digest
from pipeline.data import images

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def frame(tmp_path: Path) -> pd.DataFrame:
    """Twelve small PNGs of different modes and sizes, each with its own content."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        size = (40 + 4 * i, 48)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        im = Image.fromarray(pixels).convert(["L", "RGB", "RGBA"][i % 3])
        path = tmp_path / f"img{i}.png"
        im.save(path)
        rows.append({"Image Index": path.name, "path": str(path), "digest": file_digest(path)})
    return pd.DataFrame(rows)


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []

    def fail(path, size):
        calls.append(path)
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(images, "decode", fail)
    return calls


@pytest.mark.parametrize(("folder", "mode", "side"), [("nih7-1024px", "L", 1024), ("nih50-256px", "RGB", 256)])
def test_real_images_of_any_size_and_mode_become_grey_at_the_training_size(folder: str, mode: str, side: int):
    path = next(iter(sorted((SHARED / folder).rglob("*.png"))), None)
    if path is None:
        pytest.skip(f"{SHARED / folder} absent (real NIH images of the shared data folder)")
    with Image.open(path) as im:
        assert (im.mode, im.size) == (mode, (side, side))
        reference = np.asarray(im.convert("L").resize((64, 64), Image.Resampling.BOX), dtype=float)
    out = images.decode(path, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    assert np.abs(out - reference).mean() < 3  # the same picture, not a crop or a blank


def test_16_bit_and_alpha_images_are_scaled_to_8_bit_grey(tmp_path: Path):
    ramp = np.tile(np.linspace(0, 4095, 32), (32, 1)).astype(np.uint16)  # 12-bit data in a 16-bit PNG
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    out = images.decode(tmp_path / "deep.png", 16)
    assert out.dtype == np.uint8 and out.min() < 10 and out.max() > 245
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert images.decode(tmp_path / "rgba.png", 8).shape == (8, 8)


def test_second_load_reads_the_cache_without_decoding(frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    first = np.array(images.image_array(frame, 24))
    expected = np.stack([images.decode(p, 24) for p in frame["path"]])
    np.testing.assert_array_equal(first, expected)
    entries = sorted((images.cache_dir() / "images").glob("*.npy"))
    stamps = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in entries]
    calls = _no_decoding(monkeypatch)
    again = images.image_array(frame, 24)
    assert isinstance(again, np.memmap) and calls == []
    np.testing.assert_array_equal(again, first)
    assert sorted((images.cache_dir() / "images").glob("*.npy")) == entries
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in entries] == stamps  # read, not rewritten
    assert not list((images.cache_dir() / "images").glob("*.tmp"))


def test_a_subset_or_a_reordering_reuses_decoded_rows(frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    full = np.array(images.image_array(frame, 24))
    _no_decoding(monkeypatch)
    subset = frame.iloc[[7, 2, 5]]
    np.testing.assert_array_equal(images.image_array(subset, 24), full[[7, 2, 5]])


def test_only_new_images_are_decoded(frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    images.image_array(frame.iloc[:8], 24)
    decoded: list = []
    real = images.decode
    monkeypatch.setattr(images, "decode", lambda p, s: decoded.append(p) or real(p, s))
    images.image_array(frame, 24)
    assert sorted(decoded) == sorted(frame["path"].iloc[8:])
    decoded.clear()
    images.image_array(frame, 32)  # another resolution is another cache
    assert len(decoded) == len(frame)


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "garbage"])
def test_a_corrupt_cache_entry_is_rebuilt(frame: pd.DataFrame, damage: str, monkeypatch: pytest.MonkeyPatch):
    first = np.array(images.image_array(frame, 24))
    entry = next((images.cache_dir() / "images").glob("*.npy"))
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:1000])
    elif damage == "wrong shape":
        np.save(entry, np.zeros((3, 24, 24), np.uint8))
    else:
        entry.write_bytes(b"not an array")
    decoded: list = []
    real = images.decode
    monkeypatch.setattr(images, "decode", lambda p, s: decoded.append(p) or real(p, s))
    np.testing.assert_array_equal(images.image_array(frame, 24), first)
    assert len(decoded) == len(frame)  # rebuilt from the PNGs, not from the damaged entry
    assert images._open(entry, len(frame), 24) is not None


def test_changed_file_content_is_decoded_again(frame: pd.DataFrame):
    frame = frame.drop(columns="digest")  # digests computed from the bytes (course's contract frames)
    first = np.array(images.image_array(frame, 24))
    path = Path(frame["path"].iloc[0])
    Image.fromarray(np.full((48, 40), 7, np.uint8)).save(path)
    second = images.image_array(frame, 24)
    assert (second[0] == 7).all() and not (first[0] == 7).all()
    np.testing.assert_array_equal(second[1:], first[1:])


def test_a_failed_build_leaves_no_entry(frame: pd.DataFrame):
    Path(frame["path"].iloc[5]).write_bytes(b"broken png")
    with pytest.raises(OSError):
        images.image_array(frame.drop(columns="digest"), 24)
    folder = images.cache_dir() / "images"
    assert not list(folder.glob("*.npy")) and not list(folder.glob("*.tmp"))
