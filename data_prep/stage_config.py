"""Typed stage configs: dataclass defaults -> YAML file -> ``key=value`` CLI overrides.

Every stage has one ``*Config`` dataclass. ``load_config(DataPrepConfig, "configs/data/x.yaml",
["seed=3", "split.test_fraction=0.2"])`` returns a fully-typed instance. Unknown keys, at any
depth, raise :class:`ConfigError` naming the key and the valid alternatives: a typo never turns
into a silent default.

Lives in data_prep because data_prep is the bottom layer that train/ and eval/ already import.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override does not match the stage's dataclass."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, recursing into dataclasses and lists."""
    if value is None:
        return None
    tp = _unwrap_optional(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return build_dataclass(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def build_dataclass(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Instantiate ``cls`` from a mapping, rejecting unknown keys by name."""
    types_ = _field_types(cls)
    unknown = [k for k in values if k not in types_]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, list(types_), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(
            f"unknown config key {where + '.' if where else ''}{key!r} for {cls.__name__}{hint}; "
            f"valid keys: {', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(v, types_[k], f"{where + '.' if where else ''}{k}") for k, v in values.items()}
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else child
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a mapping")
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=[x, y]"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        _set_dotted(tree, key, yaml.safe_load(raw) if raw != "" else "")
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML at ``path`` <- ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        values = loaded
    if overrides:
        # Nested mappings merge (split.test_fraction=0.2 keeps the YAML's other split keys);
        # missing nested keys fall back to that dataclass's defaults in build_dataclass.
        values = _deep_merge(values, parse_overrides(overrides))
    return build_dataclass(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (the run directory's ``config.yaml``)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")


def run_stage_cli(argv: list[str], config_cls: type[T], main: Any, prog: str, default_config: str | None = None) -> int:
    """Shared ``usersim <stage> --config X [--output_dir D] [key=value ...]`` handling."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=(config_cls.__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--config", default=default_config, help="YAML config (see configs/)")
    parser.add_argument("--output_dir", "--output-dir", dest="output_dir", default=None,
                        help="where the run directory goes (overrides output_dir in the config)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        cfg = load_config(config_cls, args.config, overrides)
    except ConfigError as err:
        parser.error(str(err))
    out = main(cfg)
    print(f"[{prog}] wrote {out}")
    return 0
