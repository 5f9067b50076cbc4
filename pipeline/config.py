"""The one user config (`study.yml`): data folder, sensitive attributes, methods to compare.

The data folder can be overridden by the `FAIRCXR_DATA` environment variable or by the
`--data` flag of the command line. An empty data folder means: use the built-in demo.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.cache import PROJECT_ROOT, cache_dir

CONFIG_FILE = PROJECT_ROOT / "study.yml"


DATA_ENV = "FAIRCXR_DATA"


CONFIG_ENV = "FAIRCXR_CONFIG"


# Version of the synthetic demo generator (pipeline.data.demo): a new generator writes a new folder,
# never reuses an old one. Bump it when the output of a given (seed, size) changes.
DEMO_GENERATOR_VERSION = 4

PRECISIONS = ("auto", "32-true", "16-mixed", "bf16-mixed")


class ConfigError(ValueError):
    """A config value the study cannot use; the message names the file and the fix."""


@dataclass(frozen=True)
class DemoConfig:
    n_patients: int = 400
    image_size: int = 256
    seed: int = 0


@dataclass(frozen=True)
class TrainingConfig:
    mode: str = "last_layer"  # "last_layer" (features once, head per weighting) or "full"
    backbone: str = "small_cnn"
    image_size: int = 128
    max_epochs: int = 15
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    sampler: bool = False  # weighted sampler instead of a weighted loss
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    precision: str = "auto"  # Lightning precision; auto: bf16-mixed or 16-mixed on a GPU, 32-true on a CPU
    num_workers: int = -1  # -1: chosen from the number of CPU cores
    subsample_fraction: float = 1.0  # fraction of PATIENTS kept (stratified), 1.0 = all
    subsample_seed: int = 0
    feature_source: str = "erm"  # last-layer features: "erm" (trained once, unweighted) or "pretrained" (frozen)
    pretrained: bool = True  # try ImageNet / torchxrayvision weights for the backbones that have them
    cpu_threads: int = 0  # torch CPU threads; 0 keeps torch's default (1 helps on a busy 2-core machine)


@dataclass(frozen=True)
class WeightingConfig:
    methods: tuple[str, ...] = (
        "uniform", "class_balanced", "group_balanced", "reweighing",
        "reweighing_intersectional", "effective_number", "jtt",
    )
    attribute: str = "sex"  # sensitive attribute used by group-aware weightings
    weights_col: str = "WEIGHTS"


@dataclass(frozen=True)
class PostprocessingConfig:
    methods: tuple[str, ...] = (
        "none", "threshold_global", "equal_opportunity", "to_demographic_parity",
        "to_equalized_odds", "to_tpr_parity", "reject_option", "calibrated_eq_odds",
    )
    attribute: str = "sex"
    fit_fraction: float = 0.5  # single fit/score split (postprocess.split_fit_score); the grid cross-fits
    seed: int = 0
    folds: int = 5  # cross-fitting: patient folds, each decided by the rule fitted on the others
    n_refit: int = 10  # patient resamples in which every rule is refitted (the grid's intervals)


@dataclass(frozen=True)
class EvaluationConfig:
    n_bootstrap: int = 500
    seed: int = 0
    exclude_leaking_patients: bool = True
    min_per_class: int = 10  # a group's rate needs this many images of its class (else « n.d. »)


@dataclass(frozen=True)
class StudyConfig:
    data_dir: str = ""
    sensitive_attributes: tuple[str, ...] = ("sex", "age_band", "view")
    age_bands: tuple[int, ...] = (0, 40, 60, 200)
    column_mapping: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    demo: DemoConfig = field(default_factory=DemoConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    postprocessing: PostprocessingConfig = field(default_factory=PostprocessingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    @property
    def is_demo(self) -> bool:
        return not self.data_dir

    def data_path(self) -> Path:
        """The data folder; the demo folder (generated on demand) when none is set."""
        if self.is_demo:
            d = self.demo
            return cache_dir() / f"demo-{d.n_patients}p-{d.image_size}px-s{d.seed}-v{DEMO_GENERATOR_VERSION}"
        path = Path(self.data_dir).expanduser()
        return path if path.is_absolute() else (PROJECT_ROOT / path)

    def age_band_labels(self) -> list[str]:
        edges = self.age_bands
        labels = [f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges[:-1])]
        return [*labels, f"{edges[-2]}+"]

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build a (nested) dataclass from a dict, naming unknown keys clearly."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}. Fix or remove them."
        )
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{name}' must be a mapping of options.")
            value = _build(type(default), value, f"{where} > {name}")
        elif isinstance(default, tuple) and isinstance(value, list | tuple):
            value = tuple(value)
        elif isinstance(default, tuple):
            value = (value,)
        kwargs[name] = value
    return cls(**kwargs)


def load_config(path: Path | None = None, data_dir: str | None = None) -> StudyConfig:
    """Read the study config; `data_dir` (CLI) or `$FAIRCXR_DATA` override its data folder."""
    path = Path(path or os.environ.get(CONFIG_ENV) or CONFIG_FILE)
    values: dict[str, Any] = {}
    if path.exists():
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err}). Fix the line it names.") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of options at the top level.")
    values = {k: v for k, v in values.items() if v is not None}
    override = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if override:  # a folder given on the command line or in the environment is relative to cwd
        values["data_dir"] = str(Path(override).expanduser().resolve())
    values["data_dir"] = str(values.get("data_dir") or "")
    config = _build(StudyConfig, values, str(path))
    _validate(config, path)
    return config


def _validate(config: StudyConfig, path: Path) -> None:
    edges = config.age_bands
    if len(edges) < 2 or list(edges) != sorted(set(edges)):
        raise ConfigError(f"{path}: age_bands must be increasing edges, e.g. [0, 40, 60, 200].")
    if config.training.mode not in ("last_layer", "full"):
        raise ConfigError(f"{path}: training.mode must be 'last_layer' or 'full'.")
    if config.training.precision not in PRECISIONS:
        raise ConfigError(f"{path}: training.precision must be one of {', '.join(PRECISIONS)}.")
    if config.training.feature_source not in ("erm", "pretrained"):
        raise ConfigError(f"{path}: training.feature_source must be 'erm' or 'pretrained'.")
    if not 0 < config.training.subsample_fraction <= 1:
        raise ConfigError(f"{path}: training.subsample_fraction must be in (0, 1].")
    if config.postprocessing.folds < 2 or config.postprocessing.n_refit < 0:
        raise ConfigError(f"{path}: postprocessing.folds must be >= 2 and postprocessing.n_refit >= 0.")
    if config.evaluation.min_per_class < 1:
        raise ConfigError(f"{path}: evaluation.min_per_class must be >= 1 (default 10).")
    if not 0 < config.postprocessing.fit_fraction < 1:
        raise ConfigError(f"{path}: postprocessing.fit_fraction must be in (0, 1).")
