"""The prefill overhead fits of ``kvsim calibrate``: real engine prefill steps of lone prompts of T tokens against
their price, reaching a busy engine (``prefill_overhead``: the host work that grows with a prompt) and an idle one
(what idle adds on top, ``wake_overhead``, and the engine's wake from its sleep to scheduling the prompt's step,
``wake_overhead.latency_s``). :func:`kvsim.calibrate.profile.fit_after_grids` runs both after the serving fit."""
from __future__ import annotations

import numpy as np

from kvsim.calibrate import measure as M
from kvsim.calibrate.engine_runs import engine_records, prefill_blocks
from kvsim.card_speed import idle_waits
from kvsim.catalogue import get_model
from kvsim.cost.calibrated import CalibratedCostModel, Profile
from kvsim.errors import KvsimError

PREFILL_OVERHEAD_TOKENS = [16, 128, 512, 1536]
PREFILL_OVERHEAD_RATE = 4.0      # req/s: 250 ms apart, room for a 1,536-token prefill + 3 decodes of a 13B model
BUSY_RATE, BUSY_OUTPUT = 12.0, 32   # busy fit: a prompt every 83 ms into ~3 running decodes of >= 32 tokens
BUSY_RUNNING = 3                    # ... each request decodes for as long as this many arrival gaps


def busy_output_len(cost, prompt_len: int, max_len: int) -> int:
    """Output tokens that keep each busy-fit request decoding for ``BUSY_RUNNING`` arrival gaps at the
    profile's price of a decode step of that many sequences (at least ``BUSY_OUTPUT``; at most what fits
    ``max_len``). A 13B model needs the minimum; a small model's steps are so short that 32 tokens end
    before the next prompt arrives and no prefill would ever meet a running request."""
    from kvsim.core.plan import StepPlan
    step = cost.step_time(StepPlan(decode_group_ids=list(range(BUSY_RUNNING)),
                                   decode_context_tokens=[prompt_len + BUSY_OUTPUT] * BUSY_RUNNING))
    want = BUSY_RUNNING / BUSY_RATE / max(step, 1e-6)
    return int(max(BUSY_OUTPUT, min(-(-want // 1), max_len - prompt_len - 8)))


def fit_prefill_overhead(model, profile: dict, bs: int, device: str = "cuda", tokens=PREFILL_OVERHEAD_TOKENS,
                         cuda_graphs: bool = True, prompts: int = 8, busy: bool = False, parts=None) -> dict:
    """What a real engine prefill step of ``T`` prompt tokens costs beyond the profile's price of it
    (``step_overhead(1) + prefill_step(T)``), per ``T``: the host work that grows with the prompt (token,
    position and slot lists, their copies to the GPU) and anything else the replayed graph alone misses.
    ``step_overhead`` is fitted on decode steps, whose host work does not grow with a prompt.

    ``busy=False``: lone prompts reach an *idle* engine, so the step also pays the clock ramp after idle; the
    median time from their arrival to their step's scheduling (the engine's wake) is ``latency_s``.
    ``busy=True``: each prompt arrives while earlier requests are decoding (the prefill-first scheduler
    still runs it as a prefill-only step), as in loaded serving; :func:`calibrate` stores this one as
    ``prefill_overhead`` and what idle adds on top as ``wake_overhead``."""
    from kvsim.core.plan import StepPlan
    base = {k: v for k, v in profile.items() if k not in ("prefill_overhead", "wake_overhead")}
    cost = CalibratedCostModel(Profile(base), model_name=profile["model"], dtype=profile["dtype"], block_size_tokens=bs)
    spec = get_model(profile["model"])
    out, used, waits = [], [], []
    for t in tokens:
        t = min(int(t), spec.max_seq_len - 8)
        # the serving engine's graphs (256 sequence rows, as in prefill_step), prompts spaced so each prefill
        # runs alone: near-constant gaps (gamma, cv 0.01) longer than a prefill and 3 decodes
        out_len = busy_output_len(cost, t, spec.max_seq_len) if busy else 4
        load = {"output_len": out_len, "rate_req_s": BUSY_RATE, "num_requests": 2 * prompts} if busy else \
            {"output_len": 4, "rate_req_s": PREFILL_OVERHEAD_RATE, "num_requests": prompts}
        its, reqs = engine_records(model, profile, f"calibrate-prefill-{t}", device, cuda_graphs,
                                   {"block_size": bs, "num_gpu_blocks": prefill_blocks(t, out_len, bs, BUSY_OUTPUT)},
                                   {"prompt_len": t, "arrival": "gamma", "cv": 0.01, **load}, parts=parts)
        waits += [] if busy else idle_waits(reqs)[2:]        # (the first ones warm up, as below)
        pre = its[(its.decode_seqs == 0) & (its.prefill_tokens == t) & (its.prefill_groups == 1)]
        pre = pre[pre.running > 1] if busy else pre
        pre = pre.iloc[2:] if len(pre) > 2 else pre          # the first ones warm up, when there are more
        if not len(pre):
            raise KvsimError("calibrate", f"the engine ran no lone {t}-token prefill step to time"
                                          + (" while other requests decoded" if busy else ""))
        priced = cost.step_time(StepPlan(prefill_group_ids=[0], prefill_new_tokens=[t], prefill_cached_tokens=[0]))
        resid = float(np.median(pre.duration_s.to_numpy() - priced))
        out.append(max(0.0, resid))
        used.append(t)
        M._log(f"prefill overhead ({'busy' if busy else 'idle'}) T={t}: measured step {pre.duration_s.median() * 1e3:.2f} ms, "
               f"priced {priced * 1e3:.2f} ms, residual {out[-1] * 1e3:.2f} ms")
    fit = {"tokens": used, "time_s": out}
    if waits:
        fit["latency_s"] = float(np.median(waits))
        M._log(f"idle engine's wake (arrival to scheduling, {len(waits)} prompts): {fit['latency_s'] * 1e3:.3f} ms")
    return fit
