#!/usr/bin/env bash
# One device call: OPT-13B ShareGPT-like, Poisson 2 and 6 req/s for 40 s, paged and Orca-Oracle, CUDA graphs on.
# usage (repo root, GPU machine, $OUT set): bash benchmarks/engine/gpu_online.sh
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python benchmarks/engine/e2e.py --model opt-13b --rates 2,6 --allocators paged,orca_oracle --duration 40 \
  --offline 0 --no-roofline --out "$W/e2e" 2>&1 | grep -v Warning | tail -5
tar czf "$OUT/online.tgz" -C "$W" .
