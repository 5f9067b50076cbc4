"""The course's training contract, and the cached entry point the study uses.

    train_classifier(logdir, datadir, weights_col, csv) -> (ckpt_path, ckpt_score)
    pred_classifier(datadir, csv_in, csv_out, ckpt_path)
    python -m pipeline.train --logdir --datadir --csv --weights_col --csv_out [--train False --ckpt PATH]

Speed comes from decoding every PNG once (`images.image_array`), a small CNN by default, and the
last-layer mode (`features.py`): one backbone training, then one head per weighting scheme.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from . import schema as S
from .cache import atomic_path, cache_dir, code_version, memory
from .config import ConfigError, TrainingConfig
from .data import CheckReport, list_images
from .features import head_proba
from .images import image_array

INNER_VAL_FRACTION = 0.15  # share of train patients held out for early stopping in the study


# ---------------------------------------------------------------- the study's entry point


def _inner_split(train: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-disjoint split of the train rows for early stopping (valid stays untouched)."""
    gss = GroupShuffleSplit(n_splits=1, test_size=INNER_VAL_FRACTION, random_state=seed)
    fit_idx, stop_idx = next(gss.split(train, groups=train[S.PATIENT]))
    return fit_idx, stop_idx


def _fit_full(frame: pd.DataFrame, weights: np.ndarray, config: TrainingConfig, seed: int,
              paths: list[str], code: str = "") -> dict:
    """Train a whole network with these weights; probabilities and features for every row.

    Cached on content (digests, labels, splits), weights, config, seed and the training code's
    version; `paths` only say where to read the pixels, so a moved data folder re-uses the cache.
    """
    from .lightning_module import fit, predict

    t0 = time.perf_counter()
    pixels = image_array(frame.assign(**{S.PATH: paths}), config.image_size)
    is_train = (frame[S.SPLIT] == "train").to_numpy()
    train_rows = np.flatnonzero(is_train)
    fit_idx, stop_idx = _inner_split(frame.iloc[train_rows], seed)
    labels = frame[S.LABEL].to_numpy()
    fit_rows, stop_rows = train_rows[fit_idx], train_rows[stop_idx]
    with tempfile.TemporaryDirectory(dir=cache_dir()) as logdir:
        model, _, score, epochs = fit((pixels[fit_rows], labels[fit_rows], weights[fit_idx]),
                                      (pixels[stop_rows], labels[stop_rows]), config, seed, Path(logdir))
        proba, features = predict(model, pixels)
    return {"proba": proba, "features": features, "epochs": epochs, "inner_val_bacc": score,
            "seconds": time.perf_counter() - t0}


def _fit_full_cached(*args: Any) -> dict:
    """`_fit_full` through the cache of the current cache folder (resolved at call time)."""
    code = code_version("train", "lightning_module", "models", "images")
    return memory().cache(_fit_full, ignore=["paths"])(*args, code=code)


def _key_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns that determine a training result (content digest, not the path)."""
    cols = [S.IMAGE, "digest", S.SPLIT, S.LABEL, S.PATIENT]
    return frame[[c for c in cols if c in frame.columns]].reset_index(drop=True)


def predict_with_weights(frame: pd.DataFrame, weights: np.ndarray, config: TrainingConfig, seed: int,
                         logdir: Path | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions for every row of the canonical frame, from a model trained with `weights`.

    `weights` are aligned with the frame's train rows in frame order. In "full" mode a network is
    trained with them; in "last_layer" mode the cached unweighted network's features are re-used
    and only a weighted logistic head is fitted. Results are cached on content and parameters.
    """
    key, paths = _key_frame(frame), frame[S.PATH].tolist()
    weights = np.asarray(weights, dtype=float)
    if len(weights) != int((key[S.SPLIT] == "train").sum()):
        raise ValueError("weights must have one value per train image")
    t0 = time.perf_counter()
    if config.mode == "full":
        result = _fit_full_cached(key, weights, config, seed, paths)
        proba = result["proba"]
    else:
        base = _fit_full_cached(key, np.ones_like(weights), config, seed, paths)
        result = base
        is_train = (key[S.SPLIT] == "train").to_numpy()
        proba = head_proba(base["features"][is_train], key.loc[is_train, S.LABEL].to_numpy(), weights,
                           base["features"], seed)
    preds = key[[S.IMAGE, S.SPLIT, S.LABEL]].assign(**{S.PROBA: proba})
    info = {"mode": config.mode, "backbone": config.backbone, "image_size": config.image_size,
            "seed": seed, "epochs": int(result["epochs"]), "inner_val_bacc": float(result["inner_val_bacc"]),
            "backbone_training_seconds": float(result["seconds"]), "seconds": time.perf_counter() - t0}
    return preds, info


def describe_mode(config: TrainingConfig) -> str:
    """One sentence on how the numbers were produced."""
    if config.mode == "full":
        return (f"one {config.backbone} network trained per weighting ({config.image_size} px, at most "
                f"{config.max_epochs} epochs, early stopping on held-out train patients)")
    return (f"one {config.backbone} network trained once without weights ({config.image_size} px, at most "
            f"{config.max_epochs} epochs), then one weighted logistic head per weighting on its features "
            "(last-layer mode, Kirichenko et al. 2022)")


def subsample_patients(frame: pd.DataFrame, fraction: float, seed: int,
                       strata: tuple[str, ...] = (S.LABEL, S.SEX)) -> pd.DataFrame:
    """Keep `fraction` of the patients of each split, whole, stratified on label and group."""
    if fraction >= 1:
        return frame
    kept = []
    for _, part in frame.groupby(S.SPLIT, sort=False):
        patients = part.groupby(S.PATIENT).agg({c: lambda s: s.mode().iloc[0] if s.notna().any() else "NA"
                                                 for c in strata if c in part.columns})
        stratum = patients.astype(str).agg("|".join, axis=1)
        n_splits = max(2, round(1 / fraction))
        counts = stratum.value_counts()
        stratum = stratum.where(stratum.map(counts) >= n_splits, "rare")
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, keep_idx = next(folds.split(patients, stratum, groups=patients.index))
        kept.append(part[part[S.PATIENT].isin(patients.index[keep_idx])])
    return pd.concat(kept).sort_index()


# ---------------------------------------------------------------- the course's contract


def _contract_frame(datadir: Path, csv: Path) -> pd.DataFrame:
    """Images of datadir joined to the rows of csv (labels from the folders)."""
    if not Path(csv).is_file():
        raise FileNotFoundError(f"{csv} does not exist: pass the metadata CSV with --csv.")
    if not Path(datadir).is_dir():
        raise FileNotFoundError(f"{datadir} does not exist: pass your data folder with --datadir.")
    meta = pd.read_csv(csv, dtype={S.IMAGE: str})
    if S.IMAGE not in meta.columns:
        raise ConfigError(f"{csv} has no '{S.IMAGE}' column: pass a metadata CSV of the NIH format.")
    images = list_images(Path(datadir), CheckReport(Path(datadir)))
    frame = images.merge(meta, on=S.IMAGE, how="inner")
    if frame.empty:
        raise ConfigError(f"no image of {datadir} has a row in {csv}.")
    frame[S.PATIENT] = frame.get(S.PATIENT_ID, frame[S.IMAGE]).astype(str)
    return frame.reset_index(drop=True)


def _training_config(options: dict[str, Any]) -> tuple[TrainingConfig, int]:
    seed = int(options.pop("seed", 0))
    known = {f.name for f in dataclasses.fields(TrainingConfig)}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
    return dataclasses.replace(TrainingConfig(mode="full"), **options), seed


def train_classifier(logdir: str | Path, datadir: str | Path, weights_col: str | None, csv: str | Path,
                     **options: Any) -> tuple[str, float]:
    """Train on datadir/train with the CSV's sample weights; return (checkpoint path, best val bal. acc.).

    Options are TrainingConfig fields (backbone, image_size, max_epochs, ...) and `seed`.
    """
    from .lightning_module import fit

    config, seed = _training_config(dict(options))
    frame = _contract_frame(Path(datadir), Path(csv))
    train, valid = frame[frame[S.SPLIT] == "train"], frame[frame[S.SPLIT] == "valid"]
    if weights_col:
        if weights_col not in frame.columns:
            raise ConfigError(f"{csv} has no column '{weights_col}': write the weights there, or pass "
                              "--weights_col of an existing column.")
        weights = pd.to_numeric(train[weights_col], errors="coerce").to_numpy(dtype=float)
        if not np.all(np.isfinite(weights)) or (weights < 0).any():
            raise ConfigError(f"column '{weights_col}' of {csv} must hold non-negative numbers.")
    else:
        weights = np.ones(len(train))
    train_px, valid_px = image_array(train, config.image_size), image_array(valid, config.image_size)
    _, ckpt, score, _ = fit((train_px, train[S.LABEL].to_numpy(), weights),
                            (valid_px, valid[S.LABEL].to_numpy()), config, seed, Path(logdir))
    return ckpt, score


def pred_classifier(datadir: str | Path, csv_in: str | Path, csv_out: str | Path,
                    ckpt_path: str | Path) -> None:
    """Write the probability of malade for every image of csv_in found in datadir."""
    from .lightning_module import Classifier, predict

    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist: pass the path that "
                                "train_classifier returned.")
    model = Classifier.load_from_checkpoint(str(ckpt_path), map_location="cpu")
    frame = _contract_frame(Path(datadir), Path(csv_in))
    proba, _ = predict(model, image_array(frame, model.hparams.image_size))
    out = frame.drop(columns=[S.PATH]).assign(**{S.PROBA: proba})
    first = [S.IMAGE, S.SPLIT, S.LABEL, S.PROBA]
    out = out[first + [c for c in out.columns if c not in first]]
    with atomic_path(Path(csv_out)) as tmp:
        out.to_csv(tmp, index=False)


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError("expected True or False")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="logs")
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--csv", required=True, help="metadata CSV (with the weights column)")
    parser.add_argument("--weights_col", default=None)
    parser.add_argument("--csv_out", default=None, help="predictions CSV")
    parser.add_argument("--train", type=_bool, default=True)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--max_epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        ckpt = args.ckpt
        if args.train:
            ckpt, score = train_classifier(args.logdir, args.datadir, args.weights_col, args.csv,
                                           backbone=args.backbone, image_size=args.image_size,
                                           max_epochs=args.max_epochs, seed=args.seed)
            print(f"best checkpoint: {ckpt} (validation balanced accuracy {score:.3f})")
        elif not ckpt:
            raise ConfigError("--train False needs --ckpt PATH of a trained checkpoint.")
        if args.csv_out:
            pred_classifier(args.datadir, args.csv, args.csv_out, ckpt)
            print(f"predictions written to {args.csv_out}")
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
