"""Decode once: every PNG becomes a row of a cached, memory-mapped uint8 array.

The array for a set of images at one resolution is keyed on the images' content digests, so later
epochs and later trainings read pixels from the page cache instead of decoding PNGs again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from . import schema as S
from .cache import cache_dir, combined_digest, file_digest


def decode(path: str | Path, size: int) -> np.ndarray:
    """One image as a size x size grey uint8 array, whatever its mode (L, RGB, RGBA, I;16) or size."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I"):
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray((255 * arr / max(arr.max(), 1)).astype(np.uint8))
        grey = im.convert("L")
        if grey.size != (size, size):
            grey = grey.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(grey, dtype=np.uint8)


def _digests(frame: pd.DataFrame) -> list[str]:
    if "digest" in frame.columns:
        return frame["digest"].astype(str).tolist()
    return [file_digest(Path(p)) for p in frame[S.PATH]]


def image_array(frame: pd.DataFrame, size: int) -> np.ndarray:
    """Pixels of the frame's images (rows in frame order), shape (n, size, size), memory-mapped."""
    key = combined_digest([str(size), *_digests(frame)])
    target = cache_dir() / "images" / f"{key}-{size}px.npy"
    expected = (len(frame), size, size)
    if target.exists():
        try:
            arr = np.load(target, mmap_mode="r")
            if arr.shape == expected and arr.dtype == np.uint8:
                return arr
        except (ValueError, OSError):
            pass  # partial or corrupt entry: rebuilt below
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npy.tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=expected)
        for i, path in enumerate(frame[S.PATH]):
            out[i] = decode(path, size)
        out.flush()
        del out
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return np.load(target, mmap_mode="r")
