#!/usr/bin/env bash
# One device call for issue #10: GPU tests of the unified kernel and mixed-step graphs, mixed-step
# timing vs roofline, chunked-prefill offline throughput with unified mixed steps on and off (same
# requests), chunked vs prefill-first, then a Llama-3-8B profile with the mixed-step grid.
# usage (repo root, GPU machine, $OUT set): bash benchmarks/engine/gpu_chunked.sh
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W/profiles" "$W/runs"
pack() { tar czf "$OUT/chunked.tgz" -C "$W" .; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
python -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels.py -k "unified or prefill" \
  tests/test_engine_graphs.py tests/test_engine.py 2>&1 | tail -4 | tee "$W/gpu_tests.txt"
python benchmarks/engine/mixed_steps.py --model llama-3-8b --out "$W" 2>&1 | grep -v Warning | tail -8
pack
S=scenarios/validation/v15_llama3_8b_chunked512.yaml
OFF="--set workload.arrival=burst --set workload.num_requests=200 --set runtime.max_wall_s=120 --set max_time_s=120"
for u in true false; do
  python -m kvsim.cli engine $S $OFF --set runtime.unified_mixed_steps=$u --out "$W/runs/chunked512_unified_$u" \
    2>&1 | grep -i "throughput\|finished" | tail -3
done
python -m kvsim.cli engine $S $OFF --set engine.scheduler=vllm --set engine.max_num_batched_tokens=4096 \
  --out "$W/runs/prefill_first" 2>&1 | grep -i "throughput\|finished" | tail -3
pack
python -m kvsim.cli calibrate --model llama-3-8b --block-sizes 16 --out "$W/profiles/llama-3-8b.json" 2>&1 | tail -3
pack
