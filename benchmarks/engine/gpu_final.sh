#!/usr/bin/env bash
# One device call: profiles with whole-iteration grids for OPT-13B and Llama-3-8B, offline OPT-13B runs
# (paged and Orca-Oracle) + the decode roofline check, and the HF transformers baseline on the same requests.
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W/profiles"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python -m kvsim.cli calibrate --model opt-13b --block-sizes 16,32 --out "$W/profiles/opt-13b.json" 2>&1 | tail -4
python -m kvsim.cli calibrate --model llama-3-8b --block-sizes 16 --out "$W/profiles/llama-3-8b.json" 2>&1 | tail -4
python benchmarks/engine/e2e.py --model opt-13b --rates "" --offline ${OFFLINE:-100} \
  --offline-allocators paged,orca_oracle --out "$W/e2e" 2>&1 | grep -v Warning | tail -4
timeout ${HF_TIMEOUT:-240} python benchmarks/engine/hf_baseline.py --model opt-13b --requests ${OFFLINE:-100} \
  --json "$W/hf.json" 2>&1 | grep -v Warning | tail -6
tar czf "$OUT/final.tgz" -C "$W" .
