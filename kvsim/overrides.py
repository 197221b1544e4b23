"""How a scenario document is read and changed before it is validated: the YAML file, ``--set key=value``
overrides (dotted keys, YAML-typed values; a list, one string or a ``{key: value}`` dict) and ``rate_req_s: inf``
as a burst (:func:`kvsim.config.load_scenario` runs them in that order). Any problem is a :class:`KvsimError`."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kvsim.errors import KvsimError
from kvsim.textio import parse_value, parse_yaml, read_text


def parse_override(item: str) -> tuple[list[str], Any]:
    """``engine.block_size=32`` -> (["engine", "block_size"], 32); values parse as YAML."""
    if not isinstance(item, str) or "=" not in item:
        raise KvsimError("--set", f"expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not k.strip() for k in key.split(".")):
        raise KvsimError("--set", f"empty key in {item!r}")
    return key.split("."), parse_value(raw, "--set")


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = copy.deepcopy(data)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise KvsimError(".".join(keys), f"cannot set inside non-mapping {k!r}")
            node = nxt
        node[keys[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """A scenario file: UTF-8 YAML holding a non-empty mapping, no duplicate keys."""
    text = read_text(path, "scenario", "scenario YAML file")
    data = parse_yaml(text, str(path), "scenario")
    if data is None:
        raise KvsimError("scenario", f"{path} is empty; expected a mapping of fields (see scenarios/examples/)")
    if not isinstance(data, dict):
        raise KvsimError("scenario", f"{path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def normalize_overrides(overrides) -> list[str]:
    """Overrides as ``key=value`` strings, from a list of them, one string or a ``{key: value}`` dict."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, dict):
        import yaml
        out = []
        for k, v in overrides.items():
            if not isinstance(k, str):
                raise KvsimError("overrides", f"keys must be dotted field names, got {k!r}")
            text = yaml.safe_dump(v, default_flow_style=True, width=1 << 30).strip().removesuffix("...").strip()
            out.append(f"{k}={text}")
        return out
    if isinstance(overrides, (list, tuple)):
        return list(overrides)
    raise KvsimError("overrides", f"expected a dict {{field: value}} or a list of 'field=value', "
                                  f"got {type(overrides).__name__}")


def map_infinite_rate(data: dict) -> tuple[dict, bool]:
    """``workload.rate_req_s: inf`` (vLLM's ``--request-rate inf``) -> ``arrival: burst``: every request at t=0.

    A Poisson or gamma process at an infinite rate is that burst; a trace replay is an error."""
    w = data.get("workload")
    if not isinstance(w, dict):
        return data, False
    r = w.get("rate_req_s")
    inf = (isinstance(r, float) and r == float("inf")) or (isinstance(r, str) and r.strip().lower() in
                                                          ("inf", ".inf", "+inf", "infinity"))
    if not inf:
        return data, False
    if w.get("dataset") == "trace" and not w.get("retime_trace"):
        raise KvsimError("workload.rate_req_s", "inf sends every request at t=0, but the trace replays its own "
                         "arrival_s (workload.retime_trace is false); set retime_trace: true and arrival: burst "
                         "to send its rows at once, or drop the rate")
    if w.get("arrival") not in (None, "burst", "poisson", "gamma"):
        raise KvsimError("workload.rate_req_s", f"inf sends every request at t=0 (kvsim's arrival burst), but "
                         f"arrival is {w.get('arrival')!r}; give a finite rate or workload.arrival=burst")
    w = {**w, "rate_req_s": None, "arrival": "burst"}
    return {**data, "workload": w}, True
