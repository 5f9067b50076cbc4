"""What each part of the study's protocol gets, checked before any work.

The study splits patients several ways: the training patients into the backbone's, the heads' and the
inner validation's (`model.training.train_roles`, per training seed; on frozen features, into the
threshold's out-of-fold patient folds instead of an inner validation), the evaluation patients into the
post-processing folds (`fairness.postprocess.patient_folds`). (The recommendation's two halves are
stratified on the label, so an evaluation that passes here gives each half both classes when it has two
patients of each.)
A part that holds one class only makes a method fail deep inside a library (scikit-learn's « needs
samples of at least 2 classes ») or, worse, silently return nonsense (a threshold chosen without a
single sick patient). `protocol_sizes` counts, for every part and every seed, the patients and images
of each class with the very functions the study uses; `check_sizes` stops with one message per part
that cannot work (which part, what it has, what it needs, the fix) and returns the caveats of parts
that can run but thinly (the report prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import ConfigError, StudyConfig
from pipeline.data import schema as S

CLASS_NAMES = {0: "sain", 1: "malade"}
THIN_PATIENTS = 5  # fewer patients of a class than this in a part: it runs, with a caveat


@dataclass(frozen=True)
class PartSize:
    part: str  # "backbone", "fit", "inner_val", "threshold_fold", "evaluation", "fold"
    seed: int | None  # the training seed whose split it is (None: the same for every seed)
    patients: dict[int, int]  # class -> patients with at least one image of that class
    images: dict[int, int]  # class -> images
    fix: str  # what the user can change when it is too small
    label_en: str  # « the heads' patients »
    label_fr: str  # « les patients de la dernière couche »

    def smallest(self) -> tuple[int, int]:
        """(class, patients) of the class with the fewest patients."""
        label = min((0, 1), key=lambda c: self.patients.get(c, 0))
        return label, self.patients.get(label, 0)

    def describe(self) -> str:
        seed = f" (training seed {self.seed})" if self.seed is not None else ""
        counts = ", ".join(f"{_n(self.patients.get(c, 0), 'patient')} / {_n(self.images.get(c, 0), 'image')} "
                           f"{CLASS_NAMES[c]}" for c in (1, 0))
        return f"{self.label_en}{seed}: {counts}"


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


class ProtocolSizeError(ConfigError):
    """A part of the protocol would hold one class only: the study cannot run as configured."""


def _size(rows: pd.DataFrame, part: str, seed: int | None, fix: str, label_en: str, label_fr: str) -> PartSize:
    labels = rows[S.LABEL].to_numpy(int)
    patients = {c: int(rows.loc[labels == c, S.PATIENT].nunique()) for c in (0, 1)}
    images = {c: int((labels == c).sum()) for c in (0, 1)}
    return PartSize(part, seed, patients, images, fix, label_en, label_fr)


def _training_fix(config: StudyConfig) -> str:
    t = config.training
    fixes = []
    if t.subsample_fraction < 1:
        fixes.append("set training.subsample_fraction: 1.0 (keep every patient)")
    if t.mode == "last_layer" and t.feature_source != "pretrained":
        fixes.append("set training.mode: full (one network per weighting on all training patients, no "
                     "backbone/head split) or training.feature_source: pretrained (heads on all training patients)")
    fixes.append("use a larger subset with more images of that class in train/")
    return "; or ".join(fixes)


def protocol_sizes(frame: pd.DataFrame, evaluation: pd.DataFrame, config: StudyConfig) -> list[PartSize]:
    """Every part of the protocol, for every training seed, with its patients and images of each class."""
    from pipeline.fairness.postprocess import patient_folds
    from pipeline.model.training import protocol_roles, threshold_folds, threshold_from_folds

    t, pp = config.training, config.postprocessing
    data = frame[frame[S.SPLIT].isin(["train", "valid"])].reset_index(drop=True)
    names = {"backbone": ("the backbone's training patients", "les patients d'apprentissage du réseau"),
             "fit": (("the heads' patients", "les patients de la dernière couche") if t.mode == "last_layer"
                     else ("the training patients", "les patients d'apprentissage")),
             "inner_val": ("the inner validation (early stopping and operating threshold)",
                           "la validation interne (arrêt précoce et seuil)")}
    out = []
    fix = _training_fix(config)
    for seed in t.seeds:
        roles = protocol_roles(data, t, seed)
        for role, (en, fr) in names.items():
            if role in roles:
                out.append(_size(data[roles == role], role, seed, fix, en, fr))
        if threshold_from_folds(t):  # each out-of-fold score comes from a head fitted without its fold
            fit = data[roles == "fit"]
            fold = threshold_folds(fit, seed)
            k = len(np.unique(fold))
            out.extend(_size(fit[fold != f], "threshold_fold", seed, fix,
                             f"the heads fitted without training fold {f + 1} of {k} (out-of-fold scores)",
                             f"les dernières couches ajustées sans le pli d'apprentissage {f + 1} sur {k}")
                       for f in np.unique(fold))
    out.append(_size(evaluation, "evaluation", None,
                     "add images of that class to valid/ (patients not also in train/)",
                     "the evaluation patients (valid/)", "les patients d'évaluation"))
    if len(evaluation) and pp.attribute in evaluation:
        fold = patient_folds(evaluation, pp.folds, pp.seed, pp.attribute)
        k = len(np.unique(fold))
        for f in np.unique(fold):
            out.append(_size(evaluation[fold != f], "fold", None, f"set postprocessing.folds to fewer than "
                             f"{pp.folds} (at least 2)", f"the post-processing rules fitted without fold {f + 1} "
                             f"of {k}", f"les règles de post-traitement ajustées sans le pli {f + 1} sur {k}"))
    return out


def check_sizes(frame: pd.DataFrame, evaluation: pd.DataFrame, config: StudyConfig) -> list[PartSize]:
    """Stop (exit 2) when a part of the protocol holds one class only; else the thin parts (fewer than
    THIN_PATIENTS patients of a class), the thinnest seed or fold of each part."""
    sizes = protocol_sizes(frame, evaluation, config)
    empty = [s for s in sizes if s.smallest()[1] == 0]
    if empty:
        seen, fixes, lines = set(), set(), []
        for s in empty:
            if s.part in seen:
                continue  # one line per part, whatever the seed or fold
            seen.add(s.part)
            label, _ = s.smallest()
            fix = "as above" if s.fix in fixes else s.fix
            fixes.add(s.fix)
            lines.append(f"{s.describe()}; it needs at least 1 patient {CLASS_NAMES[label]} "
                         f"(both classes) to be fitted or scored. Fix: {fix}.")
        raise ProtocolSizeError("\n".join(["the data folder is too small for the protocol in study.yml:", *lines]))
    thinnest: dict[str, PartSize] = {}
    for s in sizes:
        if s.smallest()[1] < THIN_PATIENTS and (s.part not in thinnest
                                                or s.smallest()[1] < thinnest[s.part].smallest()[1]):
            thinnest[s.part] = s
    return list(thinnest.values())


def caveat_line(s: PartSize) -> str:
    """The console's line for a thin part."""
    label = s.smallest()[0]
    return (f"caveat: {s.describe()}; fewer than {THIN_PATIENTS} patients {CLASS_NAMES[label]}: its results rest "
            "on few patients")
