"""The runner's step inputs (kvsim.engine.runner.ModelRunner.prepare) against their per-token definition:
token ids, positions and KV slots ``table[p // bs] * bs + p % bs`` for every prefill chunk (chunks that start
and end mid-block) and decode row, on the CPU with a tiny model."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import kvsim  # noqa: E402
from kvsim.engine.engine import RealEngine  # noqa: E402
from kvsim.engine.runner import long_tensor  # noqa: E402


def test_long_tensor_is_an_int64_copy_of_the_list():
    t = long_tensor([3, 2**40, -1])
    assert t.dtype == torch.int64 and t.tolist() == [3, 2**40, -1] and long_tensor([]).numel() == 0


@pytest.mark.parametrize("budget", [37, 100])
def test_prepared_inputs_match_their_per_token_definition(budget):
    sc = kvsim.load_scenario({"name": "prep", "model": "tiny-llama", "gpu": "a100-40gb", "seed": 2,
                              "engine": {"block_size": 16, "num_gpu_blocks": 300, "scheduler": "chunked", "max_num_seqs": 8,
                                         "max_num_batched_tokens": budget},
                              "workload": {"dataset": "uniform", "prompt_len_range": [20, 90],
                                           "output_len_range": [2, 5], "num_requests": 6, "arrival": "burst"},
                              "runtime": {"device": "cpu", "cuda_graphs": False, "warmup": False}})
    eng = RealEngine(sc)
    runner, sched, bs = eng.runner, eng.sched, 16
    for spec in eng.setup.requests:
        sched.add_request(spec)
    checked = 0
    for step in range(40):
        plan = sched.schedule(float(step))
        if plan.is_empty:
            break
        batch = runner.prepare(plan)
        ids, pos, slots = [], [], []
        for gid, new, cached in zip(plan.prefill_group_ids, plan.prefill_new_tokens, plan.prefill_cached_tokens):
            g = runner.groups[gid]
            sid = g.seqs[0].seq_id
            table, toks = eng.kv.block_table(sid), runner.seq_tokens(g, sid)
            for p in range(cached, cached + new):
                ids.append(toks[p])
                pos.append(p)
                slots.append(table[p // bs] * bs + p % bs)
            checked += cached % bs != 0 or (cached + new) % bs != 0
        for gid in plan.decode_group_ids:
            g = runner.groups[gid]
            for s in g.seqs:
                toks, table = runner.seq_tokens(g, s.seq_id), eng.kv.block_table(s.seq_id)
                p = len(toks) - 1
                ids.append(toks[-1])
                pos.append(p)
                slots.append(table[p // bs] * bs + p % bs)
        assert batch.input_ids.tolist() == ids and batch.positions.tolist() == pos
        assert batch.meta.slot_mapping.tolist() == slots
        sched.complete_step(plan, float(step) + 0.5, runner.execute(plan, batch))
    assert checked > 0                      # some chunk started or ended inside a block


@pytest.mark.parametrize("tokens, max_seqs, max_len", [
    (2560, 256, 2048), (2048, 256, 2048), (4096, 256, 2048), (512, 256, 8192), (8192, 2, 2048), (100, 1, 50),
    (7, 256, 3)])
def test_profiled_forward_fits_the_models_positions_and_the_step_limits(tokens, max_seqs, max_len):
    """The memory-measuring forward pass (vLLM's profile run): no sequence longer than the model's length (OPT's
    learned positions end there), no more sequences than a step may hold, and as many tokens as a step can
    schedule: the budget, or every sequence at full length when the budget is larger."""
    from kvsim.engine.engine import profile_shape
    seqs, per = profile_shape(tokens, max_seqs, max_len)
    assert 1 <= seqs <= max_seqs and 1 <= per <= max_len
    assert seqs * per <= tokens
    assert seqs * per >= min(tokens, max_seqs * max_len) - seqs      # at most one token short per sequence
