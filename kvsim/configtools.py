"""Dataclass <-> dict plumbing for configs: unknown keys and bad types are errors.

Config dataclasses declare each field with ``cfg_field(default, "help text")``;
the help text is reused by the CLI and the docs. ``from_dict`` builds a
dataclass from a (YAML) mapping and raises :class:`KvsimError` naming the dotted
field path on an unknown key or a value of the wrong type.

This is the one place numbers are checked: every float must be finite, every
int a whole number (bool is not a number), and a field declared with
``cfg_field(..., lo=, hi=)`` must lie in that range (``lo_open``/``hi_open``
make an end exclusive). :func:`check_fields` applies the same checks to a
dataclass built in Python, so the API and the YAML path refuse the same values.
Checks that relate several fields stay in each config's ``validate``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any

from kvsim.errors import KvsimError


def cfg_field(default: Any, help: str, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False, **kw):
    """A dataclass field with a help string and an optional allowed range (kept in the field's metadata)."""
    meta = {"help": help}
    if lo is not None or hi is not None:
        meta["range"] = (lo, hi, lo_open, hi_open)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def range_text(rng, integer: bool) -> str:
    lo, hi, lo_open, hi_open = rng
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {_fmt(lo)}"
    return f"{kind} {'<' if hi_open else '<='} {_fmt(hi)}"


def check_range(path: str, value, rng, integer: bool) -> None:
    """KvsimError unless ``value`` lies in ``rng`` = (lo, hi, lo_open, hi_open)."""
    lo, hi, lo_open, hi_open = rng
    ok = ((lo is None or (value > lo if lo_open else value >= lo))
          and (hi is None or (value < hi if hi_open else value <= hi)))
    if not ok:
        raise KvsimError(path, f"got {_fmt(value)}, expected {range_text(rng, integer)}")


def check_number(path: str, value, typ, rng=None):
    """The one number check: right type, finite, whole for ints, inside ``rng``; returns the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        want = "an integer" if typ is int else "a number"
        raise KvsimError(path, f"expected {want}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        want = range_text(rng, typ is int) if rng else ("an integer" if typ is int else "a finite number")
        raise KvsimError(path, f"got {value!r}, expected {want}")
    if typ is int:
        if isinstance(value, float) and not value.is_integer():
            raise KvsimError(path, f"expected an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if rng:
        check_range(path, value, rng, typ is int)
    return value


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
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:                    # Optional[X]: X's own message
            return _coerce(value, inner[0], path)
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
    if typ is int or typ is float:
        return check_number(path, value, typ)
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
    object.__setattr__(obj, "_given", frozenset(kwargs))
    check_fields(obj, path, recurse=False)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(path)
    return obj


def check_fields(obj, path: str = "", *, recurse: bool = True) -> None:
    """Type, finiteness and range of every field of dataclass ``obj`` (and of nested configs)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(v):
            if recurse:
                check_fields(v, sub)
            continue
        typ = hints[f.name]
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if typing.get_origin(typ) is not None and len(args) == 1 and type(None) in typing.get_args(typ):
            if v is None:
                continue
            typ = args[0]
        if typ in (int, float):
            setattr(obj, f.name, check_number(sub, v, typ, f.metadata.get("range")))
        elif typing.get_origin(typ) is list and typing.get_args(typ) in ((int,), (float,)):
            if not isinstance(v, (list, tuple)):
                raise KvsimError(sub, f"expected a list, got {v!r}")
            setattr(obj, f.name, [_item(sub, i, x, typing.get_args(typ)[0], f.metadata.get("range"))
                                  for i, x in enumerate(v)])
        elif typ is str and not isinstance(v, str):
            raise KvsimError(sub, f"expected a string, got {v!r}")
        elif typ is bool and not isinstance(v, bool):
            raise KvsimError(sub, f"expected true or false, got {v!r}")


def _item(path: str, i: int, value, typ, rng):
    try:
        return check_number(path, value, typ, rng)
    except KvsimError as e:
        raise KvsimError(path, f"item {i}: {e.message}") from None


def explicit(obj, name: str) -> bool:
    """Whether field ``name`` was given (in the mapping ``from_dict`` read, or differs from its default)."""
    given = getattr(obj, "_given", None)
    if given is not None:
        return name in given
    f = next(f for f in dataclasses.fields(obj) if f.name == name)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(obj, name) != default


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
