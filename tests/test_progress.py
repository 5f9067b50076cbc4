"""One progress line per stage in a log; details rewritten in place only on a terminal; silent in a kernel."""

from __future__ import annotations

import sys

import pytest

from pipeline import progress


def test_a_log_gets_one_line_per_stage_and_the_milestones(capsys: pytest.CaptureFixture):
    with progress.stage("decoding images at 64 px") as stage:
        for i in range(1, 101):
            stage.update(f"{i}/100")  # not a terminal: nothing printed
        stage.done("100/100")
    with progress.stage("training"):
        progress.update("network 1/2: uniform, seed 0")
        progress.extra("epoch 3/15")
        progress.milestone("network 1/2: uniform, seed 0, 3 epochs, 1.0 s")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("decoding images at 64 px: 100/100, ") and lines[0].endswith(" s")
    assert lines[1] == "training: network 1/2: uniform, seed 0, 3 epochs, 1.0 s"
    assert lines[2].startswith("training: network 1/2: uniform, seed 0, 3 epochs, 1.0 s, ")


def test_a_terminal_sees_the_line_rewritten(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setattr(progress, "_live", lambda: True)
    with progress.stage("training"):
        progress.update("network 1/2")
        progress.extra("epoch 2/15")
    err = capsys.readouterr().err
    assert "\r\033[Ktraining: network 1/2 epoch 2/15" in err and err.endswith(" s\n")


def test_silent_when_disabled_or_in_a_kernel(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setenv(progress.PROGRESS_ENV, "0")
    with progress.stage("metrics"):
        pass
    monkeypatch.delenv(progress.PROGRESS_ENV)
    monkeypatch.setitem(sys.modules, "ipykernel", sys)
    with progress.stage("metrics"):
        pass
    assert capsys.readouterr().err == ""


def test_the_stage_an_exception_left_is_remembered_until_the_next_run():
    with pytest.raises(KeyboardInterrupt), progress.stage("training"):
        progress.update("network 2/4: uniform, seed 1")
        with progress.stage("decoding images at 64 px"):
            raise KeyboardInterrupt
    assert progress.interrupted_stage() == "decoding images at 64 px"
    with progress.stage("checking the data folder"):
        assert progress.interrupted_stage() == "checking the data folder"
