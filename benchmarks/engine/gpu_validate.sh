#!/usr/bin/env bash
# One device call: (optionally) re-measure the profiles, then `kvsim validate` on a set of scenarios.
# usage (repo root, GPU machine, $OUT set):
#   [RUN_TESTS=1] [CALIBRATE=1] SCEN="scenarios/validation/v0[1-7]*.yaml" bash benchmarks/engine/gpu_validate.sh
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W/profiles"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
if [ "${RUN_TESTS:-0}" = 1 ]; then
  python -m pytest -q -m gpu -p no:cacheprovider tests/test_engine.py tests/test_engine_models.py \
    tests/test_engine_graphs.py 2>&1 | tail -4 | tee "$W/gpu_tests.txt"
fi
if [ "${CALIBRATE:-0}" = 1 ]; then
  python -m kvsim.cli calibrate --model opt-13b --block-sizes 16,32 --out "$W/profiles/opt-13b.json" 2>&1 | tail -3
  python -m kvsim.cli calibrate --model llama-3-8b --block-sizes 16 --out "$W/profiles/llama-3-8b.json" 2>&1 | tail -3
  P="$W/profiles"
else
  P=calibrate/profiles/H100
fi
python -m kvsim.cli validate $SCEN --profile "$P/opt-13b.json" --profile "$P/llama-3-8b.json" \
  --out "$W/validation" 2>&1 | grep -v Warning | tail -16
tar czf "$OUT/validate.tgz" -C "$W" .
