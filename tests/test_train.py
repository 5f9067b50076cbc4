"""The training engine: the course's contract, weights that matter, reproducibility, decode-once cache."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import images
from pipeline.config import TrainingConfig, load_config
from pipeline.data import load_dataset
from pipeline.demo import make_demo
from pipeline.train import pred_classifier, predict_with_weights, subsample_patients, train_classifier

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FAST = TrainingConfig(image_size=32, max_epochs=3, patience=1, batch_size=32)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")


@pytest.fixture()
def demo(tmp_path: Path) -> pd.DataFrame:
    data = make_demo(tmp_path / "demo", n_patients=80, seed=3, image_size=64)
    return load_dataset(data, load_config(data_dir=str(data)))[0]


def _train_n(frame: pd.DataFrame) -> int:
    return int((frame["split"] == "train").sum())


def test_up_weighting_one_class_changes_the_model(tmp_path: Path):
    """On uninformative images a network can only learn the (weighted) class prior."""
    from pipeline.lightning_module import fit, predict

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (256, 16, 16), dtype=np.uint8)
    labels = np.tile([0, 1], 128)
    config = dataclasses.replace(FAST, image_size=16, max_epochs=2, patience=2, learning_rate=1e-2)
    means = {}
    for name, weights in {"uniform": np.ones(256), "positives x10": np.where(labels == 1, 10.0, 1.0)}.items():
        model, _, _, _ = fit((pixels[:192], labels[:192], weights[:192]), (pixels[192:], labels[192:]), config,
                             seed=0, logdir=tmp_path / name)
        means[name] = predict(model, pixels)[0].mean()
    assert means["positives x10"] > means["uniform"] + 0.15, means


def test_last_layer_heads_follow_the_weights(demo: pd.DataFrame):
    labels = demo.loc[demo["split"] == "train", "label"].to_numpy()
    base, info = predict_with_weights(demo, np.ones(_train_n(demo)), FAST, seed=0)
    heavy, _ = predict_with_weights(demo, np.where(labels == 0, 20.0, 1.0), FAST, seed=0)
    assert info["mode"] == "last_layer"
    assert heavy["proba"].mean() < base["proba"].mean() - 0.02


def test_same_seed_same_predictions(demo: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    full = dataclasses.replace(FAST, mode="full")
    first, _ = predict_with_weights(demo, np.ones(_train_n(demo)), full, seed=7)
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "fresh"))  # retrain from scratch
    second, _ = predict_with_weights(demo, np.ones(_train_n(demo)), full, seed=7)
    np.testing.assert_allclose(first["proba"], second["proba"], atol=1e-6)


def test_images_are_decoded_once_and_a_corrupt_cache_is_rebuilt(demo: pd.DataFrame, monkeypatch):
    first = np.array(images.image_array(demo, 32))
    calls = []
    monkeypatch.setattr(images, "decode", lambda *a: calls.append(a) or np.zeros((32, 32), np.uint8))
    np.testing.assert_array_equal(images.image_array(demo, 32), first)
    assert calls == []  # served from the cache
    entry = next((Path(images.cache_dir()) / "images").glob("*.npy"))
    entry.write_bytes(entry.read_bytes()[:1000])  # a partial write
    rebuilt = images.image_array(demo, 32)
    assert len(calls) == len(demo) and rebuilt.shape == first.shape


@pytest.mark.parametrize("folder", ["nih7-1024px", "nih50-256px"])
def test_any_size_and_mode_is_resized_to_grey(folder: str):
    path = next((SHARED / folder).rglob("*.png"), None)
    if path is None:
        pytest.skip(f"{SHARED / folder} absent")
    with Image.open(path) as im:
        assert im.size[0] >= 256
    out = images.decode(path, 64)
    assert out.shape == (64, 64) and out.dtype == np.uint8 and out.std() > 5


def test_subsampling_keeps_whole_patients_and_both_classes(demo: pd.DataFrame):
    half = subsample_patients(demo, 0.5, seed=0)
    kept = set(half["patient"])
    assert 0.3 < len(kept) / demo["patient"].nunique() < 0.7
    assert demo[demo["patient"].isin(kept)].shape[0] == len(half)  # no patient cut in two
    for split in ("train", "valid"):
        assert set(half.loc[half["split"] == split, "label"]) == {0, 1}


@pytest.mark.skipif(not (SHARED / "nih1000-64px").exists(), reason="../shared/data/nih1000-64px absent")
def test_course_contract_from_python_and_command_line(tmp_path: Path):
    data = SHARED / "nih1000-64px"
    csv = tmp_path / "weighted.csv"
    meta = pd.read_csv(data / "metadata.csv")
    meta.assign(WEIGHTS=np.where(meta["Patient Gender"] == "F", 2.0, 1.0)).to_csv(csv, index=False)
    ckpt, score = train_classifier(tmp_path / "logs", data, "WEIGHTS", csv, image_size=32, max_epochs=1)
    assert Path(ckpt).is_file() and 0 <= score <= 1
    out = tmp_path / "preds.csv"
    pred_classifier(data, csv, out, ckpt)
    preds = pd.read_csv(out)
    assert list(preds.columns[:4]) == ["Image Index", "split", "label", "proba"]
    assert len(preds) == 800 and preds["proba"].between(0, 1).all()
    assert {"Patient ID", "Patient Gender", "Patient Age", "View Position"} <= set(preds.columns)
    cli_out = tmp_path / "cli.csv"
    done = subprocess.run([sys.executable, "-m", "pipeline.train", "--train", "False", "--ckpt", ckpt,
                           "--datadir", str(data), "--csv", str(csv), "--csv_out", str(cli_out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(pd.read_csv(cli_out)["proba"], preds["proba"], atol=1e-6)


def test_command_line_errors_are_one_clear_line(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "pipeline.train", "--datadir", str(tmp_path), "--csv",
                           str(tmp_path / "missing.csv")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "missing.csv does not exist" in done.stderr and "Traceback" not in done.stderr
