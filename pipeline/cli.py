"""Command line: `python -m pipeline {demo,check,study,render,clean}`.

Errors the user can fix are printed as one clear message (exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pipeline.cache import cache_dir
from pipeline.config import ConfigError, load_config
from pipeline.data.folder import DataError, check_dataset
from pipeline.render.qmd import RenderError


def _demo(args: argparse.Namespace) -> int:
    from pipeline.data.demo import make_demo

    config = load_config(args.config)
    out = make_demo(Path(args.dir), n_patients=args.patients or config.demo.n_patients,
                    seed=args.seed, image_size=args.size or config.demo.image_size)
    print(f"Demo dataset written to {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config, data_dir=args.dir)
    report = check_dataset(config.data_path(), config)
    print(report.format())
    return report.exit_code


def _study(args: argparse.Namespace) -> int:
    from pipeline import study

    config = load_config(args.config, data_dir=args.data)
    ctx = study.run(config)
    print(ctx.summary())
    return 0


def _render(args: argparse.Namespace) -> int:
    from pipeline import study
    from pipeline.render.renderer import render_all

    config = load_config(args.config, data_dir=args.data)
    study.ensure_computed(config)  # compute the study (once) before the documents execute
    render_all(Path(args.project), use_quarto=False if args.no_quarto else None)  # prints what it writes
    return 0


def _clean(args: argparse.Namespace) -> int:
    target = cache_dir()
    shutil.rmtree(target, ignore_errors=True)
    print(f"Emptied the cache {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--config", type=Path, default=None, help="config file (default: study.yml)")
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
    p.set_defaults(func=_render)
    p = sub.add_parser("clean", help="empty the cache")
    p.set_defaults(func=_clean)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError, RenderError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are cached; run the same command again to resume.",
              file=sys.stderr)
        return 130

