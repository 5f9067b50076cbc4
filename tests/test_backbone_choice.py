"""`training.backbone: auto`: pre-trained weights loaded where they are, the small CNN (said) where they are not.

No test downloads anything: the weights files are written by the tests, and downloads are made to fail."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from pipeline import study
from pipeline.config import TrainingConfig, load_config
from pipeline.data.demo import make_demo
from pipeline.model import backbones, choice
from pipeline.model.backbones import WeightsUnavailable, load_pretrained
from pipeline.report import preprocessing

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"
MARK = 0.123


@pytest.fixture()
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No weights anywhere and no network: every download fails as it does offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XRV_CACHE_DIR", str(tmp_path / "xrv"))
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")
    monkeypatch.setenv("FAIRCXR_OUTPUT", str(tmp_path / "output"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path


def _resnet18_weights(torch_home: Path) -> Path:
    """A resnet18 state dict where torchvision looks for its ImageNet weights, first conv set to MARK."""
    torch.manual_seed(0)  # the same network every run: what a test asserts of it does not depend on a draw
    model = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        model.conv1.weight.fill_(MARK)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    path = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def test_weights_on_disk_are_loaded_not_replaced_by_a_random_network(empty_caches: Path):
    _resnet18_weights(empty_caches / "torch")
    picked = choice.choose(TrainingConfig(backbone="auto"), download=False)
    assert (picked.backbone, picked.feature_source) == ("resnet18", "pretrained")
    assert [name for name, _ in picked.tried][:3] == ["xrv_densenet121_chex", "xrv_densenet121_mimic", "densenet121"]
    net, dim = load_pretrained("resnet18")
    assert dim == 512 and torch.allclose(net.body.conv1.weight, torch.full_like(net.body.conv1.weight, MARK))
    assert "ImageNet" in picked.sentence_fr() and "figées" in picked.sentence_fr()


def test_a_preferred_source_wins_when_its_weights_are_there(empty_caches: Path):
    _resnet18_weights(empty_caches / "torch")
    url = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url
    (empty_caches / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]).write_bytes(b"")
    assert choice.choose(TrainingConfig(backbone="auto"), download=False).backbone == "densenet121"


def test_without_weights_auto_falls_back_to_the_small_cnn_and_says_why(empty_caches: Path):
    picked = choice.choose(TrainingConfig(backbone="auto"), download=True)
    assert (picked.backbone, picked.feature_source, picked.fell_back) == ("small_cnn", "erm", True)
    reasons = dict(picked.tried)
    assert "network unreachable" in reasons["densenet121"] and "network unreachable" in reasons["resnet18"]
    assert "small CNN" in picked.line() and "depuis zéro" in picked.sentence_fr()
    # a download that failed is not tried again within the hour: the next study start costs nothing
    assert choice.choose(TrainingConfig(backbone="auto"), download=True).tried == picked.tried
    assert choice.choose(TrainingConfig(backbone="auto", mode="full")).backbone == "small_cnn"
    assert choice.choose(TrainingConfig(backbone="resnet18")).backbone == "resnet18"  # a named backbone is kept


def test_frozen_features_without_weights_stop_with_the_fix_instead_of_random_features(empty_caches: Path):
    with pytest.raises(WeightsUnavailable, match="network unreachable"):
        load_pretrained("resnet18")
    with pytest.warns(UserWarning, match="RANDOM"):  # outside `auto`, the old fallback still warns
        backbones.build_backbone("resnet18", pretrained=True)


def test_a_study_on_auto_uses_the_weights_found_and_the_report_says_which(empty_caches: Path):
    _resnet18_weights(empty_caches / "torch")
    data = make_demo(empty_caches / "data", n_patients=60, seed=1, image_size=64)
    config = load_config(TINY, data_dir=str(data))
    config = dataclasses.replace(config, training=dataclasses.replace(config.training, backbone="auto"))
    ctx = study.run(config)
    assert (ctx.config.training.backbone, ctx.config.training.feature_source) == ("resnet18", "pretrained")
    assert ctx.train_info["uniform"]["epochs"] == 0  # frozen: nothing trained
    assert np.isfinite(ctx.valid_predictions["uniform"]["proba"]).all()
    text = preprocessing.training_protocol(ctx)
    assert text.startswith("Le réseau est choisi automatiquement") and "resnet18" in text
    # nothing is trained or stopped early: the heads fit every training patient, the threshold out of fold
    from pipeline.data import schema as S
    from pipeline.model.training import THRESHOLD_FOLDS, operating_threshold

    preds = ctx.seed_predictions[("uniform", ctx.config.training.seeds[0])]
    train = preds[preds[S.SPLIT] == "train"]
    assert set(train["role"]) == {"fit"} and train[S.TUNING].notna().all()
    assert preds.loc[preds[S.SPLIT] != "train", S.TUNING].isna().all()
    assert not np.allclose(train[S.TUNING], train[S.PROBA])  # scores of heads that did not fit the row
    assert preds.attrs["threshold"] == operating_threshold(train[S.LABEL], train[S.TUNING])
    assert ctx.train_info["uniform"]["threshold_folds"] == THRESHOLD_FOLDS
    assert "hors-pli" in text and "validation interne" not in text
    assert study.study_key(config) == ctx.key  # `auto` is keyed as the backbone it resolves to
    # the attribution maps explain the frozen backbone with the study's own head folded in
    from pipeline.data.images import image_array
    from pipeline.model.training import deciding_network

    training = ctx.config.training
    model = deciding_network(ctx.frame, training, training.seeds[0])
    from pipeline.model.features import EMBED_BATCH

    pixels = np.array(image_array(ctx.frame, training.image_size))
    with torch.no_grad():  # in the batches the features were computed in: a conv's rounding depends on the batch
        deciding = np.concatenate([torch.sigmoid(model(torch.from_numpy(pixels[i:i + EMBED_BATCH]).unsqueeze(1)))
                                   .squeeze(-1).numpy() for i in range(0, len(pixels), EMBED_BATCH)])
    np.testing.assert_allclose(deciding, ctx.predictions["uniform"]["proba"].to_numpy(), atol=1e-4)


def test_a_damaged_weights_file_stops_the_features_with_the_file_to_delete(empty_caches: Path):
    from pipeline.model import features

    url = torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url
    damaged = empty_caches / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    config = dataclasses.replace(TrainingConfig(), backbone="densenet121", feature_source="pretrained", image_size=32)
    key = pd.DataFrame({"digest": ["x"]})
    with pytest.raises(WeightsUnavailable, match="delete it from its cache folder"):
        features.pretrained_features(key, config, "code", [str(empty_caches / "none.png")])


def test_out_of_fold_scores_come_from_heads_that_never_fitted_their_fold():
    """On features without signal a head memorises its own rows (in-sample AUC near 1); out-of-fold
    scores, where the threshold is chosen, show it has learnt nothing (AUC near 0.5)."""
    from sklearn.metrics import roc_auc_score

    from pipeline.model import features

    rng = np.random.default_rng(0)
    n, dim = 300, 200
    x, y = rng.normal(size=(n, dim)), rng.integers(0, 2, n)
    folds = np.repeat(np.arange(5), n // 5)
    folds[:20] = -1  # rows outside the fitted ones get no score
    fitted = folds >= 0
    weights = rng.uniform(0.5, 2.0, fitted.sum())
    oof = features.out_of_fold_proba(x, folds, y, weights, seed=0)
    assert np.isnan(oof[~fitted]).all() and np.isfinite(oof[fitted]).all()
    in_sample = features.head_proba(x, fitted, y, weights, seed=0)
    assert roc_auc_score(y[fitted], in_sample[fitted]) > 0.95
    assert abs(roc_auc_score(y[fitted], oof[fitted]) - 0.5) < 0.1
    # fold 2's scores are those of the weighted head fitted on the other folds' rows
    w = np.zeros(n)
    w[fitted] = weights
    others = fitted & (folds != 2)
    head = features.fit_head(x[others], y[others], w[others], seed=0)
    np.testing.assert_allclose(oof[folds == 2], head.predict_proba(x[folds == 2])[:, 1])
