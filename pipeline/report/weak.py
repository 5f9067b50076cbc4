"""Weak-model mode: when the model is too weak for its fairness gaps to be read, the texts say so first.

Whether a study is in this mode, and why, is decided once (`fairness.validity.Validity.weak`); this module
only phrases it: the report's summary, the tops of chapters 3 and 4, slide 2, and what can still be said
(the data's biases, the smallest effect the study could detect, the next step).
"""

from __future__ import annotations

from pipeline.fairness.validity import WEAK_MIN_IMAGES, WeakReason, validity
from pipeline.report import french as fr
from pipeline.report.french import NBSP, ci
from pipeline.study import StudyContext

TITLE = "Modèle trop faible : ses écarts entre groupes ne se lisent pas comme des biais"


def is_weak(ctx: StudyContext) -> bool:
    return validity(ctx).weak_model


def _class_counts(r: WeakReason) -> tuple[int, int]:
    counts = {int(k): int(v) for k, v in r.values["counts"].items()}
    return counts.get(1, 0), counts.get(0, 0)


def _runs_phrase(v: dict) -> str:
    """« En moyenne sur 5 entraînements » (or « Sur un entraînement »): what an image AUC is taken over."""
    n = int(v.get("n_seeds", 1))
    return "Sur un entraînement" if n == 1 else f"En moyenne sur {n} entraînements"


def reason_sentence(r: WeakReason) -> str:
    """One French sentence, with its numbers, for a reason of weak-model mode."""
    v = r.values
    if r.code == "chance":
        runs = "un entraînement" if v["n_seeds"] == 1 else f"moyenne sur {v['n_seeds']} entraînements"
        return (f"**Pas mieux que le hasard.** L'AUC du modèle de référence est {ci(v['auc'], v['low'], v['high'])} "
                f"({runs}) : son intervalle contient 0,5.")
    if r.code == "not_beyond_attributes":
        attrs = fr.join([fr.attribute_label(a).lower() for a in v.get("attributes_used", [])])
        # the image's AUC without its interval: the reference's level (summary, first reason) gives it, on the
        # questions' resamples; this comparison's own resamples would print a second, slightly different one
        return (f"**Pas mieux que les métadonnées.** {_runs_phrase(v)}, AUC de l'image {fr.num(v['image'])} "
                f"contre {ci(v['attributes'], v['attributes_low'], v['attributes_high'])} pour un modèle qui ne "
                f"connaît que {attrs} (différence appariée {ci(v['diff'], v['diff_low'], v['diff_high'])}).")
    if r.code == "inner_below_chance":
        seeds = " ; ".join(fr.num(a) for a in v["per_seed"])
        where = fr.threshold_source(v)
        return (f"**Sous le hasard là où le seuil est choisi.** Sur {where}, l'AUC vaut "
                f"{fr.num(v['auc'])} en moyenne ({seeds} selon la graine) : le seuil de décision y est choisi sur "
                "des scores sans signal.")
    if r.code == "few_images":
        sick, healthy = _class_counts(r)
        fewest, word = (healthy, "sains") if healthy <= sick else (sick, "malades")
        return (f"**Peu d'images d'évaluation.** {fr.count(healthy, 'images')} «{NBSP}sain{NBSP}» et "
                f"{fr.integer(sick)} «{NBSP}malade{NBSP}» (moins de {v['minimum']} dans une classe) : une image de "
                f"plus ou de moins déplace d'environ {fr.points(1 / max(fewest, 1), 0).lstrip('+')} un taux "
                f"calculé sur les {word} ; chaque taux est donné avec ses effectifs (k/n).")
    raise ValueError(f"unknown weak-model reason {r.code!r}")


def short_reasons(ctx: StudyContext) -> str:
    """« AUC 0,48 [0,39 ; 0,57], 21 images `sain` en évaluation, pas mieux que les métadonnées » (slides)."""
    parts = []
    for r in validity(ctx).weak:
        v = r.values
        if r.code == "chance":
            parts.append(f"AUC {ci(v['auc'], v['low'], v['high'])}, compatible avec le hasard")
        elif r.code == "not_beyond_attributes":
            parts.append("pas mieux que les seules métadonnées")
        elif r.code == "inner_below_chance":
            parts.append(f"AUC {fr.num(v['auc'])} sur {fr.threshold_source(v)}")
        elif r.code == "few_images":
            sick, healthy = _class_counts(r)
            parts.append(f"{fr.count(min(sick, healthy), 'images')} «{NBSP}{'sain' if healthy <= sick else 'malade'}"
                         f"{NBSP}» en évaluation")
    return fr.join(parts)


def _data_biases(ctx: StudyContext) -> str:
    """The data's established prevalence gaps (they do not depend on the model)."""
    vs = getattr(ctx, "verdicts", None)
    found = [v for v in (vs.family("exploratory:data:prevalence") if vs else []) if v.established]
    if not found:
        return ("les déséquilibres d'effectifs des données, qui ne dépendent pas du modèle (aucun écart de "
                "prévalence notable entre groupes, chapitre 2).")
    gaps = [f"{fr.group_label(v.attribute, v.treated)} face à {fr.group_label(v.attribute, v.reference)} "
            f"{fr.points(v.estimate, 1)}" for v in found]
    n = len(found)
    return (f"les biais des données, qui ne dépendent pas du modèle ({n} écart{'s' * (n > 1)} de prévalence "
            f"notable{'s' * (n > 1)}, exploratoire, chapitre 2 : {f'{NBSP}; '.join(gaps)}).")


def _power(ctx: StudyContext) -> str:
    """The smallest change the primary family could detect, per measure (80 % power)."""
    from pipeline.report.verdicts import detectable_span, quantity_label

    vs = getattr(ctx, "verdicts", None)
    if not vs:
        return ""
    found: dict[str, list] = {}
    for v in vs.family("primary"):
        if v.mde is not None and v.reason != "identical":
            found.setdefault(v.quantity, []).append(v)
    if not found:
        return ""
    parts = [f"{detectable_span(verdicts, lead='')} d'{quantity_label(quantity, vs.meta['groups'])}"
             for quantity, verdicts in found.items()]
    return ("ce que l'étude pouvait détecter (puissance 80 %) : des changements d'au moins " + " et ".join(parts)
            + ", selon la question principale ; un effet plus petit passe inaperçu.")


def still_readable(ctx: StudyContext) -> list[str]:
    """What a weak model leaves readable: the data's biases and the smallest effect the study could detect."""
    return [s for s in (_data_biases(ctx), _power(ctx)) if s]


def next_step(ctx: StudyContext, brief: bool = False) -> str:
    """The next step this run calls for, from its reasons (`brief`: in a report whose first page gives the how)."""
    codes = {r.code for r in validity(ctx).weak}
    if brief:
        steps = ["des caractéristiques pré-entraînées sur des radiographies"] if codes & {
            "chance", "not_beyond_attributes", "inner_below_chance"} else []
        steps += [f"au moins {WEAK_MIN_IMAGES} images de chaque classe en évaluation"] if "few_images" in codes else []
        return ("**Étape suivante :** " + fr.join(steps) + " (détail en tête du rapport).") if steps else ""
    steps = []
    if codes & {"chance", "not_beyond_attributes", "inner_below_chance"}:
        steps.append("partir de caractéristiques pré-entraînées sur des radiographies, plutôt qu'apprises sur "
                     "quelques centaines d'images (avec Internet : `pip install torchxrayvision`, puis "
                     "`training.backbone: auto` dans `study.yml`)")
    if "few_images" in codes:
        steps.append(f"évaluer sur au moins {WEAK_MIN_IMAGES} images de chaque classe (un sous-ensemble plus "
                     "grand, ou moins déséquilibré)")
    return "**Étape suivante :** " + fr.join(steps) + "." if steps else ""


def banner(ctx: StudyContext, where: str) -> str:
    """The weak-model warning callout ("" for a model worth auditing). `where`: "summary" (every reason and
    what can still be said), "preprocessing" or "postprocessing" (what it means for the chapter)."""
    v = validity(ctx)
    if not v.weak_model:
        return ""
    reasons = "\n".join(f"- {reason_sentence(r)}" for r in v.weak)
    why = f"**Pourquoi :** {short_reasons(ctx)} (détail en tête du rapport)."
    if where == "summary":
        still = " ; ".join(s.rstrip(".") for s in still_readable(ctx))
        body = (f"{reasons}\n\nSes écarts entre groupes, et les effets des corrections, peuvent n'être que du bruit : "
                f"ce rapport ne désigne ni meilleure règle ni pire sous-groupe, et donne les effectifs de chaque taux. "
                f"**Ce qui reste lisible :** {still}.\n\n{next_step(ctx)}")
    elif where == "preprocessing":
        body = (f"{why} Une différence entre pondérations ne se lit pas ici comme un effet : non établie, elle "
                "n'est pas une absence d'effet ; établie, elle reste à confirmer sur un modèle qui fonctionne. Aucune "
                "pondération n'est mise en avant.")
    elif where == "postprocessing":
        body = (f"{why} Sur des scores sans signal établi, les « gains » d'un post-traitement, qui ne fait que "
                "déplacer des seuils, peuvent n'être que du bruit : aucune règle n'est recommandée, et les groupes où "
                "une règle ne sépare plus malades et sains ne sont pas signalés un à un (la référence ne les sépare "
                "déjà pas).")
    else:
        raise ValueError(f"unknown place {where!r} for the weak-model warning")
    return f"\n::: {{.callout-warning}}\n## {TITLE}\n\n{body}\n:::\n"


def slide_line(ctx: StudyContext) -> str:
    """Slide 2's warning, in one line (empty for a model worth auditing)."""
    if not is_weak(ctx):
        return ""
    return (f"[Modèle trop faible : {short_reasons(ctx)}. Les écarts qui suivent ne se lisent pas comme des biais "
            "du modèle ; aucune règle n'est désignée.]"
            '{style="display: block; color: #B3261E; font-weight: bold; font-size: 0.85em; margin-bottom: 0.3em"}')
