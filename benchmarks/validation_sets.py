"""Every committed validation set at a glance: one row per ``validation/<set>/validation-replay.csv`` (CPU, no GPU).

Each set's table is what ``kvsim validate --replay`` re-made from its engine records (``tests/test_validation_replay.py``
checks it is reproduced exactly); this reads those tables and prints, per set, its card (from the table's title),
models, scenario count, how many scenarios ran more than once, the median |error| of throughput, mean normalized
latency, p99 normalized latency and TTFT p50 (issue #10's bars are on the first three: 3 / 5 / 10%), and the worst
scenario on throughput and on mean latency (its per-scenario bar: 10%). The numbers are the tables', nothing else.

usage: python benchmarks/validation_sets.py [--root validation] > table.md
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

METRICS = (("throughput_req_s", "throughput"), ("normalized_latency_s", "mean norm. latency"),
           ("normalized_latency_p99_s", "p99"), ("ttft_p50_s", "TTFT p50"))


def card_of(folder: Path) -> str:
    """The card the set's table names in its title ("... real engine on NVIDIA H200")."""
    md = folder / "validation-replay.md"
    first = md.read_text().splitlines()[0] if md.exists() else ""
    m = re.search(r"real engine on (.+)$", first)
    return m.group(1).replace("NVIDIA ", "").strip() if m else "?"


def models_of(names) -> str:
    found = []
    for key, label in (("opt13b", "OPT-13B"), ("llama3", "Llama-3-8B"), ("mistral", "Mistral-7B")):
        if any(key in n for n in names):
            found.append(label)
    return ", ".join(found)


def row(folder: Path) -> dict:
    t = pd.read_csv(folder / "validation-replay.csv")
    names = sorted(set(t.scenario))
    out = {"set": folder.name, "card": card_of(folder), "models": models_of(names), "scenarios": len(names),
           "run twice": int((t.groupby("scenario").repeats.max() > 1).sum()) if "repeats" in t.columns else 0}
    for metric, label in METRICS:
        errs = t[t.metric == metric].set_index("scenario").rel_error.astype(float)
        out[label] = f"{errs.abs().median() * 100:.1f}%"
        if metric in ("throughput_req_s", "normalized_latency_s"):
            worst = errs.abs().idxmax()
            out[f"worst {label}"] = f"{worst.split('_')[0]} {errs[worst] * 100:+.1f}%"
    return out


def table(root: Path) -> str:
    rows = [row(f) for f in sorted(root.iterdir()) if (f / "validation-replay.csv").exists()]
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="validation")
    print(table(Path(ap.parse_args().root)))


if __name__ == "__main__":
    main()
