"""Column names of the users' metadata and of the canonical dataset frame."""

from __future__ import annotations

IMAGE = "Image Index"


FINDINGS = "Finding Labels"


FOLLOW_UP = "Follow-up #"


PATIENT_ID = "Patient ID"


AGE_RAW = "Patient Age"


SEX_RAW = "Patient Gender"


VIEW_RAW = "View Position"


REQUIRED_COLUMNS = (IMAGE, FINDINGS, PATIENT_ID, AGE_RAW, SEX_RAW, VIEW_RAW)


NIH_COLUMNS = (IMAGE, FINDINGS, FOLLOW_UP, PATIENT_ID, AGE_RAW, SEX_RAW, VIEW_RAW)


NIH_IMAGE_COLUMNS = ("OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]")  # size, not a group


NO_FINDING = "No Finding"


POSITIVE_DIR = "malade"


NEGATIVE_DIR = "sain"


SPLITS = ("train", "valid")


PATH = "path"


SPLIT = "split"


LABEL = "label"


PATIENT = "patient"


AGE = "age"


SEX = "sex"


VIEW = "view"


AGE_BAND = "age_band"


N_FINDINGS = "n_findings"


PROBA = "proba"
TUNING = "tuning_proba"  # predictions: the score the operating threshold was chosen on, from a model that never
# fitted that row (the inner validation's, or every train row's out-of-fold score); NaN on the other rows


AGE_MIN, AGE_MAX = 0, 110


SEX_CODES = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F", "H": "M", "HOMME": "M", "FEMME": "F"}


VIEW_CODES = ("PA", "AP")


ATTRIBUTE_LABELS_FR = {SEX: "Sexe", AGE_BAND: "Tranche d'âge", VIEW: "Incidence", LABEL: "Classe"}


GROUP_LABELS_FR = {"M": "Homme", "F": "Femme", "PA": "PA", "AP": "AP", 1: "malade", 0: "sain"}
