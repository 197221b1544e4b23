"""Engine decode steps replayed in the calibration grid's harness: is a mispriced step's cost in its shape or in the
serving path?

Why. Priced one by one, OPT-13B's engine decode steps on two H100s follow the graph sizes: 9-12 rows +1.0% to +3.3%
(the 16-row graph), 15-24 rows -0.9% to -2.9% (``validation/H100-async-opt-1207d``, its README; the 1207c set of the
same day the same). Two things can be wrong: the cost model's reading of a step's shape (the grid at the graph's
batch and the rows' mean context over it, the unequal-context term, the serving fit's extra per row), or what the
engine's serving path adds to the same GPU work (host work not hidden, sampling, allocator state after a long run).
This takes a set's committed engine records, picks decode-only steps at the rows asked (prepared ahead, their rows'
contexts rebuilt from the requests, :func:`kvsim.calibrate.serving_runs.decode_step_rows`, checked against the
step's own rows and KV), and times each one's exact contexts the grid's way (:class:`odd_rows.StepHarness`: the
graph of its padded batch, the padded LM head, greedy draws), with the card's reference step in the same harness.
``--runs`` adds the steps of the calibration's kept serving runs (``kvsim calibrate --serving-runs``), each at its
own row count: there the profile's price is right on the mean by construction, at ~500-600 tokens a row, so the two
sources side by side say whether the serving path's share moves with the context. Then, on any machine,
``--analyse`` prices the same steps by a profile and prints, by source and rows: the engine's mean, the replay's
(scaled by the engine run's reference step over the replay's, when they ran on different cards), and the price;
engine - replay is the serving path's, price - replay the shape model's.

Prediction (written before any run): the replay sits within 1% of the price at every row count (the grid's model of
the shape holds, as ``odd_rows.py`` found at uniform contexts), and the engine sits above the replay by 0.1-0.3 ms
at 15-24 rows and near it at 9-12: the pattern is the serving path's, and the extras fitted at ~550 tokens a row do
not carry it to ~350.

Two replays of the same steps (``--no-split-waves 4`` and ``8``, say) compare with ``--pair A.json B.json``.

usage (GPU): python benchmarks/engine/step_replay.py --set validation/H100-async-opt-1207d --model opt-13b
                 [--runs benchmarks/engine/results_H100/async_1207d/serving_runs/opt-13b-b16]
                 [--scenarios v03,v05,v06] [--rows 8-24] [--per-row 6] --out DIR [--profile P.json]
         (CPU): python benchmarks/engine/step_replay.py --analyse DIR/step_replay.json --profile P.json
CPU check of the plumbing (tiny model, contexts clipped to it, wall clock): ... --model tiny-opt --cpu
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extra_scaling_check import cost_of, scenario_yaml  # noqa: E402
from lm_head_rows import parse_rows, pick_device  # noqa: E402

from kvsim.calibrate.serving_runs import ONE_OFF, decode_step_rows, host_ahead  # noqa: E402
from kvsim.validate_records import read_engine_records  # noqa: E402


def pick_steps(run_dir: Path, rows: list[int], per_row: int) -> tuple[list[dict], float | None]:
    """Up to ``per_row`` decode-only steps at each of ``rows`` from one engine run (:func:`pick_from`), and the
    run's reference step in ms."""
    summary, reqs, its = read_engine_records(run_dir)
    ref = ((summary.get("engine") or {}).get("reference_step") or {}).get("time_s")
    return pick_from(its, reqs, rows, per_row), None if ref is None else ref * 1e3


def pick_from(its, reqs, rows: list[int], per_row: int) -> list[dict]:
    """Up to ``per_row`` decode-only steps at each of ``rows`` of one run's records (evenly spaced through the run;
    prepared ahead where the run overlapped, contexts that match the step's rows and KV, none over ``ONE_OFF`` times
    its rows' median): ``{"iteration", "n", "contexts", "engine_ms"}`` each."""
    ahead = host_ahead(its)
    kv = its.mem_used.to_numpy(float) if "mem_used" in its.columns else None
    by_n: dict[int, list] = {n: [] for n in rows}
    for i, ctx in decode_step_rows(its, reqs):
        n = len(ctx)
        if n not in by_n or int(its.decode_seqs.iloc[i]) != n or (ahead is not None and not ahead[i]):
            continue
        if kv is not None and abs(float(ctx.sum()) - kv[i]) >= 0.5:
            continue
        by_n[n].append((i, [int(c) for c in ctx]))
    out = []
    dur = its.duration_s.to_numpy(float)
    for n, steps in by_n.items():
        if not steps:
            continue
        med = float(np.median([dur[i] for i, _ in steps]))
        steps = [s for s in steps if dur[s[0]] <= ONE_OFF * med]
        for k in np.linspace(0, len(steps) - 1, min(per_row, len(steps))).round().astype(int):
            i, ctx = steps[k]
            out.append({"iteration": int(its.index[i]), "n": n, "contexts": ctx, "engine_ms": dur[i] * 1e3})
    return out


def pick_serving(runs_dir: Path, rows: list[int], per_row: int) -> list[dict]:
    """Up to ``per_row`` steps of each of the calibration's kept serving runs (``kvsim calibrate --serving-runs``:
    ``n<N>/``, both passes) at its own row count, where that is one of ``rows``; named ``serving-n<N>``."""
    from kvsim.calibrate.serving_runs import load_runs
    out = []
    for n, (its, reqs) in sorted(load_runs(runs_dir).items()):
        if n in rows:
            out += [dict(s, scenario=f"serving-n{n}", run_reference_ms=None)
                    for s in pick_from(its, reqs, [n], per_row)]
    return out


def replay(set_dir: Path | None, model: str, scenarios: list[str] | None, rows: list[int], per_row: int, device,
           clip: int | None = None, runs_dir: Path | None = None, split_ref_len: int | None = None) -> dict:
    """Every picked step of the set's scenarios (first runs) and of the calibration's serving runs, timed in the
    harness (module doc)."""
    from odd_rows import StepHarness
    picked = []
    for d in sorted(p for p in set_dir.iterdir() if (p / "engine").is_dir()) if set_dir else []:
        if scenarios and d.name[:3] not in scenarios and d.name not in scenarios:
            continue
        steps, ref = pick_steps(d / "engine", rows, per_row)
        picked += [dict(s, scenario=d.name, run_reference_ms=ref) for s in steps]
    if runs_dir:
        picked += pick_serving(runs_dir, rows, per_row)
    if not picked:
        raise SystemExit("error: --rows: no decode step at those rows could be replayed")
    if clip:            # (a plumbing check on a tiny model: the contexts it replays cut to what it holds)
        for s in picked:
            s["replayed"] = [min(c, clip) for c in s["contexts"]]
    h = StepHarness(model, max(s["n"] for s in picked), max(max(s.get("replayed", s["contexts"])) for s in picked),
                    device, split_ref_len=split_ref_len)
    for s in picked:
        s["replay_ms"] = round(h.time_step(s.get("replayed", s["contexts"])), 4)
    ref = h.reference_ms()
    return {"model": model, "set": _shown(set_dir), "runs": _shown(runs_dir), "replay_reference_ms": ref,
            "split_ref_len": split_ref_len, "steps": picked}


def _shown(path: Path | None) -> str | None:
    return None if path is None else str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def analyse(doc: dict, profile: str, block_size: int = 16) -> list[dict]:
    """Per source (the set's engine runs, the calibration's serving runs) and row count: steps, the engine's mean,
    the replay's (scaled to the engine runs' card by the reference steps where both are known: a set's run records
    its own, the serving runs take the median of the profile's ``decode_serving[bs].reference_step_s``), the
    profile's price, and the two differences (module doc), ms."""
    from kvsim.calibrate import serving_fit as SF
    from kvsim.graph_sizes import engine_graph_sizes
    from kvsim.textio import read_json
    prof = read_json(profile, "--profile")
    refs = (prof.get("decode_serving") or {}).get(str(block_size), {}).get("reference_step_s") or []
    serving_ref = float(np.median(refs)) * 1e3 if refs else None
    costs, rows = {}, {}
    ref = doc.get("replay_reference_ms")
    for s in doc["steps"]:
        name, serving = s["scenario"], s["scenario"].startswith("serving-n")
        if name not in costs:
            if serving:          # the serving run's own scenario, priced by the whole profile
                sc = SF.serving_scenario(prof, block_size, s["n"], device="cpu")
                costs[name] = SF.stripped_cost(prof, block_size, engine_graph_sizes(sc), drop=(), bare=False)
            else:
                costs[name] = cost_of(scenario_yaml(name), profile)
        ctx = np.asarray(s["contexts"], float)
        cost = costs[name]
        price = float(cost.decode_step_times(s["n"], np.array([ctx.sum()]), np.array([ctx.max()]))[0]) * 1e3
        # the price's step overhead (+ the serving fit's extra): the rest is the grid and the spread term
        over = (float(cost._serving_terms(float(s["n"]))[0]) * 1e3 if getattr(cost, "_serving", None) is not None
                else float("nan"))
        run_ref = serving_ref if serving else s.get("run_reference_ms")
        scale = run_ref / ref if ref and run_ref else 1.0
        rows.setdefault(("serving runs" if serving else "set", s["n"]), []).append(
            (s["engine_ms"], s["replay_ms"] * scale, price, float(ctx.mean()), over, float(np.std(ctx))))
    out = []
    for (src, n), v in sorted(rows.items()):
        e, r, p, c, o, sd = (float(np.mean(x)) for x in zip(*v))
        out.append({"source": src, "n": n, "steps": len(v), "ctx_per_row": c, "ctx_sd": sd, "engine_ms": e,
                    "replay_ms": r, "priced_ms": p, "serving_path_ms": e - r, "shape_model_ms": p - r,
                    "priced_overhead_ms": o, "engine_overhead_ms": e - (p - o)})
    return out


def markdown(rows: list[dict], doc: dict) -> str:
    ref = doc.get("replay_reference_ms")
    what = " and ".join(x for x in (doc.get("set"), doc.get("runs")) if x)
    head = (f"{doc['model']}, {len(doc['steps'])} steps of {what}; the replay scaled by each run's reference step "
            f"over its own ({ref:.3f} ms)" if ref else f"{doc['model']}, {len(doc['steps'])} steps of {what}; the "
            "replay unscaled (no reference step)")
    lines = [head, "", "| steps of | rows | steps | context a row (sd) | engine (ms) | replay (ms) | priced (ms) | "
             "engine - replay | priced - replay | overhead + extra priced | engine's |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['n']} | {r['steps']} | {r['ctx_per_row']:.0f} ({r['ctx_sd']:.0f}) | "
              f"{r['engine_ms']:.3f} | {r['replay_ms']:.3f} | {r['priced_ms']:.3f} | {r['serving_path_ms']:+.3f} | "
              f"{r['shape_model_ms']:+.3f} | {r['priced_overhead_ms']:.3f} | {r['engine_overhead_ms']:.3f} |"
              for r in rows]
    lines += ["", "(\"overhead + extra priced\": the step overhead and serving-fit extra in the price; \"engine's\": "
              "the engine's step less the price's grid and spread terms, what that overhead would have to be)"]
    return "\n".join(lines)


def pair(a: dict, b: dict) -> list[dict]:
    """Two replays of the same picked steps (e.g. ``--no-split-waves`` 4 and 8) side by side: per source and row
    count, the steps found in both, their mean replay in each, and the mean ratio b/a of each step, also divided by
    the ratio of the two replays' reference steps (the card's drift between them: the reference step is an 8-row
    graph both replays capture alike for a model whose 8-row graph splits under either setting)."""
    kb = {(s["scenario"], s["iteration"]): s for s in b["steps"]}
    drift = (b["replay_reference_ms"] / a["replay_reference_ms"]
             if a.get("replay_reference_ms") and b.get("replay_reference_ms") else 1.0)
    by: dict[tuple, list] = {}
    for s in a["steps"]:
        t = kb.get((s["scenario"], s["iteration"]))
        if t is not None:
            src = "serving runs" if s["scenario"].startswith("serving-n") else "set"
            by.setdefault((src, s["n"]), []).append((s["replay_ms"], t["replay_ms"], max(s["contexts"]),
                                                     float(np.mean(s["contexts"]))))
    out = []
    for (src, n), v in sorted(by.items()):
        x = np.asarray(v, float)
        ratio = float(np.mean(x[:, 1] / x[:, 0]))
        out.append({"source": src, "n": n, "steps": len(v), "ctx_per_row": float(x[:, 3].mean()),
                    "ctx_max": float(x[:, 2].max()), "a_ms": float(x[:, 0].mean()), "b_ms": float(x[:, 1].mean()),
                    "ratio": ratio, "ratio_over_drift": ratio / drift})
    return out


def pair_markdown(rows: list[dict], a: dict, b: dict) -> str:
    wa, wb = (f"{d.get('no_split_waves')}" + (f", split_ref_len {d['split_ref_len']}" if d.get("split_ref_len") else "")
              for d in (a, b))
    lines = [f"{a['model']}: replay A (NO_SPLIT_WAVES {wa}) against B ({wb}); reference steps "
             f"{a.get('replay_reference_ms') or float('nan'):.3f} and {b.get('replay_reference_ms') or float('nan'):.3f} ms",
             "", "| steps of | rows | steps | context a row | longest | A (ms) | B (ms) | B / A | B / A over the reference's |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['n']} | {r['steps']} | {r['ctx_per_row']:.0f} | {r['ctx_max']:.0f} | "
              f"{r['a_ms']:.3f} | {r['b_ms']:.3f} | {r['ratio']:.4f} | {r['ratio_over_drift']:.4f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", help="a validation set's folder (its engine records)")
    ap.add_argument("--runs", help="a calibration's kept serving runs (kvsim calibrate --serving-runs DIR)")
    ap.add_argument("--block-size", type=int, default=16, help="the block size the profile prices (--analyse)")
    ap.add_argument("--model", default="opt-13b")
    ap.add_argument("--scenarios", default="", help="comma-separated names or prefixes (v05, ...); default: all")
    ap.add_argument("--rows", default="8-24")
    ap.add_argument("--per-row", type=int, default=6)
    ap.add_argument("--out")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (plumbing check; the times mean nothing)")
    ap.add_argument("--no-split-waves", type=int, default=None,
                    help="kvsim.kernels.decode_splits.NO_SPLIT_WAVES for the replay's graphs (default: the kernel's): "
                         "does a graph batch the heuristic leaves unsplit run its few real rows faster split?")
    ap.add_argument("--split-ref-len", type=int, default=None,
                    help="the length the replay's decode graphs size split-KV partitions for (default: the model's "
                         "longest sequence, as the engine): with --no-split-waves 8 and a few hundred tokens, "
                         "OPT-13B's 16- and 24-row graphs cut rows of the set's lengths")
    ap.add_argument("--analyse", help="a step_replay.json to price (CPU)")
    ap.add_argument("--pair", nargs=2, metavar=("A", "B"), help="two step_replay.json of the same steps, compared (CPU)")
    ap.add_argument("--profile", help="the profile that prices the steps (--analyse, or after a replay)")
    a = ap.parse_args()
    if a.pair:
        docs = []
        for f in a.pair:
            try:
                docs.append(json.loads(Path(f).read_text()))
            except (OSError, ValueError) as e:
                raise SystemExit(f"error: --pair: {f}: {e}")
        print(pair_markdown(pair(*docs), *docs))
        return
    if a.analyse:
        if not a.profile:
            raise SystemExit("error: --profile: --analyse needs the profile that prices the steps")
        doc = json.loads(Path(a.analyse).read_text())
        print(markdown(analyse(doc, a.profile, a.block_size), doc))
        return
    if not (a.set or a.runs) or not a.out:
        raise SystemExit("error: --set (or --runs) and --out are needed (or --analyse FILE --profile P)")
    set_dir = Path(a.set).resolve() if a.set else None
    if set_dir is not None and not set_dir.is_dir():
        raise SystemExit(f"error: --set: {a.set} is not a folder")
    runs_dir = Path(a.runs).resolve() if a.runs else None
    if runs_dir is not None and not runs_dir.is_dir():
        raise SystemExit(f"error: --runs: {a.runs} is not a folder")
    if a.per_row < 1:
        raise SystemExit("error: --per-row: at least 1")
    rows = parse_rows(a.rows)
    if a.split_ref_len is not None and a.split_ref_len < 1:
        raise SystemExit("error: --split-ref-len: at least 1")
    if a.no_split_waves is not None:
        if a.no_split_waves < 1:
            raise SystemExit("error: --no-split-waves: at least 1")
        import kvsim.kernels.decode_splits as decode_splits
        decode_splits.NO_SPLIT_WAVES = a.no_split_waves
    import torch
    device = pick_device(a.cpu)
    clip = None
    if a.cpu:
        from kvsim.catalogue import get_model
        clip = get_model(a.model).max_seq_len // 2
    doc = replay(set_dir, a.model, [s for s in a.scenarios.split(",") if s], rows, a.per_row, device, clip, runs_dir,
                 a.split_ref_len)
    doc["card"] = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    from kvsim.kernels.decode_splits import NO_SPLIT_WAVES
    doc["no_split_waves"] = NO_SPLIT_WAVES
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "step_replay.json").write_text(json.dumps(doc, indent=1))
    print(f"{len(doc['steps'])} steps replayed on {doc['card']}: {Path(a.out) / 'step_replay.json'}")
    if a.profile:
        print(markdown(analyse(doc, a.profile, a.block_size), doc))


if __name__ == "__main__":
    main()
