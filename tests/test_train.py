"""The training engine: weights that matter, reproducible seeds, last-layer cache, the course's contract."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.cache import file_digest
from pipeline.config import ConfigError, TrainingConfig, load_config
from pipeline.data.folder import load_dataset
from pipeline.model import backbones, contract, training
from pipeline.model.training import describe_mode, fit, predict_with_weights, subsample_patients
from pipeline.train import pred_classifier, train_classifier

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NIH = SHARED / "nih1000-64px"
FAST = TrainingConfig(backbone="small_cnn", image_size=32, max_epochs=2, patience=2, batch_size=32)
needs_nih = pytest.mark.skipif(not NIH.exists(), reason=f"real NIH subset {NIH} absent")


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is fastest on a busy 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def demo(tmp_path: Path) -> pd.DataFrame:
    """The canonical frame of a small demo (or of the real subset while pipeline.demo is missing)."""
    try:
        from pipeline.data.demo import make_demo
    except ImportError:
        if not NIH.exists():
            pytest.skip("neither pipeline.demo nor the real NIH subset is available")
        data = NIH
    else:
        data = make_demo(tmp_path / "demo", n_patients=80, seed=3, image_size=64)
    return load_dataset(data, load_config(data_dir=str(data)))[0]


@pytest.fixture()
def noise(tmp_path: Path) -> pd.DataFrame:
    """Images of pure noise, half of them labelled malade: a model can only learn the (weighted) prior."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(240):
        path = tmp_path / "noise" / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
        rows.append({"Image Index": path.name, "path": str(path), "digest": file_digest(path),
                     "split": "train" if i < 180 else "valid", "label": i % 2, "patient": f"p{i // 2}",
                     "sex": "MF"[i % 4 // 2]})
    return pd.DataFrame(rows)


def _train_labels(frame: pd.DataFrame) -> np.ndarray:
    return frame.loc[frame["split"] == "train", "label"].to_numpy()


def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("a network was trained again")

    monkeypatch.setattr(training, "fit", fail)


@pytest.mark.kernels
@pytest.mark.parametrize(("mode", "sampler"), [("full", False), ("full", True), ("last_layer", False)])
def test_up_weighting_malade_predicts_more_malade(noise: pd.DataFrame, mode: str, sampler: bool):
    config = dataclasses.replace(FAST, image_size=16, mode=mode, sampler=sampler, learning_rate=1e-2)
    labels = _train_labels(noise)
    mean, rate = {}, {}
    for name, weights in {"uniform": np.ones(len(labels)), "malade x10": np.where(labels == 1, 10.0, 1.0)}.items():
        proba = predict_with_weights(noise, weights, config, seed=0)[0]["proba"]
        mean[name], rate[name] = proba.mean(), (proba >= 0.5).mean()
    assert mean["malade x10"] > mean["uniform"] + 0.15, mean  # the prior moves towards 10 / 11
    # last-layer heads are fitted on a third of the train patients (DFR), so their noise decisions vary more
    assert rate["malade x10"] > (0.6 if mode == "last_layer" else 0.75), rate
    assert rate["malade x10"] >= rate["uniform"], rate


@pytest.mark.kernels
def test_same_seed_same_predictions_other_seed_other_model(demo: pd.DataFrame, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    full = dataclasses.replace(FAST, mode="full")
    ones = np.ones(len(_train_labels(demo)))
    first, _ = predict_with_weights(demo, ones, full, seed=7)
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "fresh"))  # retrain from scratch
    second, info = predict_with_weights(demo, ones, full, seed=7)
    assert not info["cached"]
    np.testing.assert_allclose(first["proba"], second["proba"], atol=1e-6)
    other, _ = predict_with_weights(demo, ones, full, seed=8)
    assert np.abs(other["proba"].to_numpy() - first["proba"].to_numpy()).max() > 1e-3


def test_predictions_cover_every_row_in_frame_order(demo: pd.DataFrame):
    shuffled = demo.sample(frac=1, random_state=0)
    preds, info = predict_with_weights(shuffled, np.ones(len(_train_labels(shuffled))), FAST, seed=0)
    assert list(preds.columns) == ["Image Index", "split", "label", "proba", "role", "tuning_proba"]
    assert preds["Image Index"].tolist() == shuffled["Image Index"].tolist()
    assert preds["label"].tolist() == shuffled["label"].tolist() and preds["proba"].between(0, 1).all()
    inner = (preds["role"] == "inner_val").to_numpy()  # a trained backbone: the threshold's scores are its own
    np.testing.assert_array_equal(preds["tuning_proba"][inner], preds["proba"][inner])
    assert preds["tuning_proba"][~inner].isna().all() and info["threshold_folds"] == 0
    assert {"mode", "backbone", "epochs", "inner_val_bacc", "seed", "seconds"} <= set(info)
    with pytest.raises(ValueError, match="one value per train image"):
        predict_with_weights(demo, np.ones(3), FAST, seed=0)


def test_last_layer_trains_one_network_then_only_heads(demo: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    labels = _train_labels(demo)
    base, info = predict_with_weights(demo, np.ones(len(labels)), FAST, seed=0)
    assert info["mode"] == "last_layer" and not info["cached"]
    _no_training(monkeypatch)
    again, info = predict_with_weights(demo, np.ones(len(labels)), FAST, seed=0)
    assert info["cached"]
    pd.testing.assert_frame_equal(again, base)
    heavy, info = predict_with_weights(demo, np.where(labels == 0, 20.0, 1.0), FAST, seed=0)
    assert not info["cached"]  # a new head on the cached network's features
    assert heavy["proba"].mean() < base["proba"].mean() - 0.05


def test_heads_are_fitted_on_patients_the_backbone_never_saw(demo: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    """Deep Feature Reweighting as published: backbone, heads and threshold on three disjoint sets of patients."""
    seen: dict[str, object] = {}

    def spy_fit(pixels, labels, train_rows, val_rows, *args, **kwargs):
        seen["backbone"], seen["inner_val"] = train_rows, val_rows
        return fit(pixels, labels, train_rows, val_rows, *args, **kwargs)

    real_head = training.features.fit_head

    def spy_head(feats, labels, weights, seed):
        seen["head_labels"] = labels
        return real_head(feats, labels, weights, seed)

    monkeypatch.setattr(training, "fit", spy_fit)
    monkeypatch.setattr(training.features, "fit_head", spy_head)
    labels = _train_labels(demo)
    preds, info = predict_with_weights(demo, np.where(labels == 1, 2.0, 1.0), FAST, seed=0)
    patients, roles = demo["patient"].reset_index(drop=True), preds["role"]
    backbone = set(patients.iloc[seen["backbone"]])
    heads = set(patients[roles == "fit"])
    inner = set(patients.iloc[seen["inner_val"]])
    assert backbone and heads and inner
    assert not backbone & heads and not inner & (backbone | heads)
    assert backbone == set(patients[roles == "backbone"]) and inner == set(patients[roles == "inner_val"])
    assert len(seen["head_labels"]) == (roles == "fit").sum()  # the head saw exactly the held-out rows
    assert set(roles[preds["split"] == "valid"]) == {"valid"}
    inner_rows = (roles == "inner_val").to_numpy()
    threshold = training.operating_threshold(preds["label"][inner_rows], preds["proba"][inner_rows])
    assert info["threshold"] == preds.attrs["threshold"] == threshold
    assert set(info["backbone_auc"]) == {"backbone", "fit", "inner_val"}


def test_operating_threshold_maximises_balanced_accuracy():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.9).astype(int)  # imbalanced: 0.5 would call everyone malade
    proba = np.clip(0.8 + 0.1 * (y - 0.5) + rng.normal(0, 0.05, 400), 0, 1)
    t = training.operating_threshold(y, proba)
    grid = np.unique(proba)
    bacc = [((proba[y == 1] >= g).mean() + (proba[y == 0] < g).mean()) / 2 for g in grid]
    assert ((proba[y == 1] >= t).mean() + (proba[y == 0] < t).mean()) / 2 == pytest.approx(max(bacc))
    assert (proba >= 0.5).all() and t > 0.5
    assert training.operating_threshold(np.ones(5, int), np.linspace(0, 1, 5)) == 0.5


def test_changed_network_code_retrains(demo: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    ones = np.ones(len(_train_labels(demo)))
    predict_with_weights(demo, ones, FAST, seed=0)
    assert predict_with_weights(demo, ones, FAST, seed=0)[1]["cached"]
    monkeypatch.setattr(training, "code_version", lambda *modules: "edited backbones.py")
    trained = []
    monkeypatch.setattr(training, "fit", lambda *a, **k: trained.append(1) or fit(*a, **k))
    _, info = predict_with_weights(demo, ones, FAST, seed=0)
    assert not info["cached"] and trained == [1]


def test_last_layer_on_frozen_pretrained_features_trains_nothing(demo: pd.DataFrame,
                                                                   monkeypatch: pytest.MonkeyPatch):
    config = dataclasses.replace(FAST, feature_source="pretrained")
    _no_training(monkeypatch)
    labels = _train_labels(demo)
    base, info = predict_with_weights(demo, np.ones(len(labels)), config, seed=0)
    assert info["epochs"] == 0 and "frozen" in info["description"] and base["proba"].between(0, 1).all()
    assert info["compute"] == {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "device": "cpu",
                               "precision": "32-true", "torch": torch.__version__}  # the features' kernels
    heavy, _ = predict_with_weights(demo, np.where(labels == 0, 20.0, 1.0), config, seed=0)
    assert heavy["proba"].mean() < base["proba"].mean() - 0.05


def test_subsampling_keeps_whole_patients_stratified(demo: pd.DataFrame):
    for fraction in (0.3, 0.5, 0.75):
        part = subsample_patients(demo, fraction, seed=0)
        kept = set(part["patient"])
        assert abs(len(kept) / demo["patient"].nunique() - fraction) < 0.12, fraction
        assert len(demo[demo["patient"].isin(kept)]) == len(part)  # no patient cut in two
        for split in ("train", "valid"):
            assert set(part.loc[part["split"] == split, "label"]) == {0, 1}
    assert subsample_patients(demo, 0.5, seed=0).equals(subsample_patients(demo, 0.5, seed=0))
    assert set(subsample_patients(demo, 0.5, seed=1)["patient"]) != set(subsample_patients(demo, 0.5, 0)["patient"])
    assert subsample_patients(demo, 1.0, seed=0) is demo


def test_describe_mode_says_how():
    assert "last-layer" in describe_mode(FAST) and "small_cnn" in describe_mode(FAST)
    full = describe_mode(dataclasses.replace(FAST, mode="full", sampler=True))
    assert "per weighting" in full and "sampler" in full


def test_loader_workers_and_memory_mapped_batches(noise: pd.DataFrame, monkeypatch: pytest.MonkeyPatch):
    assert training.num_workers(-1, in_memory=True) == 0
    assert training.num_workers(-1, in_memory=False) == max(0, min(4, (os.cpu_count() or 1) - 1))
    assert training.num_workers(3, in_memory=True) == 3
    pixels = training.image_array(noise, 16)
    rows, labels, weights = np.array([5, 1, 9, 3]), np.arange(4.0), np.ones(4)
    in_ram = training.PixelData(pixels, rows, labels, weights)
    monkeypatch.setattr(training, "IN_MEMORY_BYTES", 0)
    mapped = training.PixelData(pixels, rows, labels, weights)
    assert in_ram.in_memory and not mapped.in_memory
    for a, b in zip(in_ram.__getitems__([3, 0, 2]), mapped.__getitems__([3, 0, 2]), strict=True):
        torch.testing.assert_close(a, b)
    np.testing.assert_array_equal(in_ram.__getitems__([1])[0][0, 0].numpy(), pixels[1])


def test_backbone_registry_and_offline_fallback(monkeypatch: pytest.MonkeyPatch):
    import torchvision

    net, dim = backbones.build_backbone("small_cnn")
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, dim)

    def offline(*, weights):
        if weights is not None:
            raise OSError("no network")
        return real(weights=None)

    real = torchvision.models.resnet18
    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    with pytest.warns(UserWarning, match="RANDOM initialisation"):
        net, dim = backbones.build_backbone("resnet18", pretrained=True)
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, dim) == (2, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbones.build_backbone("resnet18", pretrained=False)  # no download tried, no warning
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.build_backbone("vgg")
    if "torchxrayvision" not in sys.modules and "xrv_densenet121_chex" not in backbones.available_backbones():
        with pytest.raises(ValueError, match="pip install torchxrayvision"):
            backbones.build_backbone("xrv_densenet121_chex")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.train", *args], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)


@needs_nih
def test_course_contract_from_python_and_command_line(tmp_path: Path):
    csv = tmp_path / "weighted.csv"
    meta = pd.read_csv(NIH / "metadata.csv")
    meta.assign(WEIGHTS=np.where(meta["Patient Gender"] == "F", 2.0, 1.0)).to_csv(csv, index=False)
    ckpt, score = train_classifier(tmp_path / "logs", NIH, "WEIGHTS", csv, image_size=32, max_epochs=1, seed=3)
    assert Path(ckpt).is_file() and 0 <= score <= 1
    record = json.loads(Path(ckpt).with_suffix(".json").read_text())
    assert record["seed"] == 3 and record["best_val_balanced_accuracy"] == pytest.approx(score)
    assert list((tmp_path / "logs" / "logs").rglob("metrics.csv"))
    out = tmp_path / "preds.csv"
    pred_classifier(NIH, csv, out, ckpt)
    preds = pd.read_csv(out)
    assert list(preds.columns[:4]) == ["Image Index", "split", "label", "proba"]
    assert len(preds) == 800 and preds["proba"].between(0, 1).all()
    assert preds.groupby("split").size().to_dict() == {"train": 600, "valid": 200}
    assert {"Patient ID", "Patient Gender", "Patient Age", "View Position", "WEIGHTS"} <= set(preds.columns)
    by_path = preds.set_index("Image Index")
    assert (by_path.loc[[p.name for p in (NIH / "valid" / "malade").glob("*.png")], "label"] == 1).all()

    cli_out = tmp_path / "cli.csv"
    done = _run_cli("--train", "False", "--ckpt", ckpt, "--datadir", str(NIH), "--csv", str(csv),
                    "--csv_out", str(cli_out))
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(pd.read_csv(cli_out)["proba"], preds["proba"], atol=1e-6)

    trained_out = tmp_path / "cli_trained.csv"
    done = _run_cli("--logdir", str(tmp_path / "cli_logs"), "--datadir", str(NIH), "--csv", str(csv),
                    "--weights_col", "WEIGHTS", "--csv_out", str(trained_out), "--image_size", "32",
                    "--max_epochs", "1", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert "validation balanced accuracy" in done.stdout
    np.testing.assert_allclose(pd.read_csv(trained_out)["proba"], preds["proba"], atol=1e-5)  # same seed


@needs_nih
def test_command_line_errors_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    meta = NIH / "metadata.csv"
    cases = {
        "missing.csv does not exist": ["--datadir", str(NIH), "--csv", str(tmp_path / "missing.csv")],
        "has no column 'POIDS'": ["--datadir", str(NIH), "--csv", str(meta), "--weights_col", "POIDS"],
        "needs --ckpt PATH and --csv_out": ["--datadir", str(NIH), "--csv", str(meta), "--train", "False"],
        "does not exist: pass it with --datadir": ["--datadir", str(tmp_path / "nowhere"), "--csv", str(meta)],
        "is not a checkpoint": ["--datadir", str(NIH), "--csv", str(meta), "--train", "False", "--ckpt", str(meta),
                                "--csv_out", str(tmp_path / "x.csv")],
        "unknown backbone": ["--datadir", str(NIH), "--csv", str(meta), "--backbone", "vgg", "--image_size", "16"],
    }
    for expected, args in cases.items():
        assert contract.main(args) == 2, expected
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    done = _run_cli(*cases["missing.csv does not exist"])  # the real command line, in its own process
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.csv'} does not exist: pass the metadata CSV with --csv."]


@pytest.mark.kernels
def test_the_kernels_a_network_was_trained_on_are_recorded(noise: pd.DataFrame, tmp_path: Path):
    """torch's CPU kernels (capped by $ATEN_CPU_CAPABILITY) are stored with the trained result and read back
    from the cache as they were: a reader on another machine learns where the network was trained."""
    config = dataclasses.replace(FAST, image_size=16, mode="full")
    ones = np.ones(len(_train_labels(noise)))
    preds, info = predict_with_weights(noise, ones, config, seed=0, logdir=tmp_path)
    kernels = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default":
        assert kernels == "DEFAULT"  # every CPU has the default kernels: the cap is honoured
    expected = {"cpu_capability": kernels, "device": "cpu", "precision": "32-true", "torch": torch.__version__}
    assert info["compute"] == preds.attrs["compute"] == expected
    assert json.loads(next(tmp_path.rglob("best.json")).read_text())["compute"] == expected
    _, again = predict_with_weights(noise, ones, config, seed=0)
    assert again["cached"] and again["compute"] == expected


@pytest.mark.kernels
def test_mixed_precision_path_trains_and_is_recorded(noise: pd.DataFrame, tmp_path: Path):
    """The GPU's mixed-precision path (autocast in training and validation), run on the CPU in bf16."""
    assert training.precision(TrainingConfig(accelerator="cpu")) == "32-true"
    config = dataclasses.replace(FAST, image_size=16, mode="full", precision="bf16-mixed", learning_rate=1e-2)
    labels = _train_labels(noise)
    preds, _ = predict_with_weights(noise, np.where(labels == 1, 10.0, 1.0), config, seed=0, logdir=tmp_path)
    assert preds["proba"].between(0, 1).all() and preds["proba"].mean() > 0.6  # the weights still act
    record = json.loads(next(tmp_path.rglob("best.json")).read_text())
    assert record["precision"] == record["compute"]["precision"] == "bf16-mixed"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        contract._training_config({"precision": "fp8"})


def test_a_step_budget_trains_a_large_folder_fewer_whole_epochs(demo: pd.DataFrame):
    """`max_steps` caps the optimizer steps in whole epochs: a small folder keeps `max_epochs`, a large one
    (here: a budget below two epochs' batches) stops after fewer epochs, and the training runs that many."""
    config = dataclasses.replace(FAST, max_epochs=3, max_steps=0)
    assert config.epochs_for(10_000) == 3  # no budget
    config = dataclasses.replace(config, max_steps=1000)
    assert config.epochs_for(320) == 3 and config.epochs_for(10_000) == 3  # 313 batches an epoch: 4 epochs' worth
    assert config.epochs_for(20_000) == 2 and config.epochs_for(10**6) == 1  # 625 batches: 2; never below one
    labels = _train_labels(demo)
    n_fit = int(len(labels) * 0.85)  # the network's rows (the inner validation aside): several batches
    tight = dataclasses.replace(config, mode="full", max_steps=max(1, n_fit // FAST.batch_size - 1))
    assert tight.epochs_for(n_fit) == 1
    _, info = predict_with_weights(demo, np.ones(len(labels)), tight, seed=0)
    assert info["epochs"] == 1 and info["n_images"]["fit"] > 2 * FAST.batch_size
