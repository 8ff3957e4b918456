"""Every YAML under configs/ loads into its stage's Config class; typos are errors that name the key."""

import importlib
import importlib.util
from pathlib import Path

import pytest

from data_prep.config import DataPrepConfig
from data_prep.stage_config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# configs/<dir>/ -> "module:Class"; imported lazily so a stage that is not written yet is skipped.
STAGE_CONFIG_CLASSES = {
    "data": "data_prep.config:DataPrepConfig",
    "train": "train.config:TrainConfig",
    "eval": "eval.config:EvalConfig",
}
# accelerate's own files (configs/accelerate/) follow accelerate's schema, not a usersim stage's.
NOT_STAGE_DIRS = {"accelerate"}
ALL_YAMLS = sorted(p for p in CONFIGS.rglob("*.yaml"))


def _config_class(stage: str):
    module, cls = STAGE_CONFIG_CLASSES[stage].split(":")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"stage module {module} not written yet")
    return getattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("path", ALL_YAMLS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_yaml_starts_with_the_command_that_runs_it(path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#") and len(first.strip("# ")) > 0, f"{path}: first line must be a comment with the command"


@pytest.mark.parametrize("path", [p for p in ALL_YAMLS if p.parent.name not in NOT_STAGE_DIRS],
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_stage_yaml_loads_into_its_config_class(path):
    stage = path.relative_to(CONFIGS).parts[0]
    assert stage in STAGE_CONFIG_CLASSES, f"{path}: no Config class mapped for configs/{stage}/"
    cls = _config_class(stage)
    cfg = load_config(cls, path)
    assert isinstance(cfg, cls)


def test_data_yaml_commands_name_their_own_file():
    for path in sorted((CONFIGS / "data").glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert f"usersim data --config configs/data/{path.name}" in first, path


def test_data_configs_resolve_as_documented():
    smoke = load_config(DataPrepConfig, CONFIGS / "data" / "smoke.yaml")
    assert smoke.sources[0].adapter == "chitchat" and 0 < smoke.sources[0].max_items <= 500
    full = load_config(DataPrepConfig, CONFIGS / "data" / "chitchat.yaml", ["seed=3", "split.test_fraction=0.2"])
    assert (full.seed, full.split.test_fraction, full.split.validation_fraction) == (3, 0.2, 0.05)
    assert full.sources[0].max_items == 0


def test_unknown_keys_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'sed'.*did you mean 'seed'"):
        load_config(DataPrepConfig, None, ["sed=1"])
    with pytest.raises(ConfigError, match="filters.*'max_turn_char'"):
        load_config(DataPrepConfig, None, ["filters.max_turn_char=5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("# cmd\nsources:\n  - adapter: chitchat\n    max_itemz: 3\n")
    with pytest.raises(ConfigError, match="max_itemz"):
        load_config(DataPrepConfig, bad)
    with pytest.raises(ConfigError, match="expected true/false"):
        load_config(DataPrepConfig, None, ["filters.scrub_pii=maybe"])
