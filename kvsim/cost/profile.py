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
    """A loaded, validated profile. Raises KvsimError("profile", ...) on any problem."""

    def __init__(self, data: dict, source: str = "<dict>"):
        self.source = source
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KvsimError("profile", f"{source} is not a kvsim profile (format must be {FORMAT!r})")
        if data.get("version") != VERSION:
            raise KvsimError("profile", f"{source} has version {data.get('version')!r}, this kvsim reads {VERSION}")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise KvsimError("profile", f"{source} lacks {', '.join(missing)}")
        self.data = data
        self.meta = data["meta"]
        self.model = data["model"]
        self.dtype = data["dtype"]
        self.num_layers = int(data["num_layers"])
        try:
            self.linear = self._curve(data["linear"], "tokens")
            self.other = self._curve(data["layer_other"], "tokens")
            self.lm_head = self._curve(data["lm_head"], "rows")
            self.overhead = self._curve(data["step_overhead"], "num_seqs", monotone=False)
            self.decode = {int(bs): self._grid(g, "batch", "ctx") for bs, g in data["decode_attn"].items()}
            self.prefill = {int(bs): self._grid(g, "tokens", "cached") for bs, g in data["prefill_attn"].items()}
            self.copy = {int(bs): self._curve(c, "blocks") for bs, c in data["copy_block"].items()}
            self.swap = {int(bs): self._curve(c, "blocks") for bs, c in data["swap"].items()}
            # optional (version 1 profiles from kvsim >= this commit): whole engine iterations
            self.decode_step = {int(bs): self._grid(g, "batch", "ctx")
                                for bs, g in data.get("decode_step", {}).items()}
            self.prefill_step = {int(bs): self._curve(c, "tokens") for bs, c in data.get("prefill_step", {}).items()}
            # grids timed between decode steps (kvsim calibrate from commit 6ad8f32 on) vs back-to-back (older)
            self.prefill_step_spaced = {int(bs) for bs, c in data.get("prefill_step", {}).items()
                                        if c.get("timing") == "between_decode_steps"}
            # optional: whole mixed iterations (decode rows x context x fresh chunk tokens)
            self.mixed_step = {int(bs): self._grid3(g) for bs, g in data.get("mixed_step", {}).items()}
            # optional: whole decode iterations with unequal contexts (batch x longest context)
            self.decode_spread_step = {int(bs): self._grid(g, "batch", "max_ctx")
                                       for bs, g in data.get("decode_spread_step", {}).items()}
            # ... and, in newer profiles, the uniform steps at each shape's mean and longest context timed
            # beside it: the spread fraction then comes from three steps of one run (spread_fractions)
            self.decode_spread_lam = {int(bs): spread_fractions(g) for bs, g in data.get("decode_spread_step", {}).items()
                                      if "mean_time_s" in g and "top_time_s" in g}
            # optional: decode steps of serving-shaped batches fitted on real engine runs
            # (kvsim.calibrate.serving_fit): extra overhead and spread fraction by rows
            self.decode_serving = {int(bs): self._serving(t) for bs, t in data.get("decode_serving", {}).items()}
            # ... and lone prefill steps of those runs: what a prompt of T tokens adds, by T (may be negative)
            self.prefill_serving = {int(bs): self._extra_curve(t) for bs, t in data.get("prefill_serving", {}).items()}
            # optional: whole prefill iterations of several fresh prompts (prompts x new tokens each) and of
            # one prompt after cached tokens (new x cached) — kvsim.cost.prefill_shapes prices with them
            self.prefill_batch_step = {int(bs): self._grid(g, "seqs", "tokens")
                                       for bs, g in data.get("prefill_batch_step", {}).items()}
            self.prefill_cached_step = {int(bs): self._grid(g, "tokens", "cached")
                                        for bs, g in data.get("prefill_cached_step", {}).items()}
            # optional: what a real prefill step of T tokens costs beyond overhead(1) + prefill_step(T)
            self.prefill_overhead = self._curve(data["prefill_overhead"], "tokens") \
                if "prefill_overhead" in data else None
            # optional: the engine's sampling calls alone, by rows (greedy; a beam step over its groups' beams)
            # and by groups (a beam group's first step after its prompt) -- CalibratedCostModel prices beam
            # steps with them (kvsim.calibrate.sampling, kvsim.cost.sampling_price)
            self.sampling = None if "sampling" not in data else tuple(
                self._curve(data["sampling"][k], key, monotone=False)
                for k, key in (("greedy", "rows"), ("beam", "rows"), ("beam_first", "groups")))
            # optional: what the first step after idle adds (a prompt reaching an idle engine vs a busy one)
            self.wake_overhead = self._curve(data["wake_overhead"], "tokens", monotone=False) \
                if "wake_overhead" in data else None
        except (KeyError, TypeError, ValueError) as e:
            raise KvsimError("profile", f"{source}: malformed table ({e})") from None

    @staticmethod
    def _serving(d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(num_seqs, extra_s, spread_frac)``; ``spread_frac`` None in the form ``"spread": "grid"`` (the
        fraction comes from the spread grid, :mod:`kvsim.calibrate.serving_fit`)."""
        xs = np.asarray(d["num_seqs"], dtype=np.float64)
        extra = np.asarray(d["extra_s"], dtype=np.float64)
        grid = d.get("spread") == "grid"
        frac = None if grid else np.asarray(d["spread_frac"], dtype=np.float64)
        if xs.ndim != 1 or len(xs) == 0 or extra.shape != xs.shape or np.any(np.diff(xs) <= 0) \
                or not np.all(np.isfinite(extra)) or (frac is not None and (frac.shape != xs.shape
                                                                           or not np.all(np.isfinite(frac)))):
            raise ValueError("decode_serving: num_seqs, extra_s (and spread_frac unless spread is 'grid') must be "
                             "finite lists of one length, num_seqs increasing")
        return xs, extra, frac

    @staticmethod
    def _extra_curve(d: dict) -> tuple[np.ndarray, np.ndarray]:
        xs = np.asarray(d["tokens"], dtype=np.float64)
        ys = np.asarray(d["extra_s"], dtype=np.float64)
        if xs.ndim != 1 or len(xs) == 0 or ys.shape != xs.shape or np.any(np.diff(xs) <= 0) \
                or not np.all(np.isfinite(ys)):
            raise ValueError("prefill_serving: tokens and extra_s must be finite lists of one length, tokens increasing")
        return xs, ys

    @staticmethod
    def _curve(d: dict, key: str, monotone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        xs = np.asarray(d[key], dtype=np.float64)
        ys = np.asarray(d["time_s"], dtype=np.float64)
        if xs.ndim != 1 or xs.shape != ys.shape or len(xs) == 0 or np.any(np.diff(xs) <= 0):
            raise ValueError(f"'{key}' must be a strictly increasing list as long as time_s")
        if np.any(~np.isfinite(ys)) or np.any(ys < 0):
            raise ValueError("times must be finite and >= 0")
        return xs, (_mono(ys) if monotone else ys)

    @staticmethod
    def _grid(d: dict, ka: str, kb: str):
        xa = np.asarray(d[ka], dtype=np.float64)
        xb = np.asarray(d[kb], dtype=np.float64)
        t = np.asarray(d["time_s"], dtype=np.float64)
        if t.shape != (len(xa), len(xb)) or np.any(np.diff(xa) <= 0) or np.any(np.diff(xb) <= 0):
            raise ValueError(f"grid '{ka}' x '{kb}' must be increasing and match time_s's shape")
        if np.any(~np.isfinite(t)) or np.any(t < 0):
            raise ValueError("times must be finite and >= 0")
        return xa, xb, _mono(_mono(t, axis=0), axis=1)

    @staticmethod
    def _grid3(d: dict):
        axes = [np.asarray(d[k], dtype=np.float64) for k in ("decode", "ctx", "chunk")]
        t = np.asarray(d["time_s"], dtype=np.float64)
        if t.shape != tuple(len(a) for a in axes) or any(np.any(np.diff(a) <= 0) for a in axes):
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
    xa = np.asarray(g["batch"], dtype=np.float64)
    xb = np.asarray(g["max_ctx"], dtype=np.float64)
    t, lo, hi = (np.asarray(g[k], dtype=np.float64) for k in ("time_s", "mean_time_s", "top_time_s"))
    if not t.shape == lo.shape == hi.shape == (len(xa), len(xb)):
        raise ValueError("decode_spread_step's mean_time_s and top_time_s must match time_s's shape")
    span = hi - lo
    lam = np.where(span > 1e-7, (t - lo) / np.where(span > 1e-7, span, 1.0), 0.0)
    return xa, xb, np.clip(lam, 0.0, 1.0)


def load_profile(path: str | Path) -> Profile:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except OSError as e:
        raise KvsimError("profile", f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise KvsimError("profile", f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    return Profile(data, str(path))
