"""Backbone registry and the Lightning module (backbone + one linear unit).

Adding a backbone is one function `fn(pretrained: bool) -> (module, feature_size)` decorated with
`@register("name")`. Every backbone takes a 1-channel batch (N, 1, H, W) scaled to [0, 1] and
returns features (N, D). Pre-trained weights that cannot be downloaded (no network) fall back to a
random initialisation with a warning, so the pipeline still runs offline.
"""

from __future__ import annotations

import contextvars
import importlib.util
import math
import warnings
from collections.abc import Callable

import lightning as L
import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.nn import functional as F

Backbone = tuple[nn.Module, int]


BackboneFactory = Callable[[bool], Backbone]


BACKBONES: dict[str, BackboneFactory] = {}


REQUIRES: dict[str, str] = {}  # backbone -> optional package it needs


def register(name: str, requires: str | None = None) -> Callable[[BackboneFactory], BackboneFactory]:
    def wrap(fn: BackboneFactory) -> BackboneFactory:
        BACKBONES[name] = fn
        if requires:
            REQUIRES[name] = requires
        return fn

    return wrap


def available_backbones() -> list[str]:
    """Registered backbones whose optional dependencies are installed."""
    return [n for n in BACKBONES if n not in REQUIRES or importlib.util.find_spec(REQUIRES[n]) is not None]


def build_backbone(name: str, pretrained: bool = True) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; choose one of {sorted(BACKBONES)} "
                         "(study.yml > training > backbone)")
    if name not in available_backbones():
        raise ValueError(f"backbone '{name}' needs `pip install {REQUIRES[name]}`")
    return BACKBONES[name](pretrained)


class WeightsUnavailable(RuntimeError):
    """Pre-trained weights that could not be loaded (no network, missing package, damaged file)."""


_STRICT = contextvars.ContextVar("strict_weights", default=False)  # set by `load_pretrained`


def load_pretrained(name: str) -> Backbone:
    """The backbone with its pre-trained weights (downloaded if needed), or WeightsUnavailable: frozen
    features of a randomly initialised network would be noise, so `training.backbone: auto` never uses one."""
    token = _STRICT.set(True)
    try:
        return build_backbone(name, pretrained=True)
    finally:
        _STRICT.reset(token)


def _or_random(name: str, load: Callable[[], nn.Module], fallback: Callable[[], nn.Module]) -> nn.Module:
    """`load()` (pre-trained weights), or `fallback()` (random init) with a warning when it fails; under
    `load_pretrained`, WeightsUnavailable instead."""
    try:
        return load()
    except Exception as err:  # no network, proxy, corrupt download: all end the same way
        if _STRICT.get():
            raise WeightsUnavailable(f"{name}: {type(err).__name__}: {err}") from err
        warnings.warn(f"{name}: pre-trained weights could not be loaded ({type(err).__name__}: {err}); "
                      "using a RANDOM initialisation instead. Results will be much weaker than with "
                      "pre-trained weights: run once with internet access to download them.", stacklevel=3)
        return fallback()


class GreyToRGB(nn.Module):
    """Adapt a 1-channel [0, 1] batch to an ImageNet model: 3 channels, ImageNet normalisation."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x.expand(-1, 3, -1, -1) - self.mean) / self.std)


def _torchvision(name: str, weights: str, pretrained: bool) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, name)
    if not pretrained:
        return builder(weights=None)
    return _or_random(name, lambda: builder(weights=weights), lambda: builder(weights=None))


@register("small_cnn")
def small_cnn(pretrained: bool = False) -> Backbone:
    """A stride-2 stem and three conv blocks (no pre-trained weights); trains in minutes on a CPU.

    The stem divides the resolution by 4 before the first 3x3 block, as ResNets do: five times
    fewer operations than four full-resolution blocks for the same balanced accuracy.
    """
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True))  # ceil: 16 px images work

    stem = nn.Sequential(nn.Conv2d(1, 16, 5, stride=2, padding=2, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))
    body = nn.Sequential(stem, block(16, 32), block(32, 64), block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return body, 128


@register("resnet18")
def resnet18(pretrained: bool = True) -> Backbone:
    model = _torchvision("resnet18", "IMAGENET1K_V1", pretrained)
    dim = model.fc.in_features
    model.fc = nn.Identity()
    return GreyToRGB(model), dim


@register("densenet121")
def densenet121(pretrained: bool = True) -> Backbone:
    model = _torchvision("densenet121", "IMAGENET1K_V1", pretrained)
    dim = model.classifier.in_features
    model.classifier = nn.Identity()
    return GreyToRGB(model), dim


class _XRVFeatures(nn.Module):
    """torchxrayvision DenseNet penultimate features; it expects pixels in [-1024, 1024]."""

    def __init__(self, weights: str | None):
        super().__init__()
        import torchxrayvision as xrv

        self.model = xrv.models.DenseNet(weights=weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features2(x * 2048 - 1024)


def _xrv(weights: str, pretrained: bool) -> Backbone:
    if not pretrained:
        return _XRVFeatures(None), 1024
    return _or_random(f"torchxrayvision {weights}", lambda: _XRVFeatures(weights), lambda: _XRVFeatures(None)), 1024


@register("xrv_densenet121_chex", requires="torchxrayvision")
def xrv_densenet121_chex(pretrained: bool = True) -> Backbone:
    return _xrv("densenet121-res224-chex", pretrained)


@register("xrv_densenet121_mimic", requires="torchxrayvision")
def xrv_densenet121_mimic(pretrained: bool = True) -> Backbone:
    return _xrv("densenet121-res224-mimic_nb", pretrained)


def augment(x: torch.Tensor, shift: float = 0.05, degrees: float = 5.0, zoom: float = 0.05) -> torch.Tensor:
    """Small random affine per image (shift, rotation, zoom). No flip: the heart is on the left."""
    n = x.shape[0]
    u = torch.rand(n, 4, device=x.device) * 2 - 1
    angle, scale = u[:, 0] * math.radians(degrees), 1 + u[:, 1] * zoom
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * 2 * shift], 1),
                         torch.stack([sin, cos, u[:, 3] * 2 * shift], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


class Classifier(L.LightningModule):
    """Backbone + one linear unit; weighted binary cross-entropy; validation balanced accuracy.

    Batches are (uint8 pixels (N, 1, H, W), labels, weights). Train weights are normalised to mean 1
    beforehand, so `mean(w * loss)` estimates the weighted risk without depending on a batch's mix.
    """

    def __init__(self, backbone: str = "small_cnn", learning_rate: float = 1e-3, image_size: int = 128,
                 weighted_loss: bool = True, pretrained: bool = True, augment: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.backbone, dim = build_backbone(backbone, pretrained)
        self.backbone = self.backbone.to(memory_format=torch.channels_last)  # faster convolutions, CPU and GPU
        self.head = nn.Sequential(nn.BatchNorm1d(dim), nn.Linear(dim, 1))  # standardised features, as in last-layer
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def start_at_prior(self, labels: np.ndarray, weights: np.ndarray) -> None:
        """Output bias = the weighted log-odds of the training labels: the model starts at the prior the
        weights ask for (learning it through the bias alone takes hundreds of steps)."""
        prior = float(np.clip(np.average(labels, weights=weights), 1e-3, 1 - 1e-3))
        self.head[-1].bias.fill_(math.log(prior / (1 - prior)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x.float() / 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)

    def training_step(self, batch: tuple[torch.Tensor, ...], _: int) -> torch.Tensor:
        x, y, w = batch
        x = x.float() / 255.0
        if self.hparams.augment:
            x = augment(x)
        loss = F.binary_cross_entropy_with_logits(self.head(self.backbone(x)).squeeze(1), y, reduction="none")
        loss = (loss * w).mean() if self.hparams.weighted_loss else loss.mean()
        self.log("train_loss", loss, prog_bar=True, on_epoch=True, on_step=False, batch_size=len(y), sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        if self.trainer.state.fn == "fit":  # validation inside fit: statistics of the current weights
            self.precise_batchnorm()

    @torch.no_grad()
    def precise_batchnorm(self, max_images: int = 1024, batch_size: int = 128) -> None:
        """Recompute BatchNorm statistics with the current weights on (up to) `max_images` train images.

        The running averages lag behind fast-changing weights in short trainings, which shifts every
        logit at evaluation time (good AUC, poor accuracy at 0.5); "precise BN" (Wu & Johnson 2021).
        """
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        data = getattr(self.trainer.train_dataloader, "dataset", None)
        if not norms or data is None or not hasattr(data, "__getitems__") or len(data) < 2:
            return
        rows = np.unique(np.linspace(0, len(data) - 1, min(len(data), max_images)).astype(int))
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        was_training = self.training
        self.train()
        for chunk in np.array_split(rows, -(-len(rows) // batch_size)):  # near-equal chunks: none of one image
            x = data.__getitems__(chunk.tolist())[0].to(self.device)
            self.head(self.backbone(x.float() / 255.0))
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        self.train(was_training)

    def validation_step(self, batch: tuple[torch.Tensor, ...], _: int) -> None:
        x, y, w = batch
        self._val.append((torch.sigmoid(self(x).float()), y, w))

    def on_validation_epoch_end(self) -> None:
        scores, labels, weights = (torch.cat(t) for t in zip(*self._val, strict=True))
        self._val.clear()
        if self.trainer.world_size > 1:  # DDP: every rank scores the whole validation set
            scores, labels, weights = (self.all_gather(t).flatten() for t in (scores, labels, weights))
        y, s, w = labels.cpu().numpy(), scores.cpu().numpy(), weights.cpu().numpy()
        if min(w[y == 0].sum(), w[y == 1].sum()) <= 0:  # a class weighted out entirely: plain accuracy
            w = np.ones_like(w)
        bacc = balanced_accuracy_score(y, s >= 0.5, sample_weight=w) if len(set(y)) == 2 else 0.0
        self.log("val_bacc", float(bacc), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=1e-4)
