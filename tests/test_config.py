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
