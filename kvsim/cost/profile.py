"""A calibrated profile: the JSON ``kvsim calibrate`` writes, loaded and validated (no torch needed).

:class:`Profile` checks the format and version, reads every table into interpolation-ready arrays (times made
monotone along each axis by isotonic regression) and raises ``KvsimError("profile", ...)`` on anything
malformed. :func:`interp1` / :func:`interp2` are the piecewise-linear interpolation the cost model uses:
the first value below the grid, the last segment's slope above it. The table layout is documented in
``calibrate/README.md``; how each table is read and checked, in :mod:`kvsim.cost.profile_tables`; how the
tables price a step, in :mod:`kvsim.cost.calibrated`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kvsim.cost.profile_tables import (MAX_BLOCK_SIZE, TableReader, _kind, block_size_key, isotonic,  # noqa: F401
                                      spread_fractions)
from kvsim.errors import KvsimError

FORMAT = "kvsim-profile"
VERSION = 1
LEGACY_ENGINE_MODE = {"cuda_graphs": False, "fused_layer_ops": False, "mixed_decode_kernel": False,
                      "async_scheduling": False, "prefill_ladder": "v1", "copy_one_launch": False,
                      "swap_staged": False, "prefill_route": False, "async_prompt_steps": False,
                      "pad_logits": False, "mixed_decode_split": False}
"""The engine a profile was measured with, for each ``meta`` field it does not record (profiles from before the
field existed): eager, plain layer ops, decode rows in the prefill kernel, stepped, ladder v1, per-layer copies
and swaps, every prefill graph size replayed (no routing), steps with prompt tokens stepped, the LM head at the
sampled rows, mixed steps' decode rows never cut into partitions.
``kvsim calibrate`` records all of them (``kvsim.calibrate.profile.engine_mode``)."""


def spread_contexts(n: int, top: int) -> list[int]:
    """The unequal contexts the spread grid measures: ``n`` sequences evenly spaced up to ``top``."""
    return [max(1, round(top * (i + 1) / n)) for i in range(n)]


REQUIRED = ("meta", "model", "dtype", "num_layers", "linear", "layer_other", "lm_head", "decode_attn",
            "prefill_attn", "copy_block", "swap", "step_overhead")
MAX_LAYERS = 10_000


def interp1(x, xs: np.ndarray, ys: np.ndarray):
    """Piecewise-linear in ``xs`` (sorted); clamp below, extend the last slope above."""
    x = np.asarray(x, dtype=np.float64)
    y = np.interp(x, xs, ys)
    if len(xs) > 1 and (x > xs[-1] if x.ndim == 0 else x.size and x.max() > xs[-1]):
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return np.where(x > xs[-1], ys[-1] + slope * (x - xs[-1]), y)
    return np.asarray(y) if len(xs) > 1 else y      # (the same floats and types; nothing above the last point)


def interp2(a: float, b, xa: np.ndarray, xb: np.ndarray, table: np.ndarray):
    """Bilinear over ``table[i, j]`` at (xa[i], xb[j]) for a scalar ``a`` and scalar-or-array ``b``,
    with :func:`interp1`'s edge rules on both axes (first along ``xa``, then along ``xb``)."""
    curve = np.array([float(interp1(a, xa, table[:, j])) for j in range(len(xb))])
    return interp1(b, xb, curve)


class Profile(TableReader):
    """A loaded, validated profile. Raises KvsimError("profile", ...) on any problem, its message naming the file
    and the key (``p.json: num_layers: expected a positive integer, got inf``)."""

    def __init__(self, data: dict, source: str = "<dict>"):
        self.source = source
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KvsimError("profile", f"{source} is not a kvsim profile (format must be {FORMAT!r})")
        version = data.get("version")
        if isinstance(version, bool) or version != VERSION:
            raise KvsimError("profile", f"{source} has version {version!r}, this kvsim reads {VERSION}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise KvsimError("profile", f"{source} lacks {', '.join(missing)}")
        self.data = data
        self.meta = self._meta(data["meta"])
        self.model = self._name("model", "a model name")
        self.dtype = self._name("dtype", "a dtype name such as fp16")
        n = data["num_layers"]
        if not (isinstance(n, int) and not isinstance(n, bool) or isinstance(n, float) and n.is_integer()) \
                or not 1 <= n <= MAX_LAYERS:
            raise self._bad("num_layers", f"expected a positive integer (at most {MAX_LAYERS}), got {n!r}")
        self.num_layers = int(n)
        self.linear = self._table("linear", self._curve, "tokens")
        self.other = self._table("layer_other", self._curve, "tokens")
        self.lm_head = self._table("lm_head", self._curve, "rows")
        self.overhead = self._table("step_overhead", self._curve, "num_seqs", monotone=False)
        self.decode = self._blocks("decode_attn", self._grid, "batch", "ctx")
        self.prefill = self._blocks("prefill_attn", self._grid, "tokens", "cached")
        self.copy = self._blocks("copy_block", self._curve, "blocks")
        self.swap = self._blocks("swap", self._curve, "blocks")
        # optional (version 1 profiles from kvsim >= this commit): whole engine iterations
        self.decode_step = self._blocks("decode_step", self._grid, "batch", "ctx", optional=True)
        self.prefill_step = self._blocks("prefill_step", self._curve, "tokens", optional=True)
        # grids timed between decode steps (kvsim calibrate from commit 6ad8f32 on) vs back-to-back (older)
        self.prefill_step_spaced = {bs for bs, c in self._raw_blocks("prefill_step").items()
                                    if c.get("timing") == "between_decode_steps"}
        # ... and the prefill/mixed graph sizes the calibration's graphs routed past (runtime.cuda_graph_prefill_route)
        self.prefill_graph_skip = {bs: self._sizes(f"prefill_step.{bs}.graph_skip", c.get("graph_skip"))
                                   for bs, c in self._raw_blocks("prefill_step").items()}
        # optional: whole mixed iterations (decode rows x context x fresh chunk tokens)
        self.mixed_step = self._blocks("mixed_step", self._grid3, optional=True)
        # ... of which the decode rows were walked whole (not cut into partitions: kvsim.cost.mixed_rows)
        self.mixed_rows_whole = {bs for bs, c in self._raw_blocks("mixed_step").items() if not c.get("decode_split")}
        # ... or cut only below a share of the programs and walked whole from there (varlen_split.CUT_BELOW)
        self.mixed_split_cut_below = {bs: self._share(f"mixed_step.{bs}.decode_split_cut_below",
                                                      c["decode_split_cut_below"])
                                      for bs, c in self._raw_blocks("mixed_step").items()
                                      if c.get("decode_split") and "decode_split_cut_below" in c}
        # optional: whole decode iterations with unequal contexts (batch x longest context)
        self.decode_spread_step = self._blocks("decode_spread_step", self._grid, "batch", "max_ctx", optional=True)
        # ... and, in newer profiles, the uniform steps at each shape's mean and longest context timed
        # beside it: the spread fraction then comes from three steps of one run (spread_fractions)
        self.decode_spread_lam = {bs: self._parsed(f"decode_spread_step.{bs}", spread_fractions, g)
                                  for bs, g in self._raw_blocks("decode_spread_step").items()
                                  if "mean_time_s" in g and "top_time_s" in g}
        # optional: decode steps of serving-shaped batches fitted on real engine runs
        # (kvsim.calibrate.serving_fit): extra overhead and spread fraction by rows
        self.decode_serving = self._blocks("decode_serving", self._serving, optional=True)
        # ... of an overlapped calibration: the steps whose host work was not hidden, apart (beam search's price)
        self.decode_stepped = {bs: self._parsed(f"decode_serving.{bs}.stepped", self._stepped, d["stepped"])
                               for bs, d in self._raw_blocks("decode_serving").items()
                               if isinstance(d, dict) and "stepped" in d}
        # ... and beam search's decode steps measured whole: what they cost beyond a stepped step, by beam rows,
        # without and with copies (kvsim.calibrate.beam_fit); profiles from 2026-12-07 on
        self.decode_beam = {bs: self._parsed(f"decode_serving.{bs}.beam", self._beam, d["beam"])
                            for bs, d in self._raw_blocks("decode_serving").items()
                            if isinstance(d, dict) and "beam" in d}
        # ... and lone prefill steps of those runs: what a prompt of T tokens adds, by T (may be negative)
        self.prefill_serving = self._blocks("prefill_serving", self._extra_curve, optional=True)
        # ... and those steps' host work on the critical path, by T (what one prepared ahead does not pay:
        # kvsim.overlap); profiles from 2026-12-06 19:00 on
        self.prefill_host = {bs: self._parsed(f"prefill_serving.{bs}.host_s", self._host_curve, d)
                             for bs, d in self._raw_blocks("prefill_serving").items()
                             if isinstance(d, dict) and "host_s" in d}
        # optional: whole prefill iterations of several fresh prompts (prompts x new tokens each) and of
        # one prompt after cached tokens (new x cached) — kvsim.cost.prefill_shapes prices with them
        self.prefill_batch_step = self._blocks("prefill_batch_step", self._grid, "seqs", "tokens", optional=True)
        self.prefill_cached_step = self._blocks("prefill_cached_step", self._grid, "tokens", "cached", optional=True)
        # optional: what a real prefill step of T tokens costs beyond overhead(1) + prefill_step(T)
        self.prefill_overhead = self._table("prefill_overhead", self._curve, "tokens") \
            if "prefill_overhead" in data else None
        # optional: the engine's sampling calls alone, by rows (greedy; a beam step over its groups' beams)
        # and by groups (a beam group's first step after its prompt) -- CalibratedCostModel prices beam
        # steps with them (kvsim.calibrate.sampling, kvsim.cost.sampling_price)
        self.sampling = None if "sampling" not in data else self._sampling(data["sampling"])
        # optional: what the first step after idle adds (a prompt reaching an idle engine vs a busy one)
        self.wake_overhead = self._table("wake_overhead", self._curve, "tokens", monotone=False) \
            if "wake_overhead" in data else None
        # ... and how long an idle engine took from a request's arrival to scheduling its step (profiles from
        # 2026-12-07 on; 0 before: the simulator then schedules at the arrival itself)
        self.wake_latency = self._table("wake_overhead", self._latency) \
            if isinstance(data.get("wake_overhead"), dict) and "latency_s" in data["wake_overhead"] else 0.0

    def _meta(self, meta) -> dict:
        if not isinstance(meta, dict):
            raise self._bad("meta", f"expected an object, got {_kind(meta)}")
        for key in ("gpu", "prefill_ladder"):
            if key in meta and not isinstance(meta[key], str):
                raise self._bad(f"meta.{key}", f"expected a string, got {_kind(meta[key])}")
        for key in (*(k for k, v in LEGACY_ENGINE_MODE.items() if isinstance(v, bool)), "fast"):
            if key in meta and not isinstance(meta[key], bool):
                raise self._bad(f"meta.{key}", f"expected true or false, got {meta[key]!r}")
        sms = meta.get("num_sms")
        if sms is not None and (isinstance(sms, bool) or not isinstance(sms, int) or not 1 <= sms <= 100_000):
            raise self._bad("meta.num_sms", f"expected a positive integer (the card's SMs), got {sms!r}")
        return meta

    @property
    def block_sizes(self) -> list[int]:
        return sorted(self.decode)


def load_profile(path: str | Path) -> Profile:
    """The profile at ``path``, validated; a missing, unreadable, binary or non-UTF-8 file, text that is not JSON
    (NaN and Infinity included) or a malformed profile is a one-line KvsimError("profile", ...) naming the file."""
    from kvsim.textio import read_text
    text = read_text(path, "profile", "profile JSON file (kvsim calibrate)")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise KvsimError("profile", f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:
        raise KvsimError("profile", f"{path} is not JSON ({e})") from None
    return Profile(data, str(path))


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")
