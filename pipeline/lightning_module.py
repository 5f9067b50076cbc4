"""The Lightning module and the one training loop shared by the course contract and the study."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from .config import TrainingConfig
from .models import build_backbone

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no "GPU available: False" banners
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


class Classifier(L.LightningModule):
    """Backbone + one linear unit; weighted binary cross-entropy; checkpoint on val balanced accuracy."""

    def __init__(self, backbone: str = "small_cnn", learning_rate: float = 1e-3, image_size: int = 128,
                 weighted_loss: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.backbone, dim = build_backbone(backbone)
        self.head = nn.Linear(dim, 1)
        self._val_scores: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.float() / 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def training_step(self, batch: tuple[torch.Tensor, ...], _: int) -> torch.Tensor:
        x, y, w = batch
        x = _random_shift(x)
        loss = F.binary_cross_entropy_with_logits(self(x), y, reduction="none")
        if self.hparams.weighted_loss:
            loss = (loss * w).sum() / w.sum().clamp_min(1e-12)
        else:
            loss = loss.mean()
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], _: int) -> None:
        x, y, _w = batch
        self._val_scores.append(torch.sigmoid(self(x)).detach().float().cpu())
        self._val_labels.append(y.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        scores, labels = torch.cat(self._val_scores).numpy(), torch.cat(self._val_labels).numpy()
        self._val_scores.clear()
        self._val_labels.clear()
        bacc = balanced_accuracy_score(labels, scores >= 0.5) if len(set(labels)) == 2 else 0.0
        self.log("val_bacc", float(bacc), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=1e-4)


def _random_shift(x: torch.Tensor, max_frac: float = 0.05) -> torch.Tensor:
    """Light augmentation: a random translation of a few pixels (no flip: anatomy is not symmetric)."""
    shift = max(1, int(x.shape[-1] * max_frac))
    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,)))
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def loader(pixels: np.ndarray, labels: np.ndarray, weights: np.ndarray, config: TrainingConfig,
           shuffle: bool, seed: int) -> DataLoader:
    """Batches from in-memory uint8 pixels (already decoded: no worker processes needed)."""
    x = torch.from_numpy(np.array(pixels)).unsqueeze(1)  # a writable in-memory copy of the memmap
    data = TensorDataset(x, torch.as_tensor(labels, dtype=torch.float32),
                         torch.as_tensor(weights, dtype=torch.float32))
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if shuffle and config.sampler:
        sampler = WeightedRandomSampler(weights.tolist(), len(weights), replacement=True, generator=generator)
    workers = config.num_workers if config.num_workers >= 0 else 0
    return DataLoader(data, batch_size=config.batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, generator=generator, num_workers=workers)


def fit(train: tuple[np.ndarray, np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
        config: TrainingConfig, seed: int, logdir: Path) -> tuple[Classifier, str, float, int]:
    """Train with early stopping; return (best model, checkpoint path, best val bal. acc., epochs)."""
    L.seed_everything(seed, workers=True, verbose=False)
    gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    model = Classifier(config.backbone, config.learning_rate, config.image_size,
                       weighted_loss=not config.sampler)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=Path(logdir) / "checkpoints", filename="best",
                                                     monitor="val_bacc", mode="max", save_top_k=1,
                                                     enable_version_counter=False)
    stop = L.pytorch.callbacks.EarlyStopping(monitor="val_bacc", mode="max", patience=config.patience)
    trainer = L.Trainer(
        max_epochs=config.max_epochs, min_epochs=min(config.max_epochs, config.patience + 1),
        accelerator=config.accelerator, devices=config.devices,
        strategy=config.strategy, precision="16-mixed" if gpu else "32-true", deterministic=not gpu,
        callbacks=[checkpoint, stop], logger=L.pytorch.loggers.CSVLogger(str(logdir), name="logs"),
        enable_progress_bar=os.environ.get("FAIRCXR_PROGRESS", "1") == "1", enable_model_summary=False,
        log_every_n_steps=1,
    )
    train_loader = loader(*train, config, shuffle=True, seed=seed)
    val_loader = loader(val[0], val[1], np.ones(len(val[1])), config, shuffle=False, seed=seed)
    trainer.fit(model, train_loader, val_loader)
    best = Classifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
    return best, checkpoint.best_model_path, score, trainer.current_epoch


@torch.no_grad()
def predict(model: Classifier, pixels: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(probability of malade, penultimate features) for every image."""
    model.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    probs, feats = [], []
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.array(pixels[start:start + batch_size])).unsqueeze(1).to(device)
        f = model.features(x)
        probs.append(torch.sigmoid(model.head(f).squeeze(1)).float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(feats)


def describe(config: TrainingConfig) -> dict:
    return asdict(config)
