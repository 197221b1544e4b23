#!/usr/bin/env bash
# One device call: GPU correctness tests of the engine, then profiles for OPT-13B and Llama-3-8B.
# Run from the repo root on the GPU machine with $OUT set; KVSIM_GIT_COMMIT names the commit measured.
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python -m pytest -q -m gpu -p no:cacheprovider tests/test_engine.py tests/test_engine_models.py tests/test_engine_graphs.py 2>&1 | tail -12 | tee "$W/gpu_tests.txt"
for spec in "opt-13b 16,32" "llama-3-8b 16"; do
  set -- $spec
  python -m kvsim.cli calibrate --model "$1" --block-sizes "$2" --out "$W/profile-$1.json" 2>&1 | tail -14 | tee "$W/calibrate-$1.log"
done
tar czf "$OUT/calibrate.tgz" -C "$W" .
