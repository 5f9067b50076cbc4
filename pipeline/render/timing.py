"""Render figures for the benchmark: a fresh clone's `make report`, then the writing loop.

In a temporary copy of the project with an empty cache: the cold fallback render (the study computed,
every document executed), the same render again with nothing changed, the render after a sentence
added to a chapter (the loop a student lives in), one document executed with the study cached (no
reuse of its outputs), and with Quarto on PATH: `quarto render` with the study cached, then after the
same kind of prose edit (`freeze: auto` re-executes the edited document only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.render.qmd import execute, parse
from pipeline.render.renderer import kernel_env, project_meta

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("_quarto.yml", "report.qmd", "slides.qmd", "references.bib", "study.yml", "chapters")


def copy_project(target: Path, source: Path = ROOT) -> Path:
    target.mkdir(parents=True)
    for name in SOURCES:
        src = source / name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, target / name)
    (target / "pipeline").symlink_to(source / "pipeline")  # _quarto.yml's pre-render script lives there
    return target


def edit_prose(project: Path, n: int) -> None:
    """Add a sentence at the end of the conclusion chapter (prose only: no cell changes)."""
    chapter = project / "chapters" / "06-conclusion.qmd"
    chapter.write_text(chapter.read_text(encoding="utf-8") + f"\n\nUne phrase ajoutée pendant la rédaction ({n}).\n",
                       encoding="utf-8")


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def bench_render(config: Path | None = None, with_quarto: bool = True) -> dict[str, float]:
    """Seconds of each step (see the module docstring); `config` replaces study.yml (e.g. a tiny study)."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        project = copy_project(Path(tmp) / "project")
        env = {**os.environ, "FAIRCXR_CACHE": f"{tmp}/cache", "FAIRCXR_OUTPUT": str(project / "_output"),
               "FAIRCXR_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
        env.pop("FAIRCXR_DATA", None)
        if config is not None:
            env["FAIRCXR_CONFIG"] = str(Path(config).resolve())
        render = [sys.executable, "-m", "pipeline", "render", "--project", str(project), "--no-quarto"]
        figures["cold make report (fresh clone, empty cache)"] = _timed(render, project, env)
        figures["make report again, nothing changed"] = _timed(render, project, env)
        edit_prose(project, 1)
        figures["make report after a prose edit"] = _timed(render, project, env)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            doc = parse(project / "report.qmd", project_meta(project))
            t0 = time.perf_counter()
            execute(doc, cwd=project, env=kernel_env(project))
            figures["executing report.qmd with the study cached"] = time.perf_counter() - t0
        finally:
            os.environ.clear()
            os.environ.update(saved)
        quarto = shutil.which("quarto") if with_quarto else None
        if quarto:
            env["QUARTO_PYTHON"] = sys.executable
            figures["quarto render (study cached, nothing frozen)"] = _timed([quarto, "render"], project, env)
            edit_prose(project, 2)
            figures["quarto render after a prose edit (freeze: auto)"] = _timed([quarto, "render"], project, env)
    return figures


def print_render_figures(figures: dict[str, float]) -> None:
    cold = figures["cold make report (fresh clone, empty cache)"]
    for what, seconds in figures.items():
        print(f"  {what}: {seconds:.1f} s ({100 * seconds / cold:.0f} % of the cold make report)")
