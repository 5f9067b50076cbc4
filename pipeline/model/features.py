"""Last-layer mode: features once, then one classification head per weighting scheme.

Deep Feature Reweighting (Kirichenko et al. 2022): train the backbone once without weights (ERM)
on part of the training patients, or take a pre-trained backbone as it is, extract its penultimate
features for every image once (cached), then re-fit only the last layer with each weighting's sample
weights on OTHER training patients, that the backbone never saw (`training.train_roles`): a head
refitted on the backbone's own training images would see features that already separate them.
Comparing six weightings then costs one training and six logistic regressions.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config import TrainingConfig
from pipeline.data.images import image_array

HEAD_C = 1.0


def fit_head(features: np.ndarray, labels: np.ndarray, weights: np.ndarray, seed: int) -> Pipeline:
    """A weighted logistic head fitted on the train rows' features."""
    w = np.asarray(weights, dtype=float)
    head = make_pipeline(StandardScaler(), LogisticRegression(C=HEAD_C, max_iter=5000, random_state=seed))
    head.fit(features, labels, logisticregression__sample_weight=w / w.mean())
    return head


def head_proba(features: np.ndarray, head_rows: np.ndarray, labels: np.ndarray, weights: np.ndarray,
               seed: int) -> np.ndarray:
    """Probability of malade for every row, from a head fitted on the `head_rows` (mask) with `weights`.

    `weights` has one value per head row. With a trained backbone these rows are patients the
    backbone never saw (Deep Feature Reweighting retrains the last layer on held-out data).
    """
    head = fit_head(features[head_rows], labels[head_rows], weights, seed)
    return head.predict_proba(features)[:, 1]


def out_of_fold_proba(features: np.ndarray, folds: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                      seed: int) -> np.ndarray:
    """Each fitted row's probability from a head fitted, with `weights`, on the other folds (NaN elsewhere).

    `folds` gives each row's fold (-1: not a fitted row); `weights` has one value per fitted row, in order.
    These scores were never fitted on their row, so a threshold chosen on them sees how the head
    generalises, not how well it memorised (scikit-learn's `cross_val_predict` takes no sample weights
    per fit in the versions we support, hence the loop).
    """
    fitted = folds >= 0
    w = np.zeros(len(folds))
    w[fitted] = weights
    out = np.full(len(folds), np.nan)
    for f in np.unique(folds[fitted]):
        train = fitted & (folds != f)
        head = fit_head(features[train], labels[train], w[train], seed)
        out[folds == f] = head.predict_proba(features[folds == f])[:, 1]
    return out


EMBED_BATCH = 128  # images a forward pass: the features (and any check against them) use these batches


@torch.no_grad()
def embed(backbone: torch.nn.Module, pixels: np.ndarray, batch_size: int = EMBED_BATCH) -> np.ndarray:
    """Penultimate features of uint8 pixels (N, H, W) through a backbone, in inference mode."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backbone = backbone.eval().to(device)
    out = []
    for start in range(0, len(pixels), batch_size):
        x = torch.from_numpy(np.array(pixels[start:start + batch_size])).unsqueeze(1).to(device)
        with torch.autocast(device, enabled=device == "cuda"):
            out.append(backbone(x.float() / 255.0).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def pretrained_features(key: pd.DataFrame, config: TrainingConfig, code: str, paths: list[str]) -> dict:
    """Features of a frozen pre-trained backbone for every row (no training at all).

    Cached on the content in `key`, the config and `code` (the network code's version); `paths`
    only say where to read the pixels.
    """
    from pipeline.model.backbones import WeightsUnavailable, load_pretrained

    t0 = time.perf_counter()
    torch.manual_seed(0)  # layers without pre-trained weights get a reproducible initialisation
    try:
        backbone, _ = load_pretrained(config.backbone)
    except WeightsUnavailable as err:  # frozen random features would be noise: stop and say how to fix it
        raise WeightsUnavailable(f"{err}. Frozen pre-trained features need these weights: run once with internet "
                                 "access to download them; if a weights file is damaged, delete it from its cache "
                                 "folder (torch: ~/.cache/torch/hub/checkpoints, torchxrayvision: "
                                 "~/.torchxrayvision/models_data) to download it again; or set "
                                 "`training.backbone: small_cnn` in study.yml to train a network here") from err
    pixels = image_array(key.assign(path=paths), config.image_size)  # after the weights: a failure comes first
    return {"features": embed(backbone, pixels), "epochs": 0, "inner_val_bacc": float("nan"),
            "seconds": time.perf_counter() - t0,
            "compute": compute_record(torch.cuda.is_available(), "autocast float16" if torch.cuda.is_available()
                                      else "32-true")}


def compute_record(gpu: bool, precision: str) -> dict[str, str]:
    """The kernels a result was computed on: same versions and same kernels give the same bits, other kernels
    another run. torch picks its CPU vector kernels (AVX-512, AVX2, default) from the processor, capped by
    $ATEN_CPU_CAPABILITY; on a GPU the card and the precision decide."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": torch.cuda.get_device_name() if gpu else "cpu", "precision": precision,
            "torch": str(torch.__version__)}
