"""The package's layers: a module imports only from its own layer or from the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
# Lowest first. A module's layer is its subpackage, or its own name at the top of the package.
LAYERS = [{"cache", "config", "progress"}, {"data"}, {"model"}, {"fairness"}, {"study", "protocol"}, {"report"},
          {"render"}, {"cli", "__main__", "train", "bench", "planted", "__init__"}]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _layer(module: str) -> str:
    """'pipeline.fairness.metrics' -> 'fairness'; 'pipeline.study' -> 'study'."""
    return module.split(".")[1] if "." in module else "__init__"


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _imports(source: str, module: str) -> list[tuple[str, int]]:
    """Every pipeline module that `module` imports, lazily inside functions too, with the line number."""
    package = module.rsplit(".", 1)[0]  # the package of a module and of an __init__ alike
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from pipeline import study` imports pipeline.study; `from pipeline.data import x`, pipeline.data
            targets = [f"{target}.{a.name}" for a in node.names] if target.count(".") == 0 else [target]
            found += [(t, node.lineno) for t in targets if t.startswith("pipeline.")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("pipeline.")]
    return found


def _upward(source: str, module: str) -> list[str]:
    importer = _layer(module)
    return [f"{module}:{line} imports {target}" for target, line in _imports(source, module)
            if RANK[_layer(target)] > RANK[importer]]


def test_every_module_belongs_to_a_layer():
    modules = {_layer(_module(p)) for p in PACKAGE.rglob("*.py")}
    assert modules <= set(RANK), f"modules outside every layer: {modules - set(RANK)}"


def test_lower_layers_never_import_higher_ones():
    upward = [line for path in PACKAGE.rglob("*.py")
              for line in _upward(path.read_text(encoding="utf-8"), _module(path))]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_check_catches_upward_imports_relative_absolute_and_lazy():
    lazy = "def f():\n    from pipeline.report import display\n"
    relative = "from ..study import context\n"
    allowed = "from pipeline.data import schema as S\nfrom .weighting import WEIGHTINGS\nfrom pipeline import cache\n"
    assert _upward(lazy, "pipeline.data.folder") == ["pipeline.data.folder:2 imports pipeline.report"]
    assert _upward(relative, "pipeline.fairness.grid") == ["pipeline.fairness.grid:1 imports pipeline.study"]
    assert _upward(allowed, "pipeline.fairness.grid") == []


def test_chapters_read_the_report_module_of_their_name():
    chapters = Path(__file__).resolve().parents[1] / "chapters"
    for qmd, module in [("02-data.qmd", "data"), ("03-preprocessing.qmd", "preprocessing"),
                        ("04-postprocessing.qmd", "postprocessing"), ("05-analysis.qmd", "analysis"),
                        ("06-conclusion.qmd", "conclusion")]:
        assert f"from pipeline.report import {module}" in (chapters / qmd).read_text(encoding="utf-8"), qmd
