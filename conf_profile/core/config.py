"""Typed configuration: dataclass defaults < YAML file < ``--set key=value`` overrides.

Every stage has a dataclass section in :class:`conf_profile.core.settings.Config`. Loading is strict:
an unknown key, a value of the wrong type or a value that fails a section's ``validate()`` raises
:class:`ConfigError` naming the key, the value and the fix, before any work starts.

>>> from dataclasses import dataclass
>>> @dataclass
... class Section:
...     name: str = "a"
...     k: int = 5
>>> build(Section, {"k": 7}, ["name=b"])
Section(name='b', k=7)
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, with the key, the value and how to fix it in the message."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=3", "c=x"]`` into ``{"a": {"b": 3}, "c": "x"}``; values are read as YAML scalars.

    >>> parse_overrides(["label.samples=5", "run.name=nightly", "x.flag=true"])
    {'label': {'samples': 5}, 'run': {'name': 'nightly'}, 'x': {'flag': True}}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set label.samples=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__})") from exc
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' was already set to a plain value")
            node = child
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins.

    >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def changed_keys(base: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose value differs between two nested mappings (keys of either).

    >>> changed_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "d": 3, "e": 0})
    ['a.c', 'e']
    """
    out = []
    for key in sorted(set(base) | set(new), key=str):
        x, y = base.get(key), new.get(key)
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += changed_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML file; the top level must be a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--config {str(path)!r}: no such file; pass the path of a YAML config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {str(path)!r}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {str(path)!r}: the top level must be a mapping of sections, got {type(data).__name__}"
        )
    return data


def build(cls: type[T], data: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> T:
    """Build the dataclass ``cls`` from defaults, then ``data`` (e.g. a YAML file), then ``overrides``."""
    merged = merge(data or {}, parse_overrides(overrides))
    return _from_dict(cls, merged, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for the run manifest and for logging)."""
    return dataclasses.asdict(cfg)


def _from_dict(cls: type[T], data: Any, path: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{path}{key}"
        if key not in fields:
            raise ConfigError(_unknown_key_message(full, str(key), sorted(fields)))
        default = fields[key].default_factory  # type: ignore[misc]
        if isinstance(value, Mapping) and typing.get_origin(hints[key]) is dict and default is not dataclasses.MISSING:
            value = {**default(), **value}  # a mapping setting overrides the default's keys one by one
        kwargs[key] = _coerce(hints[key], value, full)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{path.rstrip('.') or 'config'}: {exc}") from exc
    return obj


def _unknown_key_message(full: str, key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{full}'{hint} Valid keys here: {', '.join(valid)}"


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key + ".")  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):  # YAML 1.1 reads a bare on/off as a boolean
            value = "on" if value else "off"
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list, e.g. {key}=[a, b]")
        item_tp = args[0] if args else Any
        items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    return _coerce_scalar(tp, value, key)


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r}: expected a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, datetime.date):  # YAML reads 2026-11-20 as a date
            return value.isoformat()
        raise ConfigError(f"{key}={value!r}: expected a string")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}={value!r}: expected {getattr(tp, '__name__', tp)}")
