#!/usr/bin/env bash
# One device call: the same offline OPT-13B requests through kvsim's engine (CUDA graphs on) and through
# Hugging Face transformers' continuous-batching engine, on the same card, back to back.
# usage (repo root, GPU machine, $OUT set): bash benchmarks/engine/gpu_hf_ratio.sh
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python benchmarks/engine/e2e.py --model opt-13b --rates "" --offline ${OFFLINE:-100} --offline-allocators paged \
  --no-roofline --out "$W/e2e" 2>&1 | grep -v Warning | tail -3
timeout ${HF_TIMEOUT:-300} python benchmarks/engine/hf_baseline.py --model opt-13b --requests ${OFFLINE:-100} \
  --json "$W/hf.json" 2>&1 | grep -v Warning | tail -6
tar czf "$OUT/hf_ratio.tgz" -C "$W" .
