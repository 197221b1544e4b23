"""``kvsim fields``: every scenario field with its type, default, allowed range and help.

Read from the config dataclasses themselves (``cfg_field(default, help, lo=, hi=)``
in :mod:`kvsim.config`, :mod:`kvsim.workload.config` and the cost model's
parameters), so the list cannot drift from what ``load_scenario`` accepts.
"""
from __future__ import annotations

import dataclasses
import typing

from kvsim.configtools import range_text


def _type_name(t) -> str:
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in args)
    if typing.get_origin(t) is list:
        return f"list[{', '.join(_type_name(a) for a in args)}]"
    return getattr(t, "__name__", str(t))


def field_rows(cls=None, prefix: str = "") -> list[dict]:
    """One row per leaf field: ``field`` (dotted), ``type``, ``default``, ``range``, ``help``."""
    from kvsim.config import Scenario
    cls = cls or Scenario
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        t = hints[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(t):
            rows += field_rows(t, path + ".")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rng = f.metadata.get("range")
        integer = int in typing.get_args(t) or t is int or typing.get_args(t) == (int,)
        rows.append({"field": path, "type": _type_name(t), "default": "null" if default is None else repr(default)
                     if isinstance(default, str) else str(default).lower() if isinstance(default, bool) else str(default),
                     "range": range_text(rng, integer) if rng else "", "help": f.metadata.get("help", "")})
    return rows


def format_fields(rows: list[dict], grep: str | None = None) -> str:
    if grep:
        rows = [r for r in rows if grep.lower() in (r["field"] + " " + r["help"]).lower()]
    lines = []
    for r in rows:
        rng = f"; {r['range']}" if r["range"] else ""
        lines.append(f"{r['field']}  ({r['type']}, default {r['default']}{rng})\n    {r['help']}")
    return "\n".join(lines)
