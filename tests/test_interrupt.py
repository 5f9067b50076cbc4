"""Ctrl-C at any stage: the project's message naming the stage, exit 130, a valid cache, a rerun that resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli, progress

ROOT = Path(__file__).resolve().parents[1]


TINY = """\
demo: {n_patients: 60, image_size: 32, seed: 0}
training: {backbone: small_cnn, image_size: 32, max_epochs: 30, patience: 40, seeds: [0, 1], cpu_threads: 1}
weighting: {methods: [uniform, class_balanced]}
postprocessing: {methods: [none, threshold_global]}
evaluation: {n_bootstrap: 20}
analysis: {primary: [class_balanced + none, uniform + threshold_global], n_resamples: 40}
"""


def _study(config: Path, cache: Path, interrupt_after: str | None = None) -> tuple[int, str]:
    """Run `python -m pipeline study`; send SIGINT as soon as a stderr line starts with `interrupt_after`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAIRCXR_CACHE": str(cache), "FAIRCXR_PROGRESS": "1",
           "FAIRCXR_OUTPUT": str(cache.parent / "out")}
    env.pop("FAIRCXR_DATA", None)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "--config", str(config), "study"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if interrupt_after and line.startswith(interrupt_after):
            proc.send_signal(signal.SIGINT)
            break
    rest_out, rest_err = proc.communicate(timeout=600)
    return proc.returncode, "".join(lines) + rest_err + rest_out


def test_ctrl_c_during_a_training_says_so_exits_130_and_the_rerun_resumes(tmp_path: Path):
    config = tmp_path / "study.yml"
    config.write_text(TINY, encoding="utf-8")
    cache = tmp_path / "cache"
    # network 1/4 is written to the cache before its line; the signal lands in seed 0's head or seed 1's
    # network. With 5 epochs seed 1's network took 0.3 s: on a busy machine the signal sometimes came after it
    # (the run then ended with 0); 30 epochs without early stopping keep it training for a few seconds.
    code, out = _study(config, cache, interrupt_after="training: network 1/4")
    assert code == 130, out
    assert "interrupted while training" in out and "run the same command again to resume" in out
    assert "Traceback" not in out
    assert not list(cache.rglob("*.tmp")), "a half-written file was left in the cache"
    code, out = _study(config, cache)
    assert code == 0, out
    assert "network 1/4" not in out and "network 3/4: uniform, seed 1" in out  # seed 0 from the cache
    progress_lines = [line for line in out.splitlines() if not line.startswith("caveat:")]  # thin parts: said once
    assert "Epoch 0" not in out and len(progress_lines) <= 15, out  # no Lightning bars without --verbose


@pytest.mark.parametrize("stage", ["decoding images at 128 px", "training", "metrics (500 bootstrap replicates)",
                                   "post-processing grid (7 x 8)"])
def test_an_interrupt_names_the_stage_it_stopped(stage: str, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path):
    def interrupted_run(config):
        with progress.stage("checking the data folder"):
            pass
        with progress.stage(stage):
            raise KeyboardInterrupt

    from pipeline import study

    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path))
    monkeypatch.setattr(study, "run", interrupted_run)
    assert cli.main(["study"]) == 130
    assert f"interrupted while {stage}: finished results are cached" in capsys.readouterr().err


def test_an_interrupt_while_rendering_is_named(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path):
    from pipeline import study
    from pipeline.render import renderer

    def interrupted_render(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setenv("FAIRCXR_CACHE", str(tmp_path))
    monkeypatch.setattr(study, "run", lambda config: None)
    monkeypatch.setattr(renderer, "render_all", interrupted_render)
    assert cli.main(["render", "--no-quarto"]) == 130
    assert "interrupted while rendering" in capsys.readouterr().err
