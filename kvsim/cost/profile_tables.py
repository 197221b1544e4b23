"""How a profile's tables are read and checked (:class:`kvsim.cost.profile.Profile` uses them): each table parsed
into float arrays, times made monotone along each axis by isotonic regression, and every problem a
``KvsimError("profile", ...)`` naming the file and the key (``p.json: decode_attn.16: times must be finite``)."""
from __future__ import annotations

import numpy as np

from kvsim.errors import KvsimError

MAX_BLOCK_SIZE = 1 << 20
MAX_WAKE_LATENCY_S = 1.0     # an idle engine's arrival-to-schedule time above a second is not a measurement


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



class TableReader:
    """The parsers and checks of :class:`kvsim.cost.profile.Profile` (it sets ``source`` and ``data``)."""
    source: str
    data: dict

    # ---------------------------------------------------------------- checks, each naming the file and key
    def _bad(self, key: str, what: str) -> KvsimError:
        return KvsimError("profile", f"{self.source}: {key}: {what}")

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

    def _share(self, key: str, value) -> float:
        """A share from 0 to 1 at ``key``; anything else is a KvsimError naming the file and key."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise self._bad(key, f"expected a share from 0 to 1, got {value!r}")
        return float(value)

    def _table(self, key: str, parse, *args, **kw):
        return self._parsed(key, parse, self.data[key], *args, **kw)

    def _sizes(self, key: str, value) -> list[int]:
        """A list of whole token counts >= 1 (absent: empty), e.g. the graph sizes a calibration routed past."""
        if value is None:
            return []
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise self._bad(key, f"expected a list of whole numbers >= 1, got {str(value)[:60]}")
        return sorted(set(value))

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
    def _stepped(d: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(num_seqs, extra_s)`` of the stepped decode steps of an overlapped serving fit."""
        return TableReader._extra_curve(d, "num_seqs", "")

    @staticmethod
    def _beam(d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """``(num_seqs, extra_s, copy_extra_s, shared_saving)`` of beam search's decode steps
        (``decode_serving[bs].beam``; ``shared_saving`` 0 where absent: profiles before 2026-12-07)."""
        xs, plain = TableReader._extra_curve(d, "num_seqs", "beam: ")
        copying = _numbers(d["copy_extra_s"], "copy_extra_s")
        if copying.shape != xs.shape or not np.all(np.isfinite(copying)):
            raise ValueError("beam: copy_extra_s must be finite and as long as num_seqs")
        saving = d.get("shared_saving", 0.0)
        if isinstance(saving, bool) or not isinstance(saving, (int, float)) or not 0.0 <= saving <= 1.0:
            raise ValueError("beam: shared_saving must be a number from 0 to 1")
        return xs, plain, copying, float(saving)

    @staticmethod
    def _host_curve(d: dict) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, host_s)`` of the lone prefill steps' host work on the critical path (``prefill_serving``)."""
        xs, _ = TableReader._extra_curve(d)
        ys = _numbers(d["host_s"], "host_s")
        if ys.shape != xs.shape or not np.all(np.isfinite(ys)) or np.any(ys < 0):
            raise ValueError("prefill_serving: host_s must be finite, >= 0 and as long as tokens")
        return xs, ys

    @staticmethod
    def _extra_curve(d: dict, key: str = "tokens", table: str = "prefill_serving: ") -> tuple[np.ndarray, np.ndarray]:
        xs = _numbers(d[key], key)
        ys = _numbers(d["extra_s"], "extra_s")
        if xs.ndim != 1 or len(xs) == 0 or ys.shape != xs.shape or np.any(np.diff(xs) <= 0) \
                or not np.all(np.isfinite(ys)):
            raise ValueError(f"{table}{key} and extra_s must be finite lists of one length, {key} increasing")
        return xs, ys

    @staticmethod
    def _latency(d: dict) -> float:
        """``wake_overhead.latency_s``: an idle engine's seconds from a request's arrival to scheduling it."""
        v = d["latency_s"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= MAX_WAKE_LATENCY_S:
            raise ValueError(f"latency_s must be a number of seconds in [0, {MAX_WAKE_LATENCY_S:g}], got {v!r}")
        return float(v)

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
