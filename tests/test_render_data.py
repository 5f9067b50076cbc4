"""`python -m pipeline render --data DIR` renders DIR's report: the documents' kernels see the command's data
folder and config; what is written for the user is readable by others, like any file the user creates."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from pipeline.cache import atomic_write_text
from pipeline.data.demo import make_demo

ROOT = Path(__file__).resolve().parents[1]

REPORT = """\
---
title: "Données"
lang: fr
---

```{python}
from pipeline import study
ctx = study.context()
print(f"DONNEES={ctx.config.data_path()} BOOTSTRAP={ctx.config.evaluation.n_bootstrap} IMAGES={len(ctx.frame)}")
```
"""

SLIDES = '---\ntitle: "Diapos"\nformat: revealjs\n---\n\n## Données\n\nRien à calculer.\n'

CONFIG = """\
training: {backbone: small_cnn, image_size: 32, max_epochs: 2, seeds: [0], cpu_threads: 1}
weighting: {methods: [uniform, class_balanced]}
postprocessing: {methods: [none]}
evaluation: {n_bootstrap: 17}
"""


def test_render_data_renders_that_folder_with_that_config(tmp_path: Path):
    project = tmp_path / "projet"
    project.mkdir()
    (project / "report.qmd").write_text(REPORT, encoding="utf-8")
    (project / "slides.qmd").write_text(SLIDES, encoding="utf-8")
    (tmp_path / "tiny.yml").write_text(CONFIG, encoding="utf-8")
    data = make_demo(tmp_path / "mes données", n_patients=40, seed=3, image_size=32)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAIRCXR_CACHE": str(tmp_path / "cache"), "FAIRCXR_PROGRESS": "0",
           "FAIRCXR_OUTPUT": str(tmp_path / "out")}
    env.pop("FAIRCXR_DATA", None)
    env.pop("FAIRCXR_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(tmp_path / "tiny.yml"), "render",
                           "--data", str(data), "--project", str(project), "--no-quarto"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = (project / "_output" / "report.html").read_text(encoding="utf-8")
    n_images = sum(1 for _ in data.rglob("*.png"))
    assert f"DONNEES={data} BOOTSTRAP=17 IMAGES={n_images}" in html  # not the demo of study.yml
    weights = sorted((tmp_path / "out" / "weights").glob("*.csv"))
    # the configured weightings, and group_balanced that the default primary family compares
    assert [p.name for p in weights] == ["class_balanced.csv", "group_balanced.csv", "uniform.csv"]
    for path in [*weights, project / "_output" / "report.html"]:
        assert path.stat().st_mode & 0o044 == 0o044, f"{path} is not readable by others"
    assert "Outputs:" in done.stdout and str(project / "_output" / "report.html") in done.stdout


def test_atomic_writes_respect_the_umask(tmp_path: Path):
    script = ("import os, sys; os.umask(int(sys.argv[2], 8)); from pathlib import Path; "
              "from pipeline.cache import atomic_write_text; atomic_write_text(Path(sys.argv[1]), 'x')")
    for umask, mode in (("022", 0o644), ("077", 0o600), ("002", 0o664)):
        target = tmp_path / f"file-{umask}.csv"
        subprocess.run([sys.executable, "-c", script, str(target), umask], check=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert stat.S_IMODE(target.stat().st_mode) == mode, (umask, oct(target.stat().st_mode))
    atomic_write_text(tmp_path / "here.txt", "y")
    assert (tmp_path / "here.txt").read_text() == "y" and not list(tmp_path.glob(".here.txt.*"))
