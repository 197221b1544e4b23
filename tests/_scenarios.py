"""Test scenarios built from a base mapping with the project's own dotted overrides (``load_scenario``)."""
from __future__ import annotations

from kvsim.config import load_scenario


def overridden(base: dict, engine: dict | None = None, workload: dict | None = None, **top):
    """``base`` with ``engine.<k>``, ``workload.<k>`` and top-level ``<k>`` set (``base`` itself unchanged)."""
    sets = {f"engine.{k}": v for k, v in (engine or {}).items()}
    sets.update({f"workload.{k}": v for k, v in (workload or {}).items()})
    sets.update(top)
    return load_scenario(base, sets)


def assert_same_runs(fast, *others) -> None:
    """``fast``'s outputs equal each of ``others``' exactly: requests and iteration frames, and the summary."""
    import pandas as pd
    for other in others:
        pd.testing.assert_frame_equal(fast.requests, other.requests, check_exact=True)
        pd.testing.assert_frame_equal(fast.iterations, other.iterations, check_exact=True)
        assert fast.summary == other.summary
