#!/usr/bin/env bash
# Issue #18's engine check of `kvsim report block-size --profile`: the report's best block size and two others
# run end to end on kvsim's engine on the same workload at a few request rates (and seeds), then
# kvsim/report/engine_check.py computes the throughput at the SLO per block size and compares it with the
# report's prediction (order, error per block size, measured margin, noise) into engine_check.{csv,md}.
# Each run is one of the report's probes: at least the requests and seconds of Poisson arrivals block_size.csv
# records (else the report's defaults, 600 and 60 s; kvsim.report.engine_check.probe_runs). Shorter runs do not
# describe its SLO rates: 20 s runs (this script's first version, 2026-12-06) met the SLO at every rate up to 1.2x
# the predicted one while the simulator predicted each of those runs within 8% (benchmarks/blocksize/H100/README.md).
#   REPORT=benchmarks/blocksize/H200/alpaca   the committed report folder (block_size.csv)
#   SCENARIO=scenarios/paper/fig18b_block_size_alpaca.yaml
#   BLOCKS=16,32,64     default: the report's recommended block size (report.txt) and the block predicted
#                       worst on each side of it (block_size.csv), or the two worst on its one side
#   BRACKET=1 (default) each block size at its own predicted SLO rate, then a step of STEP=0.15 of that rate further
#                       on the side its SLO rate lies, until one run meets the SLO and one does not (MAX_ROUNDS=2
#                       steps at most; benchmarks/engine/blocksize_runs.py --bracket): two runs a block when the
#                       prediction is within 15%
#   FRACS=1.0,0.85,1.15 with BRACKET=0: rates run, as fractions of each block size's own predicted SLO rate (so each is
#                       bracketed when the prediction is within 15%), in this order (a call cut short has the middle ones)
#   SEEDS=0 (e.g. 0,1: the spread of per-seed rates is the noise)
#   SLO=normalized_latency_s=0.1   SETS="--set gpu=h200-141gb"   CHECK_TIMEOUT=560 (s, the whole stage)
#   MIN_LEFT=120 (s: no run starts with less of CHECK_TIMEOUT left; a 60-s probe of OPT-13B takes ~100 s)
#   PROFILE=calibrate/profiles/H200/opt-13b-blocks.json   the report's profile (default: the one report.txt names):
#                       the engine runs in the mode it was measured in, and each run is also simulated as it ran
#                       (engine_check_runs.csv)
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
PROFILE=${PROFILE:-$(grep -o "measured profile [^ ]*" "$REPORT/report.txt" 2>/dev/null | head -1 | cut -d" " -f3)}
echo "report $REPORT: best predicted rate $BEST_RATE req/s; blocks $BLOCKS; profile ${PROFILE:-none}" | tee -a "$W/stages.txt"
FRACS=${FRACS:-1.0,0.85,1.15}; SEEDS=${SEEDS:-0}
if [ "${BRACKET:-1}" = 1 ]; then   # each block at its predicted rate, then steps of STEP until its SLO rate is bracketed
  RUNS="--bracket $REPORT/block_size.csv --blocks $BLOCKS --seeds $SEEDS --slo $SLO --step ${STEP:-0.15} --max-rounds ${MAX_ROUNDS:-2}"
else                               # BRACKET=0: every block at each of FRACS, in order (B:RATE:REQUESTS:SEED)
  RUNS=$(python3 -c "import sys, pandas as pd; from kvsim.report.engine_check import probe_runs
print(' '.join('--run ' + r for r in probe_runs(pd.read_csv(sys.argv[1]), *(x.split(',') for x in sys.argv[2:]))))" \
    "$REPORT/block_size.csv" "$BLOCKS" "$FRACS" "$SEEDS")
fi
echo "== $(date +%T) runs: $RUNS" | tee -a "$W/stages.txt"     # one process serves them all on one loaded model
timeout "${CHECK_TIMEOUT:-560}" python3 benchmarks/engine/blocksize_runs.py "$SCENARIO" --out "$W" $RUNS \
  ${PROFILE:+--profile "$PROFILE"} $SETS --time-limit $(( ${CHECK_TIMEOUT:-560} - 10 )) --min-left "${MIN_LEFT:-120}" 2>&1 \
  | grep -v Warning | tee -a "$W/stages.txt"
python3 -m kvsim.report.engine_check "$W" "$REPORT/block_size.csv" --slo "$SLO" ${PROFILE:+--profile "$PROFILE"} \
  | tee "$W/check.txt"
tar czf "$OUT/blocksize_check.tgz" -C "$OUT/work" blocksize
