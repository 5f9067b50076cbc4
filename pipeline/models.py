"""Backbone registry: adding a backbone is one function returning (feature extractor, feature size).

Every backbone takes a 1-channel image batch (N, 1, H, W) scaled to [0, 1] and returns features
(N, D); the classification head (one linear unit) is added by the training module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

Backbone = tuple[nn.Module, int]
BACKBONES: dict[str, Callable[[], Backbone]] = {}


def register(name: str) -> Callable:
    def wrap(fn: Callable[[], Backbone]) -> Callable[[], Backbone]:
        BACKBONES[name] = fn
        return fn

    return wrap


def build_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; choose one of {sorted(BACKBONES)} (study.yml > "
                         "training > backbone)")
    return BACKBONES[name]()


class _GreyToRGB(nn.Module):
    """Adapt a 1-channel [0, 1] batch to an ImageNet model: 3 channels, ImageNet normalisation."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x.expand(-1, 3, -1, -1) - self.mean) / self.std)


def _torchvision(name: str, weights_name: str) -> nn.Module:
    """A torchvision model with ImageNet weights, or randomly initialised (with a warning) offline."""
    import torchvision

    builder = getattr(torchvision.models, name)
    try:
        return builder(weights=weights_name)
    except Exception as err:  # no network, proxy, corrupt download: all end the same way
        warnings.warn(f"{name}: ImageNet weights could not be loaded ({type(err).__name__}: {err}); "
                      "using a RANDOM initialisation. Results will be much weaker than with "
                      "pre-trained weights.", stacklevel=3)
        return builder(weights=None)


@register("small_cnn")
def small_cnn() -> Backbone:
    """Four conv blocks; trains in minutes on a CPU at 64-128 px."""
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True), nn.MaxPool2d(2))

    body = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 128),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return body, 128


@register("resnet18")
def resnet18() -> Backbone:
    model = _torchvision("resnet18", "IMAGENET1K_V1")
    dim = model.fc.in_features
    model.fc = nn.Identity()
    return _GreyToRGB(model), dim


@register("densenet121")
def densenet121() -> Backbone:
    model = _torchvision("densenet121", "IMAGENET1K_V1")
    dim = model.classifier.in_features
    model.classifier = nn.Identity()
    return _GreyToRGB(model), dim


@register("xrv_densenet121_chex")
def xrv_densenet121_chex() -> Backbone:
    """torchxrayvision DenseNet-121 trained on CheXpert (never saw NIH images), when installed."""
    try:
        import torchxrayvision as xrv
    except ImportError as err:
        raise ValueError("backbone 'xrv_densenet121_chex' needs `pip install torchxrayvision`") from err

    class _XRV(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = xrv.models.DenseNet(weights="densenet121-res224-chex")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.features2(x * 2048 - 1024)  # xrv expects [-1024, 1024]

    return _XRV(), 1024
