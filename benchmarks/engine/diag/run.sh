#!/usr/bin/env bash
# usage (device): bash benchmarks/engine/diag/run.sh   -> $OUT/diag.txt, $OUT/clocks.csv
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
  --format=csv -lms 200 > "$OUT/clocks.csv" &
SMI=$!
date +%s.%N > "$OUT/start.txt"
python benchmarks/engine/diag/step_gap.py 2>&1 | grep -v Warning | tee "$OUT/diag.txt"
kill $SMI
