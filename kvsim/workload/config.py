"""Workload configuration: which requests arrive, when, and how long they are.

Arrivals default to the data: a trace (dataset ``trace``) replays its own
``arrival_s`` column, in full unless ``num_requests``/``duration_s`` are given,
whatever ``arrival`` says; other datasets get Poisson arrivals by default.
Re-timing a trace needs ``retime_trace: true`` (with arrival poisson, gamma or
burst), and :func:`describe_arrivals` states the process used, for the run header.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from kvsim import limits as L
from kvsim.configtools import cfg_field, check_fields, explicit
from kvsim.errors import KvsimError

DATASETS = ("sharegpt_like", "alpaca_like", "sharegpt_json", "trace", "fixed", "uniform", "sharegpt", "alpaca")
SHAREGPT_NOTE = ("note: workload.dataset: 'sharegpt' is kvsim's synthetic ShareGPT-like length distribution, now "
                 "named 'sharegpt_like' (same numbers); in vLLM 'sharegpt' is the real file: real ShareGPT "
                 "conversation lengths are the trace scenarios/traces/sharegpt_llama3_1000.csv (dataset: trace, "
                 "retime_trace: true, as scenarios/validation/v21_llama3_8b_sharegpt_trace.yaml) or vLLM's JSON "
                 "(dataset: sharegpt_json)")
_noted: set[str] = set()
deferred: list[str] | None = None    # the CLI collects notes here and prints them after a successful command


def note_once(text: str) -> None:
    """A one-line note on stderr, once per process (forked workers inherit what was noted). While
    ``deferred`` is a list (a ``kvsim`` command), the note is kept there, once, and the command prints it
    after it succeeds, so that bad input still gets exactly one line on stderr: the error."""
    if deferred is not None:
        if text not in deferred:
            deferred.append(text)
    elif text not in _noted:
        _noted.add(text)
        print(text, file=sys.stderr, flush=True)
ARRIVALS = ("poisson", "gamma", "trace", "burst")


@dataclass
class WorkloadConfig:
    """The ``workload:`` section of a scenario. ``validate(path)`` checks every field."""

    dataset: str = cfg_field(
        "sharegpt_like",
        "length source: sharegpt_like | alpaca_like (synthetic lognormal lengths fitted to the PagedAttention "
        "paper's means; the old names sharegpt | alpaca still select them), sharegpt_json (vLLM's ShareGPT JSON "
        "at `path`), trace (CSV/JSONL at `path`; real ShareGPT lengths: scenarios/traces/sharegpt_llama3_1000.csv), "
        "fixed (prompt_len/output_len), uniform (prompt_len_range/output_len_range)",
    )
    path: str | None = cfg_field(None, "file for dataset sharegpt_json or trace")
    prompt_len: int = cfg_field(512, "prompt tokens for dataset 'fixed' (before the shared prefix)", lo=1,
                                hi=L.MAX_TOKENS)
    output_len: int = cfg_field(128, "output tokens per sample for dataset 'fixed'", lo=1, hi=L.MAX_TOKENS)
    prompt_len_range: list[int] = cfg_field([32, 512], "[min, max] prompt tokens (inclusive) for dataset 'uniform'",
                                             lo=1, hi=L.MAX_TOKENS)
    output_len_range: list[int] = cfg_field([32, 512], "[min, max] output tokens (inclusive) for dataset 'uniform'",
                                             lo=1, hi=L.MAX_TOKENS)
    tokens_per_char: float = cfg_field(0.25, "sharegpt_json: tokens per character of text when no tokenizer is used",
                                       lo=0, hi=1000, lo_open=True)
    tokenizer: str | None = cfg_field(None, "sharegpt_json: Hugging Face tokenizer name (needs `transformers`)")
    arrival: str | None = cfg_field(
        None, "arrival process: poisson | gamma | trace (the trace's arrival_s) | burst (all at t=0); "
              "default poisson; a trace replays its own arrival_s unless retime_trace is true")
    retime_trace: bool = cfg_field(
        False, "dataset trace: false (default) replays the trace's own arrival_s; true gives its rows new arrival "
               "times from `arrival` (poisson | gamma | burst) at rate_req_s, cycling rows if num_requests asks for more")
    rate_req_s: float | None = cfg_field(
        1.0, "mean arrival rate in requests/s (poisson, gamma); inf = every request at t=0 (vllm bench's "
             "--request-rate inf, arrival burst)", lo=L.MIN_RATE, hi=L.MAX_RATE)
    cv: float = cfg_field(1.0, "gamma: coefficient of variation of inter-arrival times (1 = Poisson, >1 bursty)",
                          lo=0, hi=100, lo_open=True)
    burstiness: float | None = cfg_field(
        None, "vLLM's --burstiness: the gamma shape k of inter-arrival times (1 = Poisson, < 1 bursty); "
              "sets cv = 1/sqrt(k) and arrival gamma (give cv or burstiness, not both)", lo=1e-4, hi=1e4)
    num_requests: int | None = cfg_field(
        1000, "number of requests (with duration_s: whichever ends first); a replayed trace is read in full "
              "unless this is given", lo=1, hi=L.MAX_REQUESTS)
    duration_s: float | None = cfg_field(None, "generate arrivals up to this time in seconds", lo=0, hi=L.MAX_SECONDS,
                                         lo_open=True)
    max_concurrency: int | None = cfg_field(
        None, "vllm bench's --max-concurrency (closed loop): at most this many requests in flight; a request "
              "arriving when all are busy waits and is sent when one finishes (its arrival_s and latencies count "
              "from the send); null = open loop", lo=1, hi=L.MAX_REQUESTS)
    n: int = cfg_field(1, "parallel samples per request", lo=1, hi=L.MAX_SAMPLES)
    beam_width: int = cfg_field(1, "beam width; > 1 means beam search (then n must be 1)", lo=1, hi=L.MAX_SAMPLES)
    prefix_len: int = cfg_field(0, "shared-prefix tokens prepended to every prompt (0 = none)", lo=0, hi=L.MAX_TOKENS)
    num_prefixes: int = cfg_field(1, "number of distinct shared prefixes; each request picks one uniformly at random",
                                  lo=1, hi=L.MAX_REQUESTS)
    max_len_tokens: int | None = cfg_field(None, "cap on prompt+output tokens (the model's max length also applies)",
                                            lo=2, hi=L.MAX_TOKENS)

    def validate(self, path: str = "workload") -> None:
        """Raise KvsimError naming ``{path}.field`` for the first bad field."""
        p = path or "workload"
        check_fields(self, p, recurse=False)

        def bad(name: str, what: str) -> KvsimError:
            return KvsimError(f"{p}.{name}", what)

        if self.dataset not in DATASETS:
            raise bad("dataset", f"{self.dataset!r} is not allowed; allowed: {', '.join(DATASETS[:6])}")
        if self.dataset == "sharegpt":
            note_once(SHAREGPT_NOTE)
        if self.burstiness is not None:
            cv = 1.0 / self.burstiness ** 0.5
            if explicit(self, "cv") and abs(self.cv - cv) > 1e-9 * cv:
                raise bad("burstiness", f"{self.burstiness:g} (cv {cv:.4g}) with cv {self.cv:g}; give one of them "
                          "(cv = 1/sqrt(burstiness))")
            if self.arrival not in (None, "poisson", "gamma") or self.retime_trace is False and self.dataset == "trace":
                raise bad("burstiness", f"{self.burstiness:g} with arrival {self.arrival!r}; allowed with arrival "
                          "poisson or gamma (burstiness makes it gamma, as vllm bench's gamma process)")
            self.cv = cv
            self.arrival = "gamma"
        if self.dataset == "trace" and not self.retime_trace:
            self.arrival = "trace"               # a trace replays its own arrival times...
        elif self.retime_trace and self.dataset != "trace":
            raise bad("retime_trace", f"true needs dataset 'trace' (got {self.dataset!r}); allowed: false")
        elif self.retime_trace and self.arrival in (None, "trace"):
            raise bad("arrival", f"{self.arrival!r} with retime_trace: true; allowed: poisson, gamma, burst (the "
                      "new arrival process of the trace's rows)")
        elif self.arrival is None:
            self.arrival = "poisson"
        if self.dataset == "trace" and not explicit(self, "num_requests"):
            self.num_requests = None             # ...all of them (re-timed: one request per row)
        if self.arrival not in ARRIVALS:
            raise bad("arrival", f"{self.arrival!r} is not allowed; allowed: {', '.join(ARRIVALS)}")
        if self.dataset in ("sharegpt_json", "trace") and not self.path:
            raise bad("path", f"dataset {self.dataset!r} needs a file path; got {self.path!r}")
        if self.dataset == "fixed":
            for name in ("prompt_len", "output_len"):
                if getattr(self, name) < 1:
                    raise bad(name, f"{getattr(self, name)} is not allowed; allowed: integer >= 1")
        if self.dataset == "uniform":
            for name in ("prompt_len_range", "output_len_range"):
                r = getattr(self, name)
                if len(r) != 2 or r[0] < 1 or r[0] > r[1]:
                    raise bad(name, f"{r!r} is not allowed; allowed: [min, max] with 1 <= min <= max")
        if not self.tokens_per_char > 0:
            raise bad("tokens_per_char", f"{self.tokens_per_char} is not allowed; allowed: > 0")
        if self.arrival == "trace" and self.dataset != "trace":
            raise bad("arrival", f"'trace' needs dataset 'trace' (got dataset {self.dataset!r}); allowed: poisson, gamma, burst")
        if self.arrival in ("poisson", "gamma") and (self.rate_req_s is None or not self.rate_req_s > 0):
            raise bad("rate_req_s", f"{self.rate_req_s} is not allowed; allowed: a number > 0 (required for {self.arrival})")
        if not self.cv > 0:
            raise bad("cv", f"{self.cv} is not allowed; allowed: > 0")
        if self.num_requests is not None and self.num_requests < 1:
            raise bad("num_requests", f"{self.num_requests} is not allowed; allowed: integer >= 1 or null")
        if self.duration_s is not None and not self.duration_s > 0:
            raise bad("duration_s", f"{self.duration_s} is not allowed; allowed: > 0 or null")
        if self.arrival != "trace" and self.num_requests is None and self.dataset != "trace":
            if self.duration_s is None:
                raise bad("num_requests", "null with duration_s null; allowed: set num_requests and/or duration_s")
            if self.arrival == "burst":
                raise bad("num_requests", "arrival 'burst' needs num_requests; allowed: integer >= 1")
        if self.n < 1:
            raise bad("n", f"{self.n} is not allowed; allowed: integer >= 1")
        if self.beam_width < 1:
            raise bad("beam_width", f"{self.beam_width} is not allowed; allowed: integer >= 1")
        if self.beam_width > 1 and self.n != 1:
            raise bad("n", f"{self.n} with beam_width {self.beam_width}; allowed: n = 1 when beam_width > 1")
        if self.prefix_len < 0:
            raise bad("prefix_len", f"{self.prefix_len} is not allowed; allowed: integer >= 0")
        if self.prefix_len > 0 and self.dataset == "trace":
            raise bad("prefix_len", f"{self.prefix_len} with dataset 'trace'; allowed: 0 (give prefix_id/prefix_len columns in the trace)")
        if self.num_prefixes < 1:
            raise bad("num_prefixes", f"{self.num_prefixes} is not allowed; allowed: integer >= 1")
        if self.max_len_tokens is not None and self.max_len_tokens < 2:
            raise bad("max_len_tokens", f"{self.max_len_tokens} is not allowed; allowed: integer >= 2 or null")
        if self.max_len_tokens is not None and self.prefix_len > self.max_len_tokens - 2:
            raise bad("prefix_len", f"{self.prefix_len} leaves no room in max_len_tokens {self.max_len_tokens}; "
                      "allowed: <= max_len_tokens - 2")
        for name, why in unused_fields(self):
            note_once(f"note: {p}.{name} has no effect here: {why}")
        if self.arrival in ("poisson", "gamma") and self.duration_s is not None:
            expect = self.rate_req_s * self.duration_s
            if (self.num_requests is None or self.num_requests > L.MAX_REQUESTS) and expect > L.MAX_REQUESTS:
                raise bad("duration_s", f"{self.duration_s:g} s at {self.rate_req_s:g} req/s is about {expect:.3g} "
                          f"requests; allowed: at most {L.MAX_REQUESTS} (lower duration_s or set num_requests)")


def unused_fields(cfg: WorkloadConfig) -> list[tuple[str, str]]:
    """Fields given (in the file or by --set) that the chosen dataset and arrival process never read, each with
    why: the run would otherwise silently be something other than what the field asks for. A note, not an
    error, so that overriding ``dataset`` or ``arrival`` on a scenario that sets such a field (a sweep over
    arrival processes) still runs."""
    out = []
    if explicit(cfg, "cv") and cfg.arrival != "gamma" and cfg.burstiness is None:
        out.append(("cv", f"only arrival gamma uses it (arrival is {cfg.arrival!r})"))
    for name, ds in (("prompt_len", "fixed"), ("output_len", "fixed"), ("prompt_len_range", "uniform"),
                     ("output_len_range", "uniform"), ("tokens_per_char", "sharegpt_json"),
                     ("tokenizer", "sharegpt_json")):
        if explicit(cfg, name) and cfg.dataset != ds:
            out.append((name, f"only dataset {ds!r} uses it (dataset is {cfg.dataset!r})"))
    if explicit(cfg, "path") and cfg.path and cfg.dataset not in ("sharegpt_json", "trace"):
        out.append(("path", f"only datasets 'sharegpt_json' and 'trace' read a file (dataset is {cfg.dataset!r})"))
    if explicit(cfg, "num_prefixes") and cfg.num_prefixes > 1 and cfg.prefix_len == 0:
        out.append(("num_prefixes", "prefix_len is 0: there is no shared prefix to choose"))
    if explicit(cfg, "rate_req_s") and cfg.arrival == "trace":
        out.append(("rate_req_s", "the trace replays its own arrival_s (retime_trace: true gives it new arrivals "
                                  "at this rate)"))
    return out


def describe_arrivals(cfg: WorkloadConfig, num_requests: int, trace_rows: int | None = None) -> str:
    """The arrival process a run used, in words (the run header prints it)."""
    rows = f" of its {trace_rows} rows" if trace_rows is not None and trace_rows != num_requests else ""
    if cfg.arrival == "trace":
        return (f"trace {cfg.path}: its own arrival_s, {num_requests} requests{rows} "
                f"(re-timing needs workload.retime_trace=true){_closed(cfg)}")
    burst = "burst (all at t=0" + (", as rate_req_s: inf" if getattr(cfg, "_rate_inf", False) else "") + ")"
    if cfg.arrival == "burst":
        what = burst
    elif cfg.arrival == "poisson":
        what = f"poisson @ {cfg.rate_req_s:g} req/s"
    else:
        shape = f", gamma shape {cfg.burstiness:g}" if cfg.burstiness is not None else ""
        what = f"gamma @ {cfg.rate_req_s:g} req/s (cv {cfg.cv:g}{shape})"
    if cfg.dataset != "trace":
        return f"{cfg.dataset} lengths, {what}, {num_requests} requests{_closed(cfg)}"
    cycle = f", cycling its {trace_rows} rows {num_requests / trace_rows:.1f}x" if (
        trace_rows and num_requests > trace_rows) else rows
    return (f"trace {cfg.path} RE-TIMED (workload.retime_trace=true) to {what}, {num_requests} "
            f"requests{cycle}{_closed(cfg)}")


def _closed(cfg: WorkloadConfig) -> str:
    if cfg.max_concurrency is None:
        return ""
    return f"; closed loop: at most {cfg.max_concurrency} in flight (max_concurrency), the rest wait for a slot"
