import numpy as np
import pandas as pd

from pipeline.fairness.degenerate import one_class


def test_every_decision_malade_is_degenerate_overall_and_in_each_group():
    sex = pd.Series(["F"] * 40 + ["M"] * 60)
    found = one_class(np.ones(100), sex)
    assert found.degenerate and found.overall
    assert found.where == {"all": "malade", "F": "malade", "M": "malade"}


def test_a_rule_that_tells_images_apart_is_not_degenerate():
    rng = np.random.default_rng(0)
    found = one_class(rng.random(200) < 0.4, pd.Series(rng.choice(["F", "M"], 200)))
    assert not found.degenerate and 0.3 < found.positive_share < 0.5


def test_one_group_all_sain_is_named_and_tiny_groups_are_not_judged():
    decisions = np.r_[np.zeros(30), (np.arange(60) % 2), np.zeros(5)]
    groups = pd.Series(["AP"] * 30 + ["PA"] * 60 + ["autre"] * 5)
    found = one_class(decisions, groups)
    assert found.where == {"AP": "sain"} and not found.overall


def test_expected_decisions_of_a_randomised_rule_count_by_their_mean():
    assert one_class(np.full(50, 0.97)).where == {"all": "malade"}
    assert not one_class(np.full(50, 0.5)).degenerate
