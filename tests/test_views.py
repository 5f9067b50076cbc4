"""Chapter and slide views: what a reader sees from the study's tables."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from pipeline.fairness.validity import Validity
from pipeline.report import postprocessing, tables


def _worth_auditing(**parts) -> SimpleNamespace:
    """A stand-in study whose model is worth auditing (no weak-model mode): the views show its front."""
    return SimpleNamespace(analyses={"pipeline.fairness.validity.validity": Validity()}, **parts)


def _grid(rows: list[tuple[str, str, float, float, bool]]) -> SimpleNamespace:
    table = pd.DataFrame(rows, columns=["weighting", "postprocessor", "balanced_accuracy", "eo_diff",
                                        "frontier_eo_diff"])
    for m in tables.SHOWN:
        if m not in table:
            table[m] = 0.5 if m != "auc" else np.nan
        table[f"{m}_low"], table[f"{m}_high"] = table[m] - 0.1, table[m] + 0.1
    return _worth_auditing(grid=SimpleNamespace(table=table))


def test_slide_pareto_table_counts_identical_combinations_once():
    ctx = _grid([("uniform", "none", 0.99, 0.06, True), ("jtt", "none", 0.99, 0.06, True),
                 ("reweighing", "none", 0.99, 0.06, True), ("jtt", "equal_opportunity", 0.97, 0.0, True),
                 ("uniform", "equal_opportunity", 0.96, 0.01, False)])
    slide = postprocessing.pareto_table(ctx, compact=True)
    assert len(slide) == 2  # the dominated row is gone, three identical results make one row
    assert slide["Méthode"].iloc[0].startswith(tables.method_label("jtt").split(" (")[0] + " + ")  # short names
    assert slide["Méthode"].iloc[1].endswith("(+2 identiques)")
    assert len(postprocessing.pareto_table(ctx)) == 4  # the report lists every combination with its intervals


def test_metric_names_inside_sentences_keep_their_acronyms():
    assert tables.in_sentence("AUC") == "AUC"
    assert tables.in_sentence("Écart d'égalité des chances (TPR)") == "écart d'égalité des chances (TPR)"


def test_table_columns_share_width_by_content_capped_and_never_below_the_longest_word():
    from pipeline.report.display import TABLE_LINE, WRAP_AT, WRAPPED_WIDTH, _words, markdown_table

    table = pd.DataFrame({"Méthode": ["Parité démographique (ThresholdOptimizer) [@weerts2023fairlearn]", "Aucun"],
                          "Principe": ["Seuils par groupe, tirés au hasard entre deux valeurs, " * 3,
                                       "La décision du modèle telle quelle, au seuil de fonctionnement. " * 2],
                          "Référence": ["[@weerts2023fairlearn]", ""]})
    dashes = [len(c.strip(":")) for c in markdown_table(table).split("\n")[1].strip("|").split("|")]
    # both first columns wrap; the paragraphs get the larger share of the line, capped
    assert WRAP_AT < dashes[1] <= WRAPPED_WIDTH[1] and dashes[0] <= WRAP_AT and dashes[1] > 2 * dashes[0]
    assert dashes[2] == len("[@weerts2023fairlearn]")  # a citation key cannot wrap
    assert dashes[2] * TABLE_LINE >= len("[@weerts2023fairlearn]") * sum(dashes)
    # A wide table of intervals: pandoc shares the page by the dashes; no column's share of a table line falls
    # under its longest word (which would print over the next column's).
    from pipeline.report.french import ci

    # (an interval's halves count as words: the PDF may break it after its « ; », see templates/tables.typ)
    wide = pd.DataFrame({f"Mesure {k}": [ci(0.8, 0.75, 0.85) + " (Δ −0,05 †)", ci(0.7, 0.6, 0.8)] for k in range(8)}
                        | {"Décisions changées": ["7/238", "16/238"]})
    line = markdown_table(wide).split("\n")
    dashes = [len(c.strip(":")) for c in line[1].strip("|").split("|")]
    words = [max(len(w) for cell in column for w in _words(cell))
             for column in zip(*[[c.strip() for c in row.strip("|").split("|")] for row in (line[0], *line[2:])],
                               strict=True)]
    assert all(d * TABLE_LINE >= w * sum(dashes) for d, w in zip(dashes, words, strict=True))
    # A header word counts too: a column of « n.d. » under « Écart EO » is not overprinted in a PDF.
    dashes = [len(c.strip(":")) for c in markdown_table(pd.DataFrame({"Écart EO": ["n.d."]})).split("\n")[1]
              .strip("|").split("|")]
    assert dashes[0] >= len("Écart")


def test_an_empty_pareto_front_says_so_in_the_chapter_and_on_the_slide():
    table = pd.DataFrame({"weighting": ["uniform"], "postprocessor": ["none"], "eo_diff": [float("nan")],
                          "balanced_accuracy": [0.5], "frontier_eo_diff": [False]})
    ctx = _worth_auditing(grid=SimpleNamespace(table=table))
    for compact in (False, True):
        shown = postprocessing.pareto_table(ctx, "eo_diff", compact=compact)
        assert shown["Méthode"].tolist() == ["Front vide : aucune règle non dégénérée dont l'écart est défini"]
    # The chapter's figure says why it is empty, in its plot area (nih-real: EO undefined everywhere).
    spec = json.dumps(postprocessing.pareto_chart(ctx, "eo_diff").to_dict(), ensure_ascii=False)
    assert '"text"' in spec and "non défini pour toutes les combinaisons" in spec


def test_the_slide_front_fits_its_slide_from_the_fairest_to_the_most_accurate():
    # nih-real: seven distinct rules on the front ran 84 px past the appendix slide, beside a column of
    # n.d. (EO undefined everywhere) and an empty « Remarque »
    front = [("uniform", p, 0.50 + k / 100, k / 100, True) for k, p in enumerate(
        ["none", "threshold_global", "equal_opportunity", "reject_option", "calibrated_eq_odds",
         "to_demographic_parity", "to_equalized_odds", "to_tpr_parity"])]
    ctx = _grid(front)
    ctx.grid.table["eo_diff"] = np.nan
    ctx.grid.table["eopp_diff"] = [k / 100 for k in range(len(front))]
    ctx.grid.table["frontier_eopp_diff"] = True
    ctx.grid.table["degenerate"] = False
    ctx.grid.table["degenerate_where"] = ""
    slide = postprocessing.pareto_table(ctx, "eopp_diff", compact=True)
    assert len(slide) == postprocessing.SLIDE_FRONT_ROWS + 1
    names = slide["Méthode"].tolist()
    assert names[0].endswith(" + Aucun") and names[-2].endswith(" + Parité des sensibilités")  # no parenthesis
    assert names[-1].startswith(f"… et {len(front) - postprocessing.SLIDE_FRONT_ROWS} autres")
    assert not [c for c in slide.columns if "EO" in c or c == "Remarque"]  # nothing to read there
    assert len(postprocessing.pareto_table(ctx, "eopp_diff")) == len(front)  # the report keeps every row


def _compared(moves: list[tuple[str, str, float]], groups: tuple[str, ...] = ("F", "M")) -> SimpleNamespace:
    """A grid of the reference and one combination per move (status, reason, treated gap), with the grid's
    verdicts on the signed sensitivity gap (reference gap -0.3)."""
    from pipeline.fairness.inference import Verdict, Verdicts

    n = len(moves)
    table = pd.DataFrame({"weighting": ["uniform"] + ["reweighing"] * n,
                          "postprocessor": ["none"] + [f"rule{k}" for k in range(n)],
                          "balanced_accuracy": 0.7, "eo_diff": 0.2, "worst_group_tpr": 0.6,
                          "randomised_share": [0.0, 0.5] + [0.0] * (n - 1), "coin_flip": False})  # rule0: coins
    table["combination"] = table["weighting"] + " + " + table["postprocessor"]
    table.attrs["groups"] = list(groups)
    verdicts = [Verdict(key=f"exploratory:grid/tpr_signed/sex/reweighing + rule{k} vs uniform + none",
                        family="exploratory:grid", quantity="tpr_signed", attribute="sex",
                        treated=f"reweighing + rule{k}", reference="uniform + none", estimate=after + 0.3,
                        low=after + 0.2, high=after + 0.4, level=0.1, p_value=0.01, p_adjusted=0.02, status=status,
                        direction=1 if status == "established" else 0, reason=reason, mde=None,
                        levelling_down=False, n_seeds=1, reference_value=-0.3, treated_value=after)
                for k, (status, reason, after) in enumerate(moves)]
    config = SimpleNamespace(evaluation=SimpleNamespace(min_per_class=10), training=SimpleNamespace(seeds=[0]),
                             analysis=SimpleNamespace(reference="uniform + none",
                                                      recommendation=SimpleNamespace(max_randomised=0.1)))
    return SimpleNamespace(grid=SimpleNamespace(table=table), config=config, verdicts=Verdicts(verdicts, {}),
                           detail_seed=0)


def test_the_grid_count_reads_the_verdicts_and_counts_untested_and_merged_rules_apart():
    from pipeline.report import analysis

    # nih-real: EO undefined for every rule was read as « 0 reduce it, 55 in the noise »; a merged rule is
    # not a null result
    ctx = _compared([("established", "", -0.1), ("established", "", 0.5), ("not_established", "", -0.25),
                     ("not_testable", "undefined", float("nan")), ("not_testable", "identical", -0.3)])
    text = analysis.grid_count_sentence(ctx)
    assert text.startswith("Sur les 5 combinaisons comparées au modèle de référence")
    assert ("1 le réduit ; 1 l'inverse ; aucune ne le creuse ; 1 ne le change pas de façon notable ; 1 prend "
            "les mêmes décisions qu'une autre règle (fusionnée) ; 1 n'est pas testée") in text
    assert text.endswith("Parmi celles qui le réduisent ou l'inversent, 1 y arrive en partie par le hasard (plus de "
                         "10\u00a0% de décisions tirées au sort, ou malades et sains confondus dans un groupe).")
    three = _compared([("not_testable", "descriptive", -0.1)], groups=("a", "b", "c"))
    assert "décrits, non testés" in analysis.grid_count_sentence(three)


def test_the_appendix_says_when_the_kernels_were_not_recorded_and_lists_each_setting_once():
    from pipeline.report.conclusion import compute_sentence

    def preds(compute: dict | None) -> pd.DataFrame:
        frame = pd.DataFrame({"proba": [0.5]})
        if compute is not None:
            frame.attrs["compute"] = compute
        return frame

    old = SimpleNamespace(seed_predictions={("uniform", 0): preds(None)})
    assert compute_sentence(old).startswith("Noyaux de calcul non enregistrés")
    cpu = {"device": "cpu", "cpu_capability": "AVX512", "precision": "32-true"}
    gpu = {"device": "NVIDIA H100", "cpu_capability": "AVX2", "precision": "bf16-mixed"}
    mixed = SimpleNamespace(seed_predictions={("uniform", 0): preds(cpu), ("uniform", 1): preds(cpu),
                                              ("jtt", 0): preds(gpu)})
    text = compute_sentence(mixed)
    assert text.count("AVX-512") == 1 and "GPU NVIDIA H100, noyaux CPU de torch AVX2, précision bf16-mixed" in text


def _verdict(treated: str, quantity: str, estimate: float, low: float, high: float, status: str, direction: int = 0,
             levelling_down: bool = False, reason: str = "", mde: float | None = 0.04, before: float = float("nan")):
    from pipeline.fairness.inference import Verdict, verdict_key

    p = None if status == "not_testable" else (0.01 if status == "established" else 0.4)
    return Verdict(key=verdict_key("primary", quantity, "sex", treated, "uniform + none"), family="primary",
                   quantity=quantity, attribute="sex", treated=treated, reference="uniform + none", estimate=estimate,
                   low=low, high=high, level=0.05, p_value=p, p_adjusted=p, status=status, direction=direction,
                   reason=reason, mde=None if status == "not_testable" else mde, levelling_down=levelling_down,
                   n_seeds=5, variance={"bootstrap": 1e-4, "between_seeds": 2e-4}, per_seed=(estimate,) * 5,
                   reference_value=before, treated_value=before + estimate)


def _primary_ctx(verdicts: list):
    from pipeline.config import StudyConfig
    from pipeline.fairness.inference import Verdicts

    meta = {"alpha": 0.05, "seeds": [0, 1, 2, 3, 4], "n_resamples": 200, "n_patients": 180, "folds": 5,
            "groups": ["F", "M"], "reference": "uniform + none", "n_tests": 4,
            "primary": ["group_balanced + none", "uniform + equal_opportunity"]}
    return SimpleNamespace(verdicts=Verdicts(verdicts, meta), config=StudyConfig())


def test_primary_sentences_take_their_verdict_from_the_verdict_not_from_the_interval():
    from pipeline.report import slides, verdicts

    # An interval that excludes 0 but a family that did not establish it (Holm): the text says « non établi »
    # with the change the study could detect; an established fall says « baisse »; levelling down is named.
    ctx = _primary_ctx([
        _verdict("group_balanced + none", "balanced_accuracy", 0.03, 0.005, 0.055, "not_established"),
        _verdict("group_balanced + none", "tpr_signed", 0.12, 0.05, 0.19, "established", +1, levelling_down=True,
                 before=-0.2),
        _verdict("uniform + equal_opportunity", "balanced_accuracy", -0.04, -0.07, -0.01, "established", -1),
        _verdict("uniform + equal_opportunity", "tpr_signed", float("nan"), float("nan"), float("nan"),
                 "not_testable", reason="undefined")])
    pre = verdicts.primary_answer(ctx, "preprocessing")
    assert "Équilibrage des groupes + Aucun" in pre and "Égalité des chances" not in pre
    assert "changement non établi" in pre and "au moins 0,040" in pre
    # a signed gap's established change is read against the gap itself: −20 points brought to −8 is a reduction
    assert "réduction de l'écart établie" in pre and "l'écart passe de −20,0 à −8,0\u00a0points" in pre
    assert "nivellement par le bas" in pre
    post = verdicts.primary_answer(ctx, "postprocessing")
    assert "baisse établie" in post and "non testable : mesure non définie" in post
    table = verdicts.primary_table(ctx)
    assert table["Verdict"].tolist() == ["non établi", "★ réduction de l'écart établie (nivellement par le bas)",
                                         "★ baisse établie", "non testable"]
    assert table["Mesure"].tolist()[1] == "Écart de sensibilité F\u00a0−\u00a0M"
    assert slides.title_primary(ctx) == "Questions fixées à l'avance : 2 effets établis sur 3"
    assert "2 effets établis sur 3 hypothèses testables" in verdicts.primary_summary(ctx)


def test_the_protocol_states_the_seeds_and_how_much_of_the_variance_they_carry():
    from pipeline.report import verdicts

    ctx = _primary_ctx([_verdict("group_balanced + none", "balanced_accuracy", 0.01, -0.02, 0.04, "not_established")])
    text = verdicts.protocol_sentence(ctx)
    assert "5 graines d'entraînement (0, 1, 2, 3, 4)" in text and "200 rééchantillonnages des 180 patients" in text
    assert "la part des entraînements va de 29\u00a0% à 29\u00a0%" in text  # (2e-4 / 5) / (1e-4 + 2e-4 / 5)


def test_a_signed_gap_that_overshoots_zero_is_an_inversion_and_one_that_grows_is_a_widening():
    from pipeline.report import verdicts

    inverted = _verdict("a + none", "tpr_signed", 0.30, 0.2, 0.4, "established", +1, before=-0.1)
    widened = _verdict("a + none", "tpr_signed", -0.15, -0.25, -0.05, "established", -1, before=-0.1)
    assert verdicts.status_text(inverted) == "★ inversion de l'écart établie"
    assert verdicts.status_text(widened) == "★ creusement de l'écart établi"


def test_a_combination_worse_than_doing_nothing_never_beats_both_its_parts():
    """« fait mieux que ses composantes » was printed for a rule whose EO gap (0.23) was worse than the
    reference's (0.19): beating its two parts is not enough, it must beat doing nothing too."""
    rows = [("uniform", "none", 0.80, 0.19, False), ("jtt", "none", 0.80, 0.30, False),
            ("uniform", "equal_opportunity", 0.80, 0.25, False), ("jtt", "equal_opportunity", 0.81, 0.23, False),
            ("reweighing", "none", 0.80, 0.20, False), ("reweighing", "equal_opportunity", 0.80, 0.10, False)]
    ctx = _grid(rows)
    ctx.grid.table["degenerate"] = False
    both = tables.beats_both(ctx, "eo_diff")
    assert len(both) == 1 and both[0].startswith(tables.method_label("reweighing"))
    ctx.grid.table.loc[5, "degenerate"] = True  # one class for a group: never named as a success
    assert tables.beats_both(ctx, "eo_diff") == []


def test_the_mark_on_a_two_group_gap_column_is_the_test_of_the_signed_difference_it_shows():
    ctx = _grid([("uniform", "none", 0.8, 0.2, True), ("uniform", "equal_opportunity", 0.8, 0.05, True)])
    t = ctx.grid.table
    t.attrs["groups"] = ["F", "M"]
    for m in tables.SHOWN:
        t[f"{m}_mark"] = ""  # the marks written from the verdicts (fairness.exploratory.annotate_wide)
    t["tpr_signed"], t["tpr_signed_low"], t["tpr_signed_high"] = [-0.3, 0.0], [-0.4, -0.1], [-0.2, 0.1]
    t["tpr_signed_mark"] = ["", tables.EXPLORATORY_MARK]
    rows = tables.grid_rows(ctx)
    column = tables.gap_header("eopp_diff", ["F", "M"])
    assert rows[column].tolist()[1].endswith(tables.EXPLORATORY_MARK)  # eopp_diff's own mark is empty
    assert not rows[column].tolist()[0].endswith(tables.EXPLORATORY_MARK)


def test_a_weak_model_gets_no_pareto_front_in_the_table_or_the_text():
    from pipeline.fairness.validity import WeakReason

    ctx = _grid([("uniform", "none", 0.55, 0.06, True), ("jtt", "none", 0.56, 0.04, True)])
    ctx.analyses["pipeline.fairness.validity.validity"] = Validity(
        weak=(WeakReason("chance", {"auc": 0.5, "low": 0.4, "high": 0.6, "n_seeds": 5}),))
    for compact in (False, True):
        shown = postprocessing.pareto_table(ctx, "eo_diff", compact=compact)
        assert shown["Méthode"].str.startswith("Aucun front de Pareto : le modèle est trop faible").tolist() == [True]


def test_slide_legends_drop_the_parenthesis_and_keep_every_name_whole():
    """At 20 px a legend beside a slide chart cut « Reweighing (Kamiran & Calde… » (issue 25): on a slide the
    parenthesis (a paper, a library) goes and the name itself is printed whole."""
    import re

    import altair as alt
    import vl_convert

    from pipeline.fairness.weighting import WEIGHTINGS
    from pipeline.report.slides import for_slide

    labels = [w.label_fr for w in WEIGHTINGS.values()]
    frame = pd.DataFrame({"x": range(len(labels)), "y": range(len(labels)), "method": labels})
    chart = alt.Chart(frame).mark_point().encode(x="x:Q", y="y:Q", color=alt.Color("method:N", title="Méthode"))
    svg = vl_convert.vegalite_to_svg(for_slide(chart).to_dict())
    texts = set(re.findall(r">([^<>]+)</text>", svg))
    assert any("(" in label for label in labels)
    for label in labels:
        assert label.split(" (")[0].replace("'", "&#39;") in {t.replace("'", "&#39;") for t in texts}, label
    assert not any("…" in t or "(" in t for t in texts), texts
    # Rule names on a y axis (the primary questions' chart) likewise: each parenthesis goes, the name stays whole.
    rules = ["Uniforme (référence) + Égalité des erreurs (ThresholdOptimizer)", "Équilibrage des groupes + Aucun"]
    axis = alt.Chart(pd.DataFrame({"x": [0, 1], "rule": rules})).mark_point().encode(
        x="x:Q", y=alt.Y("rule:N", axis=alt.Axis(labelLimit=320)))
    texts = set(re.findall(r">([^<>]+)</text>", vl_convert.vegalite_to_svg(for_slide(axis).to_dict())))
    assert {"Uniforme + Égalité des erreurs", "Équilibrage des groupes + Aucun"} <= texts, texts
    methods = alt.Chart(pd.DataFrame({"x": [0], "m": ["Parité démographique (ThresholdOptimizer)"]})).mark_point(
        ).encode(x="x:Q", y=alt.Y("m:N", axis=alt.Axis(labelLimit=320)))
    assert "Parité démographique" in set(re.findall(r">([^<>]+)</text>",
                                                    vl_convert.vegalite_to_svg(for_slide(methods).to_dict())))
    pairs = alt.Chart(pd.DataFrame({"x": [0], "attribute": ["Sexe (Homme − Femme)"]})).mark_point().encode(
        x="x:Q", y=alt.Y("attribute:N", axis=alt.Axis(labelLimit=320)))  # not a rule: its parenthesis stays
    assert "Sexe (Homme − Femme)" in set(re.findall(r">([^<>]+)</text>",
                                                    vl_convert.vegalite_to_svg(for_slide(pairs).to_dict())))


def test_the_weighting_notation_defines_the_symbols_of_the_formulas_shown():
    """Each symbol of a weighting's formula (K, β, λ_up, ERM…) is defined under the methods table, and only
    the symbols of the methods the study compares (issue 25: undefined in the body)."""
    import re

    from pipeline.fairness.weighting import WEIGHTINGS
    from pipeline.report.preprocessing import weighting_notation

    def notation(*methods: str) -> str:
        return weighting_notation(SimpleNamespace(predictions=dict.fromkeys(methods)))

    assert notation("uniform") == ""
    every = notation(*WEIGHTINGS)
    for name, method in WEIGHTINGS.items():
        symbols = set(re.findall(r"\\(?:beta|lambda_\{up\}|mathbf\{g\})|n_\{g,y\}|n_[gy]\b|K(?=\\,)|P\(|ERM",
                                 method.formula))
        for symbol in symbols:
            assert symbol.rstrip("(") in notation(name), (name, symbol)
            assert symbol.rstrip("(") in every
    assert "\\beta" in notation("effective_number") and "\\beta" not in notation("reweighing")
    assert "ERM" in notation("jtt") and "= 5" in notation("jtt")


def test_rows_that_read_the_same_in_every_cell_are_shown_once_and_named():
    from pipeline.report.tables import merge_identical, shown_twins

    rows = [{"Méthode": "Uniforme", "BA": "0,84 [0,79 ; 0,90]", "AUC": "0,93"},
            {"Méthode": "Classes", "BA": "0,84 [0,79 ; 0,90]", "AUC": "0,93"},
            {"Méthode": "Groupes", "BA": "0,84 [0,79 ; 0,89]", "AUC": "0,93"}]
    names = ["uniform", "class_balanced", "group_balanced"]
    same = {"uniform", "class_balanced", "group_balanced"}  # every one decides as the reference
    assert shown_twins(rows, names, same) == ["", "uniform", ""]
    merged = merge_identical(rows, names, shown_twins(rows, names, same), str.upper, None, "mêmes valeurs")
    assert [r["Méthode"] for r in merged] == ["Uniforme (mêmes valeurs : CLASS_BALANCED)", "Groupes"]
    assert shown_twins(rows, names, {"uniform"}) == ["", "", ""]  # other decisions: never hidden
