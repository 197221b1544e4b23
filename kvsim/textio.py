"""Reading the user's files: UTF-8 text (a BOM is tolerated), YAML and JSON, one-line errors.

* ``read_text(path, field)``: the file as text; a missing, unreadable, binary
  or non-UTF-8 file (or a directory) is a :class:`KvsimError` naming ``field``.
* ``parse_yaml(text, where, field)``: YAML with two fixes over PyYAML's YAML 1.1
  reading — a duplicate key in a mapping is an error (not "the last wins"), and
  numbers written without a dot (``1e-300``, ``2E5``) are numbers, as in YAML
  1.2, not strings.
* ``read_json(path, field)``: a JSON file, non-finite constants refused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from kvsim.errors import KvsimError

MAX_TEXT_BYTES = 256 << 20          # scenario/profile/record files larger than this are refused


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 numbers (no octal ``010``, binary ``0b11`` or base-60 ``1:30`` ints of YAML 1.1)
    and duplicate keys refused."""


_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$")
_NUMBER_TAGS = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:int")
_Loader.yaml_implicit_resolvers = {k: [(t, r) for t, r in v if t not in _NUMBER_TAGS]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))


def _int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """YAML 1.2 integers: decimal (a leading zero is still decimal), ``0o`` octal, ``0x`` hex."""
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _int)


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a mapping key is not a scalar",
                                                    key_node.start_mark) from None
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_text(path, field: str, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (BOM stripped); any problem is one KvsimError naming ``field``."""
    p = Path(path)
    try:
        if p.is_dir():
            raise KvsimError(field, f"{path} is a directory; expected a {what}")
        if p.stat().st_size > MAX_TEXT_BYTES:
            raise KvsimError(field, f"{path} is larger than {MAX_TEXT_BYTES >> 20} MiB; expected a {what}")
        data = p.read_bytes()
    except OSError as e:
        raise KvsimError(field, f"cannot read {path}: {e.strerror or e}") from None
    if b"\x00" in data:
        raise KvsimError(field, f"{path} is a binary file; expected a UTF-8 text {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise KvsimError(field, f"{path} is not UTF-8 text (byte {e.start}); expected a UTF-8 {what}") from None


def parse_yaml(text: str, where: str, field: str):
    """YAML ``text`` (from ``where``) with duplicate keys refused and YAML 1.2 numbers."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise KvsimError(field, f"{where}:{line} is not valid YAML ({problem})") from None
    except (ValueError, OverflowError, RecursionError) as e:
        raise KvsimError(field, f"{where} is not valid YAML ({e})") from None


def parse_value(raw: str, field: str):
    """One ``--set``/``--grid`` value: YAML if it parses, else the raw string."""
    if not raw.strip():
        return None
    try:
        return yaml.load(raw, Loader=_Loader)  # noqa: S506
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        return raw


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path, field: str, what: str = "JSON file"):
    """The parsed JSON document at ``path``; NaN/Infinity constants are refused."""
    text = read_text(path, field, what)
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise KvsimError(field, f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except (ValueError, RecursionError) as e:
        raise KvsimError(field, f"{path}: not valid JSON ({e})") from None
