"""Pool every committed set's ``request-spread-replay.csv`` (``kvsim/validate_spread.py``): per metric, how many
errors hold 0 in their interval, the median |error| and the median interval width. The README's figures for
``request-spread`` come from this.

usage: python benchmarks/request_spread.py [--root validation]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def pooled(root: Path) -> pd.DataFrame:
    tables = [pd.read_csv(f) for f in sorted(root.glob("*/request-spread-replay.csv"))]
    d = pd.concat(tables, ignore_index=True)
    d["width"] = d.hi - d.lo
    g = d.groupby("metric", sort=False)
    return pd.DataFrame({"errors": g.size(), "hold_zero": g.holds_zero.sum().astype(int),
                         "median_abs_error": g.error.apply(lambda x: x.abs().median()),
                         "median_width": g.width.median()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "validation"))
    t = pooled(Path(ap.parse_args().root))
    print("| metric | errors | holding 0 | median abs. error | median interval width |\n|---|---|---|---|---|")
    for m, r in t.iterrows():
        print(f"| {m} | {int(r.errors)} | {int(r.hold_zero)} | {r.median_abs_error:.1%} | {r.median_width:.1%} |")


if __name__ == "__main__":
    main()
