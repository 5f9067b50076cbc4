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
