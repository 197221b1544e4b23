"""V0 vs V1 in ``kvsim paper``: the same workloads under ``engine.policy: v0`` (the paper's engine) and ``v1``.

Workloads: parallel sampling (Alpaca-like, n = 2, 4, 6; the Fig. 14 scenario) and ShareGPT-like serving
(the Fig. 12 scenario, paged). Each policy's rate sweep is read at equal normalized latency with
:func:`kvsim.report.paper_readings.rate_at_latency`, the reading of Fig. 12. Policies:

* ``v0`` — the scenario as the paper runs it (groups of n > 1 swap on preemption, copy-on-write prompt);
* ``v1`` — recompute-only, n fanned out as child requests; prefix caching as the scenario has it (off),
  so the children share no prompt blocks;
* ``v1 + prefix cache`` — v1 with ``enable_prefix_caching: true`` (n workloads only), the way V1's
  children share their prompt.

The reason for each difference is read from the same runs at a common rate (the v0 equal-latency
rate, interpolated between swept rates): preemptions per request (swap / recompute), KV saved by
sharing, prefix-cache hits, batched requests. Beam search is refused under v1; the refusal is
recorded as the configuration's own one-line error, not as a number.
"""
from __future__ import annotations

import math

import pandas as pd

from kvsim.report.paper_readings import rate_at_latency, value_at_rate

POLICIES = {"v0": [], "v1": ["engine.policy=v1"],
            "v1 + prefix cache": ["engine.policy=v1", "engine.enable_prefix_caching=true"]}
WIDTHS = [2, 4, 6]
PARALLEL_RATES = [4, 8, 12, 16, 20, 24, 30, 36, 44, 52, 60]
PARALLEL_RATES_QUICK = [8, 16, 26, 36, 50]
SHAREGPT_EXTRA_RATES = [3.0, 3.5]       # above Fig. 12's grid, so that both policies cross the threshold
RATE, POLICY = "workload.rate_req_s", "engine.policy"
REASON_COLS = ("preemptions_per_req", "swap_per_req", "recompute_per_req", "sharing_saved_frac",
               "prefix_cache_hit_frac", "avg_batched_requests", "throughput_tok_s")


def experiments(run, quick: bool, sharegpt_v0: pd.DataFrame, sharegpt_rates: list) -> dict:
    """Frames ``v1_parallel`` and ``v1_sharegpt`` (one row per policy x width x rate) and ``v1_beam``.

    ``run(name, grid, extra)`` is :func:`kvsim.paper.experiments`' sweep; ``sharegpt_v0`` the v0 paged
    rows of Fig. 12 (the same runs, not repeated; v0 runs only :data:`SHAREGPT_EXTRA_RATES` here).
    """
    rates = PARALLEL_RATES_QUICK if quick else PARALLEL_RATES
    extra = ["workload.num_requests=200"] if quick else []
    par = pd.concat([run("fig14_parallel_sampling_paged", {"workload.n": WIDTHS, RATE: rates}, extra + o)
                     .assign(**{POLICY: p}) for p, o in POLICIES.items()], ignore_index=True)
    extra_rates = [r for r in SHAREGPT_EXTRA_RATES if r > max(sharegpt_rates)]
    v0 = [sharegpt_v0] + ([run("fig12_opt13b_sharegpt_paged", {RATE: extra_rates})] if extra_rates else [])
    v1 = run("fig12_opt13b_sharegpt_paged", {RATE: sharegpt_rates + extra_rates}, POLICIES["v1"])
    share = pd.concat([*(d.assign(**{POLICY: "v0"}) for d in v0), v1.assign(**{POLICY: "v1"})], ignore_index=True)
    return {"v1_parallel": par, "v1_sharegpt": share, "v1_beam": beam_refusal()}


def beam_refusal() -> pd.DataFrame:
    """The one-line error v1 gives for the beam-search scenario (or, were it accepted, that it was)."""
    from kvsim.config import load_scenario
    from kvsim.errors import KvsimError
    from kvsim.paper import _sc
    try:
        load_scenario(_sc("fig14_beam_search_paged"), POLICIES["v1"])
        msg = "accepted"
    except KvsimError as e:
        msg = str(e)
    return pd.DataFrame([{POLICY: "v1", "error": msg}])


def _reasons(g: pd.DataFrame, at: float, is_v1: bool) -> dict:
    n = g["requests_total"].clip(lower=1)
    cols = {"preemptions_per_req": g["preemptions"] / n, "swap_per_req": g["preemptions_swap"] / n,
            "recompute_per_req": g["preemptions_recompute"] / n,
            # v1 counts child requests in a batch; per parent request, as v0 counts a group
            "avg_batched_requests": g["avg_batched_requests"] / (g.get("workload.n", 1) if is_v1 else 1)}
    out = {}
    for c in REASON_COLS:
        v = cols[c] if c in cols else g[c]
        out[c] = value_at_rate(g[RATE], v, at)
    out["at_rate"] = at
    return out


def _compare(df: pd.DataFrame, threshold: float) -> dict:
    """Per policy: the rate at ``threshold`` and the reason columns at the v0 rate."""
    groups = dict(tuple(df.groupby(POLICY, sort=False)))
    rates = {p: rate_at_latency(g[RATE], g["normalized_latency_s"], threshold) for p, g in groups.items()}
    ref = rates.get("v0")
    lo, hi = df[RATE].min(), df[RATE].max()
    at = ref.value if ref is not None and math.isfinite(ref.value) and lo <= ref.value <= hi else hi
    return {p: {"rate": r.value, "bound": r.bound, "text": str(r), **_reasons(groups[p], at, p != "v0")}
            for p, r in rates.items()}


def measure(res: dict, threshold: float) -> dict:
    par = res["v1_parallel"]
    return {"threshold_s": threshold,
            "parallel": {int(n): _compare(g, threshold) for n, g in par.groupby("workload.n")},
            "sharegpt": _compare(res["v1_sharegpt"], threshold),
            "beam": str(res["v1_beam"]["error"].iloc[0])}


def _why(c: dict) -> str:
    v0, v1 = c["v0"], c["v1"]
    txt = (f"at {v0['at_rate']:.3g} req/s v0 preempts {v0['preemptions_per_req']:.2f} per request "
           f"({v0['swap_per_req']:.2f} by swap), v1 {v1['preemptions_per_req']:.2f} (all recompute); "
           f"batched requests (v1: children / n) {v0['avg_batched_requests']:.1f} vs {v1['avg_batched_requests']:.1f}; "
           f"KV saved by sharing {v0['sharing_saved_frac']:.1%} vs {v1['sharing_saved_frac']:.1%}")
    pc = c.get("v1 + prefix cache")
    if pc:
        txt += (f"; with the prefix cache on, v1's children hit {pc['prefix_cache_hit_frac']:.0%} of looked-up "
                f"tokens and save {pc['sharing_saved_frac']:.1%}")
    return txt


def summary_lines(m: dict) -> list[str]:
    t = m["threshold_s"]
    lines = ["", "## vLLM V0 vs V1 on the same workloads", "",
             f"Rates at equal latency ({t} s/token, read as Fig. 12). v0 is the paper's engine (swap for groups of "
             "n > 1, copy-on-write prompt); v1 preempts by recompute only and fans n out as child requests, which "
             "share prompt blocks only through the prefix cache (off in these scenarios; the third column turns it "
             "on). The why column is read from the same runs at the v0 rate.", "",
             "| workload | v0 | v1 | v1 + prefix cache | v1 / v0 | why |", "|---|---|---|---|---|---|"]
    rows = [(f"parallel sampling n={n}", c) for n, c in m["parallel"].items()] + [("ShareGPT-like, n=1",
                                                                                   m["sharegpt"])]
    for name, c in rows:
        ratio = c["v1"]["rate"] / c["v0"]["rate"] if c["v0"]["rate"] > 0 else float("nan")
        bounds = {c["v0"]["bound"], c["v1"]["bound"]}
        rtxt = "n/a" if bounds - {"="} or not math.isfinite(ratio) else f"{ratio:.2f}x"
        pc = c.get("v1 + prefix cache", {}).get("text", "—")
        lines.append(f"| {name} | {c['v0']['text']} | {c['v1']['text']} | {pc} | {rtxt} | {_why(c)} |")
    lines += ["", f"Beam search (Fig. 14b) has no v1 number: the v1 configuration is refused — `{m['beam']}`.",
              "Rates with `>=` / `<` lie outside the swept range (a bound, not a value)."]
    return lines


def blocksize_lines(tables: dict) -> list[str]:
    """The v0 vs v1 SLO rate per block size (``measured()['fig18b_v1']``), or why there is none."""
    if not tables:
        return ["", "Block size under v1: not run in quick mode; the full run adds it (or "
                    "`kvsim report block-size <scenario> --compare-v1`)."]
    sizes = next(iter(tables.values()))["block_size"]
    lines = ["", "## Block size under v0 and v1 (max rate meeting 0.1 s/token, req/s)", "",
             "| dataset | " + " | ".join(f"block {int(b)}" for b in sizes) + " |", "|---|" + "---|" * len(sizes)]
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"  # noqa: E731
    for d, t in tables.items():
        lines.append(f"| {d} | " + " | ".join(f"v0 {fmt(a)} / v1 {fmt(b)}"
                                              for a, b in zip(t["max_rate_req_s"], t["max_rate_v1"])) + " |")
    lines.append("")
    lines += [f"Why ({d}): {t['reason']}" for d, t in tables.items()]
    return lines


def draw(res: dict, out, threshold: float) -> None:
    """``v0_vs_v1.png``: normalized latency vs rate per policy, one panel per workload."""
    from kvsim.labels import label
    from kvsim.plots import log_scale, plt
    par, share = res["v1_parallel"], res["v1_sharegpt"]
    panels = [(f"parallel sampling n={n}", g) for n, g in par.groupby("workload.n")] + [("ShareGPT-like", share)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (title, g) in zip(axes, panels):
        for p, gp in g.groupby(POLICY, sort=False):
            gp = gp.sort_values(RATE)
            ax.plot(gp[RATE], gp["normalized_latency_s"], "o-", label=p)
        ax.axhline(threshold, color="r", ls="--", lw=1)
        log_scale(ax, "y")
        ax.set(xlabel=label(RATE), ylabel=label("normalized_latency_s"), title=f"v0 vs v1: {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "v0_vs_v1.png", dpi=100)
    plt.close(fig)
