"""Weighting registry: each method gives one positive weight per training image, mean 1.

Adding a method is one decorated function. Class weights use scikit-learn; the group-aware
schemes are written here because no well-kept library computes them as per-sample weights for an
arbitrary training loop (AIF360's Reweighing needs its own dataset classes and heavy dependencies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_sample_weight

from . import schema as S
from .cache import atomic_path


@dataclass(frozen=True)
class WeightingMethod:
    name: str
    fn: Callable[..., np.ndarray]
    label_fr: str
    formula: str  # LaTeX, shown in the report
    reference: str  # bibtex key, or "" for the baseline


WEIGHTINGS: dict[str, WeightingMethod] = {}


def register(name: str, label_fr: str, formula: str, reference: str = "") -> Callable:
    def wrap(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        WEIGHTINGS[name] = WeightingMethod(name, fn, label_fr, formula, reference)
        return fn

    return wrap


def _groups(train: pd.DataFrame, attributes: list[str]) -> pd.Series:
    """Intersection of the attributes as one key; NaN where any attribute is missing."""
    parts = train[list(attributes)].astype(object)
    key = parts.astype(str).agg("|".join, axis=1)
    return key.where(parts.notna().all(axis=1))


def _inverse_frequency(keys: pd.Series) -> np.ndarray:
    """w = n / (K * n_k); rows with a missing key get weight 1."""
    counts = keys.map(keys.value_counts())
    k = keys.nunique()
    return (len(keys.dropna()) / (k * counts)).fillna(1.0).to_numpy(dtype=float)


def _reweighing(train: pd.DataFrame, groups: pd.Series) -> np.ndarray:
    """w(g, y) = P(g) P(y) / P(g, y) (Kamiran & Calders 2012); missing groups: w = 1."""
    y = train[S.LABEL].astype(int)
    known = groups.notna()
    p_g = groups[known].value_counts(normalize=True)
    p_y = y[known].value_counts(normalize=True)
    p_gy = pd.Series(list(zip(groups[known], y[known], strict=True))).value_counts(normalize=True)
    w = np.ones(len(train))
    for i in np.flatnonzero(known.to_numpy()):
        g, lab = groups.iloc[i], y.iloc[i]
        w[i] = p_g[g] * p_y[lab] / p_gy[(g, lab)]
    return w


@register("uniform", "Uniforme (référence)", r"w = 1")
def uniform(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Every image counts the same: the baseline."""
    return np.ones(len(train))


@register("class_balanced", "Équilibrage des classes", r"w(y) = \frac{n}{2\, n_y}")
def class_balanced(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Inverse label frequency, so both classes weigh the same (scikit-learn's 'balanced')."""
    return compute_sample_weight("balanced", train[S.LABEL].to_numpy())


@register("group_balanced", "Équilibrage des groupes", r"w(g) = \frac{n}{K\, n_g}", "idrissi2022")
def group_balanced(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Inverse frequency of the sensitive group, so every group weighs the same (Idrissi et al. 2022)."""
    return _inverse_frequency(_groups(train, attributes))


@register("group_class_balanced", "Équilibrage groupe × classe", r"w(g, y) = \frac{n}{K\, n_{g,y}}",
          "idrissi2022")
def group_class_balanced(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Inverse frequency of each (group, label) cell: every cell weighs the same."""
    keys = _groups(train, attributes)
    cells = (keys + "|" + train[S.LABEL].astype(str)).where(keys.notna())
    return _inverse_frequency(cells)


@register("reweighing", "Reweighing (Kamiran & Calders)", r"w(g, y) = \frac{P(g)\, P(y)}{P(g, y)}",
          "kamiran2012")
def reweighing(train: pd.DataFrame, attributes: list[str], **_: object) -> np.ndarray:
    """Makes label and group independent in the weighted training set (on the first attribute)."""
    return _reweighing(train, _groups(train, attributes[:1]))


@register("reweighing_intersectional", "Reweighing intersectionnel",
          r"w(\mathbf{g}, y) = \frac{P(\mathbf{g})\, P(y)}{P(\mathbf{g}, y)}", "kamiran2012")
def reweighing_intersectional(train: pd.DataFrame, attributes: list[str],
                              all_attributes: list[str] | None = None, **_: object) -> np.ndarray:
    """Reweighing on the intersection of all sensitive attributes (e.g. sex x age band x view)."""
    return _reweighing(train, _groups(train, all_attributes or attributes))


@register("effective_number", "Nombre effectif d'exemples (Cui et al.)",
          r"w(y) \propto \frac{1 - \beta}{1 - \beta^{n_y}}", "cui2019")
def effective_number(train: pd.DataFrame, attributes: list[str], beta: float | None = None,
                     **_: object) -> np.ndarray:
    """Class weights by effective number of samples; beta = 1 - 1/n by default (Cui et al. 2019)."""
    y = train[S.LABEL].astype(int)
    beta = 1 - 1 / len(y) if beta is None else beta
    counts = y.value_counts()
    per_class = {c: (1 - beta) / (1 - beta ** n) for c, n in counts.items()}
    return y.map(per_class).to_numpy(dtype=float)


JTT_UPWEIGHT = 5.0


@register("jtt", "Just Train Twice (erreurs surpondérées)",
          r"w = \lambda_{up} \text{ si } \hat{y}_{ERM} \neq y, \; 1 \text{ sinon}", "liu2021jtt")
def jtt(train: pd.DataFrame, attributes: list[str], train_proba: np.ndarray | None = None,
        upweight: float = JTT_UPWEIGHT, **_: object) -> np.ndarray:
    """Up-weight (x5) the training images an unweighted first model misclassifies (Liu et al. 2021)."""
    if train_proba is None:
        raise ValueError("jtt needs the first (unweighted) model's probabilities on the train images")
    wrong = (np.asarray(train_proba) >= 0.5).astype(int) != train[S.LABEL].to_numpy()
    return np.where(wrong, upweight, 1.0)


def compute_weights(method: str, train: pd.DataFrame, attributes: list[str], **context: object) -> pd.Series:
    """Weights of `method` for the train rows, validated (finite, positive) and normalised to mean 1."""
    if method not in WEIGHTINGS:
        raise ValueError(f"unknown weighting '{method}'; choose among {sorted(WEIGHTINGS)} "
                         "(study.yml > weighting > methods)")
    w = np.asarray(WEIGHTINGS[method].fn(train, list(attributes), **context), dtype=float)
    if w.shape != (len(train),) or not np.all(np.isfinite(w)) or (w <= 0).any():
        raise ValueError(f"weighting '{method}' produced invalid weights")
    return pd.Series(w / w.mean(), index=train.index, name=method)


def write_weights_csv(metadata_csv: Path, train: pd.DataFrame, weights: pd.Series, weights_col: str,
                      out_csv: Path) -> Path:
    """A copy of the user's metadata.csv with a weights column (1 for non-train rows), atomically."""
    meta = pd.read_csv(metadata_csv, dtype=str, keep_default_na=False)
    by_image = pd.Series(weights.to_numpy(), index=train[S.IMAGE].to_numpy())
    meta[weights_col] = meta[S.IMAGE].map(by_image).fillna(1.0)
    with atomic_path(Path(out_csv)) as tmp:
        meta.to_csv(tmp, index=False)
    return Path(out_csv)
