#!/bin/bash
# Instructions (cachegrind "I refs") of sim_modes.one(MODE, N) — set-up, simulation and summary — minus the same
# process stopping after its imports, for each checkout given. Load-independent, unlike wall or CPU time on a
# shared box (about 50x slower than a plain run: beam4 at 1,000 requests takes a few minutes per checkout).
#
# usage (from the repository root):
#   git archive <before-commit> | tar -x -C /tmp/before
#   bash benchmarks/sim/sim_modes_instructions.sh 1000 paged,n4,beam4 /tmp/before "$PWD"
# prints one line per checkout and mode: ROOT MODE INSTRUCTIONS
set -euo pipefail
N=$1; MODES=$2; shift 2
PY=$(python -c 'import sys; print(sys.executable)')     # the interpreter itself (valgrind does not follow shims)
IMP="import sys, json; sys.path.insert(0, 'benchmarks/sim'); import sim_modes; from kvsim.build import setup_run; \
from kvsim.config import load_scenario; from kvsim.sim import SimEngine; import kvsim.latency"
# address randomisation off and a fixed hash seed (dict and set layouts follow addresses and hashes): a helper
# found a checkout's count then repeats to ~3k instructions at 1,000 requests, where it varied 3-5% before. The
# import baseline itself (~2.0 G instructions) still moved by 3% between runs on 2026-12-05 (1.96-2.02 G), so
# use at least 1,000 requests (~1 G instructions of simulation at paged) and compare like with like
export PYTHONHASHSEED=0
# one BLAS thread: OpenBLAS's idle worker threads spin, and valgrind counts their spinning (the import baseline
# moved 1.960-2.000 G between runs of one checkout with them, within ~6k without them; 2026-12-06)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ir() { setarch "$(uname -m)" -R valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$@" 2>&1 \
       | grep "I *refs" | tr -d ',' | awk '{print $NF}'; }
for root in "$@"; do
  cd "$root"
  base=$(PYTHONPATH=$root ir "$PY" -c "$IMP")
  for m in ${MODES//,/ }; do
    full=$(PYTHONPATH=$root ir "$PY" -c "$IMP; sim_modes.one('$m', $N)")
    echo "$root $m $((full - base))"
  done
done
