"""Tensor parallelism on CPU (issue #16): 2 gloo ranks, tiny models, fp32, torch reference attention.

* model level: each rank builds TP=1 and its TP=2 shard from the same seed and runs a two-sequence
  prefill plus decode steps on both; the logits must agree, and the rank's KV cache holds half the
  KV heads (Tiny-Llama's 2 KV heads: one per rank); the same at 4 ranks, where Tiny-Llama's KV heads
  are replicated (one per rank, each shared by two ranks);
* engine level: rank 0 runs the scheduler and broadcasts each step; the block tables and slots every
  rank ran with are identical, and the greedy outputs equal a TP=1 engine's;
* the GQA sharding rule and the refusals, in-process.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from kvsim.catalogue import get_model  # noqa: E402
from kvsim.engine.tp import TPGroup, head_shard, shard_tensor  # noqa: E402
from kvsim.engine.tp_ranks import gloo_available, spawn_ranks  # noqa: E402
from kvsim.errors import KvsimError  # noqa: E402

needs_gloo = pytest.mark.skipif(not gloo_available(), reason="torch.distributed with gloo is unavailable")
BS, TOL = 4, 1e-4


def _meta(prefills, decodes):
    """``prefills``: [(table, cached, new)]; ``decodes``: [(table, context incl. the new token)]."""
    from kvsim.engine.attention import AttnMetadata
    from kvsim.engine.runner import pad_rows
    slots, qs = [], [0]
    for tab, c, n in prefills:
        slots += [tab[p // BS] * BS + p % BS for p in range(c, c + n)]
        qs.append(qs[-1] + n)
    slots += [tab[(c - 1) // BS] * BS + (c - 1) % BS for tab, c in decodes]
    i32 = lambda xs: torch.tensor(xs, dtype=torch.int32)  # noqa: E731
    return AttnMetadata(qs[-1], len(decodes), torch.tensor(slots), i32(qs), i32([c for _, c, _ in prefills]),
                        torch.from_numpy(pad_rows([t for t, *_ in prefills])), max([n for *_, n in prefills] + [0]),
                        i32([c for _, c in decodes]), torch.from_numpy(pad_rows([t for t, _ in decodes])),
                        max([c for _, c in decodes] + [1]), backend="torch")


def _model_rank(tp: TPGroup, out: str) -> None:
    from kvsim.engine.kv_cache import KVCache
    from kvsim.engine.models import build_model
    res = {}
    for name in ("tiny-opt", "tiny-llama"):
        spec = get_model(name)
        models = [build_model(spec, dtype=torch.float32, device="cpu", seed=7, tp=t) for t in (None, tp)]
        caches = [KVCache(m.num_layers, 16, BS, m.num_kv_heads, m.head_dim, 0, torch.float32,
                          torch.device("cpu"), "torch") for m in models]
        tables, lens = [[3, 9, 1, 14], [12, 0, 5, 8]], [7, 10]
        ids = torch.randint(0, spec.vocab_size, (17,), generator=torch.Generator().manual_seed(1))
        steps = [(ids, torch.cat([torch.arange(7), torch.arange(10)]), _meta(
            [(tables[0], 0, 7), (tables[1], 0, 10)], []), [6, 16])]
        diffs = []
        with torch.inference_mode():
            for s in range(5):
                ids, pos, meta, rows = steps[-1]
                logits = [m.compute_logits(m(ids, pos, c.gpu, meta)[rows]) for m, c in zip(models, caches)]
                diffs.append(float((logits[0] - logits[1]).abs().max()))
                nxt = logits[0].argmax(-1)                  # both models continue with TP=1's tokens
                lens = [n + 1 for n in lens]
                steps.append((nxt, torch.tensor([n - 1 for n in lens]),
                              _meta([], [(tables[0], lens[0]), (tables[1], lens[1])]), [0, 1]))
        res[name] = {"diffs": diffs, "kv_shape": tuple(caches[1].gpu[0][0].shape),
                     "full_kv_shape": tuple(caches[0].gpu[0][0].shape), "scale": float(logits[0].abs().max())}
    torch.save(res, f"{out}/rank{tp.rank}.pt")


@needs_gloo
@pytest.mark.parametrize("world", [2, 4], ids=["tp2", "tp4-kv-replicated"])
def test_tp_logits_equal_tp1_and_kv_is_sharded(tmp_path, world):
    """TP=4 on Tiny-Llama (2 KV heads) exercises the replicated-KV rule: one KV head per rank."""
    spawn_ranks(_model_rank, world, str(tmp_path))
    for rank in range(world):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        for name, r in res.items():
            spec = get_model(name)
            assert len(r["diffs"]) == 5 and max(r["diffs"]) < TOL, (name, rank, r["diffs"])
            assert r["scale"] > 1e-3                         # the logits are not trivially zero
            assert r["full_kv_shape"][2] == spec.num_kv_heads
            kv = max(spec.num_kv_heads // world, 1)
            assert r["kv_shape"] == (16, BS, kv, spec.head_dim), (name, r)


def _engine_rank(tp: TPGroup, out: str, data: dict) -> None:
    import kvsim
    from kvsim.engine.engine import RealEngine
    eng = RealEngine(kvsim.load_scenario(data, ["tensor_parallel=2"]), tp=tp)
    trace: list = []
    if tp.rank == 0:
        eng.runner.trace = trace
        res = eng.run()
        outputs = res.outputs
    else:
        eng.serve(trace)
        outputs = None
    torch.save({"trace": trace, "outputs": outputs, "kv_heads": eng.cache.gpu[0][0].shape[2],
                "swaps": eng.cache.transfers},
               f"{out}/engine{tp.rank}.pt")


def _scenario(model: str, **engine) -> dict:
    return {"name": "engine-tp", "model": model, "gpu": "a100-40gb", "dtype": "fp32",
            "engine": {"block_size": BS, "num_gpu_blocks": 200, "num_cpu_blocks": 200,
                       "max_num_batched_tokens": 64, "max_num_seqs": 8, **engine},
            "workload": {"dataset": "uniform", "prompt_len_range": [3, 20], "output_len_range": [4, 10],
                         "arrival": "burst", "num_requests": 6},
            "runtime": {"device": "cpu", "attention_backend": "torch"}, "seed": 1}


@needs_gloo
@pytest.mark.parametrize("model,engine", [("tiny-llama", {}),
                                          ("tiny-opt", {"num_gpu_blocks": 14, "preemption_mode": "swap"}),
                                          ("tiny-llama-swa", {})],
                         ids=["llama", "opt-swap", "llama-swa-kv-groups"])
def test_tp2_engine_broadcast_plan(tmp_path, model, engine):
    import kvsim
    from kvsim.engine.engine import RealEngine
    data = _scenario(model, **engine)
    spawn_ranks(_engine_rank, 2, str(tmp_path), data)
    r0, r1 = (torch.load(tmp_path / f"engine{r}.pt") for r in (0, 1))
    assert len(r0["trace"]) > 6 and r0["trace"] == r1["trace"]     # same steps, same blocks, same slots
    assert r0["kv_heads"] == r1["kv_heads"] == get_model(model).num_kv_heads // 2
    assert r0["swaps"] == r1["swaps"] and (r0["swaps"] > 0) == ("preemption_mode" in engine)
    ref = RealEngine(kvsim.load_scenario(data, [])).run()
    assert r0["outputs"] == ref.outputs and len(ref.outputs) == 6


def test_head_shard_rule():
    assert head_shard(8, 4, TPGroup(1, 2)) == head_shard(8, 4, TPGroup(1, 2))
    s = head_shard(8, 4, TPGroup(1, 2))
    assert (s.heads, s.head_start, s.kv_heads, s.kv_start, s.kv_replicated) == (4, 4, 2, 2, False)
    s = head_shard(8, 2, TPGroup(3, 4))                 # K < N: one KV head, the one heads 6-7 read
    assert (s.heads, s.head_start, s.kv_heads, s.kv_start, s.kv_replicated) == (2, 6, 1, 1, True)
    assert head_shard(8, 2, TPGroup(1, 4)).kv_start == 0
    with pytest.raises(KvsimError, match="num_kv_heads"):
        head_shard(12, 4, TPGroup(0, 3))
    with pytest.raises(KvsimError, match="num_heads"):
        head_shard(4, 4, TPGroup(0, 3))


def test_shard_tensor_slices():
    spec = get_model("tiny-llama")
    tp = TPGroup(1, 2)
    w = torch.arange(64 * 64.0).view(64, 64)
    assert torch.equal(shard_tensor("model.layers.0.self_attn.q_proj.weight", w, spec, tp), w[32:64])
    assert torch.equal(shard_tensor("model.layers.0.self_attn.k_proj.weight", w[:32], spec, tp), w[16:32])
    assert torch.equal(shard_tensor("model.layers.0.self_attn.o_proj.weight", w, spec, tp), w[:, 32:64])
    f = torch.arange(64 * 128.0).view(64, 128)          # down_proj is [hidden, ffn]
    assert torch.equal(shard_tensor("model.layers.0.mlp.down_proj.weight", f, spec, tp), f[:, 64:])
    assert torch.equal(shard_tensor("model.layers.0.mlp.up_proj.weight", f.T, spec, tp), f.T[64:])
    row = w[0]
    assert shard_tensor("model.norm.weight", row, spec, tp) is row
    assert shard_tensor("model.decoder.layers.0.fc2.bias", row, spec, tp) is row     # row-parallel bias
    assert torch.equal(shard_tensor("model.decoder.layers.0.fc1.bias", f[0], spec, tp), f[0, 64:])


def test_engine_refuses_tp_without_group():
    import kvsim
    from kvsim.engine.engine import RealEngine
    with pytest.raises(KvsimError, match="tensor_parallel"):
        RealEngine(kvsim.load_scenario(_scenario("tiny-llama"), ["tensor_parallel=2"]))


@needs_gloo
def test_cli_engine_tensor_parallel_2(tmp_path, capsys):
    import json

    import pandas as pd

    from kvsim.cli import main
    ex = "scenarios/examples/tiny_tp2_engine_cpu.yaml"
    sets = sum((["--set", s] for s in ("workload.num_requests=4", "workload.output_len_range=[3,6]")), [])
    assert main(["engine", ex, "--out", str(tmp_path), *sets]) == 0
    assert "x2 ranks (gloo)" in capsys.readouterr().out
    assert json.loads((tmp_path / "summary.json").read_text())["engine"]["tensor_parallel"] == 2
    assert (pd.read_csv(tmp_path / "requests.csv").status == "finished").sum() == 4
