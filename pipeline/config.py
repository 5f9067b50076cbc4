"""The one user config (`study.yml`): data folder, sensitive attributes, methods to compare.

The data folder can be overridden by the `FAIRCXR_DATA` environment variable or by the
`--data` flag of the command line. An empty data folder means: use the built-in demo.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import itertools
import os
import typing
from collections.abc import Callable, Iterable, Iterator
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
DEMO_GENERATOR_VERSION = 6

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
    backbone: str = "auto"  # model.choice: frozen pre-trained features where weights load, else the small CNN
    image_size: int = 128
    max_epochs: int = 15
    max_steps: int = 1000  # optimizer steps at most: a large folder trains fewer whole epochs (0: no limit)
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
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

    def epochs_for(self, n_images: int) -> int:
        """Whole epochs a training on `n_images` runs at most: `max_epochs`, or fewer where `max_steps`
        optimizer steps come first. A large folder needs fewer passes: on 10,671 demo images, 6 epochs
        reached an evaluation AUC within 0.005 of 15 epochs in 43 % of the time (3 seeds, `pipeline.bench`)."""
        if self.max_steps <= 0:
            return self.max_epochs
        per_epoch = -(-max(n_images, 1) // self.batch_size)
        return max(1, min(self.max_epochs, -(-self.max_steps // per_epoch)))


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
    n_refit: int = 20  # patient resamples (per seed) in which every rule is refitted (the grid's intervals)


@dataclass(frozen=True)
class EvaluationConfig:
    n_bootstrap: int = 500
    seed: int = 0
    exclude_leaking_patients: bool = True
    min_per_class: int = 10  # a group's rate needs this many images of its class (else « n.d. »)


PRIMARY_METRICS = ("balanced_accuracy", "tpr_signed", "fpr_signed", "sr_signed", "auc")  # testable signed quantities


@dataclass(frozen=True)
class RecommendationConfig:
    """Constraints a recommended rule must meet, fixed before the results (fairness/recommendation.py)."""

    max_fnr_increase: float = 0.05  # no group's under-diagnosis (FNR) worse than the reference's by more
    max_randomised: float = 0.10  # share of decisions drawn at random
    max_ba_loss: float = 0.02  # balanced accuracy lost against the reference
    seed: int = 0  # the split of the evaluation patients into selection and report halves


@dataclass(frozen=True)
class AnalysisConfig:
    """The pre-registered primary family: fixed before the results, tested with Holm at FWER `alpha`.

    Each rule of `primary` (« weighting + postprocessor ») is compared with `reference` on each metric
    of `metrics`, measured on `attribute`; everything else in the report is exploratory."""

    primary: tuple[str, ...] = ("group_balanced + none", "uniform + equal_opportunity")
    reference: str = "uniform + none"
    metrics: tuple[str, ...] = ("balanced_accuracy", "tpr_signed")
    attribute: str = "sex"
    alpha: float = 0.05
    n_resamples: int = 200  # patient resamples of the family, its post-processed rules refitted in each
    recommendation: RecommendationConfig = field(default_factory=RecommendationConfig)


PLACEHOLDER_MEMBERS = (
    {"name": "Membre 1 (à compléter)", "role": "données et biais"},
    {"name": "Membre 2 (à compléter)", "role": "modèle et pondérations"},
    {"name": "Membre 3 (à compléter)", "role": "post-traitement et analyse"},
)


@dataclass(frozen=True)
class GroupConfig:
    """Who did what, for the defence's organisation slide (placeholders until the group fills them)."""

    name: str = "Groupe (à compléter)"
    members: tuple[dict, ...] = PLACEHOLDER_MEMBERS  # each {name: ..., role: ...}


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
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    group: GroupConfig = field(default_factory=GroupConfig)

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


# Lightning's strategy names (`StrategyRegistry`, plus "auto"), listed here so that a typo is reported before
# torch is imported; tests/test_small_folders.py checks the list against the installed Lightning.
LIGHTNING_STRATEGIES = (
    "auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true", "ddp_fork",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true", "ddp_notebook",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true", "ddp_spawn",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true", "deepspeed",
    "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
    "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme", "fsdp", "fsdp_cpu_offload", "single_device",
    "single_tpu", "single_xla", "xla", "xla_debug")


# Allowed values of the keys with a fixed vocabulary. The method and backbone names live in registries
# of higher layers: the command line passes them to `load_config(choices=...)`.
CHOICES: dict[str, tuple[str, ...]] = {
    "training.mode": ("last_layer", "full"),
    "training.precision": PRECISIONS,
    "training.feature_source": ("erm", "pretrained"),
    "training.accelerator": ("auto", "cpu", "gpu", "cuda", "mps", "tpu"),
    "training.strategy": LIGHTNING_STRATEGIES,
}


# Ranges of the numbers (a number without an entry must be >= 0): key -> (test, what it must be).
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "training.image_size": (lambda v: 8 <= v <= 4096, "between 8 and 4096 (pixels)"),
    "demo.image_size": (lambda v: 8 <= v <= 4096, "between 8 and 4096 (pixels)"),
    "demo.n_patients": (lambda v: v >= 10, "at least 10"),
    "training.max_epochs": (lambda v: v >= 1, "at least 1"),
    "training.patience": (lambda v: v >= 1, "at least 1"),
    "training.batch_size": (lambda v: v >= 2, "at least 2 (BatchNorm needs two images)"),
    "training.learning_rate": (lambda v: 0 < v < 10, "above 0 and below 10, e.g. 0.001"),
    "training.num_workers": (lambda v: v >= -1, "-1 (automatic) or more"),
    "training.subsample_fraction": (lambda v: 0 < v <= 1, "above 0 and at most 1"),
    "postprocessing.fit_fraction": (lambda v: 0 < v < 1, "strictly between 0 and 1, e.g. 0.5"),
    "evaluation.n_bootstrap": (lambda v: v >= 1, "at least 1 (500 or more for the report)"),
    "evaluation.min_per_class": (lambda v: v >= 1, "at least 1 (default 10)"),
    "postprocessing.folds": (lambda v: v >= 2, "at least 2 (default 5)"),
    "analysis.alpha": (lambda v: 0 < v < 0.5, "above 0 and below 0.5 (default 0.05)"),
    "analysis.n_resamples": (lambda v: v >= 20, "at least 20 (default 200)"),
    "analysis.recommendation.max_randomised": (lambda v: 0 <= v <= 1, "between 0 and 1 (default 0.10)"),
    "analysis.recommendation.max_fnr_increase": (lambda v: 0 <= v <= 1, "between 0 and 1 (default 0.05)"),
    "analysis.recommendation.max_ba_loss": (lambda v: 0 <= v <= 1, "between 0 and 1 (default 0.02)"),
}


NON_EMPTY = ("sensitive_attributes", "training.seeds", "weighting.methods", "postprocessing.methods",
             "analysis.primary", "analysis.metrics")


# What users write for the derived attributes (English, French, the NIH column names): suggested first, since
# the closest spelling is wrong for them (« gender » is closer to « age_band » than to « sex »).
SYNONYMS = {"gender": "sex", "sexe": "sex", "genre": "sex", "patient gender": "sex", "patient_gender": "sex",
            "age": "age_band", "âge": "age_band", "age band": "age_band", "tranche d'âge": "age_band",
            "patient age": "age_band", "patient_age": "age_band", "view position": "view",
            "view_position": "view", "incidence": "view", "position": "view"}


def _closest(value: str, valid: Iterable[str]) -> str:
    valid = list(valid)
    synonym = SYNONYMS.get(str(value).strip().lower())
    if synonym in valid:
        return f" Did you mean '{synonym}'?"
    close = difflib.get_close_matches(str(value), valid, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _number(value: Any, integer: bool) -> float | int | None:
    """`value` as an int (or float), or None; YAML reads 1e-3 as text, so numeric text is accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or value != value:  # NaN
        return None
    if integer:
        return int(value) if float(value).is_integer() else None
    return float(value)


def _coerce(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """`value` converted to the field's type, or a problem appended (and None returned)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        items = list(value) if isinstance(value, list | tuple) else [value]
        out = [_coerce(item, args[0], key, problems) for item in items]
        return None if any(v is None for v in out) else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key} = {value!r}: must be a mapping, e.g. {{\"Sexe\": \"Patient Gender\"}}.")
            return None
        return {str(k): str(v) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{key} = {value!r}: must be true or false.")
        return None
    if hint in (int, float):
        number = _number(value, integer=hint is int)
        if number is None:
            kind = "a whole number" if hint is int else "a number"
            problems.append(f"{key} = {value!r}: must be {kind}.")
        return number
    if hint is str:
        if isinstance(value, str):
            return value.strip()
        problems.append(f"{key} = {value!r}: must be text.")
        return None
    return value  # Any


def _build(cls: type, values: dict[str, Any], where: str, problems: list[str]) -> Any:
    """Build a (nested) dataclass from a dict; every unknown key and wrong type goes to `problems`
    (that key then keeps its default, so the other keys are still checked)."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{where}{name}"
        if name not in known:
            problems.append(f"{key}: unknown key.{_closest(name, known)} Valid keys"
                            f"{' of ' + where.rstrip('.') if where else ''}: {', '.join(known)}.")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                problems.append(f"{key} = {value!r}: must be a mapping of options (keys indented under it).")
                continue
            kwargs[name] = _build(hint, value, f"{key}.", problems)
            continue
        coerced = _coerce(value, hint, key, problems)
        if coerced is not None:
            kwargs[name] = coerced
    return cls(**kwargs)


def _read_text(path: Path) -> str:
    """The config's text: UTF-8 (with or without BOM) or UTF-16 with a BOM, as editors save it."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} on line {line}). "
                          "Save it as UTF-8 in your editor.") from err


def config_file(path: Path | None = None) -> Path:
    """The config file read: `path` (--config), else $FAIRCXR_CONFIG, else the project's study.yml."""
    return Path(path or os.environ.get(CONFIG_ENV) or CONFIG_FILE)


def load_config(path: Path | None = None, data_dir: str | None = None,
                choices: dict[str, Iterable[str]] | None = None) -> StudyConfig:
    """Read and validate the study config; `data_dir` (CLI) or `$FAIRCXR_DATA` override its data folder.

    Every problem is collected, then raised as one ConfigError with one line per problem naming the
    key, the bad value and the valid choices. `choices` adds allowed values for dotted keys (method
    names from the registries, attributes from the data's columns) to `CHOICES`.
    """
    explicit = path or os.environ.get(CONFIG_ENV)
    path = config_file(path)
    values: dict[str, Any] = {}
    if explicit and not path.is_file():
        raise ConfigError(f"{path}: config file not found. Pass an existing file with --config (or "
                          f"${CONFIG_ENV}), or leave both unset to use {CONFIG_FILE}.")
    if path.is_file():
        try:
            values = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err}). Fix the line it names (indent with spaces, "
                              "not tabs).") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of options (key: value lines) at the top level.")
    values = {k: v for k, v in values.items() if v is not None}
    override = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if override:  # a folder given on the command line or in the environment is relative to cwd
        values["data_dir"] = str(Path(override).expanduser().resolve())
    values["data_dir"] = str(values.get("data_dir") or "")
    problems: list[str] = []
    config = _build(StudyConfig, values, "", problems)
    problems += config_problems(config, {**CHOICES, **(choices or {})})
    if problems:
        raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
    return config


def _leaves(obj: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every option of a (nested) config."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{where}{f.name}.")
        else:
            yield f"{where}{f.name}", value


def config_problems(config: StudyConfig, choices: dict[str, Iterable[str]]) -> list[str]:
    """Values out of range or outside their choices, one line each (generic over the config's fields)."""
    problems = []
    for key, value in _leaves(config):
        items = value if isinstance(value, tuple) else (value,)
        if key in NON_EMPTY and not items:
            problems.append(f"{key} is empty: give at least one value.")
        if key in choices:
            valid = list(dict.fromkeys(choices[key]))
            for item in items:
                if item not in valid:
                    problems.append(f"{key} = {item!r}: not a valid choice.{_closest(item, valid)} "
                                    f"Valid: {', '.join(map(str, valid))}.")
        for item in items:
            if isinstance(item, int | float) and not isinstance(item, bool):
                test, what = RANGES.get(key, (lambda v: v >= 0, "0 or more"))
                if not test(item):
                    problems.append(f"{key} = {item!r}: must be {what}.")
    problems += _analysis_problems(config, choices)
    edges = config.age_bands
    if len(edges) < 2 or list(edges) != sorted(set(edges)):
        problems.append(f"age_bands = {list(edges)}: age_bands must be increasing edges, e.g. [0, 40, 60, 200].")
    return problems


def rule_parts(name: str) -> tuple[str, str] | None:
    """« weighting + postprocessor » -> (weighting, postprocessor), None when it is not of that form."""
    parts = [p.strip() for p in str(name).split("+")]
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def _analysis_problems(config: StudyConfig, choices: dict[str, Iterable[str]]) -> list[str]:
    """The primary family names rules of registered methods (the study computes them even when the method
    lists leave them out) and metrics it can test. Without the registries' names (`choices`, given by the
    command line) the names are checked when the study starts."""
    a = config.analysis
    registered = {"weighting": list(choices.get("weighting.methods", [])),
                  "post-processor": list(choices.get("postprocessing.methods", []))}
    problems = []
    for key, names in (("analysis.primary", a.primary), ("analysis.reference", (a.reference,))):
        for name in names:
            parts = rule_parts(name)
            if parts is None:
                problems.append(f"{key} = {name!r}: write a rule as 'weighting + postprocessor', e.g. "
                                "'group_balanced + none' or 'uniform + equal_opportunity'.")
                continue
            for kind, part in zip(registered, parts, strict=True):
                valid = registered[kind]
                if valid and part not in valid:
                    problems.append(f"{key} = {name!r}: '{part}' is not a {kind}.{_closest(part, valid)} "
                                    f"Valid: {', '.join(valid)}.")
    if rule_parts(a.reference) and any(rule_parts(n) == rule_parts(a.reference) for n in a.primary):
        problems.append(f"analysis.primary holds the reference '{a.reference}': a rule compared with itself.")
    for m in a.metrics:
        if m not in PRIMARY_METRICS:
            problems.append(f"analysis.metrics = {m!r}: not a tested quantity.{_closest(m, PRIMARY_METRICS)} "
                            f"Valid: {', '.join(PRIMARY_METRICS)}.")
    if a.attribute not in config.sensitive_attributes:
        problems.append(f"analysis.attribute = {a.attribute!r}: not among sensitive_attributes "
                        f"({', '.join(config.sensitive_attributes)})."
                        f"{_closest(a.attribute, config.sensitive_attributes)}")
    return problems
