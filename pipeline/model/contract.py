"""The course's training contract: `train_classifier`, `pred_classifier` and their command line.

    train_classifier(logdir, datadir, weights_col, csv, **options) -> (ckpt_path, ckpt_score)
    pred_classifier(datadir, csv_in, csv_out, ckpt_path)
    python -m pipeline.train --logdir D --datadir D --csv F --weights_col W --csv_out F [--train False --ckpt P]

Errors the user can fix are one line on stderr (exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cache import atomic_path
from pipeline.config import PRECISIONS, ConfigError, TrainingConfig
from pipeline.data import schema as S
from pipeline.data.folder import CheckReport, TableError, canonical_headers, list_images, read_table
from pipeline.data.images import image_array
from pipeline.model.backbones import Classifier, available_backbones
from pipeline.model.choice import AUTO, choose
from pipeline.model.training import fit, predict


def _read_csv(path: Path) -> pd.DataFrame:
    """A metadata CSV as text cells, whatever its separator and encoding (see `folder.read_table`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the metadata CSV with --csv.")
    try:
        meta = canonical_headers(read_table(path)[0])  # as the study reads it: UTF-16, tabs, a workbook...
    except TableError as err:
        raise ConfigError(str(err)) from err
    if S.IMAGE not in meta.columns:
        raise ConfigError(f"{path} has no '{S.IMAGE}' column (found {list(meta.columns)[:6]}): "
                          "pass a metadata CSV of the NIH format.")
    return meta


def _contract_frame(datadir: Path, csv: Path) -> pd.DataFrame:
    """Images of datadir/{train,valid}/{malade,sain} joined to their rows of csv (labels from the folders)."""
    if not datadir.is_dir():
        raise FileNotFoundError(f"data folder {datadir} does not exist: pass it with --datadir.")
    meta = _read_csv(csv)
    images = list_images(datadir, CheckReport(datadir))
    if images.empty:
        raise ConfigError(f"no PNG image in {datadir}/{{train,valid}}/{{malade,sain}}/.")
    reserved = [c for c in (S.PATH, S.SPLIT, S.LABEL, S.PROBA) if c in meta.columns]
    meta = meta.drop(columns=reserved).drop_duplicates(S.IMAGE)
    frame = images.merge(meta, on=S.IMAGE, how="left", indicator=True)
    orphans = int((frame["_merge"] == "left_only").sum())
    if orphans == len(frame):
        raise ConfigError(f"no image of {datadir} has a row in {csv} (column '{S.IMAGE}').")
    if orphans:
        print(f"warning: {orphans} image(s) of {datadir} have no row in {csv}; they are left out.", file=sys.stderr)
    frame = frame[frame["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    frame[S.PATIENT] = frame[S.PATIENT_ID] if S.PATIENT_ID in frame.columns else frame[S.IMAGE]
    return frame


def _train_weights(train: pd.DataFrame, weights_col: str | None, csv: Path) -> np.ndarray:
    if not weights_col:
        return np.ones(len(train))
    if weights_col not in train.columns:
        raise ConfigError(f"{csv} has no column '{weights_col}': write the weights there, or pass "
                          "--weights_col of an existing column (or none for uniform weights).")
    w = pd.to_numeric(train[weights_col], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"column '{weights_col}' of {csv} must hold a non-negative number for every train "
                          f"image ({int((~np.isfinite(w)).sum())} missing or not numeric).")
    return w


def _training_config(options: dict[str, Any]) -> tuple[TrainingConfig, int]:
    options = dict(options)
    seed = int(options.pop("seed", 0))
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown training option(s) {unknown}; known: seed, {', '.join(sorted(known))}")
    config = dataclasses.replace(TrainingConfig(mode="full"), **options)
    if config.backbone == AUTO:  # the course's script trains a whole network: the small CNN (`model.choice`)
        config = dataclasses.replace(config, backbone=choose(config, download=False).backbone)
    if config.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{config.precision}'; choose one of {', '.join(PRECISIONS)}")
    if config.backbone not in available_backbones():
        raise ConfigError(f"unknown backbone '{config.backbone}'; available: {', '.join(available_backbones())}")
    return config, seed


def train_classifier(logdir: str | Path, datadir: str | Path, weights_col: str | None, csv: str | Path,
                     **options: Any) -> tuple[str, float]:
    """Train on datadir/train with the CSV's sample weights; return (checkpoint path, best valid bal. acc.).

    Options are TrainingConfig fields (backbone, image_size, max_epochs, sampler, accelerator, ...) and
    `seed`. The checkpoint is logdir/checkpoints/best.ckpt, with best.json (seed, config, score) next to it.
    """
    config, seed = _training_config(options)
    frame = _contract_frame(Path(datadir), Path(csv))
    is_train = (frame[S.SPLIT] == "train").to_numpy()
    for split, rows in (("train", is_train), ("valid", ~is_train)):
        if set(frame.loc[rows, S.LABEL]) != {0, 1}:
            raise ConfigError(f"{split} of {datadir} needs images in both malade/ and sain/ with rows in {csv}.")
    weights = _train_weights(frame[is_train], weights_col, Path(csv))
    pixels = image_array(frame, config.image_size)
    fitted = fit(pixels, frame[S.LABEL].to_numpy(), np.flatnonzero(is_train), np.flatnonzero(~is_train),
                 weights, config, seed, Path(logdir))
    return fitted.ckpt, fitted.score


def pred_classifier(datadir: str | Path, csv_in: str | Path, csv_out: str | Path, ckpt_path: str | Path) -> None:
    """Write the probability of malade for every image of csv_in found in datadir, with its metadata."""
    ckpt = Path(ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist: pass the path train_classifier returned.")
    try:
        model = Classifier.load_from_checkpoint(str(ckpt), map_location="cpu", pretrained=False)
    except Exception as err:
        raise ConfigError(f"{ckpt} is not a checkpoint of pipeline.train ({type(err).__name__}).") from err
    frame = _contract_frame(Path(datadir), Path(csv_in))
    proba, _ = predict(model, image_array(frame, model.hparams.image_size))
    out = frame.drop(columns=[S.PATH]).assign(**{S.PROBA: proba})
    first = [S.IMAGE, S.SPLIT, S.LABEL, S.PROBA]
    with atomic_path(Path(csv_out)) as tmp:
        out[first + [c for c in out.columns if c not in first]].to_csv(tmp, index=False)


def _bool(text: str) -> bool:
    if text.strip().lower() in ("true", "1", "yes", "oui"):
        return True
    if text.strip().lower() in ("false", "0", "no", "non"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")


def _devices(text: str) -> Any:
    if text.isdigit():
        return int(text)
    return [int(d) for d in text.split(",")] if "," in text else text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", default="logs", help="logs and checkpoints go to LOGDIR/ (default: logs)")
    p.add_argument("--datadir", required=True, help="folder with train/ and valid/ (malade/, sain/)")
    p.add_argument("--csv", required=True, help="metadata CSV (with the weights column)")
    p.add_argument("--weights_col", default=None, help="column of sample weights (default: uniform)")
    p.add_argument("--csv_out", default=None, help="write predictions for every image of --csv here")
    p.add_argument("--train", type=_bool, default=True, help="False: predict only, with --ckpt")
    p.add_argument("--ckpt", default=None, help="checkpoint to predict with (when --train False)")
    p.add_argument("--seed", type=int, default=0)
    for name, kind in (("backbone", str), ("image_size", int), ("max_epochs", int), ("patience", int),
                       ("batch_size", int), ("learning_rate", float), ("sampler", _bool), ("accelerator", str),
                       ("devices", _devices), ("strategy", str), ("precision", str), ("num_workers", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help=f"TrainingConfig.{name}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(TrainingConfig)}
               and v is not None}
    try:
        ckpt = args.ckpt
        if args.train:
            ckpt, score = train_classifier(args.logdir, args.datadir, args.weights_col, args.csv, seed=args.seed,
                                           **options)
            from lightning.fabric.utilities.rank_zero import rank_zero_only

            if rank_zero_only.rank != 0:  # DDP: the other processes stop here
                return 0
            print(f"best checkpoint: {ckpt} (validation balanced accuracy {score:.3f})")
        elif not ckpt or not args.csv_out:
            raise ConfigError("--train False predicts only: it needs --ckpt PATH and --csv_out FILE.")
        if args.csv_out:
            pred_classifier(args.datadir, args.csv, args.csv_out, ckpt)
            print(f"predictions written to {args.csv_out}")
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if os.environ.get("FAIRCXR_DEBUG"):
            raise
        text = (str(err).strip().splitlines() or [""])[0]
        known = isinstance(err, ConfigError | FileNotFoundError)
        print(f"error: {text}" if known else f"error: {type(err).__name__}: {text}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
