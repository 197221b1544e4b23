"""An engine run that keeps every step's plan shape, for the gap scripts (decode_gap.py, prefill_gap.py).

The engine's records give each step's sizes; re-timing a step in isolation needs its exact shape as well:
each prompt's new and cached tokens and each decode row's context. :func:`run_recorded` wraps the runner's
``prepare`` to keep them and adds them to the iteration frame as ``new``, ``cached`` and ``ctx``.
"""
from __future__ import annotations

import argparse


def gap_parser(description: str, samples: int) -> argparse.ArgumentParser:
    """The gap scripts' common arguments: scenario, --out, --samples, --profile, --set."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("scenario")
    ap.add_argument("--out", required=True)
    ap.add_argument("--samples", type=int, default=samples)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--set", action="append", default=[])
    return ap


def run_recorded(sc, mark=lambda phase: None):
    """``(engine, result, iterations)`` of ``sc`` on the real engine, the iterations with each step's
    ``new`` / ``cached`` prompt tokens and decode contexts ``ctx``. ``mark(phase)`` is called at "build",
    "run" and "replay"."""
    from kvsim.engine.engine import RealEngine
    mark("build")
    eng = RealEngine(sc)
    shapes: list[tuple[list[int], list[int], list[int]]] = []
    prepare = eng.runner.prepare

    def recording(plan):
        new = list(plan.prefill_new_tokens)
        shapes.append((new, list(plan.prefill_cached_tokens or [0] * len(new)), list(plan.decode_context_tokens)))
        return prepare(plan)
    eng.runner.prepare = recording
    mark("run")
    res = eng.run()
    mark("replay")
    its = res.iterations.copy()
    its["new"] = [s[0] for s in shapes]
    its["cached"] = [s[1] for s in shapes]
    its["ctx"] = [s[2] for s in shapes]
    return eng, res, its
