"""Outside reference: the same requests through Hugging Face transformers' continuous-batching
paged engine (``ContinuousBatchingManager``, what ``generate_batch`` uses), offline (all at once).

Usage: python benchmarks/engine/hf_baseline.py --model opt-13b --requests 200 [--device cuda] [--json out.json]
Prompts and per-request output lengths come from the same kvsim workload (ShareGPT-like, seed 0) that
``e2e.py`` runs through kvsim's engine, so the ratio compares equal work.
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def hf_model(name: str, device: str, dtype):
    import transformers
    from kvsim.catalogue import get_model
    spec = get_model(name)
    if spec.arch == "opt":
        cfg = transformers.OPTConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                                     num_hidden_layers=spec.num_layers, ffn_dim=spec.ffn_hidden_size,
                                     num_attention_heads=spec.num_heads, max_position_embeddings=spec.max_seq_len,
                                     word_embed_proj_dim=spec.hidden_size)
    else:
        cfg = transformers.LlamaConfig(vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                                       intermediate_size=spec.ffn_hidden_size, num_hidden_layers=spec.num_layers,
                                       num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
                                       max_position_embeddings=spec.max_seq_len)
    cfg.eos_token_id = None
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.eval()
    if device == "cuda":     # random but finite weights, fast (no HF per-module init on the CPU)
        g = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02, generator=g) if p.dim() > 1 else p.fill_(1.0)
    return spec, model


def run(name: str, n: int, device: str, block_size: int = 256) -> dict:
    import kvsim
    from transformers.generation import ContinuousBatchingConfig, GenerationConfig
    from kvsim.build import setup_run
    from kvsim.core.tokens import synthetic_prompt_tokens
    dtype = torch.float16 if device == "cuda" else torch.float32
    spec, model = hf_model(name, device, dtype)
    sc = kvsim.load_scenario({"model": name, "gpu": "h100-80gb",
                              "workload": {"dataset": "sharegpt_like", "arrival": "burst", "num_requests": n}})
    specs = setup_run(sc).requests
    prompts = [synthetic_prompt_tokens(s, spec.vocab_size).tolist() for s in specs]
    gen = GenerationConfig(do_sample=False, max_new_tokens=max(s.output_len for s in specs), eos_token_id=None,
                           pad_token_id=0)
    cb = (ContinuousBatchingConfig(block_size=block_size, max_memory_percent=0.9) if device == "cuda"
          else ContinuousBatchingConfig(block_size=32, num_blocks=256, max_batch_tokens=512))
    out_tokens = 0
    with model.continuous_batching_context_manager(generation_config=gen, continuous_batching_config=cb,
                                                   block=True, timeout=5) as manager:
        t0 = time.perf_counter()
        ids = [manager.add_request(p, max_new_tokens=s.output_len) for p, s in zip(prompts, specs)]
        done = 0
        while done < len(ids):
            r = manager.get_result(timeout=1)
            if r is not None and r.is_finished():
                done += 1
                out_tokens += len(r.generated_tokens)
            elif r is None and not manager.is_running():
                raise RuntimeError("HF continuous batching stopped early")
        wall = time.perf_counter() - t0
    return {"engine": "transformers-continuous-batching", "model": spec.name, "requests": n,
            "wall_s": wall, "throughput_req_s": n / wall, "throughput_tok_s": out_tokens / wall,
            "generated_tokens": out_tokens, "expected_tokens": sum(s.output_len for s in specs),
            "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
            "transformers": __import__("transformers").__version__, "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    r = run(a.model, a.requests, a.device)
    print(json.dumps(r, indent=1))
    if a.json:
        open(a.json, "w").write(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
