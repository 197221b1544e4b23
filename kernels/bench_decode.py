"""Decode-attention benchmark: one GPU run that checks, times and plots everything.

    PYTHONUNBUFFERED=1 python kernels/bench_decode.py --out "$OUT"

Sections, in order (each appends rows to ``decode_bench.csv`` as it finishes, so a run cut short
still leaves data): (1) ``pytest -m gpu`` on the kernel tests (log in ``pytest_gpu.log``);
(2) device-to-device copy bandwidth, the ceiling; (3) the pipe 0/1/3 x stages experiment of
tune_decode.py (or, with ``--tune``, the full pipe x launch x split sweep whose winners are then
used); (4) the grid batch x ctx at block size 16: paged (auto split, twice, and forced single
pass), contiguous baseline (twice), PyTorch SDPA on padded contiguous KV; (5) block-size sweep 1..256 (the kernel-level Fig. 18b); (6) FlexAttention
paged decode (``torch.compile``d; errors recorded), stopped at the time budget. ``meta.json``
records card, versions, date and command; ``plot_decode.py`` draws the PNGs; a summary table is
printed last (CUDA-graph kernel times). Shapes: Llama-like GQA (32 q / 8 kv heads) and OPT-13B-like MHA (40/40), head_dim
128, fp16. Bandwidth = bytes of K and V read / median time.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

import torch  # noqa: E402
import triton  # noqa: E402

import _bench_lib as L  # noqa: E402
from kvsim.kernels import DecodeConfig, contiguous_decode_attention, paged_decode_attention  # noqa: E402
from kvsim.kernels._attn_decode import choose_num_splits  # noqa: E402

FIELDS = ["section", "model", "hq", "hkv", "batch", "ctx", "block_size", "impl", "splits", "rep",
          "block_n", "num_warps", "num_stages", "ms", "graph_ms", "bytes", "gbps", "pct_copy", "pct_copy_graph",
          "error"]
BATCHES, CTXS = (1, 8, 32, 128), (512, 2048, 8192)


class Bench:
    def __init__(self, out_dir, budget_s):
        self.out, self.t0, self.budget = out_dir, time.time(), budget_s
        self.rows, self.copy_gbps, self.best, self.best_contig = [], float("nan"), {}, {}
        os.makedirs(out_dir, exist_ok=True)

    def left(self):
        return self.budget - (time.time() - self.t0)

    def add(self, **row):
        if row.get("ms") and row.get("bytes"):
            row["gbps"] = round(row["bytes"] / row["ms"] / 1e6, 1)
            row["pct_copy"] = round(100 * row["gbps"] / self.copy_gbps, 1)
        if row.get("graph_ms") and row.get("bytes"):
            row["pct_copy_graph"] = round(100 * row["bytes"] / row["graph_ms"] / 1e6 / self.copy_gbps, 1)
        self.rows.append(row)

    def flush(self):
        with open(os.path.join(self.out, "decode_bench.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows(self.rows)


def run_pytest(b):
    log = os.path.join(b.out, "pytest_gpu.log")
    try:
        import pytest  # noqa: F401
    except ImportError:
        text = L.fallback_checks()
        with open(log, "w") as f:
            f.write(text)
        summary = "pytest missing; fallback: " + text.splitlines()[-1]
        print(f"[checks] {summary}", flush=True)
        return summary
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           "tests/test_kernels.py", "tests/test_kernels_cache.py"]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
        text = r.stdout + r.stderr
        summary = [ln for ln in text.splitlines() if ln.strip()][-1] if text.strip() else f"rc={r.returncode}"
    except Exception as e:  # noqa: BLE001 - record, never die here
        text, summary = repr(e), f"pytest failed to run: {e!r}"[:200]
    with open(log, "w") as f:
        f.write(text)
    fails = [ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    print(f"[pytest -m gpu] {summary}", *fails[:8], sep="\n  ", flush=True)
    return summary


def paged_fn(shape, bs, cfg, splits):
    kc, vc = shape.paged_cache(bs)
    tables = shape.tables(bs)

    def run():
        r = shape.next()
        return paged_decode_attention(shape.q[r], kc, vc, tables[r], shape.lens, out=shape.out[r],
                                      max_context_len=shape.ctx, num_splits=splits, config=cfg)
    return run


def contig_fn(shape, cfg, splits):
    slabs = [shape.slab(r) for r in range(shape.rot)]

    def run():
        r = shape.next()
        return contiguous_decode_attention(shape.q[r], *slabs[r], shape.lens, out=shape.out[r],
                                           max_context_len=shape.ctx, num_splits=splits, config=cfg)
    return run


def measure(b, fn, graph=True, **row):
    try:
        row["ms"] = round(L.time_ms(fn), 5)
        if graph:
            row["graph_ms"] = round(L.graph_ms(fn), 5)
    except Exception as e:  # noqa: BLE001
        row["error"] = (row.get("error", "") + " " + repr(e)[:300]).strip()
    b.add(**row)
    return row.get("ms")


def auto_splits(shape, cfg):
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    return choose_num_splits(shape.batch, shape.hkv, shape.ctx, sms, cfg.block_n, cfg.split_waves)


def config_sweep(b):
    import tune_decode

    if b.tune:
        tune_decode.tune(b, paged_fn, contig_fn, auto_splits)
    else:
        tune_decode.pipe_experiment(b, paged_fn, contig_fn, auto_splits)


def grid(b):
    for model, (hq, hkv) in L.MODELS.items():
        cfg = b.best.get(model, DecodeConfig())
        ccfg = b.best_contig.get(model, cfg)
        for batch in BATCHES:
            for ctx in CTXS:
                sh = L.Shape(batch, ctx, hq, hkv)
                base = dict(section="grid", model=model, hq=hq, hkv=hkv, batch=batch, ctx=ctx, bytes=sh.kv_bytes)
                common = dict(base, block_n=cfg.block_n, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                              error=f"pipe={cfg.pipe} split_waves={cfg.split_waves}")
                ccommon = dict(base, block_n=ccfg.block_n, num_warps=ccfg.num_warps, num_stages=ccfg.num_stages,
                               error=f"pipe={ccfg.pipe} split_waves={ccfg.split_waves}")
                ns, cns = auto_splits(sh, cfg), auto_splits(sh, ccfg)
                for rep in (0, 1):  # interleaved repeats: the spread says what is noise
                    measure(b, paged_fn(sh, 16, cfg, None), impl="paged", block_size=16, splits=ns, rep=rep, **common)
                    measure(b, contig_fn(sh, ccfg, None), impl="contiguous", splits=cns, rep=rep, **ccommon)
                if ns > 1:
                    measure(b, paged_fn(sh, 16, cfg, 1), impl="paged_nosplit", block_size=16, splits=1, **common)
                if cns > 1:
                    measure(b, contig_fn(sh, ccfg, 1), impl="contiguous_nosplit", splits=1, **ccommon)
                elif ctx >= 2048:  # heuristic check: would splitting help even with many programs?
                    measure(b, paged_fn(sh, 16, cfg, 2), impl="paged_split2", block_size=16, splits=2, **common)
                measure(b, L.sdpa_fn(sh), impl="sdpa", **base)
                sh.free()
        b.flush()
        print(f"[grid] {model} done at {time.time() - b.t0:.0f}s", flush=True)


def block_sweep(b):
    for model, (hq, hkv) in L.MODELS.items():
        cfg = b.best.get(model, DecodeConfig())
        sh = L.Shape(32, 8192, hq, hkv)
        common = dict(section="blocksize", model=model, hq=hq, hkv=hkv, batch=32, ctx=8192, bytes=sh.kv_bytes,
                      block_n=cfg.block_n, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        for bs in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            measure(b, paged_fn(sh, bs, cfg, None), impl="paged", block_size=bs, splits=auto_splits(sh, cfg), **common)
        ccfg = b.best_contig.get(model, cfg)
        measure(b, contig_fn(sh, ccfg, None), impl="contiguous", splits=auto_splits(sh, ccfg), **common)
        sh.free()
    b.flush()


def flex(b):
    shapes = [(m, bt, c) for bt, c in ((32, 2048), (128, 2048), (32, 8192), (8, 2048), (1, 8192),
                                       (128, 8192), (8, 8192), (1, 2048), (32, 512), (128, 512))
              for m in L.MODELS]
    for model, batch, ctx in shapes:
        page = 16
        hq, hkv = L.MODELS[model]
        if b.left() < 25:
            b.add(section="grid", model=model, hq=hq, hkv=hkv, batch=batch, ctx=ctx, impl="flex_paged",
                  block_size=page, error="skipped: time budget")
            continue
        for attempt in (0, 1):
            row = dict(section="grid", model=model, hq=hq, hkv=hkv, batch=batch, ctx=ctx,
                       impl="flex_paged", block_size=page)
            try:
                run, check, nbytes = L.flex_paged_setup(batch, ctx, hq, hkv, page)
                row["bytes"] = nbytes
                t = time.time()
                run()
                torch.cuda.synchronize()
                err = check() if batch <= 8 else None
                row["error"] = f"compile {time.time() - t:.1f}s" + (f"; rel_err {err:.1e}" if err is not None else "")
                row["ms"] = round(L.time_ms(run), 5)
                try:
                    row["graph_ms"] = round(L.graph_ms(run), 5)
                except Exception as e:  # noqa: BLE001
                    row["error"] += f"; graph: {e!r}"[:120]
                break
            except Exception as e:  # noqa: BLE001
                row["error"] = repr(e)[-300:]
                if attempt:
                    break
                b.add(**row)
                page = 128  # this shape failed with 16-token pages: retry it with flex's native 128
            finally:
                run = check = None
                torch.cuda.empty_cache()
        b.add(**row)
        b.flush()
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting FlexAttention shapes after this")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--tune", action="store_true", help="run the full pipe/launch/split sweep (run 2)")
    args = ap.parse_args()
    b = Bench(args.out, args.budget_s)
    b.tune = args.tune
    if not args.tune:
        b.best = {m: DecodeConfig() for m in L.MODELS}
        b.best_contig = dict(b.best)
    meta = dict(card=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                sms=torch.cuda.get_device_properties(0).multi_processor_count,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
                dtype="float16", head_dim=L.HEAD_DIM, models=L.MODELS)
    print(meta, flush=True)
    pytest_summary = "skipped" if args.skip_tests else run_pytest(b)
    b.copy_gbps, copy_ms = L.copy_bandwidth_gbps()
    b.add(section="copy", impl="d2d_copy", bytes=4 * 2 ** 30, ms=round(copy_ms, 5))
    print(f"[copy] {b.copy_gbps:.0f} GB/s", flush=True)
    for step in (config_sweep, grid, block_sweep, flex):
        try:
            step(b)
        except Exception as e:  # noqa: BLE001 - keep what we have, report the failure
            print(f"[{step.__name__}] FAILED: {e!r}", flush=True)
            b.add(section=step.__name__, error=repr(e)[:300])
        torch.cuda.empty_cache()
    b.flush()
    meta.update(pytest=pytest_summary, copy_gbps=round(b.copy_gbps, 1), wall_s=round(time.time() - b.t0, 1),
                best_configs={m: vars(c) for m, c in b.best.items()},
                best_contig_configs={m: vars(c) for m, c in b.best_contig.items()})
    with open(os.path.join(b.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    try:
        import plot_decode

        plot_decode.plot(os.path.join(b.out, "decode_bench.csv"), b.out)
    except Exception as e:  # noqa: BLE001 - plots can be redrawn from the CSV off the GPU
        print(f"[plot] skipped: {e!r}")
    import plot_decode

    plot_decode.summary(b, pytest_summary, L.MODELS, BATCHES, CTXS, torch.cuda.get_device_name(0))


if __name__ == "__main__":
    main()
