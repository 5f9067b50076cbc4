"""Keep Quarto's frozen results in step with the study.

`freeze: auto` re-executes a document only when its own source changed, so after a change to
`study.yml`, to the data folder or to the pipeline's code, `quarto render` would reuse pages with the
old numbers. Quarto runs `pre_render.ts` before every render (project, file or preview); it calls
`python -m pipeline freeze`, which removes `_freeze/` when those inputs changed since it was written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.cache import atomic_write_text, combined_digest, pipeline_source
from pipeline.config import StudyConfig

FREEZE_DIR = "_freeze"
STAMP = ".study-inputs"  # in _freeze/: the key of the inputs its results were computed from


def inputs_key(config: StudyConfig) -> str:
    """The study's key (config, data files, study code) and the source of the whole pipeline (the
    report's texts and charts are computed by `pipeline.report`)."""
    from pipeline.study import ensure_demo, study_key

    ensure_demo(config)  # the documents would write it: keyed before, the next render would clear again
    return combined_digest([study_key(config), pipeline_source()])


def refresh(project: Path, config: StudyConfig) -> bool:
    """Remove `project/_freeze` if its results were computed from other inputs (or from unknown ones);
    record the current inputs. True when frozen results were removed."""
    freeze, key = project / FREEZE_DIR, inputs_key(config)
    stamp = freeze / STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == key:
        return False
    stale = freeze.is_dir() and any(p.name != STAMP for p in freeze.iterdir())
    if stale:
        shutil.rmtree(freeze)
    atomic_write_text(stamp, key)
    return stale
