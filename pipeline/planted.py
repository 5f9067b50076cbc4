"""How reliably a trained network shows the demo's planted effects, over training seeds and CPU kernels.

    python -m pipeline.planted [--config study.yml] [--seeds 0 1 2 3] [--kernels host default] [--bootstrap 200]

A network's numbers change with its training seed and with torch's CPU vector kernels (AVX-512, AVX2 or
none, chosen from the processor or capped by $ATEN_CPU_CAPABILITY): a planted effect is worth showing
only if it appears on every run. Each (kernel, seed) runs in its own process (torch reads the variable
when it starts) with its own cache folder, trains the reference model only (uniform weighting, no
post-processing) and measures each effect with its patient-bootstrap interval; the table says on how
many runs the interval excludes 0 in the planted direction. docs/DEMO.md holds the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

Interval = tuple[float, float, float]  # estimate, low, high


def _comparison(metric: str, attribute: str) -> Callable[[Any, Any], Interval]:
    def measure(ctx: Any, ma: Any) -> Interval:
        table = ctx.comparison_by_attribute[attribute]
        row = table[(table["method"] == "uniform") & (table["metric"] == metric)].iloc[0]
        return float(row["estimate"]), float(row["low"]), float(row["high"])
    return measure


def _amplification(attribute: str) -> Callable[[Any, Any], Interval]:
    def measure(ctx: Any, ma: Any) -> Interval:
        row = ma.amplification.set_index(["method", "attribute"]).loc[("uniform", attribute)]
        return float(row["amplification"]), float(row["amplification_low"]), float(row["amplification_high"])
    return measure


def _marker_map(ctx: Any, ma: Any) -> Interval:
    c = ma.cams["marker_contrast"]["integrated_gradients"]
    return float(c["diff"]), float(c["diff_low"]), float(c["diff_high"])


def _view_probe(ctx: Any, ma: Any) -> Interval:
    row = ma.probing.set_index("attribute").loc["view"]
    return float(row["diff"]), float(row["diff_low"]), float(row["diff_high"])


# effect -> (what was planted, the planted direction of the estimate, how it is measured)
EFFECTS: dict[str, tuple[str, int, Callable[[Any, Any], Interval]]] = {
    "women under-diagnosed (TPR F - M)": ("fainter lesions for women", -1, _comparison("tpr_signed", "sex")),
    "sex gap amplified (model - data, M - F)": ("fainter lesions for women", +1, _amplification("sex")),
    "view gap amplified (model - data, AP - PA)": ("AP marker, correlated with the label", +1,
                                                   _amplification("view")),
    "maps on the marker corner (AP - PA share)": ("AP marker", +1, _marker_map),
    "view read from features (AUC - attributes' AUC)": ("AP marker", +1, _view_probe),
}


def measure_one(config_path: Path | None, seed: int, n_bootstrap: int) -> dict[str, Any]:
    """Train the reference model of the configured (demo) study with one seed; each effect's interval."""
    import torch

    from pipeline import study
    from pipeline.config import load_config
    from pipeline.fairness.model_analysis import analyse_model

    config = load_config(config_path)
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, seeds=(seed,)),
        weighting=dataclasses.replace(config.weighting, methods=("uniform",)),
        postprocessing=dataclasses.replace(config.postprocessing, methods=("none",)),
        evaluation=dataclasses.replace(config.evaluation, n_bootstrap=n_bootstrap))
    ctx = study.run(config)
    ma = analyse_model(ctx)
    auc = ctx.comparison[(ctx.comparison["method"] == "uniform") & (ctx.comparison["metric"] == "auc")].iloc[0]
    return {"kernels": torch.backends.cpu.get_cpu_capability(), "seed": seed, "auc": float(auc["estimate"]),
            "effects": {name: measure(ctx, ma) for name, (_, _, measure) in EFFECTS.items()}}


def _run(config: Path | None, seed: int, kernels: str, n_bootstrap: int, cache: Path) -> dict[str, Any]:
    env = {**os.environ, "FAIRCXR_CACHE": str(cache), "FAIRCXR_OUTPUT": str(cache / "out"), "FAIRCXR_PROGRESS": "0"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kernels != "host":
        env["ATEN_CPU_CAPABILITY"] = kernels
    command = [sys.executable, "-m", "pipeline.planted", "--one", str(seed), "--bootstrap", str(n_bootstrap)]
    if config:
        command += ["--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"seed {seed}, kernels {kernels}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per effect: on how many runs its interval excludes 0 in the planted direction, and its range."""
    out = []
    for name, (planted, direction, _) in EFFECTS.items():
        values = [r["effects"][name] for r in runs]
        shown = sum(low > 0 if direction > 0 else high < 0 for _, low, high in values)
        out.append({"effect": name, "planted": planted, "shown": shown, "runs": len(values),
                    "min": min(v[0] for v in values), "max": max(v[0] for v in values),
                    "verdict": "every run" if shown == len(values) else "marginal"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.planted", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="study config (default: study.yml)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--kernels", nargs="+", default=["host", "default"],
                        help="host (the processor's own), or an ATEN_CPU_CAPABILITY value: avx512, avx2, default")
    parser.add_argument("--bootstrap", type=int, default=200, help="patient-bootstrap replicates")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: one seed, these kernels
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(measure_one(args.config, args.one, args.bootstrap)))
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="planted-") as tmp:
        for kernels in args.kernels:
            for seed in args.seeds:
                run = _run(args.config, seed, kernels, args.bootstrap, Path(tmp) / f"{kernels}-{seed}")
                runs.append(run)
                shown = "  ".join(f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for v in run["effects"].values())
                print(f"{run['kernels']:>8} seed {seed}: AUC {run['auc']:.3f}  {shown}", flush=True)
    print()
    for row in summary(runs):
        print(f"{row['effect']:<48} interval excludes 0 on {row['shown']}/{row['runs']} runs "
              f"(estimates {row['min']:+.3f} to {row['max']:+.3f}): {row['verdict']}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary(runs)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
