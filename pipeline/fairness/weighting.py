"""Weighting registry (pre-processing): one positive weight per training image, mean 1.

Adding a method is one decorated function `fn(train, attributes, **context) -> np.ndarray`.
`attributes[0]` is the main sensitive attribute (`study.yml > weighting > attribute`): the
single-attribute methods use it; the intersectional one uses every attribute of
`context["all_attributes"]` (default: `attributes`).

Missing sensitive values: a row whose group is unknown cannot be placed in a cell, so it gets the
weight the method gives when the group is ignored, and the frequencies are computed on the rows
whose group is known. For `group_balanced` and `reweighing` that weight is 1 (reweighing with a
single group is uniform); for `group_class_balanced` it is the label-only (class-balanced) weight.

Class weights come from scikit-learn (`compute_sample_weight`). The group-aware schemes are
written here: no well-kept library computes them as per-sample weights for an arbitrary training
loop (AIF360's `Reweighing` installs, but pulls matplotlib, has had no release since 2024, and
wants the protected attribute in the frame's index; it is five lines of pandas, and AIF360 0.6.1's
`aif360.sklearn.preprocessing.Reweighing` gives the same weights, up to the mean-1 scaling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cache import atomic_path
from pipeline.data import schema as S
from pipeline.data.folder import canonical_headers, read_table

JTT_UPWEIGHT = 5.0


JTT_THRESHOLD = 0.5


@dataclass(frozen=True)
class WeightingMethod:
    name: str
    fn: Callable[..., np.ndarray]
    label_fr: str
    formula: str  # LaTeX, shown in the report
    reference: str  # bibtex key, "" for the baseline
    needs: tuple[str, ...] = ()  # context keys the method requires (e.g. "train_proba")
    # The weight depends on the class only: once each weighting re-picks its balanced-accuracy threshold,
    # it mostly moves the threshold, so few decisions change (by construction, not a finding).
    class_only: bool = False


WEIGHTINGS: dict[str, WeightingMethod] = {}


def register(name: str, label_fr: str, formula: str, reference: str = "",
             needs: tuple[str, ...] = (), class_only: bool = False) -> Callable:
    """Decorator adding a weighting function to `WEIGHTINGS` under `name`."""
    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        WEIGHTINGS[name] = WeightingMethod(name, fn, label_fr, formula, reference, tuple(needs), class_only)
        return fn

    return wrap


def group_keys(train: pd.DataFrame, attributes: list[str]) -> pd.Series:
    """One key per row for the intersection of `attributes` ("F|60+|AP"); NaN if any is missing."""
    missing = [a for a in attributes if a not in train.columns]
    if not attributes or missing:
        raise ValueError(f"sensitive attribute(s) {missing or attributes} not in the training frame; "
                         f"columns are {list(train.columns)}")
    parts = train[list(attributes)].astype(object)
    keys = parts.where(parts.notna(), "").astype(str).agg("|".join, axis=1)
    return keys.where(parts.notna().all(axis=1))


def _labels(train: pd.DataFrame) -> pd.Series:
    y = train[S.LABEL]
    if y.isna().any():
        raise ValueError("the training frame has rows without a label")
    return y.astype(int)


def _inverse_frequency(keys: pd.Series, fallback: np.ndarray | None = None) -> np.ndarray:
    """w = n / (K n_k) over the rows with a known key; unknown keys get `fallback` (default 1)."""
    counts = keys.map(keys.value_counts()).to_numpy(dtype=float)
    known = keys.notna().to_numpy()
    w = np.ones(len(keys)) if fallback is None else np.asarray(fallback, dtype=float).copy()
    if known.any():
        w[known] = known.sum() / (keys.nunique() * counts[known])
    return w


def kamiran_calders(y: pd.Series, keys: pd.Series) -> np.ndarray:
    """w(g, y) = P(g) P(y) / P(g, y) = n_g n_y / (n n_{g,y}) on rows with a known group, else 1."""
    known = keys.notna().to_numpy()
    w = np.ones(len(y))
    if not known.any():
        return w
    cells = pd.DataFrame({"g": keys.to_numpy()[known], "y": y.to_numpy()[known]})
    n_g = cells.groupby("g")["y"].transform("size").to_numpy(float)
    n_y = cells.groupby("y")["g"].transform("size").to_numpy(float)
    n_gy = cells.groupby(["g", "y"])["y"].transform("size").to_numpy(float)
    w[known] = n_g * n_y / (len(cells) * n_gy)
    return w


def balanced_threshold(y: np.ndarray, proba: np.ndarray) -> float:
    """Threshold maximising balanced accuracy (Youden's J) of scores `proba` on labels `y`."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, proba)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


@register("uniform", "Uniforme (référence)", r"w_i = 1")
def uniform(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Every image counts the same: the baseline (empirical risk minimisation).

    Formula: w_i = 1. Reference: none.
    """
    return np.ones(len(train))


@register("class_balanced", "Équilibrage des classes", r"w(y) = \frac{n}{2\, n_y}",
          "pedregosa2011sklearn", class_only=True)
def class_balanced(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Inverse label frequency, so both classes carry the same total weight.

    Formula: w(y) = n / (C n_y), C = number of classes (scikit-learn's "balanced").
    Reference: King & Zeng 2001 (rare-event weighting), as implemented in scikit-learn
    (Pedregosa et al. 2011).
    """
    from sklearn.utils.class_weight import compute_sample_weight  # here: the report reads the registry only

    return compute_sample_weight("balanced", _labels(train).to_numpy())


@register("group_balanced", "Équilibrage des groupes", r"w(g) = \frac{n}{K\, n_g}", "larrazabal2020")
def group_balanced(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Inverse frequency of the sensitive group, so every group carries the same total weight.

    Formula: w(g) = n / (K n_g), K = number of groups of attributes[0]; unknown group: w = 1.
    Reference: Larrazabal et al. 2020 train on sex-balanced sets; these weights give the same balance
    without dropping images. Idrissi et al. 2022's group weighting ("RWG") weights the cells group x
    class: that is `group_class_balanced`.
    """
    return _inverse_frequency(group_keys(train, attributes[:1]))


@register("group_class_balanced", "Équilibrage groupe × classe", r"w(g, y) = \frac{n}{K\, n_{g,y}}",
          "idrissi2022")
def group_class_balanced(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Inverse frequency of each (group, label) cell: every cell carries the same total weight.

    Formula: w(g, y) = n / (K n_{g,y}), K = number of non-empty cells; unknown group: the
    class-balanced weight n / (2 n_y). Reference: Idrissi et al. 2022, "Simple data balancing achieves
    competitive worst-group-accuracy" (reweighting groups, "RWG", their groups being attribute x class).
    """
    keys = group_keys(train, attributes[:1])
    y = _labels(train)
    cells = (keys + "|" + y.astype(str)).where(keys.notna())
    from sklearn.utils.class_weight import compute_sample_weight

    return _inverse_frequency(cells, fallback=compute_sample_weight("balanced", y.to_numpy()))


@register("reweighing", "Reweighing (Kamiran & Calders)", r"w(g, y) = \frac{P(g)\, P(y)}{P(g, y)}",
          "kamiran2012")
def reweighing(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Makes label and group (attributes[0]) independent in the weighted training set.

    Formula: w(g, y) = P(g) P(y) / P(g, y); then the weighted P(y | g) = P(y) for every group.
    Unknown group: w = 1. Reference: Kamiran & Calders 2012, "Data preprocessing techniques for
    classification without discrimination", KAIS 33(1).
    """
    return kamiran_calders(_labels(train), group_keys(train, attributes[:1]))


@register("reweighing_intersectional", "Reweighing intersectionnel",
          r"w(\mathbf{g}, y) = \frac{P(\mathbf{g})\, P(y)}{P(\mathbf{g}, y)}", "kamiran2012")
def reweighing_intersectional(train: pd.DataFrame, attributes: list[str],
                              all_attributes: list[str] | None = None, **_: object) -> np.ndarray:
    """Reweighing on the intersection of all sensitive attributes (e.g. sex x age band x view).

    Formula: w(g, y) = P(g) P(y) / P(g, y) with g the tuple of all attributes; a row with any
    attribute missing gets w = 1. Reference: Kamiran & Calders 2012 (applied to intersections).
    """
    return kamiran_calders(_labels(train), group_keys(train, list(all_attributes or attributes)))


@register("effective_number", "Nombre effectif d'exemples (Cui et al.)",
          r"w(y) \propto \frac{1 - \beta}{1 - \beta^{n_y}}", "cui2019", class_only=True)
def effective_number(train: pd.DataFrame, attributes: list[str], beta: float | None = None,
                     **_: object) -> np.ndarray:
    """Class weights by the effective number of samples E_n = (1 - beta^n) / (1 - beta).

    Formula: w(y) proportional to (1 - beta) / (1 - beta^{n_y}). Default beta = (n - 1) / n with
    n the number of training images (Cui et al.'s "volume" N set to n): the weights then sit between
    uniform (beta -> 0) and inverse frequency (beta -> 1) whatever the dataset size, whereas a fixed
    0.999 gives nearly inverse frequency on 1,000 images and nearly uniform weights on 100,000.
    Reference: Cui et al. 2019, "Class-balanced loss based on effective number of samples", CVPR.
    """
    y = _labels(train)
    beta = 1 - 1 / len(y) if beta is None else float(beta)
    if not 0 <= beta < 1:
        raise ValueError(f"effective_number needs 0 <= beta < 1, got {beta}")
    per_class = {c: (1 - beta) / (1 - beta ** n) for c, n in y.value_counts().items()}
    return y.map(per_class).to_numpy(dtype=float)


@register("jtt", "Just Train Twice (erreurs surpondérées)",
          r"w_i = \lambda_{up} \text{ si } \hat{y}^{ERM}_i \neq y_i \text{, sinon } w_i = 1", "liu2021jtt",
          needs=("train_proba",))
def jtt(train: pd.DataFrame, attributes: list[str], train_proba: np.ndarray | None = None,
        jtt_upweight: float = JTT_UPWEIGHT, jtt_threshold: float | str = JTT_THRESHOLD,
        **_: object) -> np.ndarray:
    """Up-weight the training images that a first, unweighted (ERM) model misclassifies.

    Formula: w_i = lambda_up if 1[p_i >= t] != y_i else 1, with p_i the ERM model's probability on
    train image i (`train_proba`, same row order as `train`), t = 0.5, a given threshold (the study
    passes the ERM model's operating threshold) or "balanced" (the threshold maximising the ERM's
    balanced accuracy on the train rows). lambda_up = 5 by default: the paper
    tunes it (6 to 100) on validation data with group labels, which would spend our evaluation
    patients; a moderate value keeps the second model from fitting the errors alone.
    Reference: Liu et al. 2021, "Just Train Twice: improving group robustness without training
    group information", ICML.
    """
    if train_proba is None:
        raise ValueError("jtt needs `train_proba`: the first (unweighted) model's probabilities on the "
                         "train images")
    proba = np.asarray(train_proba, dtype=float)
    if proba.shape != (len(train),) or not np.all(np.isfinite(proba)):
        raise ValueError(f"jtt: train_proba must hold {len(train)} finite probabilities, one per train row")
    y = _labels(train).to_numpy()
    t = balanced_threshold(y, proba) if jtt_threshold == "balanced" else float(jtt_threshold)
    wrong = (proba >= t).astype(int) != y
    return np.where(wrong, float(jtt_upweight), 1.0)


def compute_weights(method: str, train: pd.DataFrame, attributes: list[str], **context: object) -> pd.Series:
    """Weights of `method` for the train rows: validated (finite, > 0) and normalised to mean 1."""
    if method not in WEIGHTINGS:
        raise ValueError(f"unknown weighting '{method}'; choose among {sorted(WEIGHTINGS)} "
                         "(study.yml > weighting > methods)")
    if len(train) == 0:
        raise ValueError("no training rows to weight")
    w = np.asarray(WEIGHTINGS[method].fn(train, list(attributes), **context), dtype=float)
    if w.shape != (len(train),) or not np.all(np.isfinite(w)) or (w <= 0).any():
        raise ValueError(f"weighting '{method}' produced invalid weights (need one finite, positive "
                         f"weight per train row; got shape {w.shape})")
    w = w / w.mean()
    return pd.Series(w, index=train.index, name=method)


WEIGHTED_PARTS = ("fit", "inner_val")  # the rows a model or head is fitted on; those it is stopped and tuned on


def weights_by_part(method: str, train: pd.DataFrame, roles: np.ndarray, attributes: list[str],
                    **context: object) -> pd.Series:
    """Weights of `method` computed on the rows of each part of the protocol separately.

    A weighting is a property of the rows a model is fitted on: Reweighing computed on every train row
    and then applied to a quarter of them no longer equalises the prevalence there. So the "fit" rows
    (the network's, or the heads') get the weights computed on them, the "inner_val" rows (early
    stopping) theirs, and the rows of an unweighted backbone 1. `roles` gives each train row's part
    (`training.protocol_roles`); `context["train_proba"]` (JTT) is aligned with `train` and cut likewise.
    Each part's weights have mean 1.
    """
    roles = np.asarray(roles)
    if roles.shape != (len(train),):
        raise ValueError(f"roles must give one part per train row ({roles.shape} for {len(train)} rows)")
    weights = pd.Series(1.0, index=train.index, name=method)
    for part in WEIGHTED_PARTS:
        rows = roles == part
        if rows.any():
            cut = {k: (np.asarray(v)[rows] if k == "train_proba" and v is not None else v)
                   for k, v in context.items()}
            weights[rows] = compute_weights(method, train[rows], attributes, **cut).to_numpy()
    return weights


def effective_sample_size(weights: pd.Series | np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2: what the weighting costs in precision."""
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / np.square(w).sum())


def weighted_prevalence(train: pd.DataFrame, weights: pd.Series, attribute: str) -> pd.DataFrame:
    """Per group: image count, raw and weighted share of `malade`, weighted share of the set."""
    frame = pd.DataFrame({"group": train[attribute].astype(object), "y": _labels(train),
                          "w": weights.reindex(train.index).to_numpy()}).dropna(subset=["group"])
    frame["wy"] = frame["w"] * frame["y"]
    out = frame.groupby("group", sort=True).agg(n=("y", "size"), prevalence=("y", "mean"),
                                               w=("w", "sum"), wy=("wy", "sum"))
    out["weighted_prevalence"] = out["wy"] / out["w"]
    out["weighted_share"] = out["w"] / out["w"].sum()
    return out.drop(columns=["w", "wy"])


NEARLY_UNIFORM_CV = 0.05  # weights whose coefficient of variation is below this are (nearly) uniform


def diagnostics(train: pd.DataFrame, weights: dict[str, pd.Series], attribute: str,
                rows: np.ndarray | None = None) -> pd.DataFrame:
    """What each weighting does to the rows it is fitted on: one row per method.

    Columns: method, n (images), ess (Kish's effective sample size), ess_share (ess / n), w_min,
    w_max, cv (coefficient of variation of the weights, 0 = uniform), nearly_uniform (cv below
    NEARLY_UNIFORM_CV: a null result then says nothing about the method), prevalence (raw share of
    malade), and per group of `attribute` the weighted prevalence `prevalence:<group>` and the
    weighted share of the set `share:<group>`. `rows` (a mask over the train rows) keeps only the
    rows the model is fitted on; the weights are renormalised to mean 1 on them.
    """
    keep = np.ones(len(train), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    part = train[keep]
    out = []
    for method, w in weights.items():
        v = w.reindex(train.index).to_numpy(float)[keep]
        v = v / v.mean()
        row = {"method": method, "n": len(v), "ess": effective_sample_size(v), "w_min": float(v.min()),
               "w_max": float(v.max()), "cv": float(v.std() / v.mean()),
               "prevalence": float(_labels(part).mean())}
        row["ess_share"] = row["ess"] / len(v)
        row["nearly_uniform"] = bool(row["cv"] < NEARLY_UNIFORM_CV)
        by_group = weighted_prevalence(part, pd.Series(v, index=part.index), attribute)
        for group, g in by_group.iterrows():
            row[f"prevalence:{group}"] = float(g["weighted_prevalence"])
            row[f"share:{group}"] = float(g["weighted_share"])
        out.append(row)
    return pd.DataFrame(out)


def write_weights_csv(metadata_csv: Path, train: pd.DataFrame, weights: pd.Series, weights_col: str,
                      out_csv: Path, image_col: str = S.IMAGE) -> Path:
    """Write a COPY of the user's metadata.csv with a weights column, atomically.

    Rows of the training images get their weight (matched on `image_col`); every other row
    (validation, images left out) gets 1.0, the neutral weight. The source file is only read;
    `out_csv` must be another file. The separator of the source (`,` or `;`) is kept; the copy is
    UTF-8.
    """
    metadata_csv, out_csv = Path(metadata_csv), Path(out_csv)
    if out_csv.resolve() == metadata_csv.resolve():
        raise ValueError(f"refusing to overwrite the user's metadata file {metadata_csv}; choose another "
                         "output path")
    table, sep, _ = read_table(metadata_csv)  # what the loader reads: UTF-16, tabs, a workbook...
    meta = canonical_headers(table)
    if image_col not in meta.columns:
        raise ValueError(f"{metadata_csv} has no '{image_col}' column to match the train images on")
    by_image = pd.Series(weights.reindex(train.index).to_numpy(float), index=train[S.IMAGE].to_numpy())
    unknown = sorted(set(by_image.index) - set(meta[image_col]))
    if unknown:
        raise ValueError(f"{len(unknown)} train image(s) are not in {metadata_csv}, e.g. {unknown[:3]}")
    meta[weights_col] = meta[image_col].map(by_image[~by_image.index.duplicated()]).fillna(1.0)
    with atomic_path(out_csv) as tmp:
        meta.to_csv(tmp, index=False, sep=sep)
    return out_csv
