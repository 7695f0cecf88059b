"""Building typed config dataclasses from YAML data: type checks and lossless conversions only."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    types_of = hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys {[prefix + k for k in unknown]}; known keys"
                         f"{' under ' + prefix.rstrip('.') if prefix else ''}: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = types_of[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, hint, prefix + name)
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a type hint, converting only lossless cases (int -> float, '1e-4' -> float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return coerce(value, opt, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"config key {key}: {value!r} fits none of {_name(hint)}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key}: expected a list, got {value!r}")
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"config key {key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
            except ValueError:
                pass
        raise ValueError(f"config key {key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"config key {key}: expected a string, got {value!r}")
    raise ValueError(f"config key {key}: unsupported type {_name(hint)}")  # pragma: no cover


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)
