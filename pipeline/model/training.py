"""Training: the Lightning loop, the study's cached entry point, and the course's contract.

    train_classifier(logdir, datadir, weights_col, csv, **options) -> (ckpt_path, ckpt_score)
    pred_classifier(datadir, csv_in, csv_out, ckpt_path)
    python -m pipeline.train --logdir D --datadir D --csv F --weights_col W --csv_out F [--train False --ckpt P]

Speed comes from decoding every PNG once (`images.image_array`), batches sliced from that array
(no per-image work in the loader), a small CNN by default, and the last-layer mode (`features.py`):
one backbone training, then one logistic head per weighting scheme.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from pipeline import progress
from pipeline.cache import atomic_write_text, cache_dir, code_version, memory
from pipeline.config import TrainingConfig
from pipeline.data import schema as S
from pipeline.data.images import digests, image_array
from pipeline.model import features
from pipeline.model.backbones import Classifier

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available: False" banners


logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


warnings.filterwarnings("ignore", ".*does not have many workers.*")


warnings.filterwarnings("ignore", ".*LeafSpec.*")


warnings.filterwarnings("ignore", ".*all_gather is deprecated.*")


IN_MEMORY_BYTES = 2 << 30  # a training set up to 2 GiB is copied to RAM (no loader workers needed)


INNER_VAL_FRACTION = 0.15  # share of train patients held out for early stopping and the operating threshold


HEAD_FRACTION = 0.3  # last-layer mode: share of the other train patients kept for the heads, unseen by the backbone


THRESHOLD_FOLDS = 5  # frozen features: patient folds whose out-of-fold scores the operating threshold is chosen on


ROLE = "role"  # column of the predictions: what each row was used for


ROLES = ("backbone", "fit", "inner_val", "valid")  # trains the backbone only; fits the weighted model or head;
# early stopping and the operating threshold; evaluation


class PixelData(Dataset):
    """(uint8 pixels, label, weight) of some rows of a decoded array, fetched a whole batch at a time.

    Small sets are copied to RAM; larger ones stay memory-mapped (re-opened in each loader worker).
    """

    def __init__(self, pixels: np.ndarray, rows: np.ndarray, labels: np.ndarray, weights: np.ndarray):
        self.rows = np.asarray(rows)
        self.labels = torch.tensor(np.asarray(labels, dtype=np.float32))
        self.weights = torch.tensor(np.asarray(weights, dtype=np.float32))
        lazy = getattr(pixels, "filename", None) and len(self.rows) * pixels[0].nbytes > IN_MEMORY_BYTES
        self.file = str(pixels.filename) if lazy else None
        self._pixels = None if lazy else np.ascontiguousarray(pixels[self.rows])

    @property
    def in_memory(self) -> bool:
        return self.file is None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:  # a memory-map is re-opened, never pickled, in a worker
        return {**self.__dict__, "_pixels": None} if self.file else self.__dict__

    def __getitems__(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = np.asarray(index)
        if self._pixels is None:
            self._pixels = np.load(self.file, mmap_mode="r")
        if self.file:  # read rows in file order, then restore the batch order
            src, order = self.rows[idx], np.argsort(self.rows[idx])
            x = np.empty((len(idx), *self._pixels.shape[1:]), np.uint8)
            x[order] = self._pixels[src[order]]
        else:
            x = self._pixels[idx]
        return torch.from_numpy(x).unsqueeze(1), self.labels[idx], self.weights[idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([i]))


def _as_is(batch: Any) -> Any:
    return batch


def num_workers(requested: int, in_memory: bool) -> int:
    """Loader processes: as requested, else none for data in RAM, else min(4, cores - 1)."""
    if requested >= 0:
        return requested
    return 0 if in_memory else max(0, min(4, (os.cpu_count() or 1) - 1))


def _gpu(config: TrainingConfig) -> bool:
    return torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")


def precision(config: TrainingConfig) -> str:
    """Lightning precision: mixed on a GPU (bf16 where supported: no loss scaling), full on a CPU."""
    if config.precision != "auto":
        return config.precision
    if not _gpu(config):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def compute_record(config: TrainingConfig) -> dict[str, str]:
    """The kernels, device and precision a training with `config` runs on (`features.compute_record`)."""
    return features.compute_record(_gpu(config), precision(config))


def loader(data: PixelData, config: TrainingConfig, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if shuffle and config.sampler:  # draw in proportion to the weights instead of weighting the loss
        sampler = WeightedRandomSampler(data.weights.double(), len(data), replacement=True, generator=generator)
    workers = num_workers(config.num_workers, data.in_memory)
    lone_last = shuffle and len(data) > config.batch_size and len(data) % config.batch_size == 1
    return DataLoader(data, batch_size=config.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=generator, num_workers=workers, collate_fn=_as_is, pin_memory=_gpu(config),
                      persistent_workers=workers > 0, drop_last=lone_last)  # BatchNorm needs 2 images


class EpochProgress(L.Callback):
    """The epoch on the study's progress line (Lightning's own bar only with --verbose)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        progress.extra(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """Within a long epoch: a log still gets its line a minute (`progress.heartbeat`)."""
        progress.heartbeat(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


@dataclass
class Fitted:
    model: Classifier
    ckpt: str
    score: float  # best validation balanced accuracy (weighted by the validation weights)
    epochs: int
    seconds: float


def fit(pixels: np.ndarray, labels: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
        weights: np.ndarray, config: TrainingConfig, seed: int, logdir: Path,
        val_weights: np.ndarray | None = None) -> Fitted:
    """Train on pixels[train_rows] with `weights`, keep the epoch with the best validation balanced accuracy."""
    t0 = time.perf_counter()
    if getattr(config, "cpu_threads", 0) > 0:  # 1 is fastest for small images on a busy 2-core machine
        torch.set_num_threads(config.cpu_threads)
    L.seed_everything(seed, workers=True, verbose=False)
    gpu, chosen_precision = _gpu(config), precision(config)
    w = np.asarray(weights, dtype=float)
    w = w / w.mean()
    model = Classifier(config.backbone, config.learning_rate, config.image_size, weighted_loss=not config.sampler,
                       pretrained=config.pretrained)
    model.start_at_prior(labels[train_rows], w)
    ckpt_dir = Path(logdir) / "checkpoints"
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_bacc",
                                                     mode="max", save_top_k=1, enable_version_counter=False)
    stop = L.pytorch.callbacks.EarlyStopping(monitor="val_bacc", mode="max", patience=config.patience)
    trainer = L.Trainer(
        max_epochs=config.epochs_for(len(train_rows)), accelerator=config.accelerator, devices=config.devices,
        strategy=config.strategy, precision=chosen_precision,
        deterministic="warn" if gpu else True,  # some CUDA kernels have no deterministic version
        callbacks=[checkpoint, stop, EpochProgress()], logger=L.pytorch.loggers.CSVLogger(str(logdir), name="logs"),
        enable_progress_bar=progress.verbose(), enable_model_summary=False,
        log_every_n_steps=1, num_sanity_val_steps=0,
    )
    vw = np.ones(len(val_rows)) if val_weights is None else np.asarray(val_weights, dtype=float)
    train_loader = loader(PixelData(pixels, train_rows, labels[train_rows], w), config, True, seed)
    val_loader = loader(PixelData(pixels, val_rows, labels[val_rows], vw), config, False, seed)
    try:
        trainer.fit(model, train_loader, val_loader)
    except SystemExit:  # Lightning turns Ctrl-C into SIGINT ignored + sys.exit(1): make it an interrupt again
        if trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    best = Classifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu", pretrained=False)
    score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
    fitted = Fitted(best, checkpoint.best_model_path, score, trainer.current_epoch, time.perf_counter() - t0)
    if trainer.is_global_zero:
        record = {"seed": seed, "deterministic": not gpu, "precision": chosen_precision,
                  "compute": compute_record(config),
                  "best_val_balanced_accuracy": score,
                  "epochs": fitted.epochs, "n_train": len(train_rows), "n_val": len(val_rows),
                  "seconds": fitted.seconds, "config": dataclasses.asdict(config),
                  "versions": {"torch": torch.__version__, "lightning": L.__version__}}
        atomic_write_text(Path(fitted.ckpt).with_suffix(".json"), json.dumps(record, indent=2, default=str))
    return fitted


def predict(model: Classifier, pixels: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(probability of malade, penultimate features) for every image."""
    feats = features.embed(model.backbone, pixels, batch_size)
    with torch.no_grad():
        logits = model.head.cpu().float().eval()(torch.from_numpy(feats)).squeeze(1)
    return torch.sigmoid(logits).numpy(), feats


def pick_patients(frame: pd.DataFrame, fraction: float, seed: int, strata: tuple[str, ...]) -> set[str]:
    """`fraction` of the patients of each stratum (each patient's most frequent value of `strata`)."""
    stratum = pd.Series("", index=pd.Index(sorted(frame[S.PATIENT].unique()), name=S.PATIENT))
    for col in (c for c in strata if c in frame.columns):
        counts = frame.assign(_v=frame[col].astype(str)).groupby([S.PATIENT, "_v"]).size().reset_index(name="n")
        top = counts.sort_values(["n", "_v"], ascending=[False, True]).drop_duplicates(S.PATIENT)
        stratum = stratum + "|" + top.set_index(S.PATIENT)["_v"].reindex(stratum.index)
    rng, kept = np.random.default_rng(seed), []
    for _, members in stratum.groupby(stratum, sort=True):
        ids = rng.permutation(members.index.to_numpy())
        kept.extend(ids[:max(1, int(np.floor(fraction * len(ids) + 0.5)))])
    return set(kept)


def subsample_patients(frame: pd.DataFrame, fraction: float, seed: int,
                       strata: tuple[str, ...] = (S.LABEL, S.SEX)) -> pd.DataFrame:
    """Keep `fraction` of the patients, whole, stratified on their majority label, group and split."""
    if fraction >= 1:
        return frame
    return frame[frame[S.PATIENT].isin(pick_patients(frame, fraction, seed, (*strata, S.SPLIT)))]


def _network_config(config: TrainingConfig, keep_mode: bool = False) -> TrainingConfig:
    """The config with the fields that do not change a result set to their defaults (a cache key)."""
    neutral = ["seeds", "subsample_fraction", "subsample_seed", "num_workers", "cpu_threads"]
    neutral += [] if keep_mode else ["mode", "feature_source"]
    default = TrainingConfig()
    return dataclasses.replace(config, **{f: getattr(default, f) for f in neutral if hasattr(default, f)})


def train_roles(key: pd.DataFrame, seed: int, head_fraction: float = 0.0, inner_val: bool = True) -> np.ndarray:
    """What each row is used for, by whole patients: "inner_val", "backbone", "fit" or "valid".

    INNER_VAL_FRACTION of the train patients (stratified on their label) are held out for early
    stopping and for choosing the operating threshold (none with `inner_val` False: the threshold then
    comes from out-of-fold scores, `threshold_from_folds`). With `head_fraction` > 0 (last-layer mode on
    a trained backbone, as DFR does), that share of the other train patients is kept for the heads
    ("fit") and the backbone trains on the rest ("backbone"); otherwise every other train patient
    is "fit" (the weighted network, or the head on frozen features, is fitted on them).
    """
    roles = np.where((key[S.SPLIT] == "train").to_numpy(), "fit", "valid").astype(object)
    train_rows = np.flatnonzero(roles == "fit")
    train = key.iloc[train_rows]
    held = np.zeros(len(train_rows), bool)
    if inner_val:
        held = train[S.PATIENT].isin(pick_patients(train, INNER_VAL_FRACTION, seed, (S.LABEL,))).to_numpy()
    roles[train_rows[held]] = "inner_val"
    if head_fraction > 0:
        rest_rows = train_rows[~held]
        rest = key.iloc[rest_rows]
        heads = rest[S.PATIENT].isin(pick_patients(rest, head_fraction, seed + 1, (S.LABEL,))).to_numpy()
        roles[rest_rows[~heads]] = "backbone"
    return roles.astype(str)


def threshold_from_folds(config: TrainingConfig) -> bool:
    """Frozen pre-trained features: nothing is early-stopped, so the heads are fitted on every training
    patient and the operating threshold is chosen on their out-of-fold scores (THRESHOLD_FOLDS patient
    folds, each scored by a head fitted without it) instead of on a held-out inner validation."""
    return config.mode == "last_layer" and config.feature_source == "pretrained"


def threshold_folds(train: pd.DataFrame, seed: int) -> np.ndarray:
    """Each train row's fold (0..k-1) for the out-of-fold threshold scores: whole patients, classes balanced
    across folds (scikit-learn's StratifiedGroupKFold), k = THRESHOLD_FOLDS or fewer on few patients."""
    from sklearn.model_selection import StratifiedGroupKFold

    patients = train[S.PATIENT].astype(str).to_numpy()
    k = max(2, min(THRESHOLD_FOLDS, len(np.unique(patients))))
    fold = np.full(len(train), -1)
    splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # « least populated class »: `protocol.check_sizes` names thin folds itself
        warnings.filterwarnings("ignore", ".*least populated class.*")
        for f, (_, held) in enumerate(splitter.split(patients, train[S.LABEL].to_numpy(int), patients)):
            fold[held] = f
    return fold


def protocol_roles(frame: pd.DataFrame, config: TrainingConfig, seed: int) -> np.ndarray:
    """Each row's role under `config` (`train_roles`): the one assignment training and weighting read."""
    dfr = config.mode == "last_layer" and config.feature_source != "pretrained"
    return train_roles(frame.reset_index(drop=True), seed, HEAD_FRACTION if dfr else 0.0,
                       inner_val=not threshold_from_folds(config))


def operating_threshold(labels: np.ndarray, proba: np.ndarray) -> float:
    """The threshold t maximising the balanced accuracy of 1[proba >= t] (Youden's J, scikit-learn's ROC).

    0.5 when `labels` hold one class only (nothing to choose from).
    """
    from sklearn.metrics import roc_curve

    labels, proba = np.asarray(labels, dtype=int), np.asarray(proba, dtype=float)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, proba)
    return float(min(thresholds[int(np.argmax(tpr - fpr))], 1.0))


def _auc(labels: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, proba)) if len(np.unique(labels)) == 2 else float("nan")


def _fit_full(key: pd.DataFrame, weights: np.ndarray, config: TrainingConfig, seed: int, code: str,
              paths: list[str], logdir: Path | None = None, head_fraction: float = 0.0) -> dict:
    """Train a network with these weights on the "fit" (or "backbone") rows; predict every row.

    Early stopping on the inner-validation patients (`train_roles`). With `head_fraction` > 0 the
    network trains only on the "backbone" rows, so that heads can later be fitted on patients it never
    saw. Cached on content (digests, labels, splits, patients), weights, config, seed, `code` (the
    version of the network's code) and `head_fraction`; `paths` and `logdir` only say where to read
    pixels and write logs. Features are kept for the unweighted network.
    """
    t0 = time.perf_counter()
    pixels = image_array(key.assign(**{S.PATH: paths}), config.image_size)
    labels = key[S.LABEL].to_numpy()
    roles = train_roles(key, seed, head_fraction)
    train_rows = np.flatnonzero((key[S.SPLIT] == "train").to_numpy())
    trained = roles[train_rows] == ("backbone" if head_fraction > 0 else "fit")
    held = roles[train_rows] == "inner_val"
    with contextlib.ExitStack() as stack:
        folder = logdir or stack.enter_context(tempfile.TemporaryDirectory(dir=cache_dir()))
        fitted = fit(pixels, labels, train_rows[trained], train_rows[held], weights[trained], config, seed,
                     Path(folder), val_weights=weights[held])
        proba, feats = predict(fitted.model, pixels)
    return {"proba": proba, "features": feats if np.ptp(weights) == 0 else None, "epochs": fitted.epochs,
            "inner_val_bacc": fitted.score, "seconds": time.perf_counter() - t0, "compute": compute_record(config),
            "state_dict": fitted.model.state_dict() if np.ptp(weights) == 0 else None}  # CAMs reload it


def _cached(fn: Any) -> Any:
    """`fn` through the joblib cache of the current cache folder (resolved at call time)."""
    return memory().cache(fn, ignore=[a for a in ("paths", "logdir") if a in fn.__code__.co_varnames])


def _predictions(key: pd.DataFrame, weights: np.ndarray, config: TrainingConfig, seed: int, code: str,
                 paths: list[str], logdir: Path | None = None) -> dict:
    """Probabilities for every row in `config.mode`, the role of every row, and what produced them.

    Last-layer mode on a trained backbone is Deep Feature Reweighting as published: the backbone
    trains on the "backbone" patients, each weighting's head is fitted on the "fit" patients (never
    seen by the backbone), the operating threshold is chosen on the "inner_val" patients (seen by
    neither). `backbone_auc` is the backbone's own AUC on the rows it trained on and on held-out rows.
    """
    net = _network_config(config)
    labels = key[S.LABEL].to_numpy()
    backbone_auc: dict[str, float] = {}
    roles = protocol_roles(key, config, seed)
    if config.mode == "full":
        base = _cached(_fit_full)(key, weights, net, seed, code, paths, logdir)
        proba = base["proba"]
    else:
        if config.feature_source != "pretrained":
            base = _cached(_fit_full)(key, np.ones_like(weights), net, seed, code, paths, logdir,
                                      head_fraction=HEAD_FRACTION)
            backbone_auc = {part: _auc(labels[roles == part], base["proba"][roles == part])
                            for part in ("backbone", "fit", "inner_val")}
        else:
            base = _cached(features.pretrained_features)(key, net, code, paths)
        is_train = (key[S.SPLIT] == "train").to_numpy()
        head_rows = roles[is_train] == "fit"
        proba = features.head_proba(base["features"], roles == "fit", labels, weights[head_rows], seed)
    if threshold_from_folds(config):
        fit = roles == "fit"
        folds = np.full(len(key), -1)
        folds[fit] = threshold_folds(key[fit], seed)
        tuning = features.out_of_fold_proba(base["features"], folds, labels, weights[head_rows], seed)
        n_folds = len(np.unique(folds[fit]))  # THRESHOLD_FOLDS, or fewer on few patients
    else:
        tuning, n_folds = np.where(roles == "inner_val", proba, np.nan), 0
    tuned = np.isfinite(tuning)
    return {"proba": proba, "roles": roles, "tuning": tuning, "threshold_folds": n_folds,
            "threshold": operating_threshold(labels[tuned], tuning[tuned]),
            "epochs": int(base["epochs"]), "inner_val_bacc": float(base["inner_val_bacc"]),
            "backbone_seconds": float(base["seconds"]), "backbone_auc": backbone_auc,
            "compute": base.get("compute", {})}  # absent from results cached before it was recorded


def _key_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns that determine a training result: content digests, not paths."""
    key = frame[[c for c in (S.IMAGE, "digest", S.SPLIT, S.LABEL, S.PATIENT) if c in frame.columns]]
    key = key.reset_index(drop=True)
    return key if "digest" in key.columns else key.assign(digest=digests(frame))


def predict_with_weights(frame: pd.DataFrame, weights: np.ndarray, config: TrainingConfig, seed: int,
                         logdir: Path | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Predictions for every row of the canonical frame (in frame order), from a model fitted with `weights`.

    `weights` are aligned with the frame's train rows in frame order. "full" mode trains a network
    with them; "last_layer" mode re-uses the cached unweighted network's (or a frozen pre-trained
    backbone's) features and fits only a weighted logistic head. Results are cached on content and
    parameters, so a repeated call returns at once. Returns (predictions, how they were produced).
    """
    key, paths = _key_frame(frame), frame[S.PATH].tolist()
    weights = np.asarray(weights, dtype=float)
    if len(weights) != int((key[S.SPLIT] == "train").sum()):
        raise ValueError(f"weights must have one value per train image ({len(weights)} given)")
    if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    weights = weights / weights.mean()  # the scale of the weights does not change the model
    t0 = time.perf_counter()
    cached = _cached(_predictions)
    code = code_version("model.backbones", "model.features", "data.images")  # a changed network or head retrains
    args = (key, weights, _network_config(config, keep_mode=True), seed, code, paths, logdir)
    hit = cached.check_call_in_cache(*args)
    result = cached(*args)
    preds = key[[S.IMAGE, S.SPLIT, S.LABEL]].assign(**{S.PROBA: result["proba"], ROLE: result["roles"],
                                                       S.TUNING: result["tuning"]})
    preds.attrs["threshold"] = result["threshold"]
    preds.attrs["compute"] = result.get("compute", {})
    roles = pd.Series(result["roles"])
    info = {"mode": config.mode, "backbone": config.backbone, "image_size": config.image_size, "seed": seed,
            "epochs": result["epochs"], "inner_val_bacc": result["inner_val_bacc"],
            "threshold": result["threshold"], "backbone_auc": result["backbone_auc"],
            "threshold_folds": result["threshold_folds"],
            "n_images": {r: int((roles == r).sum()) for r in ROLES},
            "n_patients": {r: int(key.loc[(roles == r).to_numpy(), S.PATIENT].nunique()) for r in ROLES},
            "backbone_training_seconds": result["backbone_seconds"], "cached": bool(hit),
            "seconds": time.perf_counter() - t0, "description": describe_mode(config),
            "compute": result.get("compute", {})}
    return preds, info


def describe_mode(config: TrainingConfig) -> str:
    """One English sentence on how the predictions were produced."""
    net = f"{config.backbone} network ({config.image_size} px"
    steps = f" and {config.max_steps} optimizer steps" if config.max_steps > 0 else ""
    stop = f"at most {config.max_epochs} epochs{steps}, early stopping on held-out train patients)"
    if config.mode == "full":
        how = "a weighted sampler" if config.sampler else "a weighted loss"
        return f"one {net}, {stop} trained per weighting with {how}"
    if config.feature_source == "pretrained":
        return (f"frozen pre-trained {config.backbone} features ({config.image_size} px), one weighted logistic "
                "head per weighting (last-layer mode, Kirichenko et al. 2022)")
    return (f"one {net}, {stop} trained once without weights on part of the train patients, then one "
            "weighted logistic head per weighting on its features of other, patient-disjoint train patients "
            "(last-layer mode: Deep Feature Reweighting, Kirichenko et al. 2022)")


def reference_network(frame: pd.DataFrame, config: TrainingConfig, seed: int) -> dict[str, Any]:
    """The unweighted (ERM) network the study trained on `frame`, from the cache (trained if missing).

    Returns {"features": penultimate features of every row (frame order), "model": the Classifier in
    eval mode; with `feature_source: pretrained`, the frozen pre-trained backbone with an untrained head
    (`deciding_network` folds the study's head into it)}.
    The same cache entry as `predict_with_weights` with uniform weights, so nothing is trained twice.
    """
    key, paths = _key_frame(frame), frame[S.PATH].tolist()
    net = _network_config(config)
    code = code_version("model.backbones", "model.features", "data.images")
    ones = np.ones(int((key[S.SPLIT] == "train").sum()))
    if config.mode == "last_layer" and config.feature_source == "pretrained":
        from pipeline.model.backbones import load_pretrained

        model = Classifier(net.backbone, net.learning_rate, net.image_size, pretrained=False)
        torch.manual_seed(0)  # as `features.pretrained_features`: layers without weights initialised alike
        model.backbone = load_pretrained(net.backbone)[0].to(memory_format=torch.channels_last)
        return {"features": _cached(features.pretrained_features)(key, net, code, paths)["features"],
                "model": model.eval()}
    # the DFR backbone in last-layer mode (trained on the "backbone" patients), the uniform network in full mode
    head_fraction = HEAD_FRACTION if config.mode == "last_layer" else 0.0
    base = _cached(_fit_full)(key, ones, net, seed, code, paths, None, head_fraction=head_fraction)
    model = Classifier(net.backbone, net.learning_rate, net.image_size, weighted_loss=not net.sampler,
                       pretrained=False)
    model.load_state_dict(base["state_dict"])
    return {"features": base["features"], "model": model.eval()}


def deciding_network(frame: pd.DataFrame, config: TrainingConfig, seed: int) -> Classifier | None:
    """The network whose output is the reference (uniform) model's decision score, for attribution maps.

    In full mode it is the uniform network itself. In last-layer mode on a trained backbone, the
    decisions come from a logistic head fitted on the backbone's features, not from the network's own
    end-to-end head (another model: on the demo they agree on 78 % of images): the head's scaler and
    coefficients are folded into one linear layer on the backbone, so that the maps explain the scores
    the study decides with; with a frozen pre-trained backbone, the same fold onto that backbone.
    """
    reference = reference_network(frame, config, seed)
    model = reference["model"]
    if config.mode == "full":
        return model
    roles = protocol_roles(frame, config, seed)
    fit = roles == "fit"
    head = features.fit_head(np.asarray(reference["features"])[fit], frame[S.LABEL].to_numpy()[fit],
                             np.ones(int(fit.sum())), seed)  # the uniform head, as `_predictions` fits it
    scaler, logistic = head[0], head[-1]
    coef = logistic.coef_[0] / scaler.scale_
    linear = torch.nn.Linear(len(coef), 1)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(coef, dtype=torch.float32)[None, :])
        linear.bias.fill_(float(logistic.intercept_[0] - (coef * scaler.mean_).sum()))
    model.head = torch.nn.Sequential(linear)
    return model.eval()
