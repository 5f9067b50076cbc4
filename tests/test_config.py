"""The one config: defaults, overrides, clear errors."""

from pathlib import Path

import pytest

from pipeline.config import CONFIG_FILE, ConfigError, load_config


def test_project_config_loads_with_documented_defaults():
    config = load_config(CONFIG_FILE, data_dir="")
    assert config.sensitive_attributes == ("sex", "age_band", "view")
    assert config.age_band_labels() == ["0-39", "40-59", "60+"]
    assert "uniform" in config.weighting.methods and len(config.weighting.methods) >= 6
    assert config.is_demo


def test_data_folder_override_from_environment_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAIRCXR_DATA", "mes données")
    config = load_config(CONFIG_FILE)
    assert config.data_path() == tmp_path / "mes données"
    assert not config.is_demo


def test_command_line_folder_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRCXR_DATA", str(tmp_path / "env"))
    assert load_config(CONFIG_FILE, data_dir=str(tmp_path / "cli")).data_path() == tmp_path / "cli"


def test_unknown_key_names_the_file_and_the_known_keys(tmp_path):
    path = tmp_path / "study.yml"
    path.write_text("training:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"study.yml: training.epochs: unknown key. Did you mean .max_epochs.") as err:
        load_config(path)
    assert "max_epochs" in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("age_bands: [40, 20]", "age_bands must be increasing"),
    ("training: {mode: fast}", "training.mode"),
    ("postprocessing: {fit_fraction: 1.5}", "fit_fraction"),
    ("data_dir: [unclosed", "not valid YAML"),
])
def test_invalid_values_are_refused_with_a_fix(tmp_path: Path, text, message):
    path = tmp_path / "study.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_custom_age_bands_and_scalar_lists(tmp_path):
    path = tmp_path / "study.yml"
    path.write_text("age_bands: [0, 20, 80, 120]\nsensitive_attributes: sex\ntraining: {seeds: 3}\n")
    config = load_config(path)
    assert config.age_band_labels() == ["0-19", "20-79", "80+"]
    assert config.sensitive_attributes == ("sex",)
    assert config.training.seeds == (3,)


# ------------------------------------------------------------------ the whole config validated first (issue 15)
import dataclasses  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from pipeline.cli import REGISTRIES, registered_names  # noqa: E402
from pipeline.config import StudyConfig, config_problems  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAIRCXR_PROGRESS": "0", **(env or {})}
    env.pop("FAIRCXR_DATA", None)
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


BAD = """\
sensitive_attributes: [sex, age_bandz]
training:
  epochs: 3
  max_epochs: ten
  backbone: resnet81
  learning_rate: 1e-3
  batch_size: 1
weighting:
  methods: [uniform, reweighting]
postprocessing:
  methods: [none, equalised_odds]
  fit_fraction: 1.5
evaluaton:
  n_bootstrap: 5
"""


@pytest.mark.parametrize("command", [["check"], ["study"], ["render", "--no-quarto"]])
def test_every_config_problem_is_one_line_before_any_work(tmp_path: Path, command: list[str]):
    config = tmp_path / "study.yml"
    config.write_text(BAD + f"data_dir: {tmp_path / 'no such folder'}\n", encoding="utf-8")
    done = run_cli("--config", str(config), *command, env={"FAIRCXR_CACHE": str(tmp_path / "cache")})
    errors = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    expected = [  # (key, bad value, valid choice or fix)
        ("training.epochs", "unknown key", "Did you mean 'max_epochs'?"),
        ("training.max_epochs = 'ten'", "whole number", ""),
        ("training.backbone = 'resnet81'", "not a valid choice", "Did you mean 'resnet18'?"),
        ("training.batch_size = 1", "at least 2", ""),
        ("weighting.methods = 'reweighting'", "not a valid choice", "Did you mean 'reweighing'?"),
        ("postprocessing.methods = 'equalised_odds'", "Valid: none, threshold_global", ""),
        ("postprocessing.fit_fraction = 1.5", "strictly between 0 and 1", ""),
        ("evaluaton", "unknown key", "Did you mean 'evaluation'?"),
    ]
    for key, what, fix in expected:
        line = next((e for e in errors if f"{config}: {key}" in e), None)
        assert line is not None and what in line and fix in line, (key, errors)
    assert len(errors) == len(expected)  # one line each; learning_rate 1e-3 (text in YAML) is accepted
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))  # nothing decoded
    assert "no such folder" not in done.stderr  # the data folder is not even looked at


def test_sensitive_attributes_are_checked_against_the_data_columns(tmp_path: Path):
    from pipeline.data.demo import make_demo

    data = make_demo(tmp_path / "demo", n_patients=30, seed=1, image_size=16)
    meta = data / "metadata.csv"
    lines = meta.read_text(encoding="utf-8").splitlines()
    meta.write_text("\n".join([lines[0] + ",Hospital", *[line + ",A" for line in lines[1:]]]) + "\n", encoding="utf-8")
    config = tmp_path / "study.yml"
    config.write_text("sensitive_attributes: [sex, race]\nweighting: {attribute: hospital}\n", encoding="utf-8")
    done = run_cli("--config", str(config), "check", str(data), env={"FAIRCXR_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2
    assert "sensitive_attributes = 'race': not a valid choice. Valid: sex, age_band, view, Hospital." in done.stderr
    assert "weighting.attribute = 'hospital': not a valid choice. Did you mean 'Hospital'?" in done.stderr
    config.write_text("sensitive_attributes: [sex, Hospital]\n", encoding="utf-8")
    done = run_cli("--config", str(config), "check", str(data), env={"FAIRCXR_CACHE": str(tmp_path / "cache")})
    assert done.returncode in (0, 1), done.stdout + done.stderr


def test_every_number_is_range_checked_without_code_per_key():
    """Generic over the dataclass fields: a new numeric key is checked with no extra code."""
    def negative(obj):
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                changes[f.name] = negative(value)
            elif isinstance(value, int | float) and not isinstance(value, bool) and f.name != "devices":
                changes[f.name] = -5
        return dataclasses.replace(obj, **changes)

    config = negative(StudyConfig())
    numeric = [line.split(" = ")[0] for line in config_problems(config, {})]
    assert {"seed", "demo.n_patients", "training.max_epochs", "training.learning_rate",
            "postprocessing.fit_fraction", "evaluation.n_bootstrap", "evaluation.seed"} <= set(numeric)
    assert config_problems(StudyConfig(), {}) == []


def test_registry_names_read_from_the_sources_are_the_registries():
    from pipeline.fairness.postprocess import POSTPROCESSORS
    from pipeline.fairness.weighting import WEIGHTINGS
    from pipeline.model.backbones import BACKBONES

    registries = {"weighting.methods": WEIGHTINGS, "postprocessing.methods": POSTPROCESSORS,
                  "training.backbone": BACKBONES}
    for key, module in REGISTRIES.items():
        assert sorted(registered_names(module)) == sorted(registries[key]), key


def test_the_config_file_encoding(tmp_path: Path):
    path = tmp_path / "study.yml"
    path.write_bytes("# données de l'étudiant\ntraining: {max_epochs: 3}\n".encode("utf-16"))  # Notepad's « Unicode »
    assert load_config(path).training.max_epochs == 3
    path.write_bytes("# données\ntraining: {max_epochs: 3}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 1\)\. Save it as UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yml")
