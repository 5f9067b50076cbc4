"""Speed figures: `python -m pipeline.bench [--data DIR ...] [--size PX] [--epochs N]`.

Prints, for the demo and for each data folder given (the real NIH subset in ../shared when present):
images/s decoding PNGs vs reading the decoded cache; a training epoch that decodes its images (as
the course's script did) vs one from the cache; training images/s per backbone; and a six-weighting
study in full mode (six trainings) vs last-layer mode (one training, six heads), with balanced
accuracy and AUC. Figures, not assertions: timing targets live here, not in the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch.utils.data import DataLoader, Dataset

from . import schema as S
from .config import TrainingConfig, load_config
from .data import load_dataset
from .images import decode, image_array

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih1000-64px"
STUDY_WEIGHTINGS = ("uniform", "class_balanced", "group_balanced", "reweighing", "reweighing_intersectional",
                    "effective_number")


class _DecodingDataset(Dataset):
    """What the course's script did: open and decode the PNG at every access."""

    def __init__(self, frame: pd.DataFrame, size: int):
        self.paths, self.labels, self.size = list(frame[S.PATH]), frame[S.LABEL].to_numpy(), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(decode(self.paths[i], self.size)).unsqueeze(0)
        return x, torch.tensor(float(self.labels[i])), torch.tensor(1.0)


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _epoch(loader: DataLoader, backbone: str, size: int) -> float:
    """Seconds for one training epoch of `backbone` over `loader`."""
    from .lightning_module import Classifier

    model = Classifier(backbone, image_size=size)
    opt = model.configure_optimizers()
    t0 = time.perf_counter()
    for batch in loader:
        opt.zero_grad()
        model.training_step(batch, 0).backward()
        opt.step()
    return time.perf_counter() - t0


def bench_io(frame: pd.DataFrame, size: int) -> dict[str, float]:
    n = len(frame)
    t_decode, _ = _timed(lambda: [decode(p, size) for p in frame[S.PATH]])
    image_array(frame, size)  # build the cache (not timed)
    t_cached, _ = _timed(lambda: np.array(image_array(frame, size)))
    config = TrainingConfig(batch_size=32)
    decoding = DataLoader(_DecodingDataset(frame, size), batch_size=32, shuffle=True)
    from .lightning_module import loader

    cached = loader(image_array(frame, size), frame[S.LABEL].to_numpy(), np.ones(n), config, True, 0)
    t_load_decoding, _ = _timed(lambda: sum(1 for _ in decoding))
    t_load_cached, _ = _timed(lambda: sum(1 for _ in cached))
    return {"decode img/s": n / t_decode, "cache img/s": n / t_cached,
            "loading epoch decoding s": t_load_decoding, "loading epoch cached s": t_load_cached,
            "epoch decoding s": _epoch(decoding, "small_cnn", size),
            "epoch cached s": _epoch(cached, "small_cnn", size)}


def bench_backbones(frame: pd.DataFrame, size: int, backbones: tuple[str, ...]) -> dict[str, float]:
    from .lightning_module import loader

    pixels = image_array(frame, size)[:128]
    out = {}
    for name in backbones:
        data = loader(pixels, frame[S.LABEL].to_numpy()[:128], np.ones(len(pixels)), TrainingConfig(batch_size=32),
                      True, 0)
        out[f"{name} train img/s"] = len(pixels) / _epoch(data, name, size)
    return out


def _scores(preds: pd.DataFrame) -> tuple[float, float]:
    v = preds[preds[S.SPLIT] == "valid"]
    return (balanced_accuracy_score(v[S.LABEL], v[S.PROBA] >= 0.5), roc_auc_score(v[S.LABEL], v[S.PROBA]))


def bench_study(frame: pd.DataFrame, size: int, epochs: int) -> pd.DataFrame:
    """Six weightings, full mode vs last-layer mode, each from a cold cache."""
    from .train import predict_with_weights
    from .weighting import compute_weights

    train = frame[frame[S.SPLIT] == "train"].reset_index(drop=True)
    weights = {m: compute_weights(m, train, ["sex"], all_attributes=["sex", "age_band", "view"]).to_numpy()
               for m in STUDY_WEIGHTINGS}
    rows = []
    for mode in ("full", "last_layer"):
        config = dataclasses.replace(TrainingConfig(), mode=mode, image_size=size, max_epochs=epochs)
        with tempfile.TemporaryDirectory() as cache:
            os.environ["FAIRCXR_CACHE"] = cache
            image_array(frame, size)  # decoding is timed separately
            t0 = time.perf_counter()
            for method, w in weights.items():
                preds, _ = predict_with_weights(frame, w, config, seed=0)
                bacc, auc = _scores(preds)
                rows.append({"mode": mode, "weighting": method, "balanced_accuracy": bacc, "auc": auc})
            rows[-1]["study seconds"] = time.perf_counter() - t0
    return pd.DataFrame(rows)


def run(data: Path, label: str, size: int, epochs: int, backbones: tuple[str, ...]) -> None:
    frame, _ = load_dataset(data, load_config(data_dir=str(data)))
    print(f"\n=== {label}: {len(frame)} images, {size} px ===")
    io = bench_io(frame, size)
    print(f"decoding PNGs      {io['decode img/s']:9.0f} img/s")
    print(f"decoded cache      {io['cache img/s']:9.0f} img/s  ({io['cache img/s'] / io['decode img/s']:.0f}x)")
    print(f"data epoch, decoding {io['loading epoch decoding s']:7.2f} s (batches only, no model)")
    print(f"data epoch, cached   {io['loading epoch cached s']:7.2f} s  "
          f"({io['loading epoch decoding s'] / io['loading epoch cached s']:.0f}x faster)")
    print(f"epoch, decoding    {io['epoch decoding s']:9.2f} s")
    print(f"epoch, cached      {io['epoch cached s']:9.2f} s  "
          f"({io['epoch decoding s'] / io['epoch cached s']:.1f}x faster)")
    for name, value in bench_backbones(frame, size, backbones).items():
        print(f"{name:18s} {value:9.1f}")
    study = bench_study(frame, size, epochs)
    full = study.loc[study["mode"] == "full", "study seconds"].dropna().iloc[0]
    last = study.loc[study["mode"] == "last_layer", "study seconds"].dropna().iloc[0]
    print(study.drop(columns="study seconds").to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    mean = study.groupby("mode")["balanced_accuracy"].mean()
    print(f"six-weighting study: full {full:.1f} s, last-layer {last:.1f} s ({full / last:.1f}x faster); "
          f"mean balanced accuracy full {mean['full']:.3f} vs last-layer {mean['last_layer']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__)
    parser.add_argument("--data", action="append", default=[], help="data folder (repeatable)")
    parser.add_argument("--size", type=int, default=64, help="training resolution in pixels")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbones", default="small_cnn,resnet18")
    args = parser.parse_args(argv)
    os.environ.setdefault("FAIRCXR_PROGRESS", "0")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    folders = [(Path(d), Path(d).name) for d in args.data]
    if not folders:
        from .demo import make_demo

        demo = make_demo(Path(tempfile.mkdtemp()) / "demo", n_patients=400, seed=0, image_size=256)
        folders.append((demo, "demo (400 patients, 256 px PNGs)"))
        if SHARED.exists():
            folders.append((SHARED, "NIH subset nih1000-64px"))
    backbones = tuple(b for b in args.backbones.split(",") if b)
    for folder, label in folders:
        run(folder, label, args.size, args.epochs, backbones)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
