"""A calibrated profile: the JSON ``kvsim calibrate`` writes, loaded and validated (no torch needed).

:class:`Profile` checks the format and version, reads every table into interpolation-ready arrays (times made
monotone along each axis by isotonic regression) and raises ``KvsimError("profile", ...)`` on anything
malformed. :func:`interp1` / :func:`interp2` are the piecewise-linear interpolation the cost model uses:
the first value below the grid, the last segment's slope above it. The table layout is documented in
``calibrate/README.md``; how the tables price a step, in :mod:`kvsim.cost.calibrated`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kvsim.errors import KvsimError

FORMAT = "kvsim-profile"
VERSION = 1
LEGACY_ENGINE_MODE = {"cuda_graphs": False, "fused_layer_ops": False, "mixed_decode_kernel": False,
                      "async_scheduling": False, "prefill_ladder": "v1", "copy_one_launch": False}
"""The engine a profile was measured with, for each ``meta`` field it does not record (profiles from before the
field existed): eager, plain layer ops, decode rows in the prefill kernel, stepped, ladder v1, per-layer copies.
``kvsim calibrate`` records all of them (``kvsim.calibrate.profile.engine_mode``)."""


def spread_contexts(n: int, top: int) -> list[int]:
    """The unequal contexts the spread grid measures: ``n`` sequences evenly spaced up to ``top``."""
    return [max(1, round(top * (i + 1) / n)) for i in range(n)]


REQUIRED = ("meta", "model", "dtype", "num_layers", "linear", "layer_other", "lm_head", "decode_attn",
            "prefill_attn", "copy_block", "swap", "step_overhead")
MAX_LAYERS = 10_000
MAX_BLOCK_SIZE = 1 << 20


def block_size_key(key) -> int | None:
    """A block-keyed table's key (``"16"``) as an int; None for anything but ASCII digits naming 1..2^20."""
    if not isinstance(key, str) or not key.isascii() or not key.isdigit():
        return None
    bs = int(key)
    return bs if 1 <= bs <= MAX_BLOCK_SIZE else None


def _kind(v) -> str:
    """How a JSON value reads in a message: ``an object``, ``a list``, ``'abc'``, ``null``, ``5``."""
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "a list"
    return "null" if v is None else repr(v)


def _numbers(v, name: str) -> np.ndarray:
    """``v`` (a list, or rows of lists, of numbers) as float64; strings, booleans, null and non-finite refused."""
    try:
        a = np.asarray(v)
    except (ValueError, TypeError):
        raise ValueError(f"'{name}' must be a list of numbers (rows of one length)") from None
    if a.dtype.kind not in "iuf":
        raise ValueError(f"'{name}' must hold numbers only")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"'{name}' must hold finite numbers")
    return a


def isotonic(y) -> np.ndarray:
    """Least-squares non-decreasing fit (pool adjacent violators): a lone slow sample is averaged
    with its neighbours instead of raising every later point, as a running maximum would."""
    vals: list[float] = []
    counts: list[int] = []
    for v in np.asarray(y, dtype=np.float64):
        vals.append(float(v))
        counts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            c = counts[-2] + counts[-1]
            vals[-2] = (vals[-2] * counts[-2] + vals[-1] * counts[-1]) / c
            counts[-2] = c
            vals.pop()
            counts.pop()
    return np.repeat(vals, counts)


def _mono(y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.apply_along_axis(isotonic, axis, np.asarray(y, dtype=np.float64))


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


class Profile:
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
        # optional: whole mixed iterations (decode rows x context x fresh chunk tokens)
        self.mixed_step = self._blocks("mixed_step", self._grid3, optional=True)
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
        # ... and lone prefill steps of those runs: what a prompt of T tokens adds, by T (may be negative)
        self.prefill_serving = self._blocks("prefill_serving", self._extra_curve, optional=True)
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

    # ---------------------------------------------------------------- checks, each naming the file and key
    def _bad(self, key: str, what: str) -> KvsimError:
        return KvsimError("profile", f"{self.source}: {key}: {what}")

    def _meta(self, meta) -> dict:
        if not isinstance(meta, dict):
            raise self._bad("meta", f"expected an object, got {_kind(meta)}")
        for key in ("gpu", "prefill_ladder"):
            if key in meta and not isinstance(meta[key], str):
                raise self._bad(f"meta.{key}", f"expected a string, got {_kind(meta[key])}")
        for key in (*(k for k, v in LEGACY_ENGINE_MODE.items() if isinstance(v, bool)), "fast"):
            if key in meta and not isinstance(meta[key], bool):
                raise self._bad(f"meta.{key}", f"expected true or false, got {meta[key]!r}")
        return meta

    def _name(self, key: str, what: str) -> str:
        v = self.data[key]
        if not isinstance(v, str) or not v.strip():
            raise self._bad(key, f"expected {what}, got {v!r}")
        return v

    def _parsed(self, key: str, parse, value, *args, **kw):
        """``parse(value, ...)`` for the table at ``key``; any problem is a KvsimError naming the file and key."""
        if not isinstance(value, dict):
            raise self._bad(key, f"expected an object, got {_kind(value)}")
        try:
            return parse(value, *args, **kw)
        except KeyError as e:
            raise self._bad(key, f"missing {e.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as e:
            raise self._bad(key, str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    def _table(self, key: str, parse, *args, **kw):
        return self._parsed(key, parse, self.data[key], *args, **kw)

    def _raw_blocks(self, key: str) -> dict:
        """The table ``key`` (absent: empty) keyed by block size as an int; keys checked, values not yet."""
        table = self.data.get(key, {})
        if not isinstance(table, dict):
            raise self._bad(key, f"expected an object keyed by block size, got {_kind(table)}")
        out = {}
        for k, v in table.items():
            bs = block_size_key(k)
            if bs is None:
                raise self._bad(key, f"block size {k!r} is not a whole number >= 1")
            if bs in out:
                raise self._bad(key, f"block size {bs} appears twice")
            if not isinstance(v, dict):
                raise self._bad(f"{key}.{k}", f"expected an object, got {_kind(v)}")
            out[bs] = v
        return out

    def _blocks(self, key: str, parse, *args, optional: bool = False) -> dict:
        if not optional and not isinstance(self.data[key], dict):
            raise self._bad(key, f"expected an object keyed by block size, got {_kind(self.data[key])}")
        return {bs: self._parsed(f"{key}.{bs}", parse, v, *args) for bs, v in self._raw_blocks(key).items()}

    def _sampling(self, d) -> tuple:
        if not isinstance(d, dict):
            raise self._bad("sampling", f"expected an object, got {_kind(d)}")
        for k in ("greedy", "beam", "beam_first"):
            if k not in d:
                raise self._bad("sampling", f"missing {k!r}")
        return tuple(self._parsed(f"sampling.{k}", self._curve, d[k], key, monotone=False)
                     for k, key in (("greedy", "rows"), ("beam", "rows"), ("beam_first", "groups")))

    @staticmethod
    def _serving(d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(num_seqs, extra_s, spread_frac)``; ``spread_frac`` None in the form ``"spread": "grid"`` (the
        fraction comes from the spread grid, :mod:`kvsim.calibrate.serving_fit`)."""
        xs = _numbers(d["num_seqs"], "num_seqs")
        extra = _numbers(d["extra_s"], "extra_s")
        grid = d.get("spread") == "grid"
        frac = None if grid else _numbers(d["spread_frac"], "spread_frac")
        if xs.ndim != 1 or len(xs) == 0 or extra.shape != xs.shape or np.any(np.diff(xs) <= 0) \
                or not np.all(np.isfinite(extra)) or (frac is not None and (frac.shape != xs.shape
                                                                           or not np.all(np.isfinite(frac)))):
            raise ValueError("decode_serving: num_seqs, extra_s (and spread_frac unless spread is 'grid') must be "
                             "finite lists of one length, num_seqs increasing")
        return xs, extra, frac

    @staticmethod
    def _extra_curve(d: dict) -> tuple[np.ndarray, np.ndarray]:
        xs = _numbers(d["tokens"], "tokens")
        ys = _numbers(d["extra_s"], "extra_s")
        if xs.ndim != 1 or len(xs) == 0 or ys.shape != xs.shape or np.any(np.diff(xs) <= 0) \
                or not np.all(np.isfinite(ys)):
            raise ValueError("prefill_serving: tokens and extra_s must be finite lists of one length, tokens increasing")
        return xs, ys

    @staticmethod
    def _curve(d: dict, key: str, monotone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        xs = _numbers(d[key], key)
        ys = _numbers(d["time_s"], "time_s")
        if xs.ndim != 1 or xs.shape != ys.shape or len(xs) == 0 or np.any(np.diff(xs) <= 0):
            raise ValueError(f"'{key}' must be a strictly increasing list as long as time_s")
        if np.any(~np.isfinite(ys)) or np.any(ys < 0):
            raise ValueError("times must be finite and >= 0")
        return xs, (_mono(ys) if monotone else ys)

    @staticmethod
    def _grid(d: dict, ka: str, kb: str):
        xa = _numbers(d[ka], ka)
        xb = _numbers(d[kb], kb)
        t = _numbers(d["time_s"], "time_s")
        if xa.ndim != 1 or xb.ndim != 1 or t.shape != (len(xa), len(xb)) or np.any(np.diff(xa) <= 0) \
                or np.any(np.diff(xb) <= 0):
            raise ValueError(f"grid '{ka}' x '{kb}' must be increasing and match time_s's shape")
        if np.any(~np.isfinite(t)) or np.any(t < 0):
            raise ValueError("times must be finite and >= 0")
        return xa, xb, _mono(_mono(t, axis=0), axis=1)

    @staticmethod
    def _grid3(d: dict):
        axes = [_numbers(d[k], k) for k in ("decode", "ctx", "chunk")]
        t = _numbers(d["time_s"], "time_s")
        if any(a.ndim != 1 for a in axes) or t.shape != tuple(len(a) for a in axes) \
                or any(np.any(np.diff(a) <= 0) for a in axes):
            raise ValueError("grid 'decode' x 'ctx' x 'chunk' must be increasing and match time_s's shape")
        if np.any(~np.isfinite(t)) or np.any(t < 0):
            raise ValueError("times must be finite and >= 0")
        for ax in range(3):
            t = _mono(t, axis=ax)
        return (*axes, t)

    @property
    def block_sizes(self) -> list[int]:
        return sorted(self.decode)


def spread_fractions(g: dict):
    """``(batch, max_ctx, fraction)`` from a spread grid that carries its own uniform steps: per point,
    (spread step - uniform at its mean) / (uniform at its longest - uniform at its mean), clipped to
    [0, 1] (0 where the two uniform steps do not differ)."""
    xa = _numbers(g["batch"], "batch")
    xb = _numbers(g["max_ctx"], "max_ctx")
    t, lo, hi = (_numbers(g[k], k) for k in ("time_s", "mean_time_s", "top_time_s"))
    if not t.shape == lo.shape == hi.shape == (len(xa), len(xb)):
        raise ValueError("decode_spread_step's mean_time_s and top_time_s must match time_s's shape")
    span = hi - lo
    lam = np.where(span > 1e-7, (t - lo) / np.where(span > 1e-7, span, 1.0), 0.0)
    return xa, xb, np.clip(lam, 0.0, 1.0)


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
