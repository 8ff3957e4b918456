"""Typed stage configs: dataclass defaults -> YAML file -> ``key=value`` CLI overrides.

Every stage has one ``*Config`` dataclass. ``load_config(DataPrepConfig, "configs/data/x.yaml",
["seed=3", "split.test_fraction=0.2"])`` returns a fully-typed instance. Unknown keys, at any
depth, raise :class:`ConfigError` naming the key and the valid alternatives: a typo never turns
into a silent default.

An override's value is parsed against the declared type of its field, not as YAML: ``seed=010``
is 10, ``output_dir=1.10`` is the string "1.10", ``flag=yes`` is an error (booleans are
``true``/``false``), and ``null`` (or ``~``) is accepted only by an ``Optional`` field. A value
that does not fit raises :class:`ConfigError` naming the key and the type it expected. Lists and
mappings are written as YAML flow values (``languages=[en, de]``, ``sources=[{adapter: oasst,
path: x}]``); their items are parsed against their own declared types the same way. YAML files
load as YAML reads them, and their values are then checked against the same types.

Lives in data_prep because data_prep is the bottom layer that train/ and eval/ already import.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
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


def _split_optional(tp: Any) -> tuple[Any, bool]:
    """(the type inside ``Optional[...]``, whether None is allowed)."""
    if tp is Any:
        return tp, True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _label(tp: Any) -> str:
    """``list[str]``, ``SplitConfig``, ``dict[str, Any]``: a type as a reader writes it."""
    if tp is Any:
        return "Any"
    if tp is type(None):
        return "None"
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_label(a) for a in args)
    if args:
        return f"{typing.get_origin(tp).__name__}[{', '.join(_label(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


_SCALAR_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _describe(tp: Any, optional: bool) -> str:
    if dataclasses.is_dataclass(tp):
        text = f"a mapping for {tp.__name__}"
    elif tp in _SCALAR_WORDS:
        text = f"{_SCALAR_WORDS[tp]} ({_label(tp)})"
    elif typing.get_origin(tp) in (list, tuple):
        text = f"a list ({_label(tp)}), e.g. [a, b]"
    elif typing.get_origin(tp) is dict:
        text = f"a mapping ({_label(tp)}), e.g. {{key: value}}"
    else:
        text = _label(tp)
    return text + " or null" * optional


def _unknown_key(cls: type, key: str, where: str) -> ConfigError:
    names = list(_field_types(cls))
    near = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    path = f"{where}.{key}" if where else key
    return ConfigError(f"unknown config key {path!r} for {cls.__name__}{hint}; valid keys: {', '.join(sorted(names))}")


# Words an override uses for "no value". ("none" is not one: it is a legitimate string value.)
_NULL_WORDS = {"null", "~"}
_INTEGER = re.compile(r"[+-]?\d+")


def _convert(value: Any, tp: Any, where: str, text: bool) -> Any:
    """``value`` as the annotated type ``tp``, recursing into dataclasses, lists and mappings.

    ``text=False``: ``value`` comes from a YAML file and is already typed by YAML; it is checked
    (leniently: a YAML number is accepted for a string field). ``text=True``: it comes from a
    ``key=value`` override, whose scalars are still strings; each is parsed as ``tp`` says, so
    ``010`` is the integer 10 or the string "010", never YAML 1.1's octal 8.
    """
    tp, optional = _split_optional(tp)
    is_null = value is None or (text and isinstance(value, str) and value.strip().lower() in _NULL_WORDS)
    prefix = "override " if text else ""
    if is_null:
        if optional:
            return None
        raise ConfigError(f"{prefix}{where}: null is not allowed, expected {_describe(tp, False)}")

    def mismatch() -> ConfigError:
        return ConfigError(f"{prefix}{where}: expected {_describe(tp, optional)}, got {value!r}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise mismatch()
        return build_dataclass(tp, value, where, text=text)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise mismatch()
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{where}[{i}]", text) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise mismatch()
        (_, value_tp) = typing.get_args(tp) or (Any, Any)
        return {k: _convert(v, value_tp, f"{where}.{k}", text) for k, v in value.items()}
    if text and not isinstance(value, str):  # a list or mapping where a single value belongs
        raise mismatch()
    if tp is bool:
        if text and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not text and isinstance(value, bool):
            return value
        raise mismatch()
    if tp is int:
        if text and _INTEGER.fullmatch(value.strip()):
            return int(value)
        if not text and isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer():
            return int(value)
        raise mismatch()
    if tp is float:
        if text:
            try:
                number = float(value)
            except ValueError:
                raise mismatch() from None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            raise mismatch()
        if not math.isfinite(number):
            raise mismatch()
        return number
    if tp is str:
        if text:
            return value
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise mismatch()
    return value


def build_dataclass(cls: type[T], values: dict[str, Any], where: str = "", text: bool = False) -> T:
    """Instantiate ``cls`` from a mapping, rejecting unknown keys by name (``text``: see :func:`_convert`)."""
    types_ = _field_types(cls)
    for key in values:
        if key not in types_:
            raise _unknown_key(cls, key, where)
    kwargs = {k: _convert(v, types_[k], f"{where}.{k}" if where else k, text) for k, v in values.items()}
    return cls(**kwargs)


def _override_type(cls: type, key: str) -> Any:
    """The declared type of the (dotted) field ``key`` of ``cls``; each part before the last must
    name a nested dataclass."""
    parts = key.split(".")
    owner: Any = cls
    for i, part in enumerate(parts):
        types_ = _field_types(owner)
        where = ".".join(parts[:i])
        if part not in types_:
            raise _unknown_key(owner, part, where)
        tp = types_[part]
        if i == len(parts) - 1:
            return tp
        inner, _ = _split_optional(tp)
        if not dataclasses.is_dataclass(inner):
            section = ".".join(parts[: i + 1])
            example = {list: "[...]", tuple: "[...]", dict: "{...}"}.get(typing.get_origin(inner), "<value>")
            raise ConfigError(f"override {key}: {section!r} is {_label(tp)}, not a section with keys; "
                              f"set it whole, e.g. {section}={example}")
        owner = inner
    raise AssertionError("unreachable")


def _parse_override_value(raw: str, tp: Any, key: str) -> Any:
    """The text after ``=`` as the declared type ``tp``. A string field takes the text as it is;
    a number or boolean is parsed from it; a list, mapping or nested dataclass is read as a YAML
    flow value (``[a, b]``, ``{k: v}``) whose scalars stay strings until each is parsed against
    its own declared type."""
    inner, _ = _split_optional(tp)
    if inner is str or inner in _SCALAR_WORDS:
        value: Any = raw
    else:
        try:
            value = yaml.load(raw, Loader=yaml.BaseLoader)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err)
            raise ConfigError(f"override {key}: cannot read {raw!r} as {_describe(inner, False)}: {problem}") from None
    return _convert(value, tp, key, text=True)


def parse_overrides(cls: type, overrides: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=[x, y]"]`` -> nested dict of values already converted to the types that
    ``cls`` declares for ``a`` and ``b.c`` (see :func:`_parse_override_value`)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        value = _parse_override_value(raw, _override_type(cls, key), key)
        *parents, leaf = key.split(".")
        node = tree
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parents[: i + 1])
                raise ConfigError(f"override {key}: {section!r} was already set whole by an earlier override")
        node[leaf] = value
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
        values = _deep_merge(values, parse_overrides(cls, overrides))
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
