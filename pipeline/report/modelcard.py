"""The appendix's model card (Mitchell et al. 2019), reporting checklist (TRIPOD+AI 2024, CLAIM 2024) and
glossary, generated from the run: every number is read from the study, every pointer names the section
or table of this report that answers the item."""

from __future__ import annotations

import pandas as pd

from pipeline.data import schema as S
from pipeline.report import french as fr
from pipeline.report import weak
from pipeline.report.verdicts import level_ci, primary_summary, recommendation_summary, seeds_phrase
from pipeline.study import StudyContext


def _model_details(ctx: StudyContext) -> str:
    t = ctx.config.training
    choice = getattr(ctx, "backbone_choice", None)
    backbone = choice.backbone if choice is not None else t.backbone
    source = ("caractéristiques figées d'un réseau pré-entraîné, dernière couche apprise"
              if t.feature_source == "pretrained" else "réseau entraîné sur nos seules images")
    seeds = ", ".join(str(s) for s in t.seeds)
    return (f"Classifieur binaire « malade » / « sain » de radiographies thoraciques : `{backbone}` ({source}), "
            f"images {t.image_size} × {t.image_size} px, graines {seeds} ; détails au chapitre 3 "
            "(@sec-preprocessing) et en annexe E.")


def _data(ctx: StudyContext) -> str:
    ev = ctx.evaluation
    source = "" if ctx.config.is_demo else " (NIH ChestX-ray14 : un seul hôpital, étiquettes tirées des comptes rendus)"
    prevalence = fr.pct(float(ev[S.LABEL].mean())) if len(ev) else "n.d."
    return (f"{fr.upper_first(ctx.describe_data())}, patients disjoints{source} ; prévalence de « malade » en "
            f"évaluation : {prevalence} ; chapitre 2 (@sec-data).")


def _metrics(ctx: StudyContext) -> str:
    auc, bacc = level_ci(ctx, "auc"), level_ci(ctx, "balanced_accuracy")
    level = (f"AUC {auc}, exactitude équilibrée {bacc} ({seeds_phrase(ctx)}, intervalles à 95 % par bootstrap sur "
             "les patients)" if auc and bacc else "niveau du modèle non calculé")
    where = fr.threshold_source(ctx.train_info.get("uniform", {}))
    return (f"{level} ; seuil choisi sur {where}, jamais sur les patients d'évaluation. Critères "
            "d'équité : @tbl-definitions.")


def _caveats(ctx: StudyContext) -> str:
    items = []
    if weak.is_weak(ctx):
        why = weak.short_reasons(ctx)
        items.append(f"modèle trop faible pour que ses écarts d'équité soient interprétables ({why})")
    if ctx.config.is_demo:
        items.append("données synthétiques : leurs effets sont plantés, rien ne se transpose à des patients")
    else:
        items += ["étiquettes bruitées (extraites automatiquement des comptes rendus)",
                  "un seul hôpital : rien ne dit que les écarts se transposent ailleurs"]
    items.append("attributs sensibles limités à ceux des métadonnées (sexe, âge, incidence)")
    return fr.upper_first(" ; ".join(items)) + " ; limites complètes au chapitre 5 (@sec-analysis)."


def model_card(ctx: StudyContext) -> pd.DataFrame:
    """Mitchell et al.'s sections, each filled from the run."""
    fairness = " ".join(filter(None, [primary_summary(ctx, short=True), recommendation_summary(ctx, short=True)]))
    rows = [
        ("Détails du modèle", _model_details(ctx)),
        ("Usage prévu", "Étude pédagogique et audit d'équité d'un classifieur ; **pas un outil de diagnostic** : "
                        "aucune décision clinique ne doit en dépendre."),
        ("Données", _data(ctx)),
        ("Métriques", _metrics(ctx)),
        ("Résultats désagrégés", (f"{fairness} Par groupe : @tbl-group-performance ; questions principales : "
                                  "@tbl-primary.").strip()),
        ("Mises en garde", _caveats(ctx)),
    ]
    return pd.DataFrame(rows, columns=["Rubrique", "Contenu"])


# TRIPOD+AI (Collins et al. 2024) items that apply to this study, and CLAIM 2024 (Tejani et al.) topics,
# each with the place in this report that answers it.
CHECKLIST = (
    ("TRIPOD+AI 3c", "Inégalités de santé connues entre groupes", "@sec-intro, @sec-data-bivariate"),
    ("TRIPOD+AI 5a", "Sources des données, développement et évaluation", "@sec-data-preparation"),
    ("TRIPOD+AI 7", "Préparation et contrôle qualité des données, par groupe", "@sec-data-preparation, "
                                                                             "[annexe A](#sec-appendix-data)"),
    ("TRIPOD+AI 12a", "Usage des données : partition, taille d'échantillon", "@sec-data-preparation, "
                                                                           "@sec-preprocessing"),
    ("TRIPOD+AI 12e", "Mesures de performance et leur justification", "@sec-definitions"),
    ("TRIPOD+AI 13", "Déséquilibre des classes : méthode et raison", "@sec-preprocessing"),
    ("TRIPOD+AI 14", "Approches d'équité et leur justification", "@sec-preprocessing, @sec-postprocessing"),
    ("TRIPOD+AI 15", "Sortie du modèle, seuil et son choix", "@sec-preprocessing, @sec-postprocessing"),
    ("TRIPOD+AI 20b", "Caractéristiques des participants, effectifs et événements", "@sec-data-univariate"),
    ("TRIPOD+AI 23a", "Performance avec intervalles, y compris par sous-groupe", "@tbl-primary, "
                                                                               "@tbl-group-performance"),
    ("TRIPOD+AI 25", "Interprétation globale, équité comprise", "@sec-analysis, @sec-conclusion"),
    ("TRIPOD+AI 26", "Limites : échantillon, surapprentissage, généralisation", "@sec-analysis"),
    ("CLAIM 2024", "Partition des données disjointe au niveau du patient", "@sec-data-preparation"),
    ("CLAIM 2024", "Incertitude : intervalles de confiance, significativité",
     "@sec-primary-answers, [annexe E](#sec-appendix-reproducibility)"),
    ("CLAIM 2024", "Explicabilité (cartes d'attribution)", "[annexe D](#sec-appendix-model)"),
    ("CLAIM 2024", "Performance par sous-groupe", "@tbl-group-performance, @tbl-subgroups"),
)


def checklist() -> pd.DataFrame:
    return pd.DataFrame(CHECKLIST, columns=["Item", "Exigence", "Où dans ce rapport"])


# One French name per notion, used by every text and figure of the report; the English term once.
GLOSSARY = (
    ("Exactitude équilibrée (BA)", "balanced accuracy", r"$\tfrac{1}{2}(\mathrm{TPR} + 1 - \mathrm{FPR})$"),
    ("Sensibilité (TPR)", "true positive rate, recall", r"$P(\hat{Y}=1 \mid Y=1)$"),
    ("BA pire groupe", "worst-group balanced accuracy", r"$\min_a \mathrm{BA}_a$"),
    ("Sous-diagnostic (FNR)", "false negative rate", r"$1 - \mathrm{TPR}$"),
    ("Taux de faux positifs (FPR)", "false positive rate", r"$P(\hat{Y}=1 \mid Y=0)$"),
    ("Parité démographique", "demographic parity", r"$\max_a \mathrm{SR}_a - \min_a \mathrm{SR}_a$"),
    ("Égalité des chances", "equal opportunity", r"$\max_a \mathrm{TPR}_a - \min_a \mathrm{TPR}_a$"),
    ("Égalité des erreurs", "equalized odds", r"$\max(\Delta \mathrm{TPR}, \Delta \mathrm{FPR})$"),
    ("Amplification d'un biais", "bias amplification", "écart du modèle − écart des données"),
    ("Pondération (pré-traitement)", "reweighing, sample weights", "poids $w_i$ dans la perte"),
    ("Post-traitement", "post-processing", "seuils ou règle de décision par groupe"),
    ("Patients d'évaluation", "held-out test patients", "dossier `valid/`, jamais vus à l'apprentissage"),
    ("Validation interne", "inner validation split", "patients d'apprentissage mis de côté (seuils, arrêt)"),
    ("Seuil de fonctionnement", "operating threshold", "seuil de l'exactitude équilibrée maximale sur des "
                                                        "patients d'apprentissage que le modèle n'a pas ajustés"),
    ("Scores hors-pli", "out-of-fold scores", "score de chaque patient par un modèle ajusté sans son pli"),
    ("Ajustement croisé", "cross-fitting", "chaque bloc de patients décidé par la règle ajustée sur les autres"),
    ("BiasAmp A→T", "bias amplification, attribute to task", "amplification du lien attribut → décision "
                                                          "(Wang et Russakovsky 2021)"),
    ("Établi (★)", "significant, pre-registered", "question principale : test significatif au niveau 5 % "
                                                   "après correction de Holm"),
    ("Notable (†)", "significant, exploratory", "test significatif après correction de Benjamini-Hochberg "
                                                "(10 %) : une piste, pas une preuve"),
)


def glossary(ctx: StudyContext) -> pd.DataFrame:
    """The terms the report uses: the inner validation, or out-of-fold scores on frozen features, not both."""
    unused = "Validation interne" if ctx.train_info.get("uniform", {}).get("threshold_folds") else "Scores hors-pli"
    return pd.DataFrame([row for row in GLOSSARY if row[0] != unused], columns=["Terme", "En anglais", "Définition"])
