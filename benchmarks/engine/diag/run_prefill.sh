#!/usr/bin/env bash
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2
python benchmarks/engine/diag/prefill_cpu.py 2>&1 | grep -v Warning | tee "$OUT/prefill_cpu.txt"
