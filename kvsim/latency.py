"""Per-request latency metrics in ``vllm bench serve`` vocabulary: TTFT, TPOT, ITL, E2EL, goodput.

From the request and iteration records (no new record columns):

* **TTFT** = first token − arrival; **E2EL** (end-to-end latency) = finish − arrival;
* **TPOT** = (finish − first token) ÷ (output tokens − 1), 0 for one-token outputs (as vLLM's bench);
* **ITL** (inter-token latency): a request with ``k = output_len`` tokens has
  ``k − 1`` gaps. In the simulator a token appears at the end of each decode
  step (an iteration with ``decode_seqs > 0``) the request takes part in, so its
  gaps are the times between consecutive decode-step ends from its first token
  on: a decode step's duration, plus any prefill-only steps and swaps scheduled
  between two of its decode steps. The records do not say which steps a
  preempted request sat out, so the last gap takes whatever time remains up to
  its finish (one stall at the end); for requests never preempted under the
  ``vllm`` and ``chunked`` schedulers every gap is exact. For ``static``
  batching the last gap also holds the wait for the batch's longest request.
  By construction a request's ITLs sum to finish − first token, so the mean
  ITL of a request is its TPOT. Percentiles pool every gap of every finished
  request (vLLM pools ITLs the same way).
* **goodput** (``--goodput ttft:ms tpot:ms e2el:ms``): the share of all
  requests that finished and met every per-request SLO given, and those
  requests per second of the run (first arrival to last finish, as throughput).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kvsim.errors import KvsimError
from kvsim.labels import GOODPUT_METRICS, LATENCY_METRICS  # noqa: F401 (re-exported)
ITL_COLUMNS = ("start_s", "duration_s", "decode_seqs")     # the iteration columns itl_gaps reads


def _finished(reqs: pd.DataFrame) -> pd.DataFrame:
    return reqs[reqs.status == "finished"]


def itl_gaps(reqs: pd.DataFrame, its: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts): every inter-token gap of every finished request, as distinct values with counts."""
    done = _finished(reqs)
    k = done.output_len.to_numpy().astype(np.int64) - 1          # gaps per request
    sel = k > 0
    ft = done.first_token_s.to_numpy()[sel]
    fin = done.finish_s.to_numpy()[sel]
    k = k[sel]
    ends = its.start_s.to_numpy() + its.duration_s.to_numpy()
    ends = ends[its.decode_seqs.to_numpy() > 0]
    ends.sort()                          # in place: a run's iterations are millions of rows, one copy fewer
    if not len(k):
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    lo = np.searchsorted(ends, ft + 1e-9, side="left")            # first decode end after the first token
    hi = np.searchsorted(ends, fin + 1e-9, side="left")           # decode ends up to the finish
    m = np.minimum(k - 1, hi - lo)                                # gaps read off decode-step ends
    first_pt = np.where(m > 0, ends[np.minimum(lo, len(ends) - 1)] if len(ends) else ft, ft)
    first = np.where(m > 0, first_pt - ft, 0.0)
    last_pt = np.where(m > 0, ends[np.clip(lo + m - 1, 0, max(len(ends) - 1, 0))] if len(ends) else ft, ft)
    last = fin - last_pt                                           # the remaining gap up to the finish
    # middle gaps ends[t] - ends[t-1] for t in lo+1 .. lo+m-1, counted with a difference array
    diff = np.zeros(len(ends) + 1, dtype=np.int64)
    mid = m > 1
    np.add.at(diff, lo[mid] + 1, 1)
    np.add.at(diff, lo[mid] + m[mid], -1)
    cnt = np.cumsum(diff)[:len(ends)]
    del diff
    gaps = np.diff(ends, prepend=ends[0] if len(ends) else 0.0)
    values = np.concatenate([gaps[cnt > 0], first[m > 0], last])
    counts = np.concatenate([cnt[cnt > 0], np.ones(int((m > 0).sum()), dtype=np.int64),
                             np.ones(len(last), dtype=np.int64)])
    return values, counts


def weighted_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """``np.percentile(np.repeat(values, counts), q)`` (linear) without expanding the array."""
    return weighted_percentiles(values, counts, [q])[0]


def weighted_percentiles(values: np.ndarray, counts: np.ndarray, qs) -> list[float]:
    """:func:`weighted_percentile` at each of ``qs``, sorting once."""
    total = int(counts.sum()) if len(counts) else 0
    if total == 0:
        return [float("nan") for _ in qs]
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    out = []
    for q in qs:
        h = (total - 1) * q / 100.0
        i, j = math.floor(h), math.ceil(h)
        a, b = v[np.searchsorted(c, i, side="right")], v[np.searchsorted(c, j, side="right")]
        out.append(float(a + (b - a) * (h - i)))
    return out


def per_request(reqs: pd.DataFrame) -> pd.DataFrame:
    """ttft_s, tpot_s, e2el_s of every finished request (request_id kept)."""
    done = _finished(reqs)
    out_len = done.output_len.to_numpy()
    span = (done.finish_s - done.first_token_s).to_numpy()
    tpot = np.where(out_len > 1, span / np.maximum(out_len - 1, 1), 0.0)
    return pd.DataFrame({"request_id": done.request_id.to_numpy(),
                         "ttft_s": (done.first_token_s - done.arrival_s).to_numpy(),
                         "tpot_s": tpot, "e2el_s": (done.finish_s - done.arrival_s).to_numpy()})


def parse_goodput(items) -> dict[str, float]:
    """``["ttft:2000", "tpot:100"]`` (ms, as ``vllm bench serve --goodput``) -> ``{"ttft": 2.0, "tpot": 0.1}`` s."""
    out: dict[str, float] = {}
    for item in items or []:
        if not isinstance(item, str) or ":" not in item:
            raise KvsimError("--goodput", f"expected metric:ms, got {item!r}")
        key, raw = (x.strip() for x in item.split(":", 1))
        if key not in GOODPUT_METRICS:
            raise KvsimError("--goodput", f"unknown metric {key!r}; allowed: {', '.join(GOODPUT_METRICS)}")
        if key in out:
            raise KvsimError("--goodput", f"{key} is given twice; give each metric once")
        try:
            ms = float(raw)
        except ValueError:
            raise KvsimError("--goodput", f"{key}:{raw!r} is not a number of milliseconds") from None
        if not (math.isfinite(ms) and ms > 0):
            raise KvsimError("--goodput", f"{key}:{raw}; allowed: a finite number of ms > 0")
        out[key] = ms / 1000.0
    return out


def parse_percentiles(raw) -> list[float]:
    """``"50,90,99"`` -> [50.0, 90.0, 99.0]; each in (0, 100]."""
    if raw is None:
        return [50.0, 90.0, 99.0]
    parts = [p.strip() for p in str(raw).split(",")]
    try:
        ps = [float(p) for p in parts]
    except ValueError:
        raise KvsimError("--metric-percentiles", f"got {raw!r}, expected numbers like 50,90,99") from None
    if not ps or any(not (0 < p <= 100) for p in ps):
        raise KvsimError("--metric-percentiles", f"got {raw!r}; allowed: percentiles in (0, 100]")
    return ps


def goodput(reqs: pd.DataFrame, slo_s: dict[str, float]) -> dict:
    """Share of all requests finished within every per-request SLO, and those per second."""
    per = per_request(reqs)
    ok = np.ones(len(per), dtype=bool)
    for key, bound in slo_s.items():
        ok &= per[f"{key}_s"].to_numpy() <= bound
    total = len(reqs)
    done = _finished(reqs)
    start = float(reqs.arrival_s.min()) if total else 0.0
    span = max(float(done.finish_s.max()) - start, 1e-12) if len(done) else float("nan")
    good = int(ok.sum())
    return {"good_requests": good, "goodput_frac": good / total if total else float("nan"),
            "goodput_req_s": good / span if len(done) else 0.0}


def latency_table(reqs: pd.DataFrame, its: pd.DataFrame, percentiles: list[float],
                  metrics: list[str] | None = None) -> pd.DataFrame:
    """Rows ttft/tpot/itl/e2el (or ``metrics``, in that order); columns mean_ms and p<q>_ms (vllm bench's units)."""
    per = per_request(reqs)
    vals, cnts = itl_gaps(reqs, its)
    rows = []
    for m in [m for m in LATENCY_METRICS if metrics is None or m in metrics]:
        if m == "itl":
            mean = float((vals * cnts).sum() / cnts.sum()) if cnts.sum() else float("nan")
            pcts = weighted_percentiles(vals, cnts, percentiles)
        else:
            x = per[f"{m}_s"].to_numpy()
            mean = float(x.mean()) if len(x) else float("nan")
            pcts = [float(np.percentile(x, q)) if len(x) else float("nan") for q in percentiles]
        rows.append({"metric": m, "mean_ms": mean * 1e3, **{f"p{q:g}_ms": p * 1e3 for q, p in zip(percentiles, pcts)}})
    return pd.DataFrame(rows)


def format_latency_table(reqs, its, percentiles: list[float], goodput_slo: dict[str, float],
                         metrics: list[str] | None = None) -> str:
    t = latency_table(reqs, its, percentiles, metrics)
    lines = ["  per-request latency (ms; ITL = gaps between a request's decode steps, see kvsim/latency.py):",
             "  " + t.to_string(index=False, float_format=lambda x: f"{x:.1f}").replace("\n", "\n  ")]
    if goodput_slo:
        g = goodput(reqs, goodput_slo)
        slo = ", ".join(f"{k} <= {v * 1e3:g} ms" for k, v in goodput_slo.items())
        lines.append(f"  goodput ({slo}): {g['good_requests']} of {len(reqs)} requests "
                     f"({g['goodput_frac']:.1%}), {g['goodput_req_s']:.3f} req/s")
    return "\n".join(lines)
