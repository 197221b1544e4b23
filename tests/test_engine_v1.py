"""``engine.policy: v1`` in the real engine (CPU, tiny models): the same core V1 scheduler and KV manager
the simulator runs, executed on a model. Greedy tokens must equal Hugging Face ``generate`` while V1
chunks prompts next to decodes, preempts by recompute and serves children's prompts from the prefix cache."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
pytest.importorskip("transformers")

from kvsim.core.kv_paged_v1 import PagedKVV1  # noqa: E402
from kvsim.core.scheduler_v1 import SchedulerV1  # noqa: E402
from kvsim.core.tokens import synthetic_prompt_tokens  # noqa: E402
from tests.test_engine import pair, run  # noqa: E402,F401  (pair: module-scoped fixture)

V1 = {"engine.policy": "v1", "workload.num_requests": 10}


def hf_greedy(hf, spec) -> list[int]:
    prompt = torch.tensor([synthetic_prompt_tokens(spec, hf.config.vocab_size).tolist()], device=hf.device)
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=spec.output_len, min_new_tokens=spec.output_len,
                          do_sample=False, eos_token_id=None, pad_token_id=0)
    return ref[0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("caching", [False, True])
def test_v1_greedy_tokens_match_hf_under_chunking_and_recompute(pair, caching):
    # with the prefix cache on, a recomputed request re-reads its own prompt and output blocks that
    # are still cached, so those blocks must hold exactly the KV its tokens wrote
    name, models = pair
    res, eng = run(models, name, **V1, **{"engine.num_gpu_blocks": 14, "engine.max_num_batched_tokens": 20,
                                          "engine.max_num_seqs": 8, "engine.enable_prefix_caching": caching,
                                          "workload.output_len_range": [8, 30]})
    assert isinstance(eng.sched, SchedulerV1) and isinstance(eng.kv, PagedKVV1)   # the core objects
    s, its = res.summary, res.iterations
    assert s["preemptions"] == s["preemptions_recompute"] > 0 and s["preemptions_swap"] == 0
    assert ((its.prefill_tokens > 0) & (its.decode_seqs > 0)).any(), "expected mixed chunk + decode steps"
    assert (its.batched_tokens <= 20).all()
    if caching:
        assert (res.requests.cached_tokens > res.requests.prompt_len).any(), "no recompute hit its own output"
    for spec in eng.setup.requests:
        assert res.outputs[spec.request_id] == [hf_greedy(models[0], spec)], spec


def test_v1_children_share_the_prompt_through_the_prefix_cache(pair):
    name, models = pair
    over = {**V1, "workload.num_requests": 5, "workload.n": 3, "engine.enable_prefix_caching": True,
            "workload.prompt_len_range": [9, 20]}
    res, eng = run(models, name, **over)
    reqs = res.requests
    assert len(reqs) == 5 and (reqs.cached_tokens > 0).all()      # later children hit the first's blocks
    assert res.summary["prefix_cache_hit_frac"] > 0
    for spec in eng.setup.requests:
        assert res.outputs[spec.request_id] == [hf_greedy(models[0], spec)] * 3, spec
    its = res.iterations
    assert ((its.mem_used + its.mem_internal + its.mem_reserved) < its.mem_logical).any()   # shared blocks
    off, _ = run(models, name, **{**over, "engine.enable_prefix_caching": False})
    its = off.iterations
    assert (off.requests.cached_tokens == 0).all()
    assert ((its.mem_used + its.mem_internal + its.mem_reserved) == its.mem_logical).all()   # nothing shared
    assert off.outputs == res.outputs
