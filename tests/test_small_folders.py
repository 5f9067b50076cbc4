"""Folders far smaller than the course's, damaged caches, and the messages a user reads (issue 26).

On copies of the real 50-image folder in ../shared (21 patients; 4 `malade` training images): the
protocol's parts are counted before any training, an impossible split stops with the part, its counts and
the fix (exit 2, no traceback), a possible one runs and says which parts are thin; a cache whose files were
cut short is recomputed with one line per entry and gives the same results; the user's folder is never
modified. Config suggestions know the synonyms users write; a log gets a line a minute during a long stage.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_bad_input import tree_hash

from pipeline import progress, study
from pipeline.config import LIGHTNING_STRATEGIES, ConfigError, load_config
from pipeline.data import schema as S
from pipeline.protocol import ProtocolSizeError, check_sizes, protocol_sizes

ROOT = Path(__file__).resolve().parents[1]
NIH50 = ROOT.parent / "shared" / "data" / "nih50-256px"
needs_nih50 = pytest.mark.skipif(not NIH50.is_dir(), reason="../shared/data/nih50-256px is not here")

SMALL = """
data_dir: {data}
training: {{mode: {mode}, backbone: small_cnn, image_size: 32, max_epochs: 2, seeds: [0], batch_size: 32}}
weighting: {{methods: [uniform, group_balanced]}}
postprocessing: {{methods: [none, equal_opportunity], folds: 3, n_refit: 10}}
evaluation: {{n_bootstrap: 60, min_per_class: 5}}
analysis: {{n_resamples: 40}}
"""


@pytest.fixture
def nih50(tmp_path: Path) -> Path:
    folder = tmp_path / "nih50"
    shutil.copytree(NIH50, folder)
    return folder


def _config(tmp_path: Path, data: Path, mode: str) -> Path:
    path = tmp_path / f"study-{mode}.yml"
    path.write_text(SMALL.format(data=data, mode=mode), encoding="utf-8")
    return path


def _cli(config: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAIRCXR_CACHE": str(cache), "FAIRCXR_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", "--config", str(config), *args, "study"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)


@needs_nih50
def test_a_split_that_leaves_a_part_with_one_class_stops_before_training_with_the_fix(nih50: Path, tmp_path: Path):
    """Last-layer mode splits 4 sick training images three ways: the heads get none. Today's scikit-learn
    traceback (« needs samples of at least 2 classes ») becomes one message with the part and the fix."""
    before = tree_hash(nih50)
    done = _cli(_config(tmp_path, nih50, "last_layer"), tmp_path / "cache")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "needs samples" not in done.stderr
    assert "the heads' patients (training seed 0): 0 patients / 0 images malade" in done.stderr
    assert "Fix: set training.mode: full" in done.stderr and "training:" not in done.stderr  # nothing trained
    assert tree_hash(nih50) == before


@needs_nih50
def test_the_same_folder_runs_in_full_mode_with_its_thin_parts_named_and_survives_a_damaged_cache(
        nih50: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    before = tree_hash(nih50)
    config, cache = _config(tmp_path, nih50, "full"), tmp_path / "cache"
    done = _cli(config, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "caveat: the evaluation patients (valid/): 2 patients / 10 images malade" in done.stderr
    monkeypatch.setenv("FAIRCXR_CACHE", str(cache))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")
    first = study.run(load_config(config))
    assert {p.part for p in first.protocol_caveats} >= {"evaluation", "fit", "inner_val"}
    from pipeline.report.preprocessing import training_protocol

    assert "Parts du protocole très petites" in training_protocol(first)
    # Refits in which a group had one class are counted and said, not dropped (4 sick evaluation patients).
    from pipeline.report.postprocessing import postprocessing_protocol

    assert (first.grid.table["refit_fallbacks"] > 0).any()
    assert "Dans certains réajustements" in postprocessing_protocol(first, part="appendix")
    # A full disk or a killed copy: every result file cut short. The rerun says so in one line per entry.
    damaged = [*(cache / "joblib").rglob("output.pkl"), *(cache / "study").glob("*.pickle")]
    assert len(damaged) >= 6
    for path in damaged:
        path.write_bytes(path.read_bytes()[:100])
    again = _cli(config, cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr and "Exception while loading" not in again.stderr
    lines = [line for line in again.stderr.splitlines() if "unreadable" in line]
    assert len(lines) >= 3 and all(line.startswith("cache entry ") and line.endswith("recomputed") for line in lines)
    study._CONTEXTS.clear()
    second = study.run(load_config(config))
    cols = ["method", "metric", "estimate", "low", "high"]
    pd.testing.assert_frame_equal(first.comparison[cols], second.comparison[cols])
    assert tree_hash(nih50) == before


def _frame(n_sick_train: int, n_healthy_train: int = 30, n_valid: tuple[int, int] = (20, 20)) -> pd.DataFrame:
    """One image per patient: train and valid patients of each class, sexes alternating."""
    rows = []
    for split, counts in (("train", (n_healthy_train, n_sick_train)), ("valid", n_valid)):
        for label, n in enumerate(counts):
            rows += [{S.SPLIT: split, S.LABEL: label, S.PATIENT: f"{split}-{label}-{i}",
                      S.SEX: "FM"[i % 2], S.IMAGE: f"{split}-{label}-{i}.png"} for i in range(n)]
    return pd.DataFrame(rows)


def test_every_part_of_the_protocol_is_counted_with_the_studys_own_split():
    """Patients of each class per part, for each seed: the parts partition the training patients."""
    config = load_config(ROOT / "study.yml").replace(data_dir="x")
    frame = _frame(40)
    evaluation = frame[frame[S.SPLIT] == "valid"].reset_index(drop=True)
    sizes = protocol_sizes(frame, evaluation, config)
    for seed in config.training.seeds:
        parts = {s.part: s for s in sizes if s.seed == seed}
        assert set(parts) == {"backbone", "fit", "inner_val"}
        assert sum(p.patients[1] for p in parts.values()) == 40 and sum(p.patients[0] for p in parts.values()) == 30
    folds = [s for s in sizes if s.part == "fold"]
    assert len(folds) == config.postprocessing.folds
    assert all(s.patients[1] == 20 - 20 // config.postprocessing.folds for s in folds)  # stratified folds
    assert check_sizes(frame, evaluation, config) == []  # nothing thin


def test_frozen_features_count_every_training_patient_and_each_threshold_fold():
    """On frozen features no inner validation is held out: the heads fit every training patient, and each
    out-of-fold score comes from a head fitted without its fold, which must hold both classes."""
    config = load_config(ROOT / "study.yml").replace(data_dir="x")
    config = config.replace(training=dataclasses.replace(config.training, backbone="resnet18",
                                                         feature_source="pretrained"))
    frame = _frame(40)
    evaluation = frame[frame[S.SPLIT] == "valid"].reset_index(drop=True)
    sizes = protocol_sizes(frame, evaluation, config)
    seed = config.training.seeds[0]
    fit = [s for s in sizes if s.seed == seed and s.part == "fit"]
    assert [s.patients for s in fit] == [{0: 30, 1: 40}]
    assert not any(s.part in ("backbone", "inner_val") for s in sizes)
    folds = [s for s in sizes if s.seed == seed and s.part == "threshold_fold"]
    assert [s.patients for s in folds] == [{0: 24, 1: 32}] * 5  # stratified: 4 of 5 folds of each class
    with pytest.raises(ProtocolSizeError, match="without training fold"):  # one sick patient: a fold lacks it
        check_sizes(_frame(1), evaluation, config)


@pytest.mark.parametrize(("change", "frame", "named", "fix"), [
    ({"subsample_fraction": 0.3}, _frame(3), "malade", "training.subsample_fraction: 1.0"),
    ({}, _frame(30, n_valid=(20, 0)), "the evaluation patients (valid/): 0 patients / 0 images malade", "valid/"),
])
def test_an_impossible_part_names_itself_and_its_fix(change: dict, frame: pd.DataFrame, named: str, fix: str):
    from pipeline.model.training import subsample_patients

    config = load_config(ROOT / "study.yml").replace(data_dir="x")
    config = config.replace(training=dataclasses.replace(config.training, **change))
    used = subsample_patients(frame, config.training.subsample_fraction, config.training.subsample_seed)
    evaluation = used[used[S.SPLIT] == "valid"].reset_index(drop=True)
    with pytest.raises(ProtocolSizeError) as caught:
        check_sizes(used, evaluation, config)
    assert named in str(caught.value) and fix in str(caught.value)
    assert isinstance(caught.value, ConfigError)  # the command line prints it as « error: … », exit 2


def test_too_many_post_processing_folds_for_the_sick_evaluation_patients_say_to_use_fewer():
    config = load_config(ROOT / "study.yml").replace(data_dir="x")
    config = config.replace(postprocessing=dataclasses.replace(config.postprocessing, folds=8))
    frame = _frame(30, n_valid=(20, 1))  # one sick evaluation patient: the rules fitted without its fold have none
    evaluation = frame[frame[S.SPLIT] == "valid"].reset_index(drop=True)
    with pytest.raises(ProtocolSizeError, match=re.escape("set postprocessing.folds to fewer than 8")):
        check_sizes(frame, evaluation, config)


@pytest.mark.parametrize(("written", "meant"), [("gender", "sex"), ("sexe", "sex"), ("Patient Gender", "sex"),
                                                ("âge", "age_band"), ("age", "age_band"), ("incidence", "view"),
                                                ("View Position", "view")])
def test_an_attribute_written_as_users_write_it_suggests_the_right_name(tmp_path: Path, written: str, meant: str):
    path = tmp_path / "study.yml"
    path.write_text(f"weighting: {{attribute: {written!r}}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, choices={"weighting.attribute": ["sex", "age_band", "view"]})
    assert f"Did you mean '{meant}'?" in str(caught.value)


def test_the_training_strategy_is_one_of_lightnings(tmp_path: Path):
    from lightning.pytorch.strategies import StrategyRegistry

    assert set(LIGHTNING_STRATEGIES) == {"auto", *StrategyRegistry.available_strategies()}
    path = tmp_path / "study.yml"
    path.write_text("training: {strategy: dpp}\n", encoding="utf-8")
    refused = re.escape("training.strategy = 'dpp': not a valid choice. Did you mean 'ddp'")
    with pytest.raises(ConfigError, match=refused):
        load_config(path)


def test_a_log_gets_a_line_a_minute_during_a_long_stage(monkeypatch: pytest.MonkeyPatch, capsys):
    """stderr is not a terminal under pytest: the epoch updates write nothing until the heartbeat is due."""
    monkeypatch.setenv("FAIRCXR_PROGRESS", "1")
    monkeypatch.setenv("FAIRCXR_HEARTBEAT", "3600")
    with progress.stage("training") as stage:
        stage.update("network 1/7")
        progress.extra("epoch 1/15")
        progress.heartbeat("epoch 1/15")
    quiet = capsys.readouterr().err
    assert quiet.count("\n") == 1 and quiet.startswith("training: network 1/7")  # the stage's closing line only
    monkeypatch.setenv("FAIRCXR_HEARTBEAT", "0")
    with progress.stage("training") as stage:
        stage.update("network 1/7")
        progress.heartbeat("epoch 2/15")
    beating = capsys.readouterr().err.splitlines()
    assert any("epoch 2/15 (running for" in line for line in beating), beating


def test_a_damaged_entry_shows_its_traceback_only_with_verbose(monkeypatch: pytest.MonkeyPatch, capsys):
    from pipeline.cache import DamagedEntryFilter

    record = logging.LogRecord("joblib", logging.WARNING, __file__, 1, "[MemorizedFunc(func=<function _grid at "
                               "0x1>, location=/c/joblib)]: Exception while loading results for _grid(...)\n "
                               "Traceback (most recent call last): ...", None, None)
    monkeypatch.setenv("FAIRCXR_PROGRESS", "1")
    monkeypatch.delenv("FAIRCXR_VERBOSE", raising=False)
    assert DamagedEntryFilter().filter(record) is False
    said = capsys.readouterr().err.strip()
    assert said == "cache entry _grid in /c/joblib unreadable (a file cut short?): recomputed"
    monkeypatch.setenv("FAIRCXR_VERBOSE", "1")
    assert DamagedEntryFilter().filter(record) is True
