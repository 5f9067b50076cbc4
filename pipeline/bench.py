"""Speed figures: `python -m pipeline.bench [--data DIR ...] [--size PX] [--epochs N] [--threads N]`.

For the demo and each data folder (the real NIH subset in ../shared when present), prints: images/s
decoding PNGs vs reading the decoded cache; a training epoch fed by the course's loader (torchvision
ImageFolder and transforms at every epoch), by our decoder, and by the cache, also for 1024 px NIH
originals; training images/s per backbone; the time of one full training; and a six-weighting study
in full mode (six trainings) vs last-layer mode (one training, six heads), cold and with the backbone
already cached, and heads on a frozen pre-trained backbone (no training), with balanced accuracy and
AUC; and the render figures (pipeline.render.timing: cold `make report`, re-render after a prose edit,
one document executed, Quarto). `--scale 1000,3000,10000` runs the whole study (study.yml's settings)
cold on demo folders of about that many 256 px images and prints each stage's time and how it grows.
`--protocols DIR` compares training protocols on a folder (evaluation AUC of the unweighted model over
the study's seeds): today's split, its backbone's own head, one network on every training patient,
and cross-fitted backbones.
Figures, not assertions: timing targets live here, not in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch.utils.data import DataLoader, Dataset

from pipeline.config import TrainingConfig, load_config
from pipeline.data import schema as S
from pipeline.data.folder import load_dataset
from pipeline.data.images import decode, image_array
from pipeline.model.backbones import Classifier
from pipeline.model.training import PixelData, loader, predict_with_weights

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class CourseDataset(Dataset):
    """What the course's script did for every image at every epoch: torchvision's ImageFolder loader
    (PIL open, convert to RGB) then transforms.v2 Resize, ToImage, ToDtype and ImageNet Normalize.

    Returns the first channel so that the same grey network trains on it (timing only).
    """

    def __init__(self, paths: list[str], labels: np.ndarray, size: int):
        from torchvision.transforms import v2

        self.paths, self.labels = paths, labels
        self.transform = v2.Compose([v2.Resize((size, size)), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB"))
        return x[:1], torch.tensor(float(self.labels[i])), torch.tensor(1.0)


class DecodingDataset(CourseDataset):
    """Our own decoder (grey, PIL's reducing resize) at every access, without the cache."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: int):
        self.paths, self.labels, self.size = paths, labels, size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(decode(self.paths[i], self.size).copy()).unsqueeze(0)
        return x, torch.tensor(float(self.labels[i])), torch.tensor(1.0)


@contextlib.contextmanager
def _cache_in(folder: Path) -> Iterator[None]:
    """Use `folder` as the cache folder for a while (a cold cache)."""
    before = os.environ.get("FAIRCXR_CACHE")
    os.environ["FAIRCXR_CACHE"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FAIRCXR_CACHE", None)
        else:
            os.environ["FAIRCXR_CACHE"] = before


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def epoch_seconds(batches: DataLoader, backbone: str, size: int, limit: int | None = None) -> float:
    """Seconds for one training epoch (or its first `limit` batches) of `backbone`."""
    model = Classifier(backbone, image_size=size, pretrained=False)
    model.log = lambda *a, **k: None  # no Trainer here
    opt = model.configure_optimizers()
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        if limit is not None and i >= limit:
            break
        opt.zero_grad()
        model.training_step(batch, i).backward()
        opt.step()
    return time.perf_counter() - t0


def loader_seconds(batches: DataLoader) -> float:
    """Seconds to deliver every batch of an epoch, with no training: the loading cost alone."""
    return _timed(lambda: [None for _ in batches])


def bench_io(frame: pd.DataFrame, size: int) -> dict[str, float]:
    """Decoding vs cache: images/s, then small_cnn epochs fed by the course's loader, by our decoder
    and by the cache (one loader process, as the course's script: DataLoader's default)."""
    n, paths, labels = len(frame), frame[S.PATH].tolist(), frame[S.LABEL].to_numpy()
    t_decode = _timed(lambda: [decode(p, size) for p in paths])
    t_build = _timed(lambda: image_array(frame, size))  # threaded, cold for this frame's content
    t_cached = _timed(lambda: np.array(image_array(frame, size)))
    feeds = {
        "course": DataLoader(CourseDataset(paths, labels, size), batch_size=32, shuffle=True),
        "decoding": DataLoader(DecodingDataset(paths, labels, size), batch_size=32, shuffle=True),
        "cached": loader(PixelData(image_array(frame, size), np.arange(n), labels, np.ones(n)),
                         TrainingConfig(), True, 0),
    }
    out = {"n": n, "size": size, "decode img/s": n / t_decode, "build img/s": n / t_build,
           "cache img/s": n / t_cached}
    for name, feed in feeds.items():
        out[f"{name} loader img/s"] = n / loader_seconds(feed)
    epochs: dict[str, list[float]] = {name: [] for name in feeds}
    for _ in range(2):  # alternate and keep the best of two: robust to other processes on the machine
        for name, feed in feeds.items():
            epochs[name].append(epoch_seconds(feed, "small_cnn", size))
    return {**out, **{f"epoch {name} s": min(v) for name, v in epochs.items()}}


def bench_backbones(frame: pd.DataFrame, sizes: dict[str, int], n: int = 128) -> dict[str, float]:
    """Training images/s of each backbone on the first n images (random init: speed only)."""
    out = {}
    for name, size in sizes.items():
        pixels, labels = image_array(frame.iloc[:n], size), frame[S.LABEL].to_numpy()[:n]
        batches = loader(PixelData(pixels, np.arange(len(pixels)), labels, np.ones(len(pixels))),
                         TrainingConfig(batch_size=32), True, 0)
        epoch_seconds(batches, name, size, limit=1)  # warm-up
        out[f"{name} @ {size} px"] = len(pixels) / epoch_seconds(batches, name, size)
    return out


def study_weights(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Six weight vectors for the train rows: the registry's schemes, or simple ones without it."""
    train = frame[frame[S.SPLIT] == "train"].reset_index(drop=True)
    try:
        from pipeline.fairness.weighting import compute_weights

        methods = ("uniform", "class_balanced", "group_balanced", "reweighing", "reweighing_intersectional",
                   "effective_number")
        return {m: compute_weights(m, train, ["sex"], all_attributes=["sex", "age_band", "view"]).to_numpy()
                for m in methods}
    except ImportError:
        y, female = train[S.LABEL].to_numpy(), (train[S.SEX] == "F").to_numpy()
        rng = np.random.default_rng(0)
        return {"uniform": np.ones(len(train)), "class_balanced": np.where(y == 1, 1 / y.mean(), 1 / (1 - y.mean())),
                **{f"random_group_{k}": np.where(female, rng.uniform(0.5, 3), 1.0) for k in range(4)}}


def _scores(preds: pd.DataFrame) -> tuple[float, float]:
    v = preds[preds[S.SPLIT] == "valid"]
    return balanced_accuracy_score(v[S.LABEL], v[S.PROBA] >= 0.5), roc_auc_score(v[S.LABEL], v[S.PROBA])


def bench_study(frame: pd.DataFrame, size: int, epochs: int, backbone: str = "small_cnn",
                ) -> tuple[pd.DataFrame, dict[str, float]]:
    """Six weightings: full mode (six trainings), last-layer mode (one training, six heads) and
    last-layer heads on a frozen pre-trained backbone (no training), each from a cold cache."""
    weights, rows, seconds = study_weights(frame), [], {}
    variants = {"full": {"mode": "full"}, "last_layer": {"mode": "last_layer"},
                "frozen backbone": {"mode": "last_layer", "feature_source": "pretrained"}}
    for variant, fields in variants.items():
        config = TrainingConfig(backbone=backbone, image_size=size, max_epochs=epochs, patience=3, **fields)
        with tempfile.TemporaryDirectory() as cache, _cache_in(Path(cache)):
            image_array(frame, size)  # decoding is measured separately
            t0 = time.perf_counter()
            for method, w in weights.items():
                preds, info = predict_with_weights(frame, w, config, seed=0)
                bacc, auc = _scores(preds)
                rows.append({"mode": variant, "weighting": method, "balanced_accuracy": bacc, "auc": auc,
                             "epochs": info["epochs"]})
            seconds[variant] = time.perf_counter() - t0
            if variant == "last_layer":  # six new weight vectors: the backbone is re-used from the cache
                t0 = time.perf_counter()
                for w in weights.values():
                    predict_with_weights(frame, w * (1 + 0.01 * np.arange(len(w)) / len(w)), config, seed=0)
                seconds["last_layer, backbone cached"] = time.perf_counter() - t0
            if variant == "full":
                seconds["one full training"] = float(info["backbone_training_seconds"])
    return pd.DataFrame(rows), seconds


def nih_1024_frame(copies: int = 10) -> pd.DataFrame | None:
    """The 1024 px NIH originals of ../shared (7 files) repeated: the users' real decoding cost."""
    files = sorted((SHARED / "nih7-1024px").glob("*.png"))
    if not files:
        return None
    paths = [str(p) for p in files] * copies
    return pd.DataFrame({S.PATH: paths, S.LABEL: np.arange(len(paths)) % 2,
                         "digest": [f"{p}#{k}" for k in range(copies) for p in files]})


def _print_io(io: dict[str, float], what: str) -> None:
    print(f"{what}: decoding PNGs {io['decode img/s']:.0f} img/s (1 thread), building the cache "
          f"{io['build img/s']:.0f} img/s (threads), reading the cache {io['cache img/s']:.0f} img/s")
    print(f"  loading alone: course's loader {io['course loader img/s']:.0f} img/s, our decoder "
          f"{io['decoding loader img/s']:.0f} img/s, the cache {io['cached loader img/s']:.0f} img/s")
    cached = io["epoch cached s"]
    print(f"  small_cnn epoch of {io['n']} images at {io['size']} px: course's loader {io['epoch course s']:.2f} s, "
          f"our decoder {io['epoch decoding s']:.2f} s, from the cache {cached:.2f} s "
          f"({io['epoch course s'] / cached:.1f}x and {io['epoch decoding s'] / cached:.1f}x faster)")


def run(data: Path, label: str, size: int, epochs: int, backbones: dict[str, int], study_backbone: str) -> None:
    frame, _ = load_dataset(data, load_config(data_dir=str(data)))
    print(f"\n=== {label}: {len(frame)} images, {frame[S.PATIENT].nunique()} patients, trained at {size} px ===")
    _print_io(bench_io(frame, size), "images")
    for name, value in bench_backbones(frame, backbones).items():
        print(f"  training speed {name}: {value:.0f} img/s")
    study, seconds = bench_study(frame, size, epochs, study_backbone)
    print(f"one full training of {study_backbone} ({epochs} epochs at most): {seconds['one full training']:.1f} s")
    print(study.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    mean = study.groupby("mode")[["balanced_accuracy", "auc"]].mean()
    full, last, warm = seconds["full"], seconds["last_layer"], seconds["last_layer, backbone cached"]
    frozen = seconds["frozen backbone"]
    print(f"six-weighting study: full {full:.1f} s; last-layer {last:.1f} s cold ({full / last:.1f}x faster), "
          f"{warm:.2f} s with the backbone cached ({full / warm:.0f}x faster); heads on a frozen backbone "
          f"{frozen:.1f} s ({full / frozen:.0f}x faster)")
    for variant in ("last_layer", "frozen backbone"):
        gap = 100 * (mean.loc[variant, "balanced_accuracy"] - mean.loc["full", "balanced_accuracy"])
        print(f"mean balanced accuracy {variant}: {mean.loc[variant, 'balanced_accuracy']:.3f} vs full "
              f"{mean.loc['full', 'balanced_accuracy']:.3f} ({gap:+.1f} points); mean AUC "
              f"{mean.loc[variant, 'auc']:.3f} vs {mean.loc['full', 'auc']:.3f}")
    if study_backbone == "small_cnn":
        print("(small_cnn has no pre-trained weights: its frozen backbone is a random one; pass "
              "--study-backbone resnet18 where ImageNet weights can be downloaded)")


PROTOCOLS = ("split", "split_own", "full", "crossfit")
CROSSFIT_FOLDS = 5


def bench_protocols(data: Path, protocols: tuple[str, ...] = PROTOCOLS, **training: Any) -> pd.DataFrame:
    """Evaluation AUC of the unweighted model under each training protocol, one row per seed of study.yml.

    split: the study's last-layer protocol (backbone on its part of the training patients, logistic head
    on another part); split_own: that backbone's own head; full: one network on every training patient
    but the inner validation; crossfit: K backbones, each on (K-1)/K of those patients, head k fitted on
    fold k's features of backbone k (never seen by it), evaluation scored by the mean of the K heads.
    `training` overrides study.yml's training settings (image_size, max_epochs, ...)."""
    import dataclasses

    from pipeline import study
    from pipeline.model import features
    from pipeline.model import training as T
    from pipeline.model.choice import resolve

    config = resolve(load_config(data_dir=str(data)))[0]
    frame = study.context(config).frame.reset_index(drop=True)
    net = dataclasses.replace(T._network_config(config.training), **training)
    pixels, labels = image_array(frame, net.image_size), frame[S.LABEL].to_numpy()
    valid, key = (frame[S.SPLIT] == "valid").to_numpy(), T._key_frame(frame)
    patients = frame[S.PATIENT].to_numpy()

    def trained(rows: np.ndarray, held: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        with tempfile.TemporaryDirectory() as logdir:
            fitted = T.fit(pixels, labels, rows, held, np.ones(len(rows)), net, seed, Path(logdir))
            return T.predict(fitted.model, pixels)

    rows = []
    for seed in config.training.seeds:
        split, plain = T.train_roles(key, seed, T.HEAD_FRACTION), T.train_roles(key, seed, 0.0)
        inner, fit = np.flatnonzero(plain == "inner_val"), np.flatnonzero(plain == "fit")
        scores: dict[str, np.ndarray] = {}
        t0 = time.perf_counter()
        if {"split", "split_own"} & set(protocols):
            own, feats = trained(np.flatnonzero(split == "backbone"), inner, seed)
            head = split == "fit"
            scores |= {"split": features.head_proba(feats, head, labels, np.ones(int(head.sum())), seed),
                       "split_own": own}
        if "full" in protocols:
            scores["full"] = trained(fit, inner, seed)[0]
        if "crossfit" in protocols:
            rng = np.random.default_rng(seed)
            fit_patients = rng.permutation(np.unique(patients[fit]))
            fold_of = dict(zip(fit_patients, np.arange(len(fit_patients)) % CROSSFIT_FOLDS, strict=True))
            fold = np.array([fold_of.get(p, -1) for p in patients])
            heads = []
            for k in range(CROSSFIT_FOLDS):
                feats = trained(fit[fold[fit] != k], inner, seed * 100 + k)[1]
                heads.append(features.head_proba(feats, fold == k, labels, np.ones(int((fold == k).sum())), seed))
            scores["crossfit"] = np.mean(heads, axis=0)
        for name in protocols:
            rows.append({"seed": seed, "protocol": name, "auc": roc_auc_score(labels[valid], scores[name][valid])})
        print(f"  seed {seed}: " + ", ".join(f"{r['protocol']} {r['auc']:.3f}" for r in rows[-len(protocols):])
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def print_protocols(table: pd.DataFrame) -> None:
    """Each protocol's mean evaluation AUC over the seeds, its spread, and the seeds' values."""
    for name, part in table.groupby("protocol", sort=False):
        values = part["auc"].to_numpy()
        print(f"  {name}: AUC {values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f} over "
              f"{len(values)} seeds ({', '.join(f'{v:.2f}' for v in values)})")


IMAGES_PER_PATIENT = 747 / 400  # the demo's follow-up rate: 400 patients give 747 images


def bench_scale(sizes: list[int], scratch: Path) -> pd.DataFrame:
    """The whole study, cold, on demo folders of about `sizes` images at 256 px: seconds per stage."""
    from pipeline import study
    from pipeline.data.demo import make_demo

    rows = []
    for n in sizes:
        with _cache_in(scratch / f"cache-{n}"):
            t0 = time.perf_counter()
            folder = make_demo(scratch / f"demo-{n}", n_patients=max(10, round(n / IMAGES_PER_PATIENT)), seed=0,
                               image_size=256)
            made = time.perf_counter() - t0
            t0 = time.perf_counter()
            ctx = study.run(load_config(data_dir=str(folder)))
            total = time.perf_counter() - t0
        row = {"images": len(ctx.full_frame), "patients": ctx.full_frame[S.PATIENT].nunique(),
               "backbone": ctx.config.training.backbone, "seeds": len(ctx.config.training.seeds),
               "demo written": made, **ctx.timings, "study total": total}
        rows.append(row)
        print("  " + ", ".join(f"{k} {v:.0f} s" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
              flush=True)
    return pd.DataFrame(rows)


def print_scale(table: pd.DataFrame) -> None:
    """Each stage's seconds, and its cost per 1,000 images from the smallest folder to the largest."""
    print(table.to_string(index=False, float_format=lambda x: f"{x:.0f}"))
    if len(table) > 1:
        first, last = table.iloc[0], table.iloc[-1]
        ratio = last["images"] / first["images"]
        for stage in [c for c in table.columns if c not in ("images", "patients", "backbone", "seeds")]:
            grow = last[stage] / first[stage] if first[stage] > 0 else float("nan")
            print(f"  {stage}: x{grow:.1f} for x{ratio:.1f} images "
                  f"({1000 * first[stage] / first['images']:.1f} -> {1000 * last[stage] / last['images']:.1f} "
                  "s per 1,000 images)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__)
    parser.add_argument("--data", action="append", default=[], help="data folder (repeatable)")
    parser.add_argument("--size", type=int, default=64, help="training resolution in pixels")
    parser.add_argument("--epochs", type=int, default=8, help="maximum epochs of each training")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--backbones", default="small_cnn:64,resnet18:128", help="name:px,... to time")
    parser.add_argument("--study-backbone", default="small_cnn", help="backbone of the six-weighting study")
    parser.add_argument("--render", choices=("all", "only", "no"), default="all",
                        help="render figures (cold make report, writing loop, Quarto): with the rest, only, or none")
    parser.add_argument("--render-config", type=Path, default=None,
                        help="study config of the render figures (default: study.yml, as a fresh clone)")
    parser.add_argument("--scale", default="", help="images,... : the whole study cold on demo folders that size")
    parser.add_argument("--protocols", type=Path, default=None, help="data folder: compare training protocols")
    args = parser.parse_args(argv)
    os.environ.setdefault("FAIRCXR_PROGRESS", "0")
    if args.protocols:
        print(f"\n=== training protocols on {args.protocols} (evaluation AUC, unweighted model) ===")
        print_protocols(bench_protocols(args.protocols))  # study.yml's training settings
        return 0
    if args.scale:
        print(f"\n=== the whole study, cold, by folder size (torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads, {os.cpu_count()} cores) ===")
        with tempfile.TemporaryDirectory() as scratch:
            os.environ["FAIRCXR_OUTPUT"] = str(Path(scratch) / "output")  # the weights CSVs: not the project's
            print_scale(bench_scale([int(n) for n in args.scale.split(",")], Path(scratch)))
        return 0
    if args.render != "no":
        from pipeline.render.timing import bench_render, print_render_figures

        print(f"\n=== rendering ({args.render_config or 'study.yml'}) ===")
        print_render_figures(bench_render(args.render_config))
        if args.render == "only":
            return 0
    warnings.filterwarnings("ignore", ".*pre-trained weights could not be loaded.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), {os.cpu_count()} core(s)")
    backbones = {b.split(":")[0]: int(b.split(":")[1]) if ":" in b else args.size
                 for b in args.backbones.split(",") if b}
    with tempfile.TemporaryDirectory() as scratch, _cache_in(Path(scratch) / "cache"):
        big = nih_1024_frame()
        for size in (args.size, 128) if big is not None else ():
            _print_io(bench_io(big, size), f"NIH originals 1024 px -> {size} px (7 files x 10)")
        folders = [(Path(d), Path(d).name) for d in args.data]
        if not folders:
            try:
                from pipeline.data.demo import make_demo

                folders.append((make_demo(Path(scratch) / "demo", n_patients=400, seed=0, image_size=256),
                                "demo (400 patients, 256 px PNGs)"))
            except ImportError:
                print("pipeline.demo not available: demo skipped")
            if (SHARED / "nih1000-64px").exists():
                folders.append((SHARED / "nih1000-64px", "NIH subset nih1000-64px"))
        for folder, label in folders:
            run(folder, label, args.size, args.epochs, backbones, args.study_backbone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
