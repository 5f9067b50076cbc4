"""The computed study is one cached object: its key follows the config, the data files and the code, and a
document's kernel that loads it imports no training stack."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.data.demo import make_demo
from pipeline.study import study_key

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.yml"


def test_study_key_follows_config_data_files_and_metadata(tmp_path, monkeypatch):
    data = make_demo(tmp_path / "demo", n_patients=12, image_size=16)
    monkeypatch.setenv("FAIRCXR_DATA", str(data))
    config = load_config(TINY)
    key = study_key(config)
    assert study_key(load_config(TINY)) == key  # deterministic, nothing computed
    assert study_key(dataclasses.replace(config, seed=config.seed + 1)) != key
    image = next((data / "train" / "malade").glob("*.png"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # an image replaced
    touched = study_key(config)
    assert touched != key
    with open(data / "metadata.csv", "a", encoding="utf-8") as f:
        f.write("\n")  # a metadata cell edited
    assert study_key(config) not in (key, touched)


SMALLEST = """data_dir: ""
demo: {n_patients: 30, image_size: 16, seed: 0}
training: {mode: last_layer, backbone: small_cnn, image_size: 16, max_epochs: 1, seeds: [0], batch_size: 32}
weighting: {methods: [uniform, class_balanced]}
postprocessing: {methods: [none, threshold_global]}
evaluation: {n_bootstrap: 20}
"""


# Every code cell and inline expression of the slides, run as their kernel runs them (IPython), then the
# heavy libraries the kernel loaded: a document reads computed results and needs none of them.
RUN_SLIDES = """
import sys
from pathlib import Path
from IPython.core.interactiveshell import InteractiveShell
from pipeline.render.qmd import INLINE, INLINE_CODE, Cell, _option, parse
from pipeline.render.renderer import project_meta

project = Path(sys.argv[1])
doc = parse(project / "slides.qmd", project_meta(project))
shell = InteractiveShell.instance()
for part in doc.parts:
    codes = ([part.source] if _option(part, doc, "eval", True) else []) if isinstance(part, Cell) else \
        [INLINE_CODE.format(expr=e.strip()) for e in INLINE.findall(part.text)]
    for code in codes:
        shell.run_cell(code).raise_error()
heavy = ("torch", "lightning", "sklearn", "scipy", "fairlearn", "statsmodels")
print("\\nLOADED", [m for m in heavy if m in sys.modules])
"""


def test_loading_the_cached_study_and_running_the_slides_import_no_training_or_fitting_library(tmp_path):
    config = tmp_path / "study.yml"
    config.write_text(SMALLEST, encoding="utf-8")
    env = {**os.environ, "FAIRCXR_CONFIG": str(config), "FAIRCXR_CACHE": str(tmp_path / "cache"),
           "FAIRCXR_OUTPUT": str(tmp_path / "out"), "FAIRCXR_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    env.pop("FAIRCXR_DATA", None)
    probe = ("import sys\nfrom pipeline import study\nctx = study.context()\n"
             "print(len(ctx.predictions), 'torch' in sys.modules, 'lightning' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    assert list((tmp_path / "cache" / "study").glob("*.pickle")), "the study object is stored"
    second = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    n_methods, torch_loaded, lightning_loaded = second.stdout.split()[-3:]
    assert n_methods == first.stdout.split()[-3] and int(n_methods) >= 2
    assert (torch_loaded, lightning_loaded) == ("False", "False")
    for run in ("charts built", "charts from their cache"):
        done = subprocess.run([sys.executable, "-c", RUN_SLIDES, str(ROOT)], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{run}: {done.stderr[-3000:]}"
        assert done.stdout.strip().splitlines()[-1] == "LOADED []", run
    assert list((tmp_path / "cache" / "charts").glob("spec-*.json")), "the slides' chart specs are cached"
