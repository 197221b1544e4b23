"""Why Fig. 15's savings land outside the paper's ranges (issue #17): what each saving depends on, measured.

Runs the Fig. 14/15 scenarios (OPT-13B, Alpaca-like, paged) with the measured H200 profile at 200 req/s
(the paper's 40 req/s x ``kvsim paper --rate-scale 5``), 200 requests per point, as ``kvsim paper --quick``
does, and varies one thing at a time:

* beam search: the beam model's ``engine.beam_keep_prob`` x ``engine.beam_decay`` at widths 2, 4, 6, and
  fixed output lengths (prompt 19 tokens) at widths 2 and 6;
* parallel sampling: fixed prompt lengths (output 58 tokens) beside the whole-block prediction of
  :func:`kvsim.report.paper_fig15.prompt_share` (block-rounded slots, every decode step equal), block sizes 16/32/64 on the Alpaca-like lengths, and (no
  simulation) the prompt share of lognormal lengths with the paper's means but other spreads;
* both: the request rate and the number of requests (the saving is time-weighted over the run).

    PYTHONPATH=. python benchmarks/paper/fig15_sensitivity.py --out benchmarks/paper/fig15_sensitivity.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.config import load_scenario
from kvsim.report.paper_fig15 import implied_share, parallel_saving, prompt_share
from kvsim.sim import simulate

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "scenarios" / "paper"
PROFILE = ["cost.model=calibrated", f"cost.profile={ROOT / 'calibrate/profiles/H200/opt-13b-1203.json'}",
           "cost.profile_other_gpu=true"]      # H200 step times beside the paper's A100-40GB memory
BASE = [*PROFILE, "workload.rate_req_s=200", "workload.num_requests=200"]
PAPER_BEAM = {2: 0.376, 6: 0.552}          # Fig. 15b ends (SUMMARY.md: 37.6-55.2%, width 2..6)
PAPER_PAR = {2: 0.061, 6: 0.098}           # Fig. 15a ends (6.1-9.8%, n = 2..6)
KEEP = [0.3, 0.5, 0.7, 0.8, 0.9]
DECAY = [0.25, 0.5, 1.0]
WIDTHS = [2, 4, 6]
OUTPUTS = [16, 32, 58, 128, 256]
PROMPTS = [8, 15, 16, 19, 24, 31, 32, 48]
ALPACA_PROMPT_MEAN, ALPACA_OUTPUT_MEAN = 19.31, 58.45
LOADS = [(20, 200), (200, 200), (1000, 200), (200, 1000)]       # (req/s, requests); (200, 200) is --quick


def saved(scenario: str, overrides: list[str]) -> float:
    return float(simulate(load_scenario(PAPER / f"{scenario}.yaml", [*BASE, *overrides])).summary["sharing_saved_frac"])


def beam_model() -> pd.DataFrame:
    rows = [{"keep_prob": k, "decay": d, "width": w,
             "saved": saved("fig14_beam_search_paged", [f"workload.beam_width={w}", f"engine.beam_keep_prob={k}",
                                                        f"engine.beam_decay={d}"])}
            for k in KEEP for d in DECAY for w in WIDTHS]
    return pd.DataFrame(rows)


def beam_outputs() -> pd.DataFrame:
    fixed = ["workload.dataset=fixed", "workload.prompt_len=19"]
    rows = [{"output_len": o, "width": w,
             "saved": saved("fig14_beam_search_paged", [*fixed, f"workload.output_len={o}", f"workload.beam_width={w}"])}
            for o in OUTPUTS for w in (2, 6)]
    return pd.DataFrame(rows)


def parallel_prompts(output: int = 58, block: int = 16) -> pd.DataFrame:
    rows = []
    for p in PROMPTS:
        for n in (2, 6):
            sim = saved("fig14_parallel_sampling_paged", ["workload.dataset=fixed", f"workload.prompt_len={p}",
                                                          f"workload.output_len={output}", f"workload.n={n}"])
            rows.append({"prompt_len": p, "n": n, "simulated": sim,
                         "predicted": parallel_saving(prompt_share([p], [output], block), n)})
    return pd.DataFrame(rows)


def parallel_blocks() -> pd.DataFrame:
    from kvsim.report.paper_fig15 import workload_share
    rows = []
    for b in (16, 32, 64):
        share = workload_share(PAPER / "fig14_parallel_sampling_paged.yaml", [*BASE, f"engine.block_size={b}"])
        for n in (2, 4, 6):
            sim = saved("fig14_parallel_sampling_paged", [f"engine.block_size={b}", f"workload.n={n}"])
            rows.append({"block": b, "n": n, "simulated": sim, "predicted": parallel_saving(share["share"], n),
                         "prompt_ge_block": share["prompt_ge_block_frac"]})
    return pd.DataFrame(rows)


def load() -> pd.DataFrame:
    """Both savings (Alpaca-like lengths, default beam model) by request rate and number of requests."""
    rows = []
    for rate, nreq in LOADS:
        ov = [f"workload.rate_req_s={rate}", f"workload.num_requests={nreq}"]
        for mode, sc, key in (("parallel", "fig14_parallel_sampling_paged", "n"),
                              ("beam", "fig14_beam_search_paged", "beam_width")):
            for w in (2, 4, 6):
                r = simulate(load_scenario(PAPER / f"{sc}.yaml", [*BASE, *ov, f"workload.{key}={w}"])).summary
                rows.append({"mode": mode, "rate": rate, "requests": nreq, "width": w,
                             "saved": float(r["sharing_saved_frac"]), "batch": float(r["avg_batched_requests"]),
                             "preemptions": int(r["preemptions"])})
    return pd.DataFrame(rows)


def lognormal_share(prompt_sigma: float, output_sigma: float, block: int = 16, size: int = 400_000) -> dict:
    """Prompt share of lognormal lengths with the paper's Alpaca means (rounded, floored at 1, as kvsim draws)."""
    rng = np.random.default_rng(0)
    draw = lambda mean, s: np.maximum(1, np.rint(np.exp(np.log(mean) - s * s / 2 + s * rng.standard_normal(size))))  # noqa: E731
    p, o = draw(ALPACA_PROMPT_MEAN, prompt_sigma), draw(ALPACA_OUTPUT_MEAN, output_sigma)
    return {"prompt_sigma": prompt_sigma, "output_sigma": output_sigma, "median_prompt": float(np.median(p)),
            "prompt_ge_block": float((p >= block).mean()), "share": prompt_share(p, o, block)}


def _pct(x: float) -> str:
    return f"{x:.1%}"


def report(bm: pd.DataFrame, bo: pd.DataFrame, pp: pd.DataFrame, pb: pd.DataFrame, ld: pd.DataFrame,
           ln: pd.DataFrame) -> str:
    out = ["# Fig. 15 sensitivity: what the sharing savings depend on", "",
           "Command (2 CPU cores, about a minute):", "",
           "    " + " ".join(["PYTHONPATH=. python benchmarks/paper/fig15_sensitivity.py", *sys.argv[1:]]), "",
           "Fig. 14/15 scenarios, measured H200 profile, 200 req/s (40 x `--rate-scale 5`), 200 requests per "
           "point, as `kvsim paper --quick`. `saved` is the run's `sharing_saved_frac` (1 - physical / logical "
           "KV slots, time-weighted). Paper: beam 37.6% (width 2) to 55.2% (width 6), parallel 6.1% (n=2) to "
           "9.8% (n=6).", "", "## Beam search: the beam model's parameters (Alpaca-like lengths)", "",
           "A beam group of width k saves at most (k-1)/k (every beam on one history): 50% at width 2, 83.3% at "
           "width 6. The last two columns give each saving as a share of that maximum; the paper's ends are "
           f"{PAPER_BEAM[2] / 0.5:.0%} (width 2) and {PAPER_BEAM[6] / (5 / 6):.0%} (width 6).", "",
           "| keep_prob | decay | width 2 | width 4 | width 6 | 6 - 2 (pts) | width 2 / max | width 6 / max |",
           "|---|---|---|---|---|---|---|---|"]
    piv = bm.pivot_table(index=["keep_prob", "decay"], columns="width", values="saved")
    for (k, d), r in piv.iterrows():
        mark = " (default)" if (k, d) == (0.5, 0.5) else ""
        out.append(f"| {k:g}{mark} | {d:g} | {_pct(r[2])} | {_pct(r[4])} | {_pct(r[6])} | {(r[6] - r[2]) * 100:.1f} | "
                   f"{r[2] / 0.5:.0%} | {r[6] / (5 / 6):.0%} |")
    err = ((piv[2] - PAPER_BEAM[2]) ** 2 + (piv[6] - PAPER_BEAM[6]) ** 2) ** 0.5
    (bk, bd), best = err.idxmin(), piv.loc[err.idxmin()]
    out += ["", f"Paper: width 2 {_pct(PAPER_BEAM[2])}, width 6 {_pct(PAPER_BEAM[6])}, a rise of "
            f"{(PAPER_BEAM[6] - PAPER_BEAM[2]) * 100:.1f} pts. Closest cell to both ends: keep_prob {bk:g}, decay {bd:g} "
            f"({_pct(best[2])} / {_pct(best[6])}); the rise from width 2 to 6 spans "
            f"{(piv[6] - piv[2]).min() * 100:.1f}-{(piv[6] - piv[2]).max() * 100:.1f} pts over the grid, and the "
            f"share of the maximum changes by {((piv[6] / (5 / 6) - piv[2] / 0.5) * 100).min():+.0f} to "
            f"{((piv[6] / (5 / 6) - piv[2] / 0.5) * 100).max():+.0f} pts from width 2 to 6 (paper: "
            f"{(PAPER_BEAM[6] / (5 / 6) - PAPER_BEAM[2] / 0.5) * 100:+.0f}).", "",
            "## Beam search: output length (fixed lengths, prompt 19 tokens, default beam model)", "",
            "| output tokens | width 2 | width 6 | width 2 / max | width 6 / max |", "|---|---|---|---|---|"]
    po = bo.pivot_table(index="output_len", columns="width", values="saved")
    out += [f"| {o} | {_pct(r[2])} | {_pct(r[6])} | {r[2] / 0.5:.0%} | {r[6] / (5 / 6):.0%} |" for o, r in po.iterrows()]
    out += ["", "## Parallel sampling: fixed prompt length (output 58 tokens, block 16)", "",
            "| prompt tokens | n=2 simulated | n=2 predicted | n=6 simulated | n=6 predicted |", "|---|---|---|---|---|"]
    pq = pp.pivot_table(index="prompt_len", columns="n", values=["simulated", "predicted"])
    out += [f"| {p} | {_pct(r[('simulated', 2)])} | {_pct(r[('predicted', 2)])} | {_pct(r[('simulated', 6)])} | "
            f"{_pct(r[('predicted', 6)])} |" for p, r in pq.iterrows()]
    out += ["", "## Parallel sampling: block size (Alpaca-like lengths)", "",
            "| block | prompts >= block | n=2 sim / pred | n=4 sim / pred | n=6 sim / pred |", "|---|---|---|---|---|"]
    for b, g in pb.groupby("block"):
        g = g.set_index("n")
        out.append(f"| {b} | {g.prompt_ge_block.iloc[0]:.0%} | " + " | ".join(
            f"{_pct(g.simulated[n])} / {_pct(g.predicted[n])}" for n in (2, 4, 6)) + " |")
    out += ["", "## Both: load and run length (Alpaca-like lengths, default beam model)", "",
            "The saving is time-weighted over the run's iterations, so it depends on the batch's mix of young and "
            "old sequences, set by the rate and by how much of the run is ramp-up and drain.", "",
            "| mode | req/s | requests | width 2 | width 4 | width 6 | avg batch (width 6) | preemptions (width 6) |",
            "|---|---|---|---|---|---|---|---|"]
    for (mode, rate, nreq), g in ld.groupby(["mode", "rate", "requests"], sort=False):
        g = g.set_index("width")
        out.append(f"| {mode} | {rate:g} | {nreq} | {_pct(g.saved[2])} | {_pct(g.saved[4])} | {_pct(g.saved[6])} | "
                   f"{g.batch[6]:.1f} | {g.preemptions[6]} |")
    imp = (implied_share(PAPER_PAR[2], 2), implied_share(PAPER_PAR[6], 6))
    out += ["", "## Parallel sampling: length spread at the paper's means (19.31 / 58.45 tokens, block 16, no simulation)",
            "", f"The paper's savings imply a prompt share of {_pct(imp[0])} (n=2) and {_pct(imp[1])} (n=6); kvsim's "
            "Alpaca-like lengths use prompt sigma 0.5, output sigma 0.7.", "",
            "| prompt sigma | output sigma | median prompt | prompts >= 16 | prompt share | n=2 | n=6 |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {r.prompt_sigma:g} | {r.output_sigma:g} | {r.median_prompt:.0f} | {r.prompt_ge_block:.0%} | "
            f"{_pct(r.share)} | {_pct(parallel_saving(r.share, 2))} | {_pct(parallel_saving(r.share, 6))} |"
            for r in ln.itertuples()]
    out += ["", "## How to read it", "",
            "* Parallel sampling saves the whole-prompt-block share of each sequence's block slots: the fixed-length "
            "rows follow the prediction, and a prompt under one block shares nothing. The Alpaca-like distribution's "
            "share is set by how many prompts fill a block and by the output spread (E[O^2] in the denominator); "
            "the paper states only the means, so kvsim's assumed spread (output sigma 0.7) decides where the "
            "saving lands. The 200-request sample and the load (time-weighting) move it by a few points.",
            "* Beam search: the beam model's parameters move width 6 by about 14 pts but every cell keeps the saving's "
            "share of the (k-1)/k maximum flat or rising with width, where the paper's falls; output length moves "
            "it more than the parameters do. Matching the paper would need real beams' divergence by width and "
            "output length, which the paper does not publish (the engine path, `kvsim/engine`, takes real parents "
            "from a sampler and could measure it on a model)."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/paper/fig15_sensitivity.md"))
    a = ap.parse_args()
    ln = pd.DataFrame([lognormal_share(ps, os_) for ps in (0.0, 0.5, 0.8, 1.0, 1.2) for os_ in (0.0, 0.7, 1.0)])
    frames = (beam_model(), beam_outputs(), parallel_prompts(), parallel_blocks(), load(), ln)
    names = ("beam_model", "beam_outputs", "parallel_prompts", "parallel_blocks", "load", "lognormal")
    for name, df in zip(names, frames):
        df.to_csv(Path(a.out).with_name(f"fig15_sensitivity_{name}.csv"), index=False)
    text = report(*frames)
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
