"""The planted-effects measurement (python -m pipeline.planted): what counts as shown on every run."""

from __future__ import annotations

import pytest

from pipeline import planted


def _run(values: dict[str, tuple[float, float, float]]) -> dict:
    return {"kernels": "AVX2", "seed": 0, "auc": 0.9, "effects": values}


def test_an_effect_is_shown_on_every_run_only_if_each_interval_excludes_0_in_the_planted_direction():
    names = list(planted.EFFECTS)
    under, amplified = names[0], names[1]  # planted directions: negative, positive
    assert planted.EFFECTS[under][1] == -1 and planted.EFFECTS[amplified][1] == +1
    both = {n: (0.1, 0.05, 0.15) for n in names} | {under: (-0.2, -0.3, -0.1)}
    one_flips = {n: (0.1, 0.05, 0.15) for n in names} | {under: (-0.2, -0.3, -0.1), amplified: (0.02, -0.1, 0.14)}
    wrong_way = {n: (0.1, 0.05, 0.15) for n in names} | {under: (0.2, 0.1, 0.3)}
    rows = {r["effect"]: r for r in planted.summary([_run(both), _run(one_flips), _run(wrong_way)])}
    assert (rows[under]["shown"], rows[under]["runs"], rows[under]["verdict"]) == (2, 3, "marginal")
    assert (rows[amplified]["shown"], rows[amplified]["verdict"]) == (2, "marginal")
    assert rows[amplified]["min"] == pytest.approx(0.02) and rows[amplified]["max"] == pytest.approx(0.1)
    steady = {r["effect"]: r for r in planted.summary([_run(both), _run(both)])}
    assert steady[amplified]["verdict"] == "every run" and steady[under]["shown"] == 2
