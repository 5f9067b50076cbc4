"""The study's tables as CSV files in `_output/tables/`: the numbers behind the report's tables and appendix,
unformatted (one row per estimate, with its interval), for a reader who wants to re-plot or re-check them.

Each entry of `TABLES` is one file; adding a table is one function.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.cache import atomic_path, output_dir
from pipeline.study import StudyContext


def _data(ctx: StudyContext):
    from pipeline.report.data import analysis

    return analysis(ctx)


def _model(ctx: StudyContext):
    from pipeline.report.analysis import model_results

    return model_results(ctx)


def _weightings(ctx: StudyContext) -> pd.DataFrame:
    return pd.concat([t.assign(attribute=a) for a, t in ctx.comparison_by_attribute.items()], ignore_index=True)


def _model_card(ctx: StudyContext) -> pd.DataFrame:
    from pipeline.report.modelcard import model_card

    return model_card(ctx)


TABLES: dict[str, Callable[[StudyContext], pd.DataFrame | None]] = {
    "verdicts": lambda ctx: ctx.verdicts.to_frame() if ctx.verdicts is not None else None,
    "data_prevalence": lambda ctx: _data(ctx).prevalence,
    "data_intersections": lambda ctx: _data(ctx).intersections,
    "data_simpson": lambda ctx: _data(ctx).simpson,
    "weightings": _weightings,
    "weightings_by_seed": lambda ctx: ctx.seed_metrics,
    "grid": lambda ctx: ctx.grid.table,
    "amplification": lambda ctx: _model(ctx).amplification,
    "probing": lambda ctx: _model(ctx).probing,
    "group_metrics": lambda ctx: _model(ctx).group_metrics,
    "calibration": lambda ctx: _model(ctx).calibration_fit,
    "subgroups": lambda ctx: _model(ctx).subgroups,
    "model_card": lambda ctx: _model_card(ctx),
}


def write_tables(ctx: StudyContext, folder: Path | None = None) -> list[Path]:
    """Write every table of `TABLES` the study has (atomically, one CSV each); the paths written."""
    folder = folder or output_dir() / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in TABLES.items():
        table = build(ctx)
        if table is None or table.empty:
            continue
        path = folder / f"{name}.csv"
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
        written.append(path)
    return written
