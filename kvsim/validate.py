"""Validation: the simulator (calibrated profile) against the real engine on the identical trace.

``kvsim validate SCENARIO... --profile P --out DIR`` runs the engine (GPU) and
the simulator for each scenario, saves the engine's records under
``DIR/<name>/engine/`` and writes ``DIR/validation.csv`` / ``validation.md``
(predicted vs measured, relative error) and overlay plots, plus per scenario the
differential views of :mod:`kvsim.validate_diff`: ``step_kinds.{csv,md}`` (step
duration by kind: decode-only, prefill-only, mixed, swap, copy) and
``timeline.{csv,png}`` (batch, tokens, KV blocks, preemptions over time), linked
from ``validation.md``. With ``--replay`` it re-runs only the simulator against
saved engine records (no GPU), which is how CI checks that committed error figures are reproduced.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kvsim.validate_diff import rel_err
from kvsim.validate_records import METRICS, check_summary, in_block_units, read_engine_records  # noqa: F401
from kvsim.validate_repeats import engine_dirs, in_range, measured_stats, repeat_dir, repeats_markdown


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
    from kvsim.plots import log_scale, plt
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _profile_doc(path: str) -> dict:
    from kvsim.errors import KvsimError
    from kvsim.textio import read_json
    doc = read_json(path, "--profile", "profile JSON file (kvsim calibrate)")
    if not isinstance(doc, dict):
        raise KvsimError("--profile", f"{path}: expected a JSON object written by kvsim calibrate")
    return doc


def _checked_profile_doc(path: str) -> dict:
    """:func:`_profile_doc`, checked to be a well-formed profile (:class:`kvsim.cost.profile.Profile`); a one-line
    KvsimError naming --profile, the file and the key otherwise."""
    from kvsim.calibrate.merge import check_profile
    return check_profile(_profile_doc(path), path, "--profile")


def pick_profile(scenario_path: str, profiles: list[str], overrides: list[str] | None = None) -> str:
    """The profile measured for the scenario's model (profiles name their model), preferring one that
    holds the scenario's block size (several files of one model may hold different block sizes)."""
    import kvsim
    from kvsim.calibrate.merge import block_sizes
    from kvsim.catalogue import get_model
    from kvsim.errors import KvsimError
    sc = kvsim.load_scenario(scenario_path, overrides)
    want = get_model(sc.model).name
    docs = {p: _checked_profile_doc(p) for p in profiles}        # every one well-formed, not only the one used
    mine = [p for p in profiles if docs[p]["model"] == want]
    for p in mine:
        if sc.engine.block_size in block_sizes(docs[p]):
            return p
    if mine:
        return mine[0]        # the cost model then names the missing block size in one line
    raise KvsimError("--profile", f"no profile for {want} among {', '.join(profiles)}")


def check_graph_mode(profile: str, cuda_graphs: bool) -> None:
    """A profile timed its decode steps with CUDA graphs or eagerly; the engine must run the same way."""
    from kvsim.errors import KvsimError
    meta = _profile_doc(profile).get("meta", {})
    measured = bool(meta.get("cuda_graphs", False)) if isinstance(meta, dict) else False
    if measured != bool(cuda_graphs):
        how = "with" if measured else "without"
        raise KvsimError("runtime.cuda_graphs", f"{profile} was measured {how} CUDA graphs; run the engine the "
                                                f"same way (--set runtime.cuda_graphs={str(measured).lower()})")


def kvsim_name(scenario_path: str, overrides: list[str] | None = None) -> str:
    """The scenario's name (its output folder)."""
    import kvsim
    return kvsim.load_scenario(scenario_path, overrides).name


def replay_sets(eng_doc: dict) -> list[str]:
    """Settings that make the simulator price the saved engine run as it ran: the prefill/mixed graph ladder it
    captured (runs from before ``runtime.cuda_graph_prefill_ladder`` existed captured v1) and the sizes it skipped
    (``runtime.cuda_graph_prefill_skip``: routed past when its graphs were captured; none before routing). A user's explicit
    ``--set`` of the same field comes first and is overridden, so the replay stays faithful to the records."""
    from kvsim.graph_sizes import ladder_of
    info = eng_doc.get("engine") if isinstance(eng_doc.get("engine"), dict) else {}
    sizes = info.get("cuda_graph_prefill_tokens")
    if isinstance(sizes, list) and any(isinstance(t, bool) or not isinstance(t, int) for t in sizes):
        from kvsim.errors import KvsimError
        raise KvsimError("--replay", f"engine.cuda_graph_prefill_tokens of the engine records: expected whole "
                                     f"numbers, got {sizes[:4]!r}")
    name = ladder_of([int(t) for t in sizes]) if isinstance(sizes, list) and sizes else None
    skip = info.get("cuda_graph_prefill_skip") or []       # runs from before routing recorded none and skipped none
    if not isinstance(skip, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in skip):
        from kvsim.errors import KvsimError
        raise KvsimError("--replay", f"engine.cuda_graph_prefill_skip of the engine records: expected a list of "
                                     f"whole numbers, got {str(skip)[:40]}")
    route = ["runtime.cuda_graph_prefill_route=false",
             f"runtime.cuda_graph_prefill_skip=[{', '.join(str(int(t)) for t in skip)}]"]
    return ([f"runtime.cuda_graph_prefill_ladder={name}"] if name else []) + route


def profile_sets(meta: dict | None) -> list[str]:
    """Engine settings under which ``meta``'s profile was measured, for a live validation to run the engine it
    priced: the prefill/mixed graph ladder, how a mixed step's decode rows were attended and whether the host's
    next step overlapped the GPU's (``serve_loop.py``). Profiles from before these settings existed were measured
    on ladder v1 with the decode rows in the prefill kernel, stepped. Each is set explicitly, so a later change of
    an engine default cannot change what a profile is compared with. They go before the user's ``--set``, which
    wins (and is then a like-for-unlike comparison)."""
    from kvsim.cost.profile import LEGACY_ENGINE_MODE
    meta = meta if isinstance(meta, dict) else {}
    ladder = meta.get("prefill_ladder", LEGACY_ENGINE_MODE["prefill_ladder"])
    flag = lambda key: str(bool(meta.get(key, LEGACY_ENGINE_MODE[key]))).lower()     # noqa: E731
    return [f"runtime.cuda_graph_prefill_ladder={ladder}", f"runtime.mixed_decode_kernel={flag('mixed_decode_kernel')}",
            f"runtime.cuda_graph_prefill_route={flag('prefill_route')}",
            f"runtime.async_scheduling={flag('async_scheduling')}", f"runtime.swap_staged={flag('swap_staged')}",
            f"runtime.async_prompt_steps={flag('async_prompt_steps')}"]


def card_sets(profile: str) -> list[str]:
    """``gpu=<the profile's card>`` where the catalogue knows it: the engine ran on the card that measured the
    profile, whatever GPU the scenario names (scenarios/validation v01-v14 name h100-80gb and were run on an H200),
    and the simulator prices it as that card (a profile measured on another card than the scenario's GPU is
    refused, :func:`kvsim.cost.profile_card.check_card`). A user's ``--set gpu=...`` comes after it and wins."""
    from kvsim.catalogue import get_gpu
    from kvsim.errors import KvsimError
    card = _checked_profile_doc(profile)["meta"].get("gpu")
    try:
        return [f"gpu={get_gpu(card).name}"] if isinstance(card, str) and card.strip() else []
    except KvsimError:
        return []              # a card the catalogue does not know: the scenario's GPU stays


def simulate_with_profile(scenario_path: str, profile: str, overrides: list[str] | None = None):
    import kvsim
    sc = kvsim.load_scenario(scenario_path, card_sets(profile) + list(overrides or [])
                             + ["cost.model=calibrated", f"cost.profile={profile}"])
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
    from kvsim.errors import KvsimError
    from kvsim.outdir import atomic_write, safe_name, write_csv, write_json, write_text
    from kvsim.card_speed import host_note, speed_markdown, speed_row
    rows = []
    names = []
    speeds: list[dict] = []
    metas: dict[str, dict | None] = {}
    servings: dict[str, dict] = {}
    sens: list[dict] = []
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
        speeds.append(speed_row(sc.name, engine_info, metas[profile], sc.engine.block_size, eng_its,
                                servings[profile].get(str(sc.engine.block_size))))
        if speeds[-1]["same_card"] is False:
            print(f"note: {sc.name}: the engine ran on another card than the profile's (a different GPU UUID); "
                  "lent cards of one model differ by several percent, which the errors below include")
        if speeds[-1]["compiled"]:
            print(f"note: {sc.name}: the engine compiled {speeds[-1]['compiled']} Triton kernel(s) while serving; "
                  "those steps' times include compiling (its step_sizes.md lists the slow steps)")
        note = host_note(sc.name, speeds[-1]["host_ratio"])
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
        write_diff(sc.name, sim.iterations, eng_its, d)
        names.append(safe_name(sc.name))
        rows += compare(sc.name, sim.summary, summaries)
        if sensitivity:
            from kvsim.validate_sensitivity import scenario_rows
            sens += scenario_rows(sc.name, path, profile, sim_sets, sim.summary, rows[-len(METRICS):])
    df = error_table(rows)
    head = headline(df)
    tag = "-replay" if replay else ""
    write_csv(out / f"validation{tag}.csv", df)
    write_text(out / f"validation{tag}.md", markdown(df, head, card) + repeats_markdown(df) + speed_markdown(speeds)
               + links_markdown(names))
    write_json(out / f"headline{tag}.json", head, indent=2)
    if sensitivity:
        from kvsim.validate_sensitivity import markdown as sens_markdown
        table = pd.DataFrame(sens)
        write_csv(out / f"sensitivity{tag}.csv", table)
        write_text(out / f"sensitivity{tag}.md", sens_markdown(table))
    return df
