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


def _patients(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"patient": np.repeat(np.arange(n // 2).astype(str), 2),
                          "sex": np.repeat(rng.choice(["F", "M"], n // 2), 2),
                          "view": rng.choice(["AP", "PA"], n)})
    frame["label"] = (rng.random(n) < 0.5).astype(int)
    return frame


def test_a_group_decided_by_a_coin_is_named_and_a_group_told_apart_is_not():
    """Calibrated equalized odds mixing the men at a rate near 1 decides them by a Bernoulli coin: TPR ≈ FPR."""
    from pipeline.fairness.degenerate import coin_flips

    frame = _patients()
    rng = np.random.default_rng(1)
    women = (frame["sex"] == "F").to_numpy()
    decisions = np.where(women, np.where(frame["label"] == 1, 0.9, 0.1), 0.6)  # men: P(malade) 0.6 whatever y
    flips = coin_flips(decisions, frame, ["sex", "view"], min_per_class=10)
    assert set(flips) == {"sex=M"} and abs(flips["sex=M"][0]) < 1e-9 and flips["sex=M"][1] < 0 < flips["sex=M"][2]
    realised = (rng.random(len(frame)) < decisions).astype(float)  # drawn decisions: the same verdict
    assert "sex=M" in coin_flips(realised, frame, ["sex"]) and "sex=F" not in coin_flips(realised, frame, ["sex"])
    assert coin_flips(decisions, frame, ["sex"], skip={"sex=M": "malade"}) == {}
    assert coin_flips(decisions, frame.iloc[:30], ["sex"], min_per_class=10) == {}  # too few to judge


def test_one_class_is_looked_for_on_every_attribute():
    from pipeline.fairness.degenerate import one_class_everywhere

    frame = _patients(seed=2)
    decisions = np.where(frame["view"] == "AP", 1.0, frame["label"].to_numpy(float))  # every AP image malade
    assert one_class(decisions, frame["sex"]).where == {}  # the grid looked at sex only
    assert one_class_everywhere(decisions, frame, ["sex", "view"]) == {"view=AP": "malade"}
    assert one_class_everywhere(np.ones(len(frame)), frame, ["sex", "view"]) == {"all": "malade"}


def test_the_realised_gap_of_a_fair_coin_shrinks_with_the_evaluation_set():
    """The noise floor the chapter quotes: a rule deciding by a fair coin has a realised EO gap well above 0
    on a small evaluation set (about 0.1 with 100 images per group and class) and near 0 on a large one."""
    from types import SimpleNamespace

    from pipeline.report.postprocessing import realised_noise_floor

    def floor(per_cell: int) -> float:
        frame = pd.DataFrame({"sex": np.repeat(["F", "M", "F", "M"], per_cell),
                              "label": np.repeat([1, 1, 0, 0], per_cell)})
        grid = SimpleNamespace(decisions={("uniform", "none"): frame}, baseline=("uniform", "none"), attribute="sex")
        return realised_noise_floor(SimpleNamespace(grid=grid))

    # E|X − Y| / n for X, Y ~ Bin(n, 1/2) is about sqrt(1 / (pi n)); the max of two such gaps is larger
    assert np.sqrt(1 / (np.pi * 100)) < floor(100) < 0.15
    assert floor(2500) < 0.025


def test_chapter_4_names_calibrated_eo_an_adaptation_with_what_it_equalises_and_explains_the_two_tpr_rules():
    from types import SimpleNamespace

    from pipeline.report.postprocessing import randomised_rules_text

    frame = pd.DataFrame({"sex": np.repeat(["F", "M", "F", "M"], 30), "label": np.repeat([1, 1, 0, 0], 30)})
    folds = [{"alpha": {"F": 0.0, "M": 0.98}, "gfnr": {"F": 0.41, "M": 0.29}, "base_rate": {"F": 0.5, "M": 0.5}},
             {"alpha": {"F": 0.0, "M": 1.0}, "gfnr": {"F": 0.43, "M": 0.31}, "base_rate": {"F": 0.5, "M": 0.5}}]
    table = pd.DataFrame({"combination": ["uniform + none"], "eo_diff": [0.2]})
    grid = SimpleNamespace(decisions={("uniform", "none"): frame}, baseline=("uniform", "none"), attribute="sex",
                           params={("uniform", "calibrated_eq_odds"): folds}, table=table)
    methods = ("none", "equal_opportunity", "to_tpr_parity", "calibrated_eq_odds")
    ctx = SimpleNamespace(grid=grid, config=SimpleNamespace(postprocessing=SimpleNamespace(methods=methods)))
    text = randomised_rules_text(ctx)
    assert "**adaptation**" in text and "Homme : α 0,99, taux généralisé de faux négatifs avant mélange 0,30" in text
    assert "visent le même critère" in text and "plancher" not in text and "pile ou face aurait ici" in text
    ctx.config.postprocessing.methods = ("none", "to_tpr_parity")
    assert "adaptation" not in randomised_rules_text(ctx) and "visent le même critère" not in randomised_rules_text(ctx)
