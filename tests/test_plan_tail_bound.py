"""The near-miss Korn-Graubard upper end of a zero-inflated mean share (kvsim.plan.tail_bound, issue #13):
coverage on runs drawn from a known bursty process, shrinking with more runs, the answer when all runs
agree, and the near-miss shares themselves."""
from __future__ import annotations

import math

import numpy as np
import pytest

from kvsim.plan.exceedance import share_interval
from kvsim.plan.tail_bound import kg_upper, share_upper, soft_shares, wilson_upper

B = 10.0
N_REQ = 400


def bursty_run(rng, p_burst=0.2, p_near=0.6) -> np.ndarray:
    """One run's TTFTs: quiet (exponential, mean 0.2 s), plus with probability ``p_burst`` a burst — a stretch
    of 20-150 requests whose TTFT rises to a peak of 12-40 s and falls back — and otherwise, with probability
    ``p_near``, a near miss: the same shape peaking at 5.5-9.5 s. Bursts pass B/2 before B, as queues do."""
    t = rng.exponential(0.2, N_REQ)
    u = rng.uniform()
    if u < p_burst + (1 - p_burst) * p_near:
        peak = rng.uniform(12, 40) if u < p_burst else rng.uniform(5.5, 9.5)
        length = int(rng.integers(20, 151))
        start = int(rng.integers(0, N_REQ - length))
        t[start:start + length] += peak * (1 - np.abs(np.linspace(-1, 1, length)))
    return t


def true_share(**kw) -> float:
    rng = np.random.default_rng(12345)
    return float(np.mean([(bursty_run(rng, **kw) > B).mean() for _ in range(20000)]))


def old_t_upper(runs) -> float:
    return float(share_interval(runs, [B], 0.95, method="t")[2][0])


def test_upper_end_covers_a_bursty_zero_inflated_share_where_student_t_does_not():
    mu = true_share()
    rng = np.random.default_rng(2024)
    miss_new = miss_t = 0
    draws = 600
    for _ in range(draws):
        runs = [bursty_run(rng) for _ in range(10)]
        miss_new += share_interval(runs, [B], 0.95)[2][0] < mu
        miss_t += old_t_upper(runs) < mu
    assert miss_t / draws > 0.08, miss_t / draws          # the first construction's failure, reproduced
    assert miss_new / draws <= 0.04, miss_new / draws      # close to the nominal 0.025


def test_more_runs_shrink_the_upper_end_and_keep_it_above_the_share():
    mu = true_share()
    rng = np.random.default_rng(7)
    medians = []
    for n in (10, 20, 40):
        ups = [share_interval([bursty_run(rng) for _ in range(n)], [B], 0.95)[2][0] for _ in range(150)]
        assert np.mean(np.array(ups) < mu) <= 0.05, (n, np.mean(np.array(ups) < mu))
        medians.append(float(np.median(ups)))
    assert medians[0] > medians[1] > medians[2], medians
    assert medians[2] - mu < 0.6 * (medians[0] - mu), medians


def test_the_same_runs_repeated_never_widen_it():
    rng = np.random.default_rng(5)
    runs = [np.sort(bursty_run(rng)) for _ in range(10)]
    x = np.array([B])
    ups = [share_upper(runs * m, x, 0.95)[0] for m in (1, 2, 4, 8)]
    assert all(b < a for a, b in zip(ups, ups[1:])), ups
    assert ups[-1] >= soft_shares(runs, x).mean()


def test_runs_that_agree_give_the_pooled_wilson_end():
    z = 1.959963984540054
    same = [np.sort(np.r_[np.full(396, 1.0), np.full(4, 30.0)])] * 10           # 1% above B in every run
    assert share_upper(same, np.array([B]), 0.95)[0] == pytest.approx(wilson_upper(0.01, 4000, z))
    quiet = [np.full(400, 1.0)] * 10                                           # nothing near B anywhere
    assert share_upper(quiet, np.array([B]), 0.95)[0] == pytest.approx(z * z / (4000 + z * z))
    one = kg_upper(np.array([[0.03]]), 400, 0.95)                              # one run: Wilson on its requests
    assert one[0] == pytest.approx(wilson_upper(0.03, 400, z))


def test_near_misses_raise_the_upper_end_and_stragglers_barely_do():
    quiet = [np.full(400, 1.0) for _ in range(10)]
    near = quiet[:7] + [np.r_[np.full(340, 1.0), np.linspace(5, 9.5, 60)] for _ in range(3)]
    straggler = quiet[:9] + [np.r_[np.full(399, 1.0), 5.2]]
    hi = lambda runs: share_interval(runs, [B], 0.95)[2][0]                    # noqa: E731
    assert hi(quiet) < 0.01 and hi(straggler) < 0.01                          # both pass a 1% bound
    assert hi(near) > 0.01                                                     # three episodes near B do not
    assert hi(straggler) - hi(quiet) < 1e-3


def test_soft_shares_count_near_misses_in_proportion():
    rng = np.random.default_rng(3)
    runs = [np.sort(rng.exponential(3.0, 200)) for _ in range(4)]
    x = np.array([2.0, 10.0, 25.0])
    got = soft_shares(runs, x)
    want = [[np.clip((s - xx / 2) / (xx / 2), 0, 1).mean() for xx in x] for s in runs]
    assert got == pytest.approx(np.array(want), abs=1e-12)
    assert (got >= np.array([[(s > xx).mean() for xx in x] for s in runs])).all()
    assert math.isclose(soft_shares([np.array([1.0, 2.0])], np.array([100.0]))[0, 0], 0.0)


def test_quantile_interval_in_chunks_equals_the_interval_on_every_threshold_at_once(monkeypatch):
    """quantile_interval judges thresholds in chunks and the upper end only from the mean's crossing on; the
    answer is the first threshold where each of share_interval's outputs is at most 1 - q, judged on all at once."""
    import kvsim.plan.exceedance as exc
    rng = np.random.default_rng(11)
    found = 0
    for trial in range(40):
        runs = [bursty_run(rng)[: int(rng.integers(50, N_REQ))] for _ in range(int(rng.integers(1, 9)))]
        if trial % 5 == 0:
            runs.append(np.array([]))                                   # an empty run is left out
        pooled = np.concatenate(runs)
        cand = np.unique(np.concatenate([pooled, 2 * pooled, [B]]))
        got = share_interval(runs, cand, 0.95)
        first = [np.flatnonzero(v <= 0.01) for v in got]                 # the largest sample if nowhere
        want = tuple(float(cand[i[0]] if len(i) else pooled.max()) for i in first)
        monkeypatch.setattr(exc, "CELLS", int(rng.integers(1, 2000)))   # many chunks, sizes not aligned
        assert exc.quantile_interval(runs, 0.99, 0.95, bounds=[B]) == want
        found += all(len(i) for i in first)
        monkeypatch.setattr(exc, "CELLS", 1 << 40)                       # one chunk
        assert exc.quantile_interval(runs, 0.99, 0.95, bounds=[B]) == want
    assert found >= 20                                                  # most have all three crossings
