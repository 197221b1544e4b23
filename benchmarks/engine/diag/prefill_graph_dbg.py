import torch, sys
sys.path.insert(0, "tests")
from test_engine_graphs import _model_and_cache, _clone
from kvsim.engine.cuda_graphs import PrefillGraphs
from kvsim.engine.synthetic_step import synthetic_step
for name in ("tiny-opt",):
    for cap in (False, True):
        spec, model, caches = _model_and_cache(name, "cuda", torch.float32)
        g = PrefillGraphs(model, caches, block_size=4, max_tokens=64, max_seqs=4, max_context_len=spec.max_seq_len, backend="triton", capture=cap)
        gen = torch.Generator().manual_seed(5)
        for steps in ([(5, 0)], [(16, 0)], [(7, 0), (3, 4), (20, 9)], [(1, 30)] * 4, [(40, 0), (24, 100)]):
            ids, pos, meta = synthetic_step(steps, [], block_size=4, num_blocks=64, vocab_size=spec.vocab_size, device="cuda", backend="triton", generator=gen)
            before = _clone(caches)
            with torch.inference_mode():
                want = model(ids, pos, caches, meta).clone()
                for (k, v), (k0, v0) in zip(caches, before):
                    k.copy_(k0); v.copy_(v0)
                got = g.run(ids, pos, meta).clone()
                for (k, v), (k0, v0) in zip(caches, before):
                    k.copy_(k0); v.copy_(v0)
                again = model(ids, pos, caches, meta).clone()
            d = (got - want).abs().amax(-1)
            print(name, "capture" if cap else "eager-padded", steps, "max|got-want| per row:", [round(x, 4) for x in d.tolist()], "plain repeat diff", (again - want).abs().max().item(), flush=True)
