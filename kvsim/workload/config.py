"""Workload configuration: which requests arrive, when, and how long they are."""
from __future__ import annotations

from dataclasses import dataclass

from kvsim.configtools import cfg_field
from kvsim.errors import KvsimError

DATASETS = ("sharegpt", "alpaca", "sharegpt_json", "trace", "fixed", "uniform")
ARRIVALS = ("poisson", "gamma", "trace", "burst")


@dataclass
class WorkloadConfig:
    """The ``workload:`` section of a scenario. ``validate(path)`` checks every field."""

    dataset: str = cfg_field(
        "sharegpt",
        "length source: sharegpt | alpaca (synthetic lognormal fitted to the paper's means), "
        "sharegpt_json (vLLM's ShareGPT JSON at `path`), trace (CSV/JSONL at `path`), "
        "fixed (prompt_len/output_len), uniform (prompt_len_range/output_len_range)",
    )
    path: str | None = cfg_field(None, "file for dataset sharegpt_json or trace")
    prompt_len: int = cfg_field(512, "prompt tokens for dataset 'fixed' (before the shared prefix)")
    output_len: int = cfg_field(128, "output tokens per sample for dataset 'fixed'")
    prompt_len_range: list[int] = cfg_field([32, 512], "[min, max] prompt tokens (inclusive) for dataset 'uniform'")
    output_len_range: list[int] = cfg_field([32, 512], "[min, max] output tokens (inclusive) for dataset 'uniform'")
    tokens_per_char: float = cfg_field(0.25, "sharegpt_json: tokens per character of text when no tokenizer is used")
    tokenizer: str | None = cfg_field(None, "sharegpt_json: Hugging Face tokenizer name (needs `transformers`)")
    arrival: str = cfg_field("poisson", "arrival process: poisson | gamma | trace (the trace's arrival_s) | burst (all at t=0)")
    rate_req_s: float | None = cfg_field(1.0, "mean arrival rate in requests/s (poisson, gamma)")
    cv: float = cfg_field(1.0, "gamma: coefficient of variation of inter-arrival times (1 = Poisson, >1 bursty)")
    num_requests: int | None = cfg_field(1000, "number of requests (with duration_s: whichever ends first)")
    duration_s: float | None = cfg_field(None, "generate arrivals up to this time in seconds")
    n: int = cfg_field(1, "parallel samples per request")
    beam_width: int = cfg_field(1, "beam width; > 1 means beam search (then n must be 1)")
    prefix_len: int = cfg_field(0, "shared-prefix tokens prepended to every prompt (0 = none)")
    num_prefixes: int = cfg_field(1, "number of distinct shared prefixes; each request picks one uniformly at random")
    max_len_tokens: int | None = cfg_field(None, "cap on prompt+output tokens (the model's max length also applies)")

    def validate(self, path: str = "workload") -> None:
        """Raise KvsimError naming ``{path}.field`` for the first bad field."""
        p = path or "workload"

        def bad(name: str, what: str) -> KvsimError:
            return KvsimError(f"{p}.{name}", what)

        if self.dataset not in DATASETS:
            raise bad("dataset", f"{self.dataset!r} is not allowed; allowed: {', '.join(DATASETS)}")
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
        if self.arrival != "trace" and self.num_requests is None:
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
