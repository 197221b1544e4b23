"""``kvsim plan``'s ``report.html``: the recommendation and its reason, the candidates, the searches.

* headline: the recommended configuration and its SLO rate (as the command prints);
* reason (:func:`reason`): it has the best objective of the candidates that met
  the SLOs, by how much it beats the runner-up, and what was simulated to know it;
* sections: ``pareto.png``'s figure (objective vs latency, the front, the
  recommendation on it), each candidate's max rate, the search probes
  (normalized latency vs rate, pass or fail), and the numbered table.
"""
from __future__ import annotations

import pandas as pd

from kvsim.labels import label, slo_words, words
from kvsim.plan.pareto_plot import candidate_name, pareto_figure
from kvsim.report.htmlkit import page, png, table


def reason(res, keys: list[str], col: str) -> str:
    t = res.table
    ok = t[t[col].notna()].sort_values([col, "normalized_latency_s"], ascending=[False, True])
    r = res.recommended
    tried = f"{len(t)} candidate row(s), {sum(len(s['probes']) for s in res.searches)} rate probes simulated"
    if r is None:
        return (f"No candidate meets {slo_words(res.slo)} at any rate the search tried ({tried}); relax the SLOs "
                f"or add candidates with more memory or GPUs.")
    show = t.replicas.nunique() > 1 if "replicas" in t else False
    best = float(r[col])
    text = (f"It has the highest {words(col)}, {best:.3g} {_unit(col)}, of the {len(ok)} candidate(s) meeting "
            f"{slo_words(res.slo)}")
    if len(ok) > 1:
        nxt = ok.iloc[1]
        gap = 1 - float(nxt[col]) / best if best else 0.0
        text += (f"; the runner-up, {candidate_name(nxt, keys, show)}, reaches {float(nxt[col]):.3g} "
                 f"({gap:.0%} less)")
        if gap < 0.02:
            text += ", within the search's resolution: treat them as equal"
    text += (f". At its max rate of {float(r['max_rate_req_s']):.3g} req/s per replica the normalized latency is "
             f"{float(r['normalized_latency_s']):.3g} s/token. Found by {tried}.")
    if (r.get("runs") or 1) > 1:
        text += (f" Each probe is {int(r['runs'])} runs of {int(r['requests_per_run'])} requests, judged on their "
                 f"steady-state windows; a rate passes when every SLO holds with {res.confidence:.0%} confidence.")
        if r.get("capacity_req_s") is not None and r.get("rate_hi_req_s") is not None:
            text += (f" Capacity {float(r['capacity_req_s']):.3g} req/s per replica, {res.confidence:.0%} interval "
                     f"{float(r['max_rate_req_s']):.3g}-{float(r['rate_hi_req_s']):.3g}.")
        if r.get("note"):
            text += f" {r['note'][0].upper()}{r['note'][1:]}."
    return text


def _unit(col: str) -> str:
    from kvsim.labels import unit
    return unit(col) or ""


def _rates_figure(t: pd.DataFrame):
    from kvsim.plots import plt
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.3 * len(t) + 1.2)))
    colors = ["#fdae61" if rec else "#2c7bb6" for rec in t.recommended]
    ax.barh([str(n) for n in t.number], t.total_rate_req_s.fillna(0), color=colors)
    ax.invert_yaxis()
    ax.set(xlabel=label("total_rate_req_s"), ylabel="candidate (number in the table)",
           title="Max rate meeting the SLOs per candidate (recommended in orange)")
    return fig


def _probes_figure(res, numbers: dict):
    from kvsim.plots import log_scale, plt
    fig, ax = plt.subplots(figsize=(9, 4))
    for s in res.searches:
        pts = sorted((p["rate_req_s"], p["normalized_latency_s"], p["meets"]) for p in s["probes"]
                     if p.get("normalized_latency_s") is not None)
        if not pts:
            continue
        n = numbers.get(tuple(sorted(s["candidate"].items())), "?")
        line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", lw=1, label=f"candidate {n}")
        for meets, marker in ((True, "o"), (False, "x")):
            sel = [p for p in pts if bool(p[2]) == meets]
            ax.plot([p[0] for p in sel], [p[1] for p in sel], marker, color=line.get_color(), ms=5)
    if "normalized_latency_s" in res.slo:
        ax.axhline(res.slo["normalized_latency_s"], color="r", ls="--", lw=1, label="SLO")
    log_scale(ax, "y")
    ax.set(xlabel="arrival rate per replica (req/s)", ylabel="normalized latency (s/token)",
           title="Search probes: latency vs rate (o meets the SLOs, x fails)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    return fig


def render_plan(res, keys: list[str], scenario: str, objective_col: str) -> str:
    fig, drawn = pareto_figure(res, keys, objective_col)
    t = res.table.copy()
    t["number"] = pd.Series(drawn.number, index=drawn.index).reindex(t.index)
    numbers = {tuple(sorted((k, r[k]) for k in keys)): int(r.number) for _, r in t.dropna(subset=["number"]).iterrows()
               if not (t.replicas.nunique() > 1 and r.replicas != t.replicas.min())}
    r = res.recommended
    head = ("No candidate meets the SLOs" if r is None else
            f"Recommended: {candidate_name(r, keys, False)}, {int(r['replicas'])} replica(s) x "
            f"{int(r['tensor_parallel'])} GPU(s): {float(r['total_rate_req_s']):.3g} req/s")
    values = lambda k: ", ".join(dict.fromkeys(str(v) for v in t[k]))
    sub = (f"SLO: {slo_words(res.slo)}. Objective: {words(objective_col)}. Candidates: "
           + ("; ".join(f"{words(k)} {values(k)}" for k in keys if k in t) or "the scenario")
           + f"; replicas {values('replicas')}.")
    cols = ["number"] + keys + ["replicas", "num_gpus", "max_rate_req_s", "total_rate_req_s", "goodput_per_gpu",
                                "requests_per_usd", "normalized_latency_s", "ttft_p99_s", "pareto", "recommended"]
    sections = [
        ("Candidates: objective vs latency", png(fig, "Pareto front", tight=False)
         + '<p class="note">Numbers are the table rows. The front: no other candidate has a higher objective '
           'and a lower latency; the recommendation (star) is on it.</p>'),
        ("Max rate per candidate", png(_rates_figure(t.dropna(subset=["number"])), "rates")),
        ("How the search got there", png(_probes_figure(res, numbers), "probes")
         + '<p class="note">Bracket by doubling from the scenario\'s rate, then bisection; plan.json holds every '
           'probe.</p>'),
        ("All candidates", table(t.sort_values("number"), cols, max_cols=14,
                                 highlight=t.sort_values("number").recommended.fillna(False))),
    ]
    if "error" in t and (t.error.fillna("") != "").any():
        bad = t[t.error.fillna("") != ""]
        sections.append(("Candidates that could not be searched", table(bad, keys + ["error"], words=True)))
    return page(f"kvsim plan: {scenario}", sub, head, reason(res, keys, objective_col), sections)
