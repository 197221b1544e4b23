"""The calibration's serving fit alone, against an existing profile's grids (GPU): how much a row's decode
step and host time move between passes, without a whole calibration.

Runs :func:`kvsim.calibrate.serving_fit.fit_serving` for ``--rows`` with ``--passes`` passes on the profile's
model (dummy weights), keeps the runs (``--out``/runs, refit them with ``serving_refit.py``) and prints, per row,
each pass's median step and host time and the refitted ``extra_s``. The profile is not changed.

usage (GPU): python benchmarks/engine/serving_fit_only.py --profile P.json --out DIR [--rows 4,16,17,32] [--passes 2]
"""
from __future__ import annotations

import argparse
import json
import pathlib


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", default="4,16,17,32")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=16)
    a = ap.parse_args()
    import torch

    from kvsim.calibrate import serving_fit as SF
    from kvsim.catalogue import get_model
    from kvsim.engine.models import build_model
    prof = json.loads(pathlib.Path(a.profile).read_text())
    spec = get_model(prof["model"])
    model = build_model(spec, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[prof["dtype"]],
                        device=torch.device("cuda"), weights="dummy")
    out = pathlib.Path(a.out)
    decode, _ = SF.fit_serving(model, prof, a.block_size, rows=tuple(int(r) for r in a.rows.split(",")),
                               save_dir=out / "runs", passes=a.passes)
    (out / "decode_serving.json").write_text(json.dumps(decode, indent=1))
    print("| rows | step per pass (ms) | host per pass (ms) | extra_s (ms) |\n|---|---|---|---|")
    for n, extra, p in zip(decode["num_seqs"], decode["extra_s"], decode.get("by_pass") or [None] * 99):
        steps = " / ".join(f"{x * 1e3:.3f}" for x in p["step_s"]) if p else "–"
        host = " / ".join(f"{x * 1e3:.3f}" for x in p["host_s"]) if p and p["host_s"] else "–"
        print(f"| {n} | {steps} | {host} | {extra * 1e3:+.3f} |")


if __name__ == "__main__":
    main()
