"""What the study does about each problem the validator (`data.folder.check_dataset`) reports, in French."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import StudyConfig
from pipeline.data.folder import CheckReport, Issue


@dataclass(frozen=True)
class QualityRule:
    problem: str  # French description of the problem
    unit: str  # what the count counts
    action: str  # what the study does about it


QUALITY_RULES: dict[str, QualityRule] = {
    "missing-data-dir": QualityRule("Dossier de données introuvable", "dossier",
                                    "Arrêt : l'étude ne peut pas tourner."),
    "missing-metadata": QualityRule("metadata.csv absent", "fichier", "Arrêt : l'étude ne peut pas tourner."),
    "metadata-unreadable": QualityRule("metadata.csv illisible", "fichier", "Arrêt : l'étude ne peut pas tourner."),
    "metadata-columns": QualityRule("Colonnes NIH manquantes dans metadata.csv", "fichier",
                                    "Arrêt ; correspondance possible via column_mapping."),
    "metadata-encoding": QualityRule("metadata.csv n'est pas en UTF-8", "fichier",
                                     "Lu en Latin-1 ; aucune donnée perdue."),
    "missing-folder": QualityRule("Dossier de classe manquant", "dossier", "Arrêt : l'étude ne peut pas tourner."),
    "no-images": QualityRule("Aucune image PNG", "dossier", "Arrêt : l'étude ne peut pas tourner."),
    "missing-class": QualityRule("Une partition ne contient qu'une classe", "partition",
                                 "Arrêt : ni apprentissage ni évaluation possibles."),
    "stray-files": QualityRule("Fichiers non PNG dans les dossiers d'images", "fichiers", "Ignorés."),
    "duplicate-rows": QualityRule("Lignes en double dans metadata.csv", "lignes",
                                  "La première ligne de chaque image est gardée."),
    "image-without-row": QualityRule("Images sans ligne de métadonnées", "images",
                                     "Exclues (attributs inconnus)."),
    "row-without-image": QualityRule("Lignes de métadonnées sans image", "lignes",
                                     "Ignorées (hors de notre sous-ensemble)."),
    "unreadable-image": QualityRule("Images illisibles", "images", "Exclues."),
    "bad-age": QualityRule("Âge manquant ou invraisemblable", "images",
                           "Gardées ; exclues des seules analyses par tranche d'âge."),
    "bad-sex": QualityRule("Sexe inconnu", "images", "Gardées ; exclues des seules analyses par sexe."),
    "bad-view": QualityRule("Incidence autre que PA/AP", "images",
                            "Gardées ; exclues des seules analyses par incidence."),
    "label-disagreement": QualityRule("Dossier (malade/sain) en désaccord avec « Finding Labels »", "images",
                                      "Le label du dossier est utilisé, comme dans le cours."),
    "wrong-data-folder": QualityRule("Dossier indiqué au-dessus ou en dessous du dossier de données", "dossier",
                                     "Arrêt ; le message donne le bon chemin."),
    "no-split-folders": QualityRule("Ni train/ ni valid/ dans le dossier indiqué", "dossier",
                                    "Arrêt : l'étude ne peut pas tourner."),
    "metadata-workbook": QualityRule("metadata.csv est un classeur Excel (xlsx)", "fichier",
                                     "Lu comme classeur ; à exporter en CSV pour le script du cours."),
    "folder-name": QualityRule("Dossiers de partition ou de classe nommés autrement", "dossiers",
                               "Lus sous le nom du cours (train, valid, malade, sain)."),
    "extra-folder": QualityRule("Dossiers en trop (un autre joue déjà leur rôle)", "dossiers", "Ignorés."),
    "nested-images": QualityRule("Images un dossier plus bas que prévu", "dossiers", "Lues."),
    "image-in-two-folders": QualityRule("Même image dans deux partitions ou deux classes", "fichiers",
                                        "Toutes les copies sont exclues (label ou partition ambigus)."),
    "name-case": QualityRule("Nom de fichier différent de « Image Index » par la casse seulement", "images",
                             "Appariées sans tenir compte de la casse."),
    "patient-leakage": QualityRule("Patients présents en apprentissage et en validation", "patients",
                                   "Leurs images de validation sont exclues de l'évaluation."),
}


LEVEL_FR = {"error": "bloquant", "warning": "avertissement"}


def quality_table(check: CheckReport | None, config: StudyConfig | None = None) -> pd.DataFrame:
    """One row per validator issue: level, code, problem, count, what the study does (French)."""
    issues: list[Issue] = list(check.issues) if check is not None else []
    rows = []
    for issue in issues:
        rule = QUALITY_RULES.get(issue.code, QualityRule(issue.message, "éléments", issue.fix))
        action = rule.action
        if issue.code == "patient-leakage" and config and not config.evaluation.exclude_leaking_patients:
            action = "Gardées (evaluation.exclude_leaking_patients = false) : résultats optimistes."
        rows.append({"level": issue.level, "code": issue.code, "problem": rule.problem,
                     "count": len(issue.files) if issue.files else np.nan, "unit": rule.unit,
                     "action": action})
    return pd.DataFrame(rows, columns=["level", "code", "problem", "count", "unit", "action"])
