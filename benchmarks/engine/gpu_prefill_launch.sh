#!/usr/bin/env bash
# One device call: chunked-prefill offline throughput with today's prefill kernel launch against a candidate launch
# (prefill_tiles.py --pick's answer), the same 200 requests, alternating, in one lease (issue #10's before/after).
#   PICK="pm64n32w4s2+diag"  the candidate (block_m, block_n, warps, stages [+diag]); required
#   REPEATS=2                runs of each engine, alternating today's and the candidate's
#   SCEN=...                 the scenario (default v15: Llama-3-8B, chunked prefill at a 512-token budget)
# The candidate runs from a copy of kvsim/ whose kernels/prefill.py defaults are the pick (LAUNCH, DIAG_SPLIT), so
# the engine, its graphs and warm-up are otherwise the same code. Results under $OUT/w, packed into $OUT/launch.tgz.
# usage (repo root, GPU machine, $OUT set; the simpy wheel in .whl/): PICK=... bash benchmarks/engine/gpu_prefill_launch.sh
set -u
: "${PICK:?PICK=pm<m>n<n>w<w>s<s>[+diag]}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | tail -2
W=$OUT/w; mkdir -p "$W/runs"
pack() { tar czf "$OUT/launch.tgz" -C "$W" .; }
nvidia-smi --query-gpu=name,serial,driver_version,power.limit,clocks.max.sm --format=csv > "$W/gpu.txt"
read -r M N WP ST <<< "$(echo "${PICK%%+*}" | sed -E 's/pm([0-9]+)n([0-9]+)w([0-9]+)s([0-9]+)/\1 \2 \3 \4/')"
DIAG=False; case "$PICK" in *+diag) DIAG=True;; esac
rm -rf /tmp/cand && mkdir -p /tmp/cand && cp -r kvsim /tmp/cand/
sed -i -E "s/^LAUNCH = dict\(.*\)$/LAUNCH = dict(block_m=$M, block_n=$N, num_warps=$WP, num_stages=$ST)/; \
  s/^DIAG_SPLIT = False$/DIAG_SPLIT = $DIAG/" /tmp/cand/kvsim/kernels/prefill.py
grep -E "^LAUNCH|^DIAG_SPLIT" /tmp/cand/kvsim/kernels/prefill.py | tee "$W/candidate.txt"
S=${SCEN:-scenarios/validation/v15_llama3_8b_chunked512.yaml}
OFF="--set workload.arrival=burst --set workload.num_requests=200 --set runtime.max_wall_s=120 --set max_time_s=120"
for i in $(seq 1 "${REPEATS:-2}"); do
  for which in today candidate; do
    root=$PWD; [ "$which" = candidate ] && root=/tmp/cand
    echo "$(date -u +%T) $which run $i" >> "$W/stages.txt"
    # -P: the working directory must not put this checkout's kvsim/ ahead of the candidate's
    PYTHONPATH=$root:/tmp/site PYTHONUNBUFFERED=1 timeout 150 python3 -P -m kvsim.cli engine $S $OFF \
      --out "$W/runs/${which}_$i" --outputs json 2>&1 | grep -i "throughput\|finished\|per iteration\|engine from" \
      | tail -6 | tee "$W/runs/${which}_$i.txt"
    pack
  done
done
echo "$(date -u +%T) done" >> "$W/stages.txt"; pack
