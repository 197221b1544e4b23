"""Dataclass <-> dict plumbing for configs: unknown keys and bad types are errors.

Config dataclasses declare each field with ``cfg_field(default, "help text")``;
the help text is reused by the CLI and the docs. ``from_dict`` builds a
dataclass from a (YAML) mapping and raises :class:`KvsimError` naming the dotted
field path on an unknown key or a value of the wrong type.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from kvsim.errors import KvsimError


def cfg_field(default: Any, help: str, **kw):
    """A dataclass field with a help string (kept in the field's metadata)."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def field_help(cls, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def _coerce(value: Any, typ: Any, path: str) -> Any:
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if typ is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, path)
            except KvsimError as e:
                errors.append(str(e))
        raise KvsimError(path, f"got {value!r}, expected {' or '.join(_tname(a) for a in args)}")
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise KvsimError(path, f"expected a mapping, got {value!r}")
        return from_dict(typ, value, path)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise KvsimError(path, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise KvsimError(path, f"expected a mapping, got {value!r}")
        return dict(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise KvsimError(path, f"expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise KvsimError(path, f"expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise KvsimError(path, f"expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise KvsimError(path, f"expected a string, got {value!r}")
        return value
    return value


def _tname(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def from_dict(cls, data: dict, path: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise KvsimError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KvsimError(path or cls.__name__, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(names)})"
            raise KvsimError(sub, f"unknown field{hint}")
        kwargs[key] = _coerce(value, hints[key], sub)
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(path)
    return obj


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
