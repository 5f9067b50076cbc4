"""Command line: `python -m pipeline {demo,check,study,render,clean}`.

Errors the user can fix are printed as one clear message (exit code 2), never a traceback. The
whole config is validated first (keys, types, ranges, method names, attributes), before any data
is read or any model trained; an interrupt (Ctrl-C) says where it stopped and exits with 130.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
from pathlib import Path

from pipeline import progress
from pipeline.cache import PROJECT_ROOT, cache_dir, output_dir
from pipeline.config import CONFIG_ENV, DATA_ENV, ConfigError, StudyConfig, config_file, load_config

# Registries whose names study.yml may use: key -> module that fills the registry with `register("name", ...)`.
REGISTRIES = {"weighting.methods": "fairness/weighting.py", "postprocessing.methods": "fairness/postprocess.py",
              "training.backbone": "model/backbones.py"}


ATTRIBUTE_KEYS = ("sensitive_attributes", "weighting.attribute", "postprocessing.attribute")


def registered_names(module: str) -> list[str]:
    """Names a module registers (`@register("name")` or `register("name", ...)(fn)`), read from its source:
    importing the registries would import torch and Lightning (seconds) before a typo could be reported."""
    tree = ast.parse((Path(__file__).parent / module).read_text(encoding="utf-8"))
    return [node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "register"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]


def attribute_columns(config: StudyConfig) -> list[str]:
    """Columns a sensitive attribute can name: the derived ones, plus the extra columns of metadata.csv."""
    from pipeline.data import schema as S
    from pipeline.data.folder import TableError, canonical_headers, read_table

    derived = [S.SEX, S.AGE_BAND, S.VIEW]
    meta = config.data_path() / "metadata.csv"
    if config.is_demo or not meta.is_file():
        return derived
    try:
        table = canonical_headers(read_table(meta)[0].head(0).rename(columns=config.column_mapping))
    except (TableError, OSError):
        return derived  # the folder check names the problem
    nih = {*S.NIH_COLUMNS, *S.NIH_IMAGE_COLUMNS}
    return [*derived, *[c for c in table.columns if c not in nih and not c.startswith("Unnamed")]]


def load_valid_config(args: argparse.Namespace, data_dir: str | None) -> StudyConfig:
    """The config, validated whole (ConfigError lists every problem) before any long work."""
    choices = {key: registered_names(module) for key, module in REGISTRIES.items()}
    choices["training.backbone"] = ["auto", *choices["training.backbone"]]
    config = load_config(args.config, data_dir=data_dir, choices=choices)
    columns = attribute_columns(config)
    return load_config(args.config, data_dir=data_dir, choices={**choices, **dict.fromkeys(ATTRIBUTE_KEYS, columns)})


def _demo(args: argparse.Namespace) -> int:
    from pipeline.data.demo import make_demo

    config = load_config(args.config)
    out = make_demo(Path(args.dir), n_patients=args.patients or config.demo.n_patients,
                    seed=args.seed, image_size=args.size or config.demo.image_size)
    print(f"Demo dataset written to {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    config = load_valid_config(args, args.dir)
    from pipeline.data.folder import check_dataset

    report = check_dataset(config.data_path(), config)
    print(report.format())
    return report.exit_code


def _study(args: argparse.Namespace) -> int:
    config = load_valid_config(args, args.data)
    from pipeline import study

    ctx = study.context(config)  # computed, or loaded; stored for the documents either way
    print(ctx.summary())
    return 0


def _placeholders_left(args: argparse.Namespace, final: bool) -> bool:
    """Print the template's placeholders left in the sources; True when any is."""
    from pipeline.render import placeholders

    found = placeholders.in_project(Path(args.project), config_file(args.config))
    if found:
        print(placeholders.report(found, final=final), file=sys.stderr)
    return bool(found)


def _render(args: argparse.Namespace) -> int:
    config = load_valid_config(args, args.data)
    if _placeholders_left(args, final=args.final) and args.final:
        return 1  # before any long work: a hand-in with placeholders left is refused
    from pipeline import study
    from pipeline.render.renderer import render_all

    study.ensure_computed(config)  # compute the study (once) before the documents execute
    # The documents' kernels read the same data folder and config as this command.
    os.environ[DATA_ENV] = str(config.data_path()) if not config.is_demo else ""
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    with progress.stage("rendering"):
        written = render_all(Path(args.project), use_quarto=False if args.no_quarto else None)
    from pipeline.report.exports import write_tables

    tables = write_tables(study.context(config))  # the numbers behind the report's tables, as CSV
    weights = sorted((output_dir() / "weights").glob("*.csv"))
    print("Outputs:", *[f"  {p}" for p in written], f"  {len(weights)} weights CSVs in {output_dir() / 'weights'}",
          f"  {len(tables)} tables (CSV) in {output_dir() / 'tables'}", sep="\n")
    return 0


def _freeze(args: argparse.Namespace) -> int:
    from pipeline.render.freeze import FREEZE_DIR, refresh

    _placeholders_left(args, final=False)  # `quarto render` runs this first: the same warning as our render
    if refresh(Path(args.project), load_valid_config(args, None)):
        print(f"The study's inputs (config, data or code) changed since {FREEZE_DIR}/ was written: "
              "removed it, every document executes again.")
    return 0


def _clean(args: argparse.Namespace) -> int:
    target = cache_dir()
    shutil.rmtree(target, ignore_errors=True)
    print(f"Emptied the cache {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help=f"config file (default: {PROJECT_ROOT}/study.yml)")
    parser.add_argument("--verbose", action="store_true", help="show Lightning's per-epoch progress bars too")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="write the synthetic demo dataset to DIR")
    p.add_argument("dir")
    p.add_argument("--patients", type=int, default=None)
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)
    p = sub.add_parser("check", help="validate a data folder (exit 0 clean, 1 warnings, 2 unusable)")
    p.add_argument("dir", nargs="?", default=None, help="data folder (default: the config's)")
    p.set_defaults(func=_check)
    p = sub.add_parser("study", help="run (or load from the cache) the whole study")
    p.add_argument("--data", default=None, help="data folder (overrides study.yml)")
    p.set_defaults(func=_study)
    p = sub.add_parser("render", help="render the report (HTML, PDF) and the slides into _output/")
    p.add_argument("--data", default=None, help="data folder (overrides study.yml)")
    p.add_argument("--project", default=".", help="project folder (default: current)")
    p.add_argument("--no-quarto", action="store_true", help="use the offline fallback even if quarto exists")
    p.add_argument("--final", action="store_true",
                   help="the version to hand in: refuse to render while a template placeholder is left")
    p.set_defaults(func=_render)
    p = sub.add_parser("freeze", help="Quarto's pre-render step: remove _freeze/ when the study's inputs changed")
    p.add_argument("--project", default=".", help="project folder (default: current)")
    p.set_defaults(func=_freeze)
    p = sub.add_parser("clean", help="empty the cache")
    p.set_defaults(func=_clean)
    return parser


def _user_error(err: Exception) -> bool:
    """Errors with a message for the user (the classes are imported only once something failed)."""
    from pipeline.data.folder import DataError
    from pipeline.render.qmd import RenderError

    return isinstance(err, ConfigError | DataError | RenderError | FileExistsError | FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        os.environ[progress.VERBOSE_ENV] = "1"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        where = progress.interrupted_stage()
        print(f"\ninterrupted{' while ' + where if where else ''}: finished results are cached and nothing "
              "half-written is kept; run the same command again to resume.", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, ConfigError) and not _user_error(err):
            raise
        lines = str(err).splitlines() if isinstance(err, ConfigError) else [str(err)]
        print(*[f"error: {line}" for line in lines], sep="\n", file=sys.stderr)
        return 2
