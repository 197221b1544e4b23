#!/usr/bin/env bash
# One device call: OPT-13B end to end on kvsim's engine (paged and Orca-Oracle, two rates, plus an
# offline run), the decode roofline check, and the same offline requests through HF transformers'
# continuous batching. Run from the repo root on the GPU machine with $OUT set.
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python benchmarks/engine/e2e.py --model opt-13b --rates ${RATES:-2,6} --allocators paged,orca_oracle \
  --duration ${DURATION:-25} --offline ${OFFLINE:-200} --out "$W/e2e" 2>&1 | grep -v Warning | tail -12
timeout ${HF_TIMEOUT:-200} python benchmarks/engine/hf_baseline.py --model opt-13b --requests ${OFFLINE:-200} \
  --json "$W/hf.json" 2>&1 | tail -15
tar czf "$OUT/e2e.tgz" -C "$W" .
