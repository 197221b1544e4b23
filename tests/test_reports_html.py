"""report.html for run, sweep, plan and engine (issue #13): self-contained, headline backed by the numbers,
--outputs, plan --price; the four reports render in headless Chromium with every image decoded and nothing wider
than the window (the engine's: tiny-opt on the CPU, a measured run)."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from kvsim.cli import main
from tests._cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Q = str(ROOT / "scenarios" / "examples" / "quickstart.yaml")
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def self_contained(html: str) -> int:
    """No scripts, no external references; every image an inline PNG. Returns the number of images."""
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', html), "external reference"
    imgs = IMG.findall(html)
    for b64 in imgs:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert html.count("<img") == len(imgs)
    return len(imgs)


def headline(html: str) -> str:
    return re.search(r'<div class="rec"><h2>(.*?)</h2>', html, re.S).group(1)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """One run, one sweep, one plan, each with its report.html (module-scoped: simulated once)."""
    base = tmp_path_factory.mktemp("reports")
    assert main(["run", Q, "--set", "workload.num_requests=150", "--out", str(base / "run"),
                 "--goodput", "ttft:2000", "tpot:100"]) == 0
    assert main(["sweep", Q, "--grid", "workload.rate_req_s=0.5,2,6", "--grid", "engine.allocator=paged,orca_max",
                 "--set", "workload.num_requests=120", "--quiet", "--jobs", "2", "--out", str(base / "sweep")]) == 0
    assert main(["plan", Q, "--candidates", "engine.block_size=16,32", "--replicas", "1,2", "--requests", "120",
                 "--quiet", "--jobs", "2", "--out", str(base / "plan")]) == 0
    return base


def test_run_report_is_self_contained_with_the_runs_numbers(reports):
    html = (reports / "run" / "report.html").read_text()
    assert self_contained(html) >= 1
    s = pd.read_json(reports / "run" / "summary.json", typ="series")["summary"]
    assert f"{s['throughput_req_s']:.3f} req/s" in html                    # the summary table is this run's
    assert "Goodput" in html and "ttft" in html and "e2el" in html
    assert "quickstart" in html


@pytest.mark.parametrize("rate,word", [(0.5, "Keeps up"), (8, "Overloaded")])
def test_run_headline_follows_the_queue(capsys, tmp_path, rate, word):
    rc, _, err = cli(capsys, "run", Q, "--set", f"workload.rate_req_s={rate}", "--set", "workload.num_requests=300",
                     "--outputs", "html", "--out", tmp_path / "r")
    assert rc == 0, err
    assert headline((tmp_path / "r" / "report.html").read_text()).startswith(word)


def test_closed_loop_run_headline_has_no_offered_rate(capsys, tmp_path):
    rc, _, _ = cli(capsys, "run", Q, "--set", "workload.num_requests=60", "--set", "workload.max_concurrency=4",
                   "--outputs", "html", "--out", tmp_path / "r")
    assert rc == 0
    assert "at most 4 requests in flight" in headline((tmp_path / "r" / "report.html").read_text())


def test_sweep_report_names_the_configuration_with_the_most_throughput(reports):
    html = (reports / "sweep" / "report.html").read_text()
    assert self_contained(html) >= 1
    df = pd.read_csv(reports / "sweep" / "sweep.csv")
    best = df.loc[df.throughput_req_s.idxmax()]
    assert headline(html).startswith(f"KV allocator {best['engine.allocator']} serves the most: "
                                     f"up to {best.throughput_req_s:.3g} req/s")
    assert "throughput_req_s" not in html.split("<h2>All points")[0]        # words, not column names


def test_plan_report_recommends_what_the_plan_recommends(reports):
    html = (reports / "plan" / "report.html").read_text()
    assert self_contained(html) >= 3
    t = pd.read_csv(reports / "plan" / "plan.csv")
    rec = t[t.recommended].iloc[0]
    assert headline(html).startswith(f"Recommended: KV block size {rec['engine.block_size']}, "
                                     f"{rec.replicas} replica(s)")
    assert "highest goodput per GPU" in html
    assert bool(rec.pareto)                                                 # the recommendation is on the front


@pytest.mark.parametrize("kinds,files", [
    ("json,csv,html", {"summary.json", "requests.csv", "iterations.csv", "report.html"}),
    ("json", {"summary.json"}),
    ("html,png", {"report.html", "run.png"}),
    (None, {"summary.json", "requests.csv", "iterations.csv", "run.png", "report.html"}),
])
def test_run_outputs_select_the_files(capsys, tmp_path, kinds, files):
    args = ["run", Q, "--set", "workload.num_requests=40", "--out", tmp_path / "o"]
    rc, out, _ = cli(capsys, *(args + (["--outputs", kinds] if kinds else [])))
    assert rc == 0
    assert {p.name for p in (tmp_path / "o").iterdir()} == files
    assert all(f in out for f in files)


def test_sweep_and_plan_outputs(capsys, tmp_path):
    rc, _, _ = cli(capsys, "sweep", Q, "--grid", "engine.block_size=16,32", "--set", "workload.num_requests=40",
                   "--quiet", "--jobs", "1", "--outputs", "json,html", "--out", tmp_path / "s")
    assert rc == 0 and {p.name for p in (tmp_path / "s").iterdir()} == {"sweep.json", "report.html"}
    rc, _, _ = cli(capsys, "plan", Q, "--requests", "60", "--quiet", "--jobs", "1", "--outputs", "csv",
                   "--out", tmp_path / "p")
    assert rc == 0 and {p.name for p in (tmp_path / "p").iterdir()} == {"plan.csv"}


@pytest.mark.parametrize("bad", ["xml", "json,,csv", "", "html,pdf"])
def test_bad_outputs_is_one_line_and_writes_nothing(capsys, tmp_path, bad):
    rc, _, err = cli(capsys, "run", Q, "--outputs", bad, "--out", tmp_path / "x")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --outputs:")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- --objective usd and --price

def test_usd_objective_refuses_a_gpu_without_price(capsys, tmp_path):
    rc, _, err = cli(capsys, "plan", Q, "--candidates", "gpu=a100-40gb,h200", "--objective", "usd", "--quiet",
                     "--out", tmp_path / "p")
    assert rc == 2 and err.count("\n") == 1
    assert "H200-141GB" in err and "--price h200-141gb=" in err
    assert not (tmp_path / "p").exists()


def test_price_makes_an_unpriced_gpu_count(capsys, tmp_path):
    rc, out, err = cli(capsys, "plan", Q, "--candidates", "gpu=a100-40gb,h200", "--objective", "usd",
                       "--price", "h200=4.0", "--requests", "100", "--quiet", "--jobs", "2", "--out", tmp_path / "p")
    assert rc == 0, err
    t = pd.read_csv(tmp_path / "p" / "plan.csv").set_index("gpu")
    assert t.loc["h200", "price_per_hour_usd"] == 4.0 and t.loc["a100-40gb", "price_per_hour_usd"] == 1.29
    assert t.requests_per_usd.notna().all()
    h = t.loc["h200"]
    assert h.requests_per_usd == pytest.approx(h.goodput_per_gpu * 3600 / 4.0)
    best = t.requests_per_usd.idxmax()
    assert bool(t.loc[best, "recommended"]) and bool(t.loc[best, "pareto"])


@pytest.mark.parametrize("bad", ["h200", "h200=abc", "h200=-1", "h200=0", "tpu9=3", "=3"])
def test_bad_price_is_one_line(capsys, tmp_path, bad):
    rc, _, err = cli(capsys, "plan", Q, "--price", bad, "--quiet", "--out", tmp_path / "p")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --price:")
    assert not (tmp_path / "p").exists()


# ---------------------------------------------------------------- headless Chromium

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"):
        if shutil.which(name):
            return shutil.which(name)
    return None


PROBE = ("<script>window.addEventListener('load',function(){var i=document.images,ok=0;"
         "for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)ok++;}"
         "var b=document.body;b.setAttribute('data-images',i.length);b.setAttribute('data-loaded',ok);"
         "b.setAttribute('data-width',document.documentElement.scrollWidth);});</script>")


def _render(html_path: Path, tmp_path: Path) -> dict[str, str]:
    """Load a copy of the report (with a probe script) in headless Chromium; the probe's numbers."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not found (apt-get install -y chromium)")
    page = tmp_path / "probe.html"          # a copy with a probe script; the report itself has none
    page.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [exe, "--headless", "--disable-gpu", "--window-size=1200,900", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    body = re.search(r"<body ([^>]*)>", r.stdout)
    assert body, r.stderr[-500:]
    return dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))


@pytest.mark.parametrize("which", ["run", "sweep", "plan", "engine"])
def test_reports_render_in_headless_chromium(request, tmp_path, which):
    base = request.getfixturevalue("engine_report" if which == "engine" else "reports")
    attrs = _render(base / which / "report.html", tmp_path)
    assert int(attrs["images"]) >= 1 and attrs["loaded"] == attrs["images"]       # every PNG decodes
    assert int(attrs["width"]) <= 1200                                             # tables fit the window


def test_replicated_run_and_sweep_reports_show_intervals(capsys, tmp_path):
    rc, _, err = cli(capsys, "run", Q, "--set", "workload.num_requests=40", "--seeds", "3", "--jobs", "1",
                     "--outputs", "html", "--out", tmp_path / "r")
    assert rc == 0, err
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Across seeds" in html and "over 3 runs" in html and "interval low" in html
    rc, _, err = cli(capsys, "sweep", Q, "--grid", "engine.block_size=16,32", "--set", "workload.num_requests=40",
                     "--seeds", "2", "--jobs", "1", "--quiet", "--outputs", "html,csv", "--out", tmp_path / "s")
    assert rc == 0, err
    html = (tmp_path / "s" / "report.html").read_text()
    assert "each the mean of 2 seeds" in html
    assert "throughput, interval low (req/s)" in html                         # interval columns in words
    df = pd.read_csv(tmp_path / "s" / "sweep.csv")
    assert f"{df.throughput_req_s_ci_lo.iloc[0]:.4g}" in html                  # the interval is in the table


# ---------------------------------------------------------------- kvsim engine (tiny model on the CPU)

ENGINE_SCENARIO = """\
name: engine-report
model: tiny-opt
gpu: a100-40gb
dtype: fp32
engine: {block_size: 4, num_gpu_blocks: 400, num_cpu_blocks: 400, max_num_batched_tokens: 256, max_num_seqs: 16}
workload: {dataset: uniform, prompt_len_range: [3, 20], output_len_range: [2, 12], arrival: burst, num_requests: 6}
runtime: {device: cpu, attention_backend: torch}
seed: 1
"""


@pytest.fixture(scope="module")
def engine_yaml(tmp_path_factory):
    p = tmp_path_factory.mktemp("engine_sc") / "engine.yaml"
    p.write_text(ENGINE_SCENARIO)
    return p


@pytest.fixture(scope="module")
def engine_report(engine_yaml, tmp_path_factory):
    """One ``kvsim engine`` run of tiny-opt on the CPU with the default --outputs."""
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    base = tmp_path_factory.mktemp("engine_report")
    assert main(["engine", str(engine_yaml), "--out", str(base / "engine")]) == 0
    return base


def test_engine_writes_a_report_of_a_measured_run(engine_report):
    d = engine_report / "engine"
    assert {p.name for p in d.iterdir()} == {"summary.json", "requests.csv", "iterations.csv", "run.png",
                                            "report.html"}
    html = (d / "report.html").read_text()
    assert self_contained(html) >= 1
    doc = pd.read_json(d / "summary.json", typ="series")
    s, info = doc["summary"], doc["engine"]
    assert info["device"] == "cpu"
    assert "Measured engine run" in html and "measured on cpu" in html            # not a simulation, and where
    assert "kvsim engine: engine-report" in html
    assert f"{s['throughput_req_s']:.3f} req/s" in html                            # this run's numbers
    assert "Engine (measured on cpu)" in html and info["torch"] in html             # the engine's info section
    assert "simulated time" not in html and "wall time" in html
    assert headline(html).startswith("Sustained")                                   # a burst: no offered rate


@pytest.mark.parametrize("kinds,files", [("json", {"summary.json"}), ("html,csv", {"report.html", "requests.csv",
                                                                                   "iterations.csv"})])
def test_engine_outputs_select_the_files(capsys, tmp_path, engine_yaml, kinds, files):
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    rc, out, err = cli(capsys, "engine", engine_yaml, "--outputs", kinds, "--out", tmp_path / "e")
    assert rc == 0, err
    assert {p.name for p in (tmp_path / "e").iterdir()} == files
    assert all(f in out for f in files)


@pytest.mark.parametrize("bad", ["xml", "json,,csv", "", "html,pdf"])
def test_engine_bad_outputs_is_one_line_and_writes_nothing(capsys, tmp_path, engine_yaml, bad):
    rc, _, err = cli(capsys, "engine", engine_yaml, "--outputs", bad, "--out", tmp_path / "x")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --outputs:")
    assert not (tmp_path / "x").exists()


def test_write_engine_run_default_keeps_validates_files(tmp_path):
    """kvsim validate's engine/ folders keep their old file set: no report.html there."""
    from types import SimpleNamespace

    import kvsim
    from kvsim.output import write_engine_run
    r = kvsim.simulate(kvsim.load_scenario(Q, ["workload.num_requests=20"]))
    res = SimpleNamespace(setup=r.setup, requests=r.requests, iterations=r.iterations, summary=r.summary,
                          info={"device": "cpu"})
    written = write_engine_run(res, tmp_path / "engine")
    assert set(written) == {p.name for p in (tmp_path / "engine").iterdir()} == {
        "summary.json", "requests.csv", "iterations.csv", "run.png"}


def test_run_report_builds_only_the_iteration_columns_it_reads():
    """report.html of a simulator run reads a few columns from the run's log, never the whole iterations frame
    (millions of rows in a long run), and says the same as from the whole frame."""
    from kvsim.config import load_scenario
    from kvsim.report.run_report import render_run
    from kvsim.sim import simulate
    res = simulate(load_scenario({"name": "cols", "model": "opt-13b", "gpu": "a100-40gb",
                                  "engine": {"allocator": "paged", "block_size": 16},
                                  "workload": {"dataset": "sharegpt_like", "rate_req_s": 2.0, "num_requests": 200},
                                  "seed": 0}, []))
    stamp = re.compile(r"Generated [0-9-]+ [0-9:]+ UTC")
    html = stamp.sub("", render_run(res, "poisson", percentiles=[50.0, 99.0]))
    assert res._iterations is None
    assert len(res.iterations.columns) > 10              # now built (and kept) in full
    assert stamp.sub("", render_run(res, "poisson", percentiles=[50.0, 99.0])) == html
