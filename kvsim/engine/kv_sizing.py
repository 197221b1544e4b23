"""How many KV blocks the engine's GPU holds: what the weights and a profiled peak forward of the step's token
budget (:func:`profile_shape`) leave of ``engine.gpu_memory_utilization`` (:func:`measure_blocks`), as vLLM's
profile run does. :class:`kvsim.engine.engine.RealEngine` replaces the simulator's block estimate with it."""
from __future__ import annotations

import torch

from kvsim.build import RunSetup
from kvsim.engine.kv_cache import KVCache
from kvsim.errors import KvsimError


def profile_shape(tokens: int, max_num_seqs: int, max_model_len: int) -> tuple[int, int]:
    """The profiled peak forward's ``(sequences, tokens each)``: the step's token budget as few sequences as the
    model's length allows, none longer than ``max_model_len`` (a model with learned positions has no embedding
    past it: OPT-13B's 2,560-token budget as one 2,560-token sequence indexed past its 2,048 positions and hit a
    device-side assert) and no more than ``max_num_seqs``: a step never holds more than that many sequences of
    at most that length."""
    longest = max(1, max_model_len)
    seqs = max(1, min(max_num_seqs, -(-tokens // longest)))
    return seqs, max(1, min(longest, tokens // seqs))


def measure_blocks(model, setup: RunSetup, device: torch.device, dtype, backend: str) -> tuple[int, dict]:
    """KV blocks that fit after the weights and a profiled peak forward, like vLLM's profile run."""
    from kvsim.engine.attention import AttnMetadata
    e = setup.scenario.engine
    bs = e.block_size
    seqs, per = profile_shape(e.max_num_batched_tokens, e.max_num_seqs, setup.max_model_len)
    nblk = -(-per // bs) * seqs
    cache = KVCache(model.num_layers, nblk, bs, model.num_kv_heads, model.head_dim, 0, dtype, device, backend)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    qstart = torch.arange(0, (seqs + 1) * per, per, dtype=torch.int32, device=device)
    table = torch.arange(nblk, dtype=torch.int32, device=device).view(seqs, -1)
    meta = AttnMetadata(per * seqs, 0, torch.arange(per * seqs, device=device) % (nblk * bs), qstart,
                        torch.zeros(seqs, dtype=torch.int32, device=device), table, per,
                        torch.zeros(0, dtype=torch.int32, device=device),
                        torch.zeros((0, 1), dtype=torch.int32, device=device), 1, backend)
    ids = torch.randint(0, model.spec.vocab_size, (per * seqs,), device=device)
    pos = torch.arange(per, device=device).repeat(seqs)
    with torch.inference_mode():
        h = model(ids, pos, cache.gpu, meta)
        model.compute_logits(h[qstart[1:].long() - 1].repeat(max(1, e.max_num_seqs // seqs), 1)[:e.max_num_seqs])
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - cache.bytes
    del cache, h
    total = torch.cuda.mem_get_info()[1]
    usable = int(total * e.gpu_memory_utilization)
    kv_bytes = usable - peak
    blocks = int(kv_bytes // setup.budget.block_bytes)
    info = {"gpu_total_bytes": int(total), "peak_bytes_weights_plus_activations": int(peak),
            "kv_bytes": int(kv_bytes), "engine_blocks": blocks, "simulator_blocks": setup.budget.num_gpu_blocks}
    if blocks < 1:
        raise KvsimError("engine.gpu_memory_utilization", f"no room for KV blocks after {peak / 2**30:.1f} GiB")
    return blocks, info
