"""Lay out one lease's device calls in the repository: the ``h200.tgz`` each ``gpu_h200.sh`` call leaves in
``$OUT`` (copied here by the device tool) into a validation set and a results folder, as the committed sets are.

Per call, in the order given: ``stages.txt`` and ``engine_one_process.txt`` are appended under a ``# call N`` line,
``validation/scenario_runs.csv`` rows are appended under one header, GPU clocks (``clocks/*.csv``) are gzipped into
``RESULTS/clocks/`` (the one-process stage's as ``engine_one_process_call<N>.csv.gz``), and each engine run
(``validation/<name>/<name>/engine*/``) goes to ``SET/<name>/engine*/`` with its summary.json and gzipped records
(requests.csv.gz, iterations.csv.gz; no plots or HTML: ``kvsim validate --replay`` re-draws what a set keeps).
``gpu.txt`` comes from the first call. A calibration's files (``profiles/<model>-b<B>.{log,clocks.csv,serving/}``)
go to ``RESULTS/`` as ``<model>-b<B>.calibrate.log``, ``.clocks.csv.gz`` and ``serving_runs/<model>-b<B>/`` (csvs
gzipped; a folder each, as one lease may calibrate two models), and
``--profile NAME=DEST`` copies ``profiles/NAME.json`` to DEST. A probe stage's output (:data:`PROBES`: the LM head's,
``lm_head_rows_<model>.txt`` and ``lm_head/<model>/lm_head_rows.json``, the odd row counts',
``odd_rows_<model>.txt`` and ``odd_rows/<model>/odd_rows.json``, and the replayed engine steps',
``step_replay_<model>.txt`` and ``step_replay/<model>/step_replay.json``) goes to ``RESULTS/lm_head/`` (``RESULTS/odd_rows/``,
``RESULTS/step_replay/``) as ``<model>.txt`` and ``<model>.json``. A run folder that is already in SET is an error
(one line, exit 2), so two calls' runs of one scenario must be numbered apart on the device (``ENGINE_FIRST``).
Then, on the CPU: ``kvsim validate ... --out SET --replay --sensitivity``.

usage: python benchmarks/engine/import_calls.py CALL1.tgz [CALL2.tgz ...] --set validation/H100-async-1207b \
    --results benchmarks/engine/results_H100/async_1207b [--profile llama-3-8b-b16=calibrate/profiles/H100/x.json]
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

RECORDS = ("requests.csv", "iterations.csv")
PROBES = (("lm_head_rows", "lm_head"), ("odd_rows", "odd_rows"), ("step_replay", "step_replay"))   # (script, folder)


class Refused(Exception):
    """A call's run would overwrite one already in the set."""


def gz(src: Path, dst: Path) -> None:
    """``src`` gzipped to ``dst`` with no name or time in the header (``gzip -9n``: the same bytes every time)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as out:
            shutil.copyfileobj(f, out)


def _append(src: Path, dst: Path, header: str | None) -> None:
    if not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("a") as out:
        if header is not None:
            out.write(header + "\n")
        out.write(src.read_text())


def import_runs(work: Path, dest: Path) -> list[str]:
    """Each ``work/validation/<name>/<name>/engine*`` run into ``dest/<name>/``; returns them as ``name/engine*``."""
    done = []
    for run in sorted(work.glob("validation/*/*/engine*")):
        name = run.parent.name
        target = dest / name / run.name
        if target.exists():
            raise Refused(f"{target} exists: number the runs apart on the device (ENGINE_FIRST)")
        target.mkdir(parents=True)
        shutil.copy2(run / "summary.json", target / "summary.json")
        for rec in RECORDS:
            src = run / rec if (run / rec).exists() else run / f"{rec}.gz"
            if src.name.endswith(".gz"):
                shutil.copy2(src, target / src.name)
            else:
                gz(src, target / f"{rec}.gz")
        done.append(f"{name}/{run.name}")
    return done


def import_calibration(work: Path, results: Path) -> list[str]:
    """Each calibration's log, clocks and serving runs (``work/profiles/<model>-b<B>.*``) into ``results``."""
    done = []
    for log in sorted(work.glob("profiles/*-b*.log")):
        stem = log.name[:-len(".log")]
        shutil.copy2(log, results / f"{stem}.calibrate.log")
        clocks = log.with_name(f"{stem}.clocks.csv")
        if clocks.exists():
            gz(clocks, results / f"{stem}.clocks.csv.gz")
        serving = log.with_name(f"{stem}.serving")
        if serving.is_dir():
            for f in sorted(serving.rglob("*.csv")):
                gz(f, results / "serving_runs" / stem / f.relative_to(serving).with_suffix(".csv.gz"))
        done.append(stem)
    return done


def import_calls(tgzs: list[Path], dest: Path, results: Path, profiles: dict[str, Path]) -> dict:
    """The module doc's layout for ``tgzs`` (the calls in order); returns what was imported."""
    results.mkdir(parents=True, exist_ok=True)
    out = {"runs": [], "calibrations": [], "profiles": []}
    for k, tgz in enumerate(tgzs, start=1):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            with tarfile.open(tgz) as t:
                t.extractall(work, filter="data")
            if k == 1 and (work / "gpu.txt").exists():
                shutil.copy2(work / "gpu.txt", results / "gpu.txt")
            _append(work / "stages.txt", results / "stages.txt", f"# call {k}")
            _append(work / "engine_one_process.txt", results / "engine_one_process.txt", f"# call {k}")
            runs_csv = work / "validation" / "scenario_runs.csv"
            if runs_csv.exists():
                lines = runs_csv.read_text().splitlines(keepends=True)
                target = results / "scenario_runs.csv"
                with target.open("a") as f:
                    f.writelines(lines if not target.stat().st_size else lines[1:])
            for c in sorted((work / "clocks").glob("*.csv")):
                name = f"{c.stem}_call{k}.csv.gz" if c.stem == "engine_one_process" else f"{c.stem}.csv.gz"
                gz(c, results / "clocks" / name)
            for script, folder in PROBES:          # (gpu_h200.sh LMHEAD=..., ODDROWS=...)
                for txt in sorted(work.glob(f"{script}_*.txt")):
                    m = txt.stem[len(script) + 1:]
                    (results / folder).mkdir(exist_ok=True)
                    shutil.copy2(txt, results / folder / f"{m}.txt")
                    js = work / folder / m / f"{script}.json"
                    if js.exists():
                        shutil.copy2(js, results / folder / f"{m}.json")
                    out.setdefault(folder, []).append(m)
            out["runs"] += import_runs(work, dest)
            out["calibrations"] += import_calibration(work, results)
            for name, target in profiles.items():
                src = work / "profiles" / f"{name}.json"
                if src.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
                    out["profiles"].append(str(target))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tgz", nargs="+", type=Path)
    ap.add_argument("--set", required=True, type=Path, help="the validation set's folder")
    ap.add_argument("--results", required=True, type=Path, help="the lease's results folder")
    ap.add_argument("--profile", action="append", default=[], metavar="NAME=DEST")
    a = ap.parse_args(argv)
    for t in a.tgz:
        if not t.is_file():
            print(f"error: {t}: no such file", file=sys.stderr)
            return 2
    try:
        profiles = {k: Path(v) for k, v in (p.split("=", 1) for p in a.profile)}
    except ValueError:
        print("error: --profile: expected NAME=DEST", file=sys.stderr)
        return 2
    if (a.results / "stages.txt").exists():
        print(f"error: {a.results} already holds an import (stages.txt)", file=sys.stderr)
        return 2
    try:
        got = import_calls(a.tgz, a.set, a.results, profiles)
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(got['runs'])} engine runs into {a.set}; calibrations {', '.join(got['calibrations']) or 'none'}; "
          f"profiles {', '.join(got['profiles']) or 'none'}; results in {a.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
