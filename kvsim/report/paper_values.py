"""Values the PagedAttention paper reports, with their figure references, for side-by-side comparison.

Only numbers stated in the paper summary kept with the project (``/work/shared/paper``) or in the
project's brief are filled in; everything else is ``None`` (shown blank) rather than guessed.
``PAPER_BASELINE_VALUES`` holds the per-baseline Fig. 12 numbers that issue #17 quotes from the
paper's Sec. 6.2 (they are not in the project's paper notes; the reference says so).
"""

PAPER_VALUES = {
    "fig2": {"what": "KV memory split per allocator (share of KV holding token states)",
             "paper": None, "ref": "Fig. 2 (values not in the project's paper notes: left blank)"},
    "fig12": {"what": "paged throughput vs Orca / FasterTransformer at the same latency",
              "paper": "2-4x", "low": 2.0, "high": 4.0, "ref": "Fig. 12, abstract ('2-4x higher throughput')"},
    "fig13": {"what": "avg batched requests, paged vs Orca",
              "paper": "2-4x more", "low": 2.0, "high": 4.0, "ref": "Fig. 13 (notes: 'batches 2-4x more requests')"},
    "fig14": {"what": "throughput gain over Orca (Oracle) with parallel sampling / beam search",
              "paper": "grows with n and beam width", "ref": "Fig. 14 (numbers not in the notes: left blank)"},
    "fig15_parallel": {"what": "KV saved by sharing, parallel sampling n=2..6",
                       "paper": "6.1-9.8%", "low": 0.061, "high": 0.098, "ref": "Fig. 15a / Sec. 6.3"},
    "fig15_beam": {"what": "KV saved by sharing, beam search width 2..6",
                   "paper": "37.6-55.2%", "low": 0.376, "high": 0.552, "ref": "Fig. 15b / Sec. 6.3"},
    "fig16": {"what": "shared prefix (prefix caching) throughput gain", "paper": None,
              "ref": "Fig. 16 (numbers not in the notes: left blank)"},
    "fig17": {"what": "chatbot (long prompts): paged vs Orca", "paper": None,
              "ref": "Fig. 17 (numbers not in the notes: left blank)"},
    "fig18a": {"what": "attention-kernel overhead of paging", "paper": "~20-26%", "low": 0.20, "high": 0.26,
               "ref": "Fig. 18a / Sec. 7.1 (notes: '~20% kernel overhead')"},
    "fig18b": {"what": "best block size", "paper": "16 default; 16-128 good for ShareGPT, 16-32 for Alpaca",
               "ref": "Fig. 18b / Sec. 7.2 (notes: 'default block size 16 balances utilization and fragmentation')"},
    "fig19": {"what": "swap vs recompute by block size", "paper": "swap loses at small blocks, recompute flat",
              "ref": "Fig. 19 / Sec. 7.3"},
}

PAPER_BASELINE_VALUES = {
    "orca_oracle": {"paper": "1.7-2.7x (ShareGPT)", "low": 1.7, "high": 2.7,
                    "ref": "Sec. 6.2 as quoted in issue #17 (not in the project's paper notes)"},
    "static (FT-like)": {"paper": "up to 22x", "low": None, "high": 22.0,
                         "ref": "Sec. 6.2 as quoted in issue #17 (not in the project's paper notes)"},
}
