"""The exploratory families as verdicts: what a table tests, what it merges, what it leaves untested.

Generated comparisons (simulated patients, known effects): a rule repeating another's decisions is tested
once and merged; a degenerate rule is not tested; the EO gap and the worst group are described, never
marked; a pre-registered comparison is not tested again; the table's marks are written from the verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_levels import simulate

from pipeline.data import schema as S
from pipeline.fairness import exploratory as X
from pipeline.fairness import metrics as M
from pipeline.fairness.inference import Verdict, Verdicts, verdict_key


def _methods(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    base = simulate(rng, n_patients=400)
    better = np.clip(base["p"] + np.where((base[S.LABEL] == 1) & (base[S.SEX] == "F"), 0.35, 0.0), 0, 1)
    return {"uniform": base,
            "fairer": base.assign(**{M.DECISION: (rng.random(len(base)) < better).astype(float)}),
            "same_as_fairer": None,  # filled below: the very same decisions
            "noise": base.assign(**{M.DECISION: (rng.random(len(base)) < base["p"]).astype(float)}),
            "all_sick": base.assign(**{M.DECISION: 1.0})}


def _family(primary: Verdicts | None = None, twin_of: str = "fairer"):
    methods = _methods(np.random.default_rng(0))
    methods["same_as_fairer"] = methods[twin_of].copy()  # listed before `noise`: ahead of its twin
    table = M.compare_methods(methods, S.SEX, "uniform", n_boot=200, seed=0)
    decisions = {m: p[M.DECISION].to_numpy() for m, p in methods.items()}
    degenerate = {"all_sick": "tous : malade"}
    found = X.table_verdicts(table, "exploratory:test", "uniform", decisions, degenerate, primary,
                             rule=lambda m: f"{m} + none")
    return table, found


def _by(found, treated: str, quantity: str) -> Verdict:
    return next(v for v in found if v.treated == f"{treated} + none" and v.quantity == quantity)


def test_a_table_tests_what_it_shows_and_describes_the_rest():
    _, found = _family()
    fairer = _by(found, "fairer", "tpr_signed")
    assert fairer.status == "established" and fairer.direction == 1  # women's sensitivity raised by 0.35
    assert _by(found, "noise", "tpr_signed").status == "not_established"
    for quantity in ("eo_diff", "worst_group_bacc"):  # a maximum, a worst group: described, no test
        v = _by(found, "fairer", quantity)
        assert v.status == "descriptive" and v.p_adjusted is None and X.mark(v) == ""
    assert {v.quantity for v in found} >= {"balanced_accuracy", "auc", "tpr_signed", "sr_signed"}


def test_identical_rules_are_tested_once_and_degenerate_rules_not_at_all():
    table, found = _family()
    twin = _by(found, "same_as_fairer", "tpr_signed")
    assert twin.reason == "identical: fairer + none" and twin.status == _by(found, "fairer", "tpr_signed").status
    assert _by(found, "all_sick", "tpr_signed").status == "not_testable"
    assert _by(found, "all_sick", "tpr_signed").reason.startswith("degenerate")
    tested = [v for v in found if v.reason == "" and v.status in ("established", "not_established")]
    assert {v.treated for v in tested} == {"fairer + none", "noise + none"}  # the family BH corrects
    # the correction over the smaller family: the same p-values as Benjamini-Hochberg over the tested cells only
    rows = table.set_index(["method", "metric"])
    p = np.array([rows.loc[(v.treated.removesuffix(" + none"), v.quantity), "p"] for v in tested])
    assert np.allclose([v.p_adjusted for v in tested], M.adjust(p))
    annotated = X.annotate(table, found, rule=lambda m: f"{m} + none")
    assert set(annotated.loc[annotated["method"] == "same_as_fairer", "identical_to"]) == {"fairer + none"}
    assert annotated.attrs["family_size"] == len(tested)


def test_a_pre_registered_comparison_is_answered_by_its_family_and_marked_with_its_star():
    pre = Verdict(key=verdict_key("primary", "tpr_signed", S.SEX, "noise + none", "uniform + none"),
                  family="primary", quantity="tpr_signed", attribute=S.SEX, treated="noise + none",
                  reference="uniform + none", estimate=0.1, low=0.05, high=0.15, level=0.05, p_value=0.001,
                  p_adjusted=0.004, status="established", direction=1, reason="", mde=None, levelling_down=False,
                  n_seeds=5)
    table, found = _family(Verdicts([pre]))
    v = _by(found, "noise", "tpr_signed")
    assert v.reason.startswith("primary") and v.status == "established" and X.mark(v) == X.PRIMARY_MARK
    assert _by(found, "noise", "balanced_accuracy").reason == ""  # not pre-registered: tested here
    annotated = X.annotate(table, found, rule=lambda m: f"{m} + none")
    cell = annotated[(annotated["method"] == "noise") & (annotated["metric"] == "tpr_signed")].iloc[0]
    assert cell["mark"] == X.PRIMARY_MARK and not cell["significant"]  # the star, not an exploratory cross
    fairer = annotated[(annotated["method"] == "fairer") & (annotated["metric"] == "tpr_signed")].iloc[0]
    assert fairer["mark"] == X.EXPLORATORY_MARK and fairer["significant"]
    # the primary gap of another attribute is another comparison: tested in its own table
    other = Verdicts([Verdict(**{**pre.__dict__, "attribute": "view",
                                 "key": pre.key.replace("/sex/", "/view/")})])
    _, found = _family(other)
    assert _by(found, "noise", "tpr_signed").reason == ""


def test_a_twin_of_a_pre_registered_rule_reads_its_answer_whole():
    """A rule whose decisions repeat a pre-registered one's shows that answer: its status with the estimate and
    the all-seeds interval it stands on, never « established » beside its own one-seed interval; and the
    pre-registered rule keeps its answer even when its twin is listed first."""
    pre = Verdict(key=verdict_key("primary", "tpr_signed", S.SEX, "noise + none", "uniform + none"),
                  family="primary", quantity="tpr_signed", attribute=S.SEX, treated="noise + none",
                  reference="uniform + none", estimate=0.1, low=0.05, high=0.15, level=0.05, p_value=0.001,
                  p_adjusted=0.004, status="established", direction=1, reason="", mde=None, levelling_down=False,
                  n_seeds=5, per_seed=(0.08, 0.09, 0.1, 0.11, 0.12))
    _, found = _family(Verdicts([pre]), twin_of="noise")
    twin = _by(found, "same_as_fairer", "tpr_signed")
    assert twin.reason == "identical: noise + none" and twin.key.endswith("same_as_fairer + none vs uniform + none")
    assert (twin.status, twin.estimate, twin.low, twin.high, twin.n_seeds) == ("established", 0.1, 0.05, 0.15, 5)
    assert _by(found, "noise", "tpr_signed").reason.startswith("primary")


def test_a_table_of_single_quantities_is_corrected_within_the_table():
    """Amplifications (or probes): a row whose interval just excludes 0 is notable alone, not among 40 null
    rows; a large effect stays notable; a row without an interval is not testable."""
    alone = X.interval_verdicts("exploratory:amplification", "bias_amplification",
                                [("sex", "uniform", 0.05, 0.001, 0.099)])
    assert alone[0].status == "established" and alone[0].direction == 1
    rng = np.random.default_rng(0)
    null = [("view", f"m{i}", float(e), float(e) - 0.1, float(e) + 0.1) for i, e in enumerate(rng.normal(0, 0.02, 40))]
    rows = [("sex", "uniform", 0.05, 0.001, 0.099), ("age_band", "uniform", 0.3, 0.2, 0.4),
            ("view", "none", 0.1, float("nan"), float("nan")), *null]
    found = {v.treated + v.attribute: v for v in X.interval_verdicts("exploratory:amplification",
                                                                      "bias_amplification", rows)}
    assert found["uniformsex"].status == "not_established"  # p 0.047 among 42 tests
    assert found["uniformage_band"].status == "established"
    assert found["noneview"].status == "not_testable"
    assert sum(v.established for v in found.values()) <= 2
