"""Decode steps just after a step with prompt tokens: do they run slower than their shape says?

Why. Replayed one by one at their exact contexts (``step_replay.py``, ``results_H100/step_replay_1207g``), the
decode steps of a validation set's engine runs cost what their shape costs, while those of the calibration's
serving runs sit 0.18-0.37 ms above their replay at every row count; the serving fit's extras (``decode_serving``)
are fitted on the latter. The serving runs admit a request every few steps (short outputs, every slot busy), the
scenarios mostly less often. This reads any engine records and asks whether a decode step's time depends on how
many steps ago the last step with prompt tokens (a prefill or a mixed step) ran, with its shape held: within each
row count, the step time less a least-squares line in the step's context sum (``mem_used``), averaged by steps
since the last prompt step. Only decode-only steps prepared ahead (``host_ahead``: their host work hidden) and
without swaps count, so neither the host nor a transfer is in it.

usage: python benchmarks/engine/post_prompt_steps.py RUN_DIR [RUN_DIR ...] [--out FILE.md]
       (a RUN_DIR holds an engine run's iterations.csv[.gz]: a validation scenario's ``engine/``, a serving run's
       ``n<N>/``)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kvsim.validate_records import record_file  # noqa: E402

BINS = (0, 1, 2, 4, 8, 16, 10 ** 9)
"""Steps since the last step with prompt tokens: 1, 2, 3-4, 5-8, 9-16, more."""
LABELS = ("1", "2", "3-4", "5-8", "9-16", ">16")
MIN_STEPS = 5           # a row count's line needs this many steps


def steps_since_prompt(prefill_tokens: np.ndarray) -> np.ndarray:
    """For each step, how many steps ago the last step with prompt tokens ran (0 for such a step itself; a large
    number before the first one)."""
    out = np.empty(len(prefill_tokens), dtype=np.int64)
    k = 10 ** 9
    for i, t in enumerate(prefill_tokens):
        k = 0 if t > 0 else k + 1
        out[i] = k
    return out


def residuals(its: pd.DataFrame) -> pd.DataFrame:
    """``{"since", "rows", "resid_ms"}`` of the run's decode-only steps prepared ahead, without swaps: each step's
    time less its row count's least-squares line in the context sum."""
    since = steps_since_prompt(its.prefill_tokens.to_numpy())
    keep = (its.prefill_tokens.to_numpy() == 0) & (its.decode_seqs.to_numpy() > 0)
    for col in ("swap_out_blocks", "swap_in_blocks"):
        if col in its:
            keep &= its[col].to_numpy() == 0
    if "host_ahead" in its:
        keep &= its.host_ahead.to_numpy() == 1
    dec = its[keep].assign(since=since[keep])
    parts = []
    for n, g in dec.groupby("decode_seqs"):
        if len(g) < MIN_STEPS:
            continue
        a = np.c_[np.ones(len(g)), g.mem_used.to_numpy(float)]
        y = g.duration_s.to_numpy(float)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        parts.append(pd.DataFrame({"since": g.since.to_numpy(), "rows": int(n), "resid_ms": (y - a @ coef) * 1e3}))
    return pd.concat(parts) if parts else pd.DataFrame(columns=["since", "rows", "resid_ms"])


def by_since(res: pd.DataFrame) -> list[tuple[str, int, float]]:
    """``(bin, steps, mean residual ms)`` per :data:`BINS` bin."""
    out = []
    for label, lo, hi in zip(LABELS, BINS[:-1], BINS[1:]):
        r = res.resid_ms[(res.since > lo) & (res.since <= hi)]
        out.append((label, int(len(r)), float(r.mean()) if len(r) else float("nan")))
    return out


def read_iterations(run: Path) -> pd.DataFrame:
    path = record_file(run, "iterations.csv")
    if not path.is_file():
        raise SystemExit(f"error: RUN_DIR: {run} holds no iterations.csv[.gz]")
    return pd.read_csv(path)


def markdown(runs: list[Path]) -> str:
    lines = ["| run | " + " | ".join(f"{b} after" for b in LABELS) + " |", "|---|" + "---|" * len(LABELS)]
    for run in runs:
        rows = by_since(residuals(read_iterations(run)))
        name = run.name if run.name != "engine" else run.parent.name
        lines.append(f"| {name} | " + " | ".join(f"{m:+.3f} ({k})" if k else "" for _, k, m in rows) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="engine run folders (iterations.csv[.gz])")
    ap.add_argument("--out", help="write the table here too (Markdown)")
    a = ap.parse_args()
    runs = [Path(r) for r in a.runs]
    for r in runs:
        if not r.is_dir():
            raise SystemExit(f"error: RUN_DIR: {r} is not a folder")
    text = ("Decode steps' time less their row count's line in the context sum, ms (steps), by steps since the last "
            "step with prompt tokens\n\n" + markdown(runs))
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
