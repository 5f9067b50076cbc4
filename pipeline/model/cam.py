"""Where the network looks: Grad-CAM (Selvaraju et al. 2017) and Integrated Gradients (Sundararajan et
al. 2017) maps of the study's network, both computed with Captum.

Grad-CAM keeps only what pushes the `malade` logit UP, at the resolution of a deep layer (8 x 8 for
the small CNN at 64 px): a small marker that pushes the logit down, or one smaller than a cell,
vanishes from it. Integrated Gradients gives the absolute contribution of every PIXEL, for or
against, from a blurred copy of the image: the map to check whether a marker or a border is used at
all. `MAPS` names both. The study computes them through the network that makes its decisions
(`training.deciding_network`: in last-layer mode, the backbone with the fitted logistic head folded in).

`gradcam(model, pixels)` gives, for each uint8 image (N, H, W), a map in [0, 1] of the same size:
where the last convolutional layer with at least `MIN_MAP_SIZE` cells per side pushes the
`malade` logit up. Captum's `LayerGradCam` computes it; `LayerAttribution.interpolate` brings it
to the image's size. `region_share(maps, box)` is the share of a map's mass inside a box (fractions
of the image): the test of the demo's planted « AP » marker compares it with the box's area.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MIN_MAP_SIZE = 8  # a 4x4 map cannot tell a corner marker from the lung beside it


class _FromUnit(nn.Module):
    """The classifier on float pixels in [0, 1] (N, 1, H, W), returning the malade logit (N,)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.backbone(x)).squeeze(1)


def _conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]


def target_layer(model: nn.Module, image_size: int) -> nn.Module:
    """The deepest convolution whose output is at least MIN_MAP_SIZE cells per side at this image size."""
    sizes: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: sizes.__setitem__(mod, out.shape[-1]))
             for m in _conv_layers(model)]
    with torch.no_grad():
        model.backbone.eval()(torch.zeros(1, 1, image_size, image_size))
    for h in hooks:
        h.remove()
    layers = [m for m in _conv_layers(model) if sizes.get(m, 0) >= min(MIN_MAP_SIZE, image_size)]
    if not layers:
        raise ValueError(f"no convolution of the backbone keeps {MIN_MAP_SIZE} cells at {image_size} px")
    return layers[-1]


def gradcam(model: nn.Module, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of the malade logit, each map scaled by its own maximum."""
    from captum.attr import LayerAttribution, LayerGradCam

    model = model.cpu().float().eval()
    size = int(pixels.shape[-1])
    cam = LayerGradCam(_FromUnit(model), target_layer(model, size))
    out = []
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.asarray(pixels[start:start + batch_size], np.float32) / 255.0).unsqueeze(1)
        x.requires_grad_(True)
        maps = cam.attribute(x, relu_attributions=True)
        maps = LayerAttribution.interpolate(maps, (size, size), interpolate_mode="bilinear")
        out.append(maps.detach().squeeze(1).numpy())
    maps = np.concatenate(out) if out else np.zeros((0, size, size), np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1)[:, None, None]


BLUR_SIGMA = 0.1  # of the image's side: the baseline keeps the overall brightness, not the structures


def blurred(x: torch.Tensor, sigma_share: float = BLUR_SIGMA) -> torch.Tensor:
    """A strongly blurred copy of images (N, 1, H, W): Integrated Gradients' baseline."""
    from torchvision.transforms.functional import gaussian_blur

    sigma = max(1.0, sigma_share * x.shape[-1])
    kernel = min(2 * int(3 * sigma) + 1, 2 * (x.shape[-1] // 2) - 1)  # odd, within the image
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def integrated_gradients(model: nn.Module, pixels: np.ndarray, batch_size: int = 32, steps: int = 16) -> np.ndarray:
    """|Integrated Gradients| of the malade logit per pixel (N, H, W) from a blurred copy of each image,
    each map scaled by its own maximum.

    The baseline is the image blurred (Gaussian, sigma a tenth of its side; Sturmfels et al. 2020): with
    a black baseline, a pixel's attribution is proportional to its intensity, so dark regions (the lungs
    on a radiograph, the background) get none by construction. The blurred image keeps each region's
    brightness and removes its structures: the attribution reads what the structures contribute.
    """
    from captum.attr import IntegratedGradients

    model = model.cpu().float().eval()
    ig = IntegratedGradients(_FromUnit(model))
    out = []
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.asarray(pixels[start:start + batch_size], np.float32) / 255.0).unsqueeze(1)
        maps = ig.attribute(x, baselines=blurred(x), n_steps=steps)
        out.append(maps.abs().detach().squeeze(1).numpy())
    size = int(pixels.shape[-1])
    maps = np.concatenate(out) if out else np.zeros((0, size, size), np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0)
    return maps / np.where(peak > 0, peak, 1)[:, None, None]


MAPS = {"gradcam": gradcam, "integrated_gradients": integrated_gradients}


def region_share(maps: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Share of each map's mass inside `box` = (top, left, bottom, right) as fractions of the image."""
    _, h, w = maps.shape
    top, left, bottom, right = box
    inside = maps[:, int(top * h):int(np.ceil(bottom * h)), int(left * w):int(np.ceil(right * w))].sum(axis=(1, 2))
    total = maps.sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def box_area(box: tuple[float, float, float, float], size: int) -> float:
    """Share of a size x size image that `box` covers (pixels, as `region_share` counts them)."""
    top, left, bottom, right = box
    rows = int(np.ceil(bottom * size)) - int(top * size)
    cols = int(np.ceil(right * size)) - int(left * size)
    return rows * cols / size**2
