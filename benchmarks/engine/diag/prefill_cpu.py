"""Why do eager prefill steps take 15 ms in one run and 30 ms in another? (diagnostic, one device call)

Runs the v01 validation scenario (OPT-13B) for 20 s with the model's forward wrapped: for every
prefill step it records the CPU time to *launch* the forward (no sync) and the time to finish it;
prefill steps 6-8 run under torch.profiler and their top CPU ops are printed. Then the same for a
burst of single 128-token prompts.
"""
import json
import time

import torch

import kvsim
from kvsim.catalogue import get_model
from kvsim.engine.engine import RealEngine
from kvsim.engine.models import build_model

REC = []


def wrap(model):
    fwd = model.forward
    state = {"n": 0}

    def timed(ids, pos, kv, meta):
        if meta.num_prefill_tokens == 0:
            return fwd(ids, pos, kv, meta)
        state["n"] += 1
        prof = 6 <= state["n"] <= 8
        torch.cuda.synchronize()
        a = time.perf_counter()
        if prof:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
                out = fwd(ids, pos, kv, meta)
        else:
            out = fwd(ids, pos, kv, meta)
        b = time.perf_counter()
        torch.cuda.synchronize()
        c = time.perf_counter()
        REC.append({"tokens": meta.num_prefill_tokens, "launch_ms": (b - a) * 1e3, "total_ms": (c - a) * 1e3,
                    "profiled": prof})
        if prof:
            print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14), flush=True)
        return out
    model.forward = timed


def summary(tag):
    import statistics as st
    r = [x for x in REC if not x["profiled"]]
    print(json.dumps({"tag": tag, "n": len(r), "launch_ms_med": st.median(x["launch_ms"] for x in r),
                      "total_ms_med": st.median(x["total_ms"] for x in r),
                      "tokens_med": st.median(x["tokens"] for x in r),
                      "first": [round(x["launch_ms"], 1) for x in r[:12]]}), flush=True)
    REC.clear()


def main():
    model = build_model(get_model("opt-13b"), dtype=torch.float16, device=torch.device("cuda"), weights="dummy")
    wrap(model)
    sc = kvsim.load_scenario("scenarios/validation/v01_opt13b_sharegpt_paged_low.yaml",
                             ["runtime.max_wall_s=20", "max_time_s=20"])
    RealEngine(sc, model=model).run()
    summary("v01")
    sc = kvsim.load_scenario({
        "name": "burst", "model": "opt-13b", "gpu": "h100-80gb",
        "engine": {"block_size": 16, "max_num_seqs": 256, "max_num_batched_tokens": 128, "swap_space_gib": 0},
        "workload": {"dataset": "fixed", "prompt_len": 128, "output_len": 2, "arrival": "burst", "num_requests": 30},
        "runtime": {"device": "cuda"}, "seed": 0})
    RealEngine(sc, model=model).run()
    summary("burst 128")


if __name__ == "__main__":
    main()
