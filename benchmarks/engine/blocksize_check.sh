#!/usr/bin/env bash
# Issue #18's engine check of `kvsim report block-size --profile`: the report's best block size and two others
# run end to end on kvsim's engine on the same workload at a few request rates (and seeds), then
# kvsim/report/engine_check.py computes the throughput at the SLO per block size and compares it with the
# report's prediction (order, error per block size, measured margin, noise) into engine_check.{csv,md}.
# Each run is one of the report's probes: at least REQUESTS requests and MIN_DURATION s of Poisson arrivals
# (the report's --requests default 600 and its 60 s; kvsim.plan.search.probe_requests). Shorter runs do not
# describe its SLO rates: 20 s runs (this script's first version, 2026-12-06) met the SLO at every rate up to 1.2x
# the predicted one while the simulator predicted each of those runs within 8% (benchmarks/blocksize/H100/README.md).
#   REPORT=benchmarks/blocksize/H200/alpaca   the committed report folder (block_size.csv)
#   SCENARIO=scenarios/paper/fig18b_block_size_alpaca.yaml
#   BLOCKS=16,32,64     default: the report's recommended block size (report.txt) and the block predicted
#                       worst on each side of it (block_size.csv), or the two worst on its one side
#   FRACS=1.0,0.85,1.15 rates run, as fractions of each block size's own predicted SLO rate (so each is bracketed
#                       when the prediction is within 15%), in this order (a call cut short has the middle ones)
#   REQUESTS=600 MIN_DURATION=60   (used where block_size.csv lacks probe_requests / probe_min_duration_s)
#   SEEDS=0 (e.g. 0,1: the spread of per-seed rates is the noise)
#   SLO=normalized_latency_s=0.1   SETS="--set gpu=h200-141gb"   CHECK_TIMEOUT=560 (s, the whole stage)
#   PROFILE=calibrate/profiles/H200/opt-13b-blocks.json   also simulate each run as it ran (engine_check_runs.csv)
#   RESUME_FROM=DIR     runs of an earlier call (b<B>_r<RATE>_s<SEED>/ folders, carried into the repo copy) are
#                       kept and not run again
# Runs already in $OUT/work/blocksize/<name>/ are kept, so a call cut short resumes in the next one.
# usage (repo root, GPU machine, $OUT set; the simpy wheel in .whl/): REPORT=... SCENARIO=... bash <this file>
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
python3 -c "import simpy" || exit 3
REPORT=${REPORT:-benchmarks/blocksize/H200/alpaca}
SCENARIO=${SCENARIO:-scenarios/paper/fig18b_block_size_alpaca.yaml}
SLO=${SLO:-normalized_latency_s=0.1}
SETS=${SETS:---set gpu=h200-141gb}
W=$OUT/work/blocksize/$(basename "$REPORT"); mkdir -p "$W"
[ -n "${RESUME_FROM:-}" ] && cp -rn "$RESUME_FROM"/b*_r*_s* "$W"/ 2>/dev/null
read -r BEST_RATE AUTO_BLOCKS < <(python3 - "$REPORT/block_size.csv" "$REPORT/report.txt" <<'PY'
import re, sys, pandas as pd
t = pd.read_csv(sys.argv[1]).dropna(subset=["max_rate_req_s"]).sort_values("block_size").reset_index(drop=True)
rate = dict(zip(t.block_size.astype(int), t.max_rate_req_s))
try:                                  # the report's recommendation (report.txt), else the best predicted rate
    rec = int(re.search(r"recommended block size: (\d+)", open(sys.argv[2]).read()).group(1))
except (OSError, AttributeError):
    rec = int(t.block_size[t.max_rate_req_s.idxmax()])
# beside it, the block predicted worst on each side of it (the widest predicted gaps: an ordering the engine can
# confirm), or the two worst on the one side there is
lo = sorted((b for b in rate if b < rec), key=lambda b: (rate[b], b))
hi = sorted((b for b in rate if b > rec), key=lambda b: (rate[b], -b))
others = ([lo[0]] if lo else []) + ([hi[0]] if hi else [])
others += [b for b in lo[1:] + hi[1:] if b not in others][:2 - len(others)]
print(t.max_rate_req_s.max(), ",".join(str(b) for b in sorted([rec] + others)))
PY
)
BLOCKS=${BLOCKS:-$AUTO_BLOCKS}
echo "report $REPORT: best predicted rate $BEST_RATE req/s; blocks $BLOCKS" | tee -a "$W/stages.txt"
T0=$(date +%s)
FRACS=${FRACS:-1.0,0.85,1.15}; SEEDS=${SEEDS:-0}
for seed in ${SEEDS//,/ }; do for frac in ${FRACS//,/ }; do for b in ${BLOCKS//,/ }; do
  read -r rate n < <(python3 - "$REPORT/block_size.csv" "$b" "$frac" "${REQUESTS:-600}" "${MIN_DURATION:-60}" <<'PY'
import math, sys, pandas as pd
t = pd.read_csv(sys.argv[1])
row = t.loc[t.block_size == int(sys.argv[2])].iloc[0]
rate = round(float(row.max_rate_req_s) * float(sys.argv[3]), 3)
# the report's own probe length where its CSV records it (reports from 2026-12-06 on), else REQUESTS / MIN_DURATION
req = int(row.probe_requests) if "probe_requests" in t and row.probe_requests == row.probe_requests else int(sys.argv[4])
dur = float(row.probe_min_duration_s) if "probe_min_duration_s" in t and row.probe_min_duration_s == row.probe_min_duration_s \
    else float(sys.argv[5])
print(rate, max(req, math.ceil(rate * dur)))
PY
)
  d="$W/b${b}_r${rate}_s${seed}"
  [ -f "$d/requests.csv" ] && continue
  left=$(( ${CHECK_TIMEOUT:-560} - $(date +%s) + T0 ))
  [ "$left" -lt 30 ] && { echo "stage time used up; re-run to resume" | tee -a "$W/stages.txt"; break 3; }
  echo "== $(date +%T) block $b rate $rate seed $seed: $n requests" | tee -a "$W/stages.txt"
  timeout "$left" python3 -m kvsim.cli engine "$SCENARIO" $SETS --set engine.block_size="$b" \
    --set workload.rate_req_s="$rate" --set workload.num_requests="$n" --set workload.duration_s=null \
    --set seed="$seed" --out "$d" 2>&1 | tail -3
done; done; done
python3 -m kvsim.report.engine_check "$W" "$REPORT/block_size.csv" --slo "$SLO" ${PROFILE:+--profile "$PROFILE"} \
  | tee "$W/check.txt"
tar czf "$OUT/blocksize_check.tgz" -C "$OUT/work" blocksize
