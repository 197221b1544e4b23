"""The first steps of an engine run against the same kinds of step later on: is a run's first step of a kind (the
first prefill, the first decode step of each row count) as fast as its kind's median, or does one-off work
(a graph's first launch, a kernel's compile, an allocation) land on the clock?

usage: python benchmarks/engine/first_steps.py RUN_DIR/iterations.csv [--rows 14]
"""
from __future__ import annotations

import argparse

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("iterations")
    ap.add_argument("--rows", type=int, default=14, help="decode row counts listed (the smallest ones)")
    a = ap.parse_args()
    d = pd.read_csv(a.iterations)
    d["kind"] = ["prefill" if p > 0 and s == 0 else "decode" if p == 0 else "mixed"
                 for p, s in zip(d.prefill_tokens, d.decode_seqs)]
    print(d.head(6)[["iter", "duration_s", "prefill_tokens", "decode_seqs", "kind"]].to_string())
    dec = d[d.kind == "decode"]
    for n in sorted(dec.decode_seqs.unique())[:a.rows]:
        x = dec[dec.decode_seqs == n].duration_s * 1e3
        second = f"{x.iloc[1]:6.2f}" if len(x) > 1 else "     -"
        print(f"decode rows {n:3d}: first {x.iloc[0]:6.2f} ms, median {x.median():6.2f}, second {second}, "
              f"count {len(x)}")
    pre = d[d.kind == "prefill"]
    print("prefill first 5 (ms, tokens):", [(round(t * 1e3, 2), int(n)) for t, n in
                                            zip(pre.duration_s[:5], pre.prefill_tokens[:5])])


if __name__ == "__main__":
    main()
