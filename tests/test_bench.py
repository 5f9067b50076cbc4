"""The benchmark runs end to end and prints every figure the training issue asks for (no timing asserted)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import bench
from pipeline.data.demo import make_demo


def test_bench_prints_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")
    data = make_demo(tmp_path / "demo", n_patients=40, seed=2, image_size=64)
    bench.run(data, "tiny demo", size=32, epochs=1, backbones={"small_cnn": 32}, study_backbone="small_cnn")
    out = capsys.readouterr().out
    for figure in (r"decoding PNGs \d+ img/s", r"reading the cache \d+ img/s", r"course's loader \d+ img/s",
                   r"from the cache [\d.]+ s \([\d.]+x and [\d.]+x faster\)", r"training speed small_cnn @ 32 px: \d+",
                   r"one full training of small_cnn .*: [\d.]+ s", r"full [\d.]+ s; last-layer [\d.]+ s cold",
                   r"frozen backbone [\d.]+ s", r"mean balanced accuracy last_layer: [\d.]+ vs full [\d.]+"):
        assert re.search(figure, out), (figure, out)
    table = [line.split() for line in out.splitlines() if line.split()[:1] in (["full"], ["last_layer"])]
    assert len(table) == 12  # six weightings in each mode, with their balanced accuracy and AUC
    assert all(0 <= float(row[2]) <= 1 and 0 <= float(row[3]) <= 1 for row in table)


def test_the_scale_table_says_how_each_stage_grows(capsys: pytest.CaptureFixture[str]):
    import pandas as pd

    table = pd.DataFrame([{"images": 1000, "patients": 535, "backbone": "small_cnn", "seeds": 5, "training": 100.0,
                           "study total": 150.0},
                          {"images": 10000, "patients": 5350, "backbone": "small_cnn", "seeds": 5, "training": 900.0,
                           "study total": 1200.0}])
    bench.print_scale(table)
    out = capsys.readouterr().out
    assert "training: x9.0 for x10.0 images (100.0 -> 90.0 s per 1,000 images)" in out
    assert "study total: x8.0 for x10.0 images" in out


def test_the_protocol_comparison_scores_every_protocol_on_every_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAIRCXR_PROGRESS", "0")
    monkeypatch.setenv("FAIRCXR_OUTPUT", str(tmp_path / "output"))
    monkeypatch.setenv("FAIRCXR_CONFIG", str(Path(__file__).parent / "fixtures" / "tiny_study.yml"))
    data = make_demo(tmp_path / "demo", n_patients=60, seed=1, image_size=64)
    table = bench.bench_protocols(data, max_epochs=1)
    assert sorted(table["protocol"].unique()) == sorted(bench.PROTOCOLS) and len(table) == len(bench.PROTOCOLS)
    assert table["auc"].between(0, 1).all()
    bench.print_protocols(table)
    assert re.search(r"crossfit: AUC [\d.]+ ± [\d.]+ over 1 seeds", capsys.readouterr().out)
