#!/usr/bin/env bash
# One device call: the paged prefill kernel's launch and diagonal-only mask (issue #10's roofline bar), then an
# optional step-replay probe. Stages, each bounded, results under $OUT/w (packed into $OUT/tiles.tgz after each):
#   1. GPU tests of the prefill kernel's launches and diag_split (tests/test_kernels*.py -k "prefill or unified";
#      SKIP_TESTS=1 leaves them out)
#   2. benchmarks/engine/prefill_tiles.py on Llama-3-8B (SWEEP_ARGS) and OPT-13B (a smaller sweep)
#   3. benchmarks/engine/mixed_steps.py: today's engine, +diag, and the sweep's pick (prefill_tiles.py --pick)
#   4. REPLAY="args" benchmarks/engine/step_replay.py $REPLAY (REPLAY2="args": a second one), while time is left
# usage (repo root, GPU machine, $OUT set; the simpy wheel in .whl/): bash benchmarks/engine/gpu_prefill_tiles.sh
set -u
T0=$(date +%s); left() { echo $(( ${BUDGET:-580} - ($(date +%s) - T0) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
W=$OUT/w; mkdir -p "$W"
pack() { tar czf "$OUT/tiles.tgz" -C "$W" .; }
stage() { echo "$(date -u +%T) $1 ($(left) s left)" >> "$W/stages.txt"; }
nvidia-smi --query-gpu=name,serial,driver_version,power.limit,clocks.max.sm --format=csv > "$W/gpu.txt"
stage tests
[ -z "${SKIP_TESTS:-}" ] && timeout 150 python3 -m pytest -q -m gpu tests/test_kernels.py tests/test_kernels_window.py -k "prefill or unified" \
  > "$W/gpu_tests.txt" 2>&1; pack
stage sweep-llama
timeout 200 python3 benchmarks/engine/prefill_tiles.py --model llama-3-8b --out "$W/llama" \
  ${SWEEP_ARGS:---stages 2,3} > "$W/prefill_tiles_llama.txt" 2>&1; pack
PICK=$(python3 benchmarks/engine/prefill_tiles.py --pick "$W/llama/prefill_tiles.json" 2>> "$W/pick.txt")
echo "pick $PICK" >> "$W/pick.txt"
stage "mixed-steps $PICK"
S="fused+decodekernel,fused+decodekernel+diag"
[ -n "$PICK" ] && [ "$PICK" != "pm64n64w4s2" ] && [ "$PICK" != "pm64n64w4s2+diag" ] && S="$S,fused+decodekernel+$PICK"
timeout $(( $(left) > 260 ? 200 : $(left) - 60 )) python3 benchmarks/engine/mixed_steps.py --model llama-3-8b \
  --out "$W/mixed" --settings "$S" > "$W/mixed_steps.txt" 2>&1; pack
stage sweep-opt
[ "$(left)" -gt 150 ] && timeout 90 python3 benchmarks/engine/prefill_tiles.py --model opt-13b --out "$W/opt" \
  --block-m 64,128 --block-n 64 --warps 4,8 --stages 2,3 > "$W/prefill_tiles_opt.txt" 2>&1; pack
if [ -n "${REPLAY:-}" ] && [ "$(left)" -gt 90 ]; then
  stage replay1; timeout $(( $(left) - 20 )) python3 benchmarks/engine/step_replay.py $REPLAY > "$W/replay1.txt" 2>&1; pack
fi
if [ -n "${REPLAY2:-}" ] && [ "$(left)" -gt 90 ]; then
  stage replay2; timeout $(( $(left) - 20 )) python3 benchmarks/engine/step_replay.py $REPLAY2 > "$W/replay2.txt" 2>&1; pack
fi
stage done; pack
