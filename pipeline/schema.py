"""Column names of the users' metadata and of the canonical dataset frame."""

from __future__ import annotations

# Official NIH ChestX-ray14 columns the study needs (others are kept as they are).
IMAGE = "Image Index"
FINDINGS = "Finding Labels"
FOLLOW_UP = "Follow-up #"
PATIENT_ID = "Patient ID"
AGE_RAW = "Patient Age"
SEX_RAW = "Patient Gender"
VIEW_RAW = "View Position"
REQUIRED_COLUMNS = (IMAGE, FINDINGS, PATIENT_ID, AGE_RAW, SEX_RAW, VIEW_RAW)
NO_FINDING = "No Finding"

# Folder names of the two classes, as the course's data has them.
POSITIVE_DIR = "malade"
NEGATIVE_DIR = "sain"
SPLITS = ("train", "valid")

# Derived columns of the canonical frame (see docs/ARCHITECTURE.md).
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

# Plausible ranges used by validation.
AGE_MIN, AGE_MAX = 0, 110
SEX_CODES = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F", "H": "M", "HOMME": "M", "FEMME": "F"}
VIEW_CODES = ("PA", "AP")

# Human-readable French names of attributes and groups, for tables and figures.
ATTRIBUTE_LABELS_FR = {SEX: "Sexe", AGE_BAND: "Tranche d'âge", VIEW: "Incidence", LABEL: "Classe"}
GROUP_LABELS_FR = {"M": "Homme", "F": "Femme", "PA": "PA", "AP": "AP", 1: "malade", 0: "sain"}
