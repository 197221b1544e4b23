"""Validation: the simulator (calibrated profile) against the real engine on the identical trace.

``kvsim validate SCENARIO... --profile P --out DIR`` runs the engine (GPU) and the simulator for each scenario,
saves the engine's records under ``DIR/<name>/engine/`` and writes ``DIR/validation.csv`` / ``validation.md``
(predicted vs measured, relative error) and overlay plots, plus per scenario the differential views of
:mod:`kvsim.validate_diff`: ``step_kinds.{csv,md}`` (step duration by kind: decode-only, prefill-only, mixed, swap,
copy) and ``timeline.{csv,png}`` (batch, tokens, KV blocks, preemptions over time), linked from ``validation.md``;
for the whole set, decode steps by batch and context (:mod:`kvsim.validate_context`, ``decode-context.csv`` and a
section of ``validation.md``) and the engine's own decode steps priced one by one at their rows and contexts
(:mod:`kvsim.validate_reprice`, ``decode-repriced.csv`` and a section), and each per-request metric's error beside
the interval its requests' own spread gives it (:mod:`kvsim.validate_spread`, ``request-spread.{csv,md}``). With
``--replay`` it re-runs only the simulator against saved engine records (no GPU), which is how CI checks that
committed error figures are reproduced.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kvsim import validate_spread as SP
from kvsim.validate_diff import rel_err
from kvsim.validate_records import METRICS, check_summary, in_block_units, read_engine_records  # noqa: F401
from kvsim.validate_repeats import engine_dirs, in_range, measured_stats, repeat_dir, repeats_markdown
from kvsim.validate_settings import (_profile_doc, card_sets, check_graph_mode, pick_profile, profile_sets,
                                    replay_sets)


def compare(name: str, sim: dict, engs: list[dict]) -> list[dict]:
    """One row per metric: the prediction against the engine runs' median (one run's value) and their range
    (:mod:`kvsim.validate_repeats`)."""
    rows = []
    for k, _ in METRICS:
        measured, lo, hi, n = measured_stats(engs, k)
        rows.append({"scenario": name, "metric": k, "predicted": sim.get(k), "measured": measured,
                     "rel_error": rel_err(sim.get(k), measured), "repeats": n, "measured_min": lo,
                     "measured_max": hi, "in_range": in_range(sim.get(k), lo, hi)})
    return rows


def error_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def headline(df: pd.DataFrame) -> dict:
    """Median absolute relative error per metric, and the worst scenario for each."""
    out = {}
    for metric, g in df.groupby("metric", sort=False):
        a = g.rel_error.abs().replace(np.inf, np.nan).dropna()
        if len(a):
            worst = g.loc[a.idxmax()]
            out[metric] = {"median_abs_rel_error": float(a.median()), "worst": worst.scenario,
                           "worst_rel_error": float(worst.rel_error)}
    return out


def markdown(df: pd.DataFrame, head: dict, card: str) -> str:
    lines = [f"# Validation: simulator (calibrated) vs real engine on {card}", "",
             "| metric | median abs. rel. error | worst scenario (error) |", "|---|---|---|"]
    for k, label in METRICS:
        if k in head:
            h = head[k]
            lines.append(f"| {label} | {h['median_abs_rel_error']:.1%} | {h['worst']} ({h['worst_rel_error']:+.1%}) |")
    lines += ["", "## Per scenario", "", "| scenario | metric | predicted | measured | error |", "|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r.scenario} | {r.metric} | {_fmt(r.predicted)} | {_fmt(r.measured)} | {r.rel_error:+.1%} |")
    return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "n/a"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def plot_overlay(name: str, sim, eng_reqs: pd.DataFrame, eng_its: pd.DataFrame, path: Path) -> None:
    from kvsim.plots import log_scale, plt, save_palette_png
    fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    for label, reqs in (("simulator", sim.requests), ("engine", eng_reqs)):
        done = reqs[reqs.status == "finished"]
        x = np.sort(((done.finish_s - done.arrival_s) / done.output_len).to_numpy())
        ax[0].plot(x, np.arange(1, len(x) + 1) / max(len(x), 1), label=label)
    log_scale(ax[0])
    ax[0].set(xlabel="normalized latency (s/token)", ylabel="finished requests (fraction)",
              title="Normalized latency CDF")
    for label, its in (("simulator", sim.iterations), ("engine", eng_its)):
        ax[1].plot(its.start_s, its.running, lw=0.7, label=label)
        ax[2].plot(its.start_s, its.blocks_in_use, lw=0.7, label=label)
    ax[1].set(xlabel="time (s)", ylabel="running requests (count)", title="Running requests over time")
    ax[2].set(xlabel="time (s)", ylabel="KV in use (blocks or token slots)", title="KV in use over time")
    for a in ax:
        a.legend(fontsize=7)
    fig.suptitle(name)
    fig.tight_layout()
    save_palette_png(fig, path, dpi=100)
    plt.close(fig)


def kvsim_name(scenario_path: str, overrides: list[str] | None = None) -> str:
    """The scenario's name (its output folder)."""
    import kvsim
    return kvsim.load_scenario(scenario_path, overrides).name


def calibrated_scenario(scenario_path: str, profile: str, overrides: list[str] | None = None):
    """The scenario priced by ``profile``: its card's settings, ``overrides``, the calibrated cost model."""
    import kvsim
    return kvsim.load_scenario(scenario_path, card_sets(profile) + list(overrides or [])
                               + ["cost.model=calibrated", f"cost.profile={profile}"])


def simulate_with_profile(scenario_path: str, profile: str, overrides: list[str] | None = None):
    import kvsim
    sc = calibrated_scenario(scenario_path, profile, overrides)
    return sc, kvsim.simulate(sc)


def _release_device() -> None:
    """Between engine repeats: the last run's KV cache and graphs go before the next run allocates its own."""
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_validation(scenarios: list[str], profiles: list[str], out: Path, *, replay: bool = False,
                   overrides: list[str] | None = None, repeats: int = 1, sensitivity: bool = False) -> pd.DataFrame:
    """``repeats``: engine runs per scenario (live only; ``replay`` reads every repeat saved). ``sensitivity``:
    also simulate each scenario with its step times scaled and write ``sensitivity{-replay}.{csv,md}``
    (:mod:`kvsim.validate_sensitivity`)."""
    from kvsim.validate_diff import links_markdown, write_diff
    from kvsim.validate_context import markdown as context_markdown, scenario_cells, set_table
    from kvsim import validate_reprice as RP
    from kvsim.errors import KvsimError
    from kvsim.outdir import atomic_write, safe_name, write_csv, write_json, write_text
    from kvsim.card_speed import host_note, speed_markdown, speed_row, wake_note
    rows = []
    names = []
    speeds: list[dict] = []
    metas: dict[str, dict | None] = {}
    servings: dict[str, dict] = {}
    wakes: dict[str, float | None] = {}     # each profile's wake_overhead.latency_s (None: not measured)
    sens: list[dict] = []
    contexts: list[pd.DataFrame] = []       # decode steps by batch and context, per scenario (kvsim.validate_context)
    repriced: list[pd.DataFrame] = []       # the engine's decode steps priced one by one (kvsim.validate_reprice)
    exact: list[pd.DataFrame] = []          # ... and by exact rows at short contexts
    spread_rows: list[dict] = []            # per-request metrics' errors against their requests' spread
    card = "?"
    for path in scenarios:
        profile = pick_profile(path, profiles, overrides)
        d = out / safe_name(kvsim_name(path, overrides))
        edir = d / "engine"
        if replay:
            eng_doc, eng_reqs, eng_its = read_engine_records(edir)
            sim_sets = list(overrides or []) + replay_sets(eng_doc)
            sc, sim = simulate_with_profile(path, profile, sim_sets)
        else:
            pmeta = _profile_doc(profile).get("meta")
            from kvsim.graph_sizes import PREFILL_LADDERS
            if isinstance(pmeta, dict) and pmeta.get("prefill_ladder", "v1") not in PREFILL_LADDERS:
                raise KvsimError("--profile", f"{profile}: meta.prefill_ladder {pmeta.get('prefill_ladder')!r} is not "
                                              f"one of {', '.join(PREFILL_LADDERS)}")
            live = profile_sets(pmeta) + list(overrides or [])
            if not (isinstance(pmeta, dict) and "prefill_ladder" in pmeta):
                import sys
                print(f"note: {profile} predates runtime.cuda_graph_prefill_ladder and runtime.mixed_decode_kernel; "
                      f"the engine runs as it was measured ({', '.join(live[:2])}); recalibrate to validate the "
                      f"current defaults", file=sys.stderr)
            sim_sets = live
            sc, sim = simulate_with_profile(path, profile, sim_sets)
            from kvsim.engine.engine import RealEngine
            from kvsim.output import write_engine_run
            import kvsim
            esc = kvsim.load_scenario(path, live)
            check_graph_mode(profile, esc.runtime.cuda_graphs)
            from kvsim.engine.preflight import check_engine_fits
            check_engine_fits(esc)
            import shutil
            for old in engine_dirs(d)[1:]:       # an earlier run's repeats are not this run's
                shutil.rmtree(old)
            model = None
            for r in range(1, repeats + 1):      # each repeat a fresh engine (KV cache, graphs) on one loaded model
                eng = RealEngine(esc, model=model)
                eres = eng.run()
                model = eng.model
                write_engine_run(eres, repeat_dir(d, r))
                del eng, eres
                _release_device()
            del model
            eng_doc, eng_reqs, eng_its = read_engine_records(edir)
        summaries = [eng_doc["summary"]] + [read_engine_records(e)[0]["summary"] for e in engine_dirs(d)[1:]]
        engine_info = eng_doc.get("engine")
        card = engine_info.get("device", card) if isinstance(engine_info, dict) else card
        if profile not in metas:             # one read per profile, not per scenario
            doc = _profile_doc(profile)
            metas[profile] = doc.get("meta")
            servings[profile] = doc.get("decode_serving") if isinstance(doc.get("decode_serving"), dict) else {}
            wake = doc.get("wake_overhead")
            wakes[profile] = wake.get("latency_s") if isinstance(wake, dict) else None
        speeds.append(speed_row(sc.name, engine_info, metas[profile], sc.engine.block_size, eng_its,
                                servings[profile].get(str(sc.engine.block_size))))
        if speeds[-1]["same_card"] is False:
            print(f"note: {sc.name}: the engine ran on another card than the profile's (a different GPU UUID); "
                  "lent cards of one model differ by several percent, which the errors below include")
        if speeds[-1]["compiled"]:
            print(f"note: {sc.name}: the engine compiled {speeds[-1]['compiled']} Triton kernel(s) while serving; "
                  "those steps' times include compiling (its step_sizes.md lists the slow steps)")
        for note in (host_note(sc.name, speeds[-1]["host_ratio"]), wake_note(sc.name, eng_reqs, wakes[profile])):
            if note:
                print(note)
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KvsimError("--out", f"cannot create {d}: {e.strerror or e}") from None
        try:
            atomic_write(d / "overlay.png", lambda t: plot_overlay(sc.name, sim, eng_reqs, eng_its, t))
        except ImportError:
            pass                     # no matplotlib (GPU image): re-plot later with --replay
        priced = None
        if sc.workload.beam_width == 1:     # (a beam step's contexts are its beams', which the records do not hold)
            priced = RP.priced_steps(sim.setup.cost, eng_its, eng_reqs)     # (the simulation's own cost model)
            repriced.append(RP.scenario_cells(sc.name, priced))
            exact.append(RP.scenario_rows(sc.name, priced))
        write_diff(sc.name, sim.iterations, eng_its, d, note=None if priced is None else RP.scenario_line(priced))
        contexts.append(scenario_cells(sc.name, sim.iterations, eng_its))
        names.append(safe_name(sc.name))
        rows += compare(sc.name, sim.summary, summaries)
        spread_rows += SP.scenario_rows(sc.name, sim.requests, eng_reqs)
        if sensitivity:
            from kvsim.validate_sensitivity import scenario_rows
            sens += scenario_rows(sc.name, path, profile, sim_sets, sim.summary, rows[-len(METRICS):])
    df = error_table(rows)
    head = headline(df)
    tag = "-replay" if replay else ""
    write_csv(out / f"validation{tag}.csv", df)
    by_context = set_table(contexts)
    write_csv(out / f"decode-context{tag}.csv", by_context)
    by_step = RP.set_table(repriced)
    write_csv(out / f"decode-repriced{tag}.csv", pd.concat(repriced, ignore_index=True) if repriced
              else pd.DataFrame(columns=list(RP.CELL_COLUMNS)))
    write_csv(out / f"decode-repriced-rows{tag}.csv", pd.concat(exact, ignore_index=True) if exact
              else pd.DataFrame(columns=list(RP.ROW_COLUMNS)))
    write_text(out / f"validation{tag}.md", markdown(df, head, card) + repeats_markdown(df) + speed_markdown(speeds)
               + context_markdown(by_context) + RP.markdown(by_step) + RP.rows_markdown(exact) + links_markdown(names))
    write_json(out / f"headline{tag}.json", head, indent=2)
    spread = pd.DataFrame(spread_rows, columns=list(SP.COLUMNS))
    write_csv(out / f"request-spread{tag}.csv", spread)
    write_text(out / f"request-spread{tag}.md", SP.markdown(spread))
    df.attrs["request_spread"] = spread     # (kvsim validate's console line)
    if sensitivity:
        from kvsim.validate_sensitivity import markdown as sens_markdown
        table = pd.DataFrame(sens)
        write_csv(out / f"sensitivity{tag}.csv", table)
        write_text(out / f"sensitivity{tag}.md", sens_markdown(table))
    return df
