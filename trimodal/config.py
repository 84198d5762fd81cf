"""Typed configs: dataclasses filled from YAML/dicts, validated before any work starts.

Every component declares a dataclass; `from_dict` walks it, rejects unknown keys with the
nearest valid names, checks types, and reports errors with the full dotted key path
(``sources[1].kind``). Each dataclass's `validate()` runs once: a nested one right after it is
built, its errors prefixed with its key (``model: n_heads: ...``); the top-level one by
`from_dict`, prefixed with `where` when the caller names the data's origin (a file). A field
whose value needs more than the type (a mapping or the path of a YAML holding it, a choice of
dataclass by a `kind` key) names its converter in ``field(metadata={"convert": fn})``;
`fn(value, key)` returns the built value or raises ConfigError naming `key`. Kept dependency-free (no pydantic) because dataclasses are what the
rest of the code passes around; the trade-off is a small hand-written type checker that knows
the few type shapes configs use (scalars, Optional, Literal, list, dict, nested dataclasses).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from trimodal.errors import ConfigError

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e6` and `3.0e-4` as floats, as YAML 1.2 does; PyYAML's YAML 1.1
    resolver needs a dot and a signed exponent and would hand the type check a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$"""),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a non-mapping document is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(), Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def from_yaml(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, load_yaml(path), where=str(path))


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from `data`, validating keys and types recursively, then run its
    `validate()` once. `where` (e.g. the YAML path) starts every error key and prefixes the
    top-level validation errors."""
    key = where or cls.__name__
    if dataclasses.is_dataclass(cls):
        obj = _convert_dataclass(cls, data, key, nested=False)
    else:
        obj = _convert(cls, data, key)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            if where:
                raise ConfigError(f"{where}: {e}") from e
            raise
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass → plain JSON/YAML-safe structure."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key, nested=True)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {args}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_convert(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        kt, vt = args or (Any, Any)
        return {k: _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _convert_dataclass(cls: Any, value: Any, key: str, nested: bool) -> Any:
    """Build `cls` from a mapping. A nested dataclass (`nested`: a field or an element of its
    parent) is validated here, its errors prefixed with its key; the top-level one is left to
    `from_dict`, so that every `validate()` runs exactly once."""
    if dataclasses.is_dataclass(value) and isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping for {cls.__name__}, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(str(k), list(fields), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"{key}.{k}: unknown key{hint}; valid keys: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{key}.{name}"
        if name in value:
            convert = f.metadata.get("convert")
            kwargs[name] = convert(value[name], sub) if convert else _convert(hints[name], value[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate) and nested:
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{key}: {e}") from e
    return obj
