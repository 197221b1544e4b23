#!/usr/bin/env bash
# One device call: GPU engine tests (CUDA graphs included), the decode-step CUDA-graph / roofline timing
# and an offline OPT-13B run, then profiles for OPT-13B and Llama-3-8B measured with the graph engine.
# usage (repo root, GPU machine, $OUT set): KVSIM_GIT_COMMIT=<sha> bash benchmarks/engine/gpu_graphs.sh
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W/profiles"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
pack() { tar czf "$OUT/graphs.tgz" -C "$W" .; }
python -m pytest -q -m gpu -p no:cacheprovider tests/test_engine.py tests/test_engine_models.py \
  tests/test_engine_graphs.py 2>&1 | tail -8 | tee "$W/gpu_tests.txt"
python benchmarks/engine/e2e.py --model opt-13b --rates "" --offline ${OFFLINE:-100} \
  --offline-allocators paged --out "$W/e2e" 2>&1 | grep -v Warning | tail -9
pack
python -m kvsim.cli calibrate --model opt-13b --block-sizes 16,32 --out "$W/profiles/opt-13b.json" 2>&1 | tail -9
pack
python -m kvsim.cli calibrate --model llama-3-8b --block-sizes 16 --out "$W/profiles/llama-3-8b.json" 2>&1 | tail -9
pack
