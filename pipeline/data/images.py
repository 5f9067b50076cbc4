"""Decode once: every PNG becomes a row of a cached, memory-mapped uint8 array.

An entry `cache_dir()/images/<key>-<size>px.npy` holds the grey pixels of a set of images at one
resolution; its key hashes the images' content digests and the size, and a sidecar `.digests` file
lists the digest of each row. Building an entry copies the rows other entries already hold (train
and valid arrays, a subsample, the whole frame) and decodes only the images never seen at that size.
Entries are written atomically; a truncated or corrupt one is detected and rebuilt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline import progress
from pipeline.cache import atomic_path, atomic_write_text, cache_dir, combined_digest, file_digest
from pipeline.data import schema as S

DIGEST = "digest"


RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking (PIL scales its support)


def decode(path: str | Path, size: int) -> np.ndarray:
    """One image as a size x size grey uint8 array, whatever its mode (L, RGB, RGBA, P, I;16) or size."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float: scale to 0-255
            arr = np.asarray(im, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            im = Image.fromarray((255 * (arr - lo) / max(hi - lo, 1e-9)).astype(np.uint8))
        grey = im.convert("L")
        if grey.size != (size, size):
            grey = grey.resize((size, size), RESAMPLE, reducing_gap=3.0)
        return np.asarray(grey, dtype=np.uint8)


def _folder() -> Path:
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def digests(frame: pd.DataFrame) -> list[str]:
    """Content digest of each image: the frame's `digest` column, else hashed (memoised on stat)."""
    if DIGEST in frame.columns and frame[DIGEST].notna().all():
        return frame[DIGEST].astype(str).tolist()
    memo_file = _folder() / "digest-memo.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    out = []
    for path in frame[S.PATH]:
        st = os.stat(path)
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = file_digest(Path(path))
        out.append(memo[key])
    atomic_write_text(memo_file, json.dumps(memo))
    return out


def _open(path: Path, n: int, size: int) -> np.ndarray | None:
    """The entry at `path` if it is complete and has the expected shape, else None."""
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return None
    return arr if arr.shape == (n, size, size) and arr.dtype == np.uint8 else None


def _known_rows(size: int, wanted: set[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Rows of existing entries at this size holding wanted digests: digest -> (array, row)."""
    found: dict[str, tuple[np.ndarray, int]] = {}
    for sidecar in _folder().glob(f"*-{size}px.digests"):
        if not wanted - found.keys():
            break
        names = sidecar.read_text().split()
        arr = _open(sidecar.with_suffix(".npy"), len(names), size)
        if arr is None:
            continue
        for row, digest in enumerate(names):
            if digest in wanted and digest not in found:
                found[digest] = (arr, row)
    return found


def _decode_all(paths: Sequence[str], size: int, out: np.ndarray, rows: Sequence[int]) -> None:
    """Decode `paths` into out[rows] with a thread per core (PIL releases the GIL while decoding)."""
    if not paths:
        return
    step = max(1, len(paths) // 100)
    with progress.stage(f"decoding images at {size} px") as stage, \
            ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for i, (row, pixels) in enumerate(zip(rows, pool.map(lambda p: decode(p, size), paths), strict=True)):
            out[row] = pixels
            if (i + 1) % step == 0:
                stage.update(f"{i + 1}/{len(paths)}")
        stage.done(f"{len(paths)}/{len(paths)} (once: cached for the next runs)")


def image_array(frame: pd.DataFrame, size: int) -> np.ndarray:
    """Pixels of the frame's images (rows in frame order), shape (n, size, size), memory-mapped."""
    names = digests(frame)
    n = len(names)
    target = _folder() / f"{combined_digest([f'{size}px', *names])}-{size}px.npy"
    cached = _open(target, n, size)
    if cached is not None:
        return cached
    first_row: dict[str, int] = {}
    for row, digest in enumerate(names):
        first_row.setdefault(digest, row)
    known = _known_rows(size, set(first_row))
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size))
        for digest, (arr, row) in known.items():
            out[first_row[digest]] = arr[row]
        todo = [row for digest, row in first_row.items() if digest not in known]
        _decode_all([frame[S.PATH].iloc[r] for r in todo], size, out, todo)
        for row, digest in enumerate(names):  # repeated images: copy their first row
            if first_row[digest] != row:
                out[row] = out[first_row[digest]]
        out.flush()
        del out
    atomic_write_text(target.with_suffix(".digests"), "\n".join(names))
    result = _open(target, n, size)
    assert result is not None
    return result
