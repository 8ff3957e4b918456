"""Every YAML under configs/ loads into its stage's Config class; typos are errors that name the key."""

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from usersim.data_prep.config import DataPrepConfig
from usersim.data_prep.stage_config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# configs/<dir>/ -> "module:Class". A module that cannot be imported is an error, never a skip.
STAGE_CONFIG_CLASSES = {
    "data": "usersim.data_prep.config:DataPrepConfig",
    "train": "usersim.train.config:TrainConfig",
    "eval": "usersim.eval.config:EvalConfig",
    "rl": "usersim.rl.config:RLConfig",
}
# accelerate's own files (configs/accelerate/) follow accelerate's schema, not a usersim stage's.
NOT_STAGE_DIRS = {"accelerate"}
ALL_YAMLS = sorted(p for p in CONFIGS.rglob("*.yaml"))


def _config_class(stage: str):
    module, cls = STAGE_CONFIG_CLASSES[stage].split(":")
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
    with pytest.raises(ConfigError, match=r"'filters\.max_turn_char' for FilterConfig \(did you mean 'max_turn_chars'"):
        load_config(DataPrepConfig, None, ["filters.max_turn_char=5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("# cmd\nsources:\n  - adapter: chitchat\n    max_itemz: 3\n")
    with pytest.raises(ConfigError, match="max_itemz"):
        load_config(DataPrepConfig, bad)
    with pytest.raises(ConfigError, match=r"^override filters.scrub_pii: expected true or false \(bool\), got 'maybe'$"):
        load_config(DataPrepConfig, None, ["filters.scrub_pii=maybe"])


def test_a_missing_stage_config_module_is_an_error_not_a_skip(monkeypatch):
    monkeypatch.setitem(STAGE_CONFIG_CLASSES, "ghost", "data_prep.no_such_config:GhostConfig")
    try:
        _config_class("ghost")
    except ModuleNotFoundError as err:
        assert err.name == "data_prep.no_such_config"
    except pytest.skip.Exception:
        pytest.fail("a missing stage module was skipped instead of reported")
    else:
        pytest.fail("a missing stage module was not reported")


# ---- overrides are parsed against the field's declared type, not as YAML 1.1 scalars


@dataclass
class _Inner:
    ratio: float = 0.5
    tags: list[str] = field(default_factory=list)


@dataclass
class _WithOptional:
    limit: Optional[int] = None
    label: Optional[str] = "x"
    inner: _Inner = field(default_factory=_Inner)


def test_overrides_follow_the_declared_type_not_yaml_1_1():
    cfg = load_config(DataPrepConfig, None, [
        "seed=010", "output_dir=1.10", "split.test_fraction=1e-1", "filters.scrub_pii=False",
        "filters.languages=[en, no, 'on']", "filters.max_turn_chars=+2000",
        "sources=[{adapter: oasst, path: 010, max_items: 5, options: {split: yes}}]",
    ])
    assert cfg.seed == 10 and type(cfg.seed) is int
    assert cfg.output_dir == "1.10"
    assert cfg.split.test_fraction == 0.1 and type(cfg.split.test_fraction) is float
    assert cfg.filters.scrub_pii is False
    assert cfg.filters.languages == ["en", "no", "on"]
    assert cfg.filters.max_turn_chars == 2000
    (src,) = cfg.sources
    assert (src.adapter, src.path, src.max_items, src.options) == ("oasst", "010", 5, {"split": "yes"})
    # A string field takes the text after '=' as it is.
    assert load_config(DataPrepConfig, None, ["output_dir=a: b # c"]).output_dir == "a: b # c"
    assert load_config(DataPrepConfig, None, ["output_dir="]).output_dir == ""


@pytest.mark.parametrize("override,message", [
    ("seed=null", "override seed: null is not allowed, expected an integer (int)"),
    ("seed=~", "override seed: null is not allowed, expected an integer (int)"),
    ("output_dir=null", "override output_dir: null is not allowed, expected a string (str)"),
    ("seed=1.5", "override seed: expected an integer (int), got '1.5'"),
    ("seed=0x10", "override seed: expected an integer (int), got '0x10'"),
    ("split.test_fraction=ten", "override split.test_fraction: expected a number (float), got 'ten'"),
    ("split.test_fraction=nan", "override split.test_fraction: expected a number (float), got 'nan'"),
    ("filters.scrub_pii=yes", "override filters.scrub_pii: expected true or false (bool), got 'yes'"),
    ("filters.languages=en", "override filters.languages: expected a list (list[str]), e.g. [a, b], got 'en'"),
    ("filters.languages=[en, [de]]", "override filters.languages[1]: expected a string (str), got ['de']"),
    ("sources=[{adapter: x, max_items: many}]", "override sources[0].max_items: expected an integer (int), got 'many'"),
    ("sources.path=x", "override sources.path: 'sources' is list[SourceConfig], not a section with keys; "
                       "set it whole, e.g. sources=[...]"),
    ("split=0.2", "override split: expected a mapping for SplitConfig, got '0.2'"),
])
def test_override_that_does_not_fit_its_type_is_an_error_naming_key_and_type(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(DataPrepConfig, None, [override])
    assert str(err.value) == message


def test_optional_fields_take_null_and_nested_keys_are_typed():
    cfg = load_config(_WithOptional, None, ["limit=007", "label=null", "inner.ratio=2", "inner.tags=[a, 'b, c']"])
    assert (cfg.limit, cfg.label, cfg.inner.ratio, cfg.inner.tags) == (7, None, 2.0, ["a", "b, c"])
    assert type(cfg.inner.ratio) is float
    assert load_config(_WithOptional, None, ["limit=~"]).limit is None
    with pytest.raises(ConfigError, match=r"^override limit: expected an integer \(int\) or null, got 'lots'$"):
        load_config(_WithOptional, None, ["limit=lots"])
    with pytest.raises(ConfigError, match=r"'inner\.ratioo'.*did you mean 'ratio'"):
        load_config(_WithOptional, None, ["inner.ratioo=1"])


def test_yaml_file_null_for_a_non_optional_field_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("# cmd\nseed: null\n")
    with pytest.raises(ConfigError, match=r"^seed: null is not allowed, expected an integer \(int\)$"):
        load_config(DataPrepConfig, bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("# cmd\nlimit: null\ninner: {ratio: 1}\n")
    cfg = load_config(_WithOptional, ok)
    assert cfg.limit is None and cfg.inner.ratio == 1.0
