"""Degenerate decisions: (almost) every image gets the same class, overall or within a group.

Such a rule has fairness gaps near 0 by construction (everyone is treated alike because no one is
told apart): that is levelling down, not fairness. The study names these rules and keeps them out of
its "best" picks; `describe` says where it happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ONE_CLASS_SHARE = 0.95  # a rule giving one class to at least this share of images is degenerate
MIN_GROUP_IMAGES = 10  # a group smaller than this is too small to call its decisions degenerate


@dataclass(frozen=True)
class OneClass:
    """Where the decisions are (almost) all one class. `positive_share`: mean decision (expected for a
    randomised rule); `where`: "all" and/or the names of the groups concerned, with their class."""

    positive_share: float
    where: dict[str, str]  # "all" or group -> "malade" / "sain"

    @property
    def degenerate(self) -> bool:
        return bool(self.where)

    @property
    def overall(self) -> bool:
        return "all" in self.where


def _one_class(decisions: np.ndarray, share: float) -> str | None:
    p = float(np.mean(decisions)) if len(decisions) else np.nan
    if not np.isfinite(p):
        return None
    return "malade" if p >= share else "sain" if p <= 1 - share else None


def one_class(decisions: pd.Series | np.ndarray, groups: pd.Series | None = None, share: float = ONE_CLASS_SHARE,
              min_group_images: int = MIN_GROUP_IMAGES) -> OneClass:
    """Detect decisions of (almost) one class for every image, overall or in a group of `groups`."""
    d = np.asarray(decisions, dtype=float)
    where: dict[str, str] = {}
    overall = _one_class(d, share)
    if overall:
        where["all"] = overall
    if groups is not None:
        g = pd.Series(np.asarray(groups)).astype("object")
        for name, idx in g.groupby(g, sort=True).groups.items():
            rows = d[np.asarray(list(idx))]
            if len(rows) >= min_group_images and (cls := _one_class(rows, share)):
                where[str(name)] = cls
    return OneClass(float(np.mean(d)) if len(d) else np.nan, where)


def one_class_everywhere(decisions: np.ndarray, frame: pd.DataFrame, attributes: list[str],
                         share: float = ONE_CLASS_SHARE) -> dict[str, str]:
    """`one_class` over every attribute: {"all": class}, or {"attribute=group": class, ...} (empty: none)."""
    where: dict[str, str] = {}
    for attribute in attributes:
        if attribute not in frame.columns:
            continue
        for key, cls in one_class(decisions, frame[attribute], share).where.items():
            if key == "all":
                return {"all": cls}
            where[f"{attribute}={key}"] = cls
    return where


def over_seeds(where_by_seed: dict[int, dict[str, str]], detail: int) -> tuple[dict[str, str], str]:
    """A rule run on several training seeds is degenerate when its decisions are one class (somewhere) on more
    than half of them: the tables are means over the seeds, and one run calling every woman « sain » is named
    there but does not make the mean a levelling down. Returns where (the detail training's, else the first
    such seed's; {} when not degenerate) and « (graines 2 et 4 sur 5) » when not every seed is."""
    seeds = sorted(s for s, where in where_by_seed.items() if where)
    if 2 * len(seeds) <= len(where_by_seed):
        return {}, ""
    where = where_by_seed[detail] or where_by_seed[seeds[0]]
    if len(seeds) == len(where_by_seed):
        return where, ""
    names = ", ".join(map(str, seeds[:-1])) + f" et {seeds[-1]}"
    return where, f" (graines {names} sur {len(where_by_seed)})"


COIN_FLIP_BOOT = 200  # patient resamples for the TPR − FPR interval of each group


def coin_flips(decisions: np.ndarray, frame: pd.DataFrame, attributes: list[str], min_per_class: int = 10,
               n_boot: int = COIN_FLIP_BOOT, seed: int = 0, skip: dict[str, str] | None = None
               ) -> dict[str, tuple[float, float, float]]:
    """Groups, of every attribute, whose decisions do not tell malades from sains: the 95 % patient-bootstrap
    interval of TPR − FPR (Youden's J, of the expected decisions) contains 0.

    A rule that decides a group by a coin (calibrated equalized odds mixing a group at a rate near 1) has
    TPR ≈ FPR there: its gaps look small for the same reason as a one-class rule's. Groups with fewer than
    `min_per_class` malades or sains are not judged; `skip` (one-class groups) are named elsewhere.
    Returns {"attribute=group": (J, low, high)}.
    """
    from pipeline.data import schema as S
    from pipeline.fairness.data_bias import patient_bootstrap
    from pipeline.fairness.metrics import group_labels, group_order

    d = np.asarray(decisions, dtype=float)
    y = frame[S.LABEL].to_numpy(float)
    boot = patient_bootstrap(frame, n_boot, seed)
    draws = boot.weights[:, boot.codes(frame)].astype(float)
    out: dict[str, tuple[float, float, float]] = {}
    for attribute in attributes:
        if attribute not in frame.columns:
            continue
        labels = group_labels(frame[attribute])
        for g in group_order(frame[attribute]):
            key = f"{attribute}={g}"
            rows = (labels == g).to_numpy()
            pos, neg = rows & (y == 1), rows & (y == 0)
            if (skip and key in skip) or pos.sum() < min_per_class or neg.sum() < min_per_class:
                continue
            j = d[pos].mean() - d[neg].mean()
            with np.errstate(invalid="ignore", divide="ignore"):
                tpr = draws[:, pos] @ d[pos] / draws[:, pos].sum(axis=1)
                reps = tpr - draws[:, neg] @ d[neg] / draws[:, neg].sum(axis=1)
            reps = reps[np.isfinite(reps)]
            if len(reps) < 2:
                continue
            low, high = np.percentile(reps, [2.5, 97.5])
            if low <= 0 <= high:
                out[key] = (float(j), float(low), float(high))
    return out
