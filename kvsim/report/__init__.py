"""Tuning reports. ``block_size_report`` writes a self-contained HTML block-size report;
``choose_block_size(scenario, slo) -> (block_size, reason)`` picks the block size for a workload."""
from __future__ import annotations

from pathlib import Path

from kvsim.outdir import OutputSet
from kvsim.report.blocksize import DEFAULT_BLOCK_SIZES, BlockSizeAnalysis, analyse, choose

REPORT_FILES = ("report.html", "block_size.csv", "attribution.csv")


def _source(scenario):
    return scenario.to_dict() if hasattr(scenario, "to_dict") else scenario


def choose_block_size(scenario, slo: dict | None = None, **kw) -> tuple[int | None, str]:
    """Block size for ``scenario`` (path, dict or Scenario) under ``slo`` (default mean normalized latency 0.1 s)."""
    from kvsim.plan.slo import parse_slo
    a = analyse(_source(scenario), parse_slo(slo), **kw)
    return a.block_size, a.reason


def block_size_report(scenario, slo: dict, out, **kw) -> BlockSizeAnalysis:
    """Analyse, then write ``out/report.html`` and ``out/block_size.csv``; returns the analysis."""
    from kvsim.report.html import render
    out = Path(out)
    OutputSet(out, REPORT_FILES).check()       # a foreign --out fails before minutes of searching
    a = analyse(_source(scenario), slo, **kw)
    desc = ""
    if not hasattr(scenario, "to_dict") and not isinstance(scenario, dict):
        from kvsim.config import read_yaml
        desc = str(read_yaml(scenario).get("description", ""))
    with OutputSet(out, REPORT_FILES) as d:
        (d / "report.html").write_text(render(a, desc), encoding="utf-8")
        a.table.to_csv(d / "block_size.csv", index=False)
        if a.attribution is not None:
            a.attribution.to_csv(d / "attribution.csv", index=False)
    return a


__all__ = ["DEFAULT_BLOCK_SIZES", "BlockSizeAnalysis", "analyse", "block_size_report", "choose",
           "choose_block_size"]
