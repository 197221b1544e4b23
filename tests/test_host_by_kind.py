"""benchmarks/engine/host_by_kind.py: step kinds from the records, and the committed table reproduced from the
committed H100 records (results_H100/prompt_steps_1206)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "engine"))
import host_by_kind  # noqa: E402

RESULTS = ROOT / "benchmarks/engine/results_H100/prompt_steps_1206"


def test_kinds_of_steps():
    its = pd.DataFrame({"prefill_tokens": [5, 5, 0, 0], "decode_seqs": [0, 3, 3, 0]})
    assert list(host_by_kind.kinds(its)) == ["prefill", "mixed", "decode", "other"]


def test_the_committed_table_is_what_the_records_give(tmp_path):
    runs = [RESULTS / c / f"chunked512_runtime_async_prompt_steps_{s}" for c in ("call1", "call2")
            for s in ("false", "true")]
    out = tmp_path / "t.md"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/engine/host_by_kind.py"), *map(str, runs), "--md",
                    str(out)], check=True, capture_output=True, cwd=tmp_path)
    got = out.read_text().replace(str(RESULTS) + "/", "")
    assert got == (RESULTS / "host_by_kind.md").read_text()
    # what docs/engine.md says of them: with prompt steps overlapped, a step after a mixed one is prepared ahead and
    # keeps far less host time on the critical path than with them stepped
    for call in ("call1", "call2"):
        off, on = (host_by_kind.table(RESULTS / call / f"chunked512_runtime_async_prompt_steps_{s}")
                   .set_index(["kind", "after"]) for s in ("false", "true"))
        for key in (("mixed", "mixed"), ("decode", "mixed")):
            assert on.loc[key, "ahead"] == 1.0 and off.loc[key, "ahead"] == 0.0
            assert on.loc[key, "host_ms"] < 0.1 < off.loc[key, "host_ms"]
