#!/usr/bin/env bash
# One device call on the H200 for issue #10, in stages chosen by environment variables (each stage is
# packed into $OUT/h200.tgz as soon as it ends, so a call cut short keeps what finished):
#   TESTS=1       GPU tests of the fused layer kernels, the unified attention kernel and the engine (TESTFILES=...)
#   TILES="llama-3-8b opt-13b"  benchmarks/engine/prefill_tiles.py: the prefill attention kernel alone at every launch x
#                 diag_split (TILES_ARGS, e.g. "--stages 2"); unless BENCH_ARGS is given, BENCH then times today's
#                 engine against the first model's --pick (a candidate's chunked-prefill throughput: THROUGHPUT_BEFORE
#                 on a kvsim/ copy whose kernels/prefill.py LAUNCH / DIAG_SPLIT are the pick)
#   BENCH=1       engine steps (mixed, prefill, decode) vs roofline, a mixed step's decode rows in the prefill
#                 kernel and by the decode kernel (BENCH_ARGS="--settings ..." / --persistent-prefill)
#   SWAP=1        benchmarks/engine/swap_steps.py on opt-13b: the profile's isolated swap timing vs what a swap
#                 (out, in; scattered blocks and contiguous runs) adds to a graph-replayed decode step
#                 (SWAP_ARGS="--blocks 1,4,16,64 --rows 8,32 --ctx 512 --reps 10 --block-size 16"); once per swap path:
#                 SWAP_PATHS (default "per_layer staged": runtime.swap_staged off, on)
#   SWEEP=1       benchmarks/engine/chunk_sweep.py --measure: mixed steps every 32 chunk tokens at a few row counts
#                 (the calibration's timer, idle gaps and graphs) and every prefill size (SWEEP_ARGS="--model llama-3-8b
#                 --rows 1,8,32 --ctx 1024"); analysed on the CPU against a profile calibrated in the same lease;
#                 SWEEP_NOROUTE=1 measures it again with every graph size replayed (chunk_sweep_noroute.json)
#   OVERLAP=1     benchmarks/engine/overlap_probe.py: a layer's GEMMs and a paged decode attention, one stream vs
#                 two (OVERLAP_ARGS="--shapes ... --layers N")
#   LMHEAD="llama-3-8b opt-13b"  benchmarks/engine/lm_head_rows.py (LMHEAD_ARGS): the LM head timed by rows, at
#                 each row count and padded to the decode graph's batch size (the runner's padding since 2026-12-07)
#   ODDROWS="llama-3-8b"  benchmarks/engine/odd_rows.py: whole decode steps at every row count 1-17 (graphs of the
#                 engine's ladder, padded LM head) at 64 and 256 tokens a row: is a 3-row step dearer than a 4-row one?
#   STEPREPLAY="opt-13b:validation/H100-async-opt-1207d"   benchmarks/engine/step_replay.py: a set's engine decode
#                 steps at their exact contexts, timed the grid's way (STEPREPLAY_ARGS="--rows 8,9,12,16,17,20,24
#                 --per-row 4 --runs <the profile's kept serving runs> --profile P.json" adds the calibration's steps
#                 and the priced table; STEPREPLAY_TIMEOUT, default 240 s)
#   KERNELS=1     where a mixed and a decode step's GPU time goes, kernel by kernel (torch.profiler), eager and
#                 replayed from the graphs (span, idle time between kernels)
#   THROUGHPUT=1  chunked-prefill offline throughput on the same 200 requests: decode rows in the prefill kernel,
#                 by the decode kernel, and the prefill-first scheduler (THROUGHPUT_SETS overrides the list);
#                 THROUGHPUT_BEFORE=DIR also runs a copy of an older kvsim/ package (git archive REV kvsim | tar -x -C DIR)
#   CALIB="llama-3-8b:16 opt-13b:32,64"   profiles, merged into $PDIR/<model><CALIB_SUFFIX>.json when that
#                 exists (CALIB_REPLACE=1 replaces it, unless it was measured on another physical card: then the new
#                 one is <model><CALIB_SUFFIX>-<its GPU UUID's first 8>.json; $PDIR is calibrate/profiles/<card>/, H200 or H100) and used by the stages after; CALIB_TIMEOUT (s, default 540);
#                 the serving fit's engine runs are kept beside each profile (<profile>.serving/n<N>/);
#                 CALIB_ARGS="--no-cuda-graphs" for an eager profile (window models run without graphs), "--no-async-scheduling"
#                 for a stepped one (the engine overlaps by default since 2026-12-06), "--split-kv" for one whose
#                 mixed steps cut few long decode rows (runtime.mixed_decode_split: results_H100/split_1207g); #18's blocks profile:
#                 CALIB="opt-13b:1,2,4,8,16,32,64,128,256" CALIB_SUFFIX=-blocks CALIB_ARGS="--fast --serving-block-sizes 1,16,128"
#   RESUME="opt-13b"  kvsim calibrate --resume calibrate/profiles/H200/<model>.json: its serving fit and prefill
#                 overhead fits again, whole, on the card of its grids (a CALIB call cut short, then this call);
#                 RESUME_ARGS="--swap-per-layer" for a profile measured before staged swaps
#   SCEN="scenarios/validation/v2[1-2]*.yaml" `kvsim validate` of each scenario against $PDIR/*.json
#                 (SCEN_PROFILES="a.json b.json" instead: the first one of the scenario's model and block size is used)
#   ENGINE="S1 S2" `kvsim engine` of each scenario alone (today's engine defaults, no profile needed), written where
#                 `kvsim validate` puts its engine runs ($W/validation/<name>/<name>/engine), for a later
#                 `kvsim validate --replay` against a profile from the same card (the runs record its UUID);
#                 ENGINE_REPEATS=N runs each N times (engine/, engine_r2/, ...: the replay's --repeats layout;
#                 ENGINE_FIRST=2 starts at engine_r2/, adding repeats to runs made in an earlier call; alone, it runs
#                 engine_r2/ only);
#                 ENGINE_SETS="--set runtime.async_scheduling=false" for every run (the mode of the profile it is for: a stepped one);
#                 ENGINE_ONE=1 runs them all in one process, the model loaded once (benchmarks/engine/scenario_runs.py;
#                 ENGINE_TIME=540 s for the stage, no run starts with under ENGINE_MIN_LEFT=80 s left; one clocks file);
#                 with it, ENGINE_ALSO="S1 S2" runs those through separate `kvsim engine` processes after, as run number
#                 ENGINE_ALSO_RUN (default 2: engine_r2/), to compare the two ways on one card in one call
#   GAP="S1 S2"  benchmarks/engine/decode_gap.py on each scenario (decode steps re-timed in isolation;
#                 GAP_SAMPLES, GAP_TIMEOUT), priced with calibrate/profiles/H200/<its model>.json
#   PGAP="S1 S2" benchmarks/engine/prefill_gap.py the same way for prefill-only steps (own vs equal prompts)
#   WATCH="S1 S2" benchmarks/engine/compile_watch.py: kernels compiled and memory segments taken while serving
#   OVERHEAD_PARTS="opt-13b" benchmarks/engine/overhead_parts_check.py: the step-overhead fit's runs through fresh
#                 engines vs kept engine parts, alternating, priced by calibrate/profiles/H200/<model>.json
#   LONE_PREFILL="llama-3-8b" benchmarks/engine/lone_prefill_probe.py: a closed loop's joiner prefills vs prompts
#                 arriving into a busy engine vs the loop through kept parts, alternating (LONE_PREFILL_ROWS, default 16)
#   ASYNC="S1 S2" benchmarks/engine/async_overlap.py: the engine stepped vs overlapped (runtime.async_scheduling),
#                 alternating on one card (ASYNC_REPEATS, default 2; ASYNC_TIMEOUT, default 300)
# usage (repo root, GPU machine, $OUT set; the simpy wheel in .whl/):
#   TESTS=1 BENCH=1 CALIB="llama-3-8b:16" SCEN="..." bash benchmarks/engine/gpu_h200.sh
# back here, a lease's calls (each one's $OUT/h200.tgz, in order) become a set and a results folder with
#   python benchmarks/engine/import_calls.py CALL1.tgz CALL2.tgz ... --set validation/<set> --results <folder>
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | tail -2
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
python3 -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W/profiles" "$W/runs" "$W/validation"
pack() { tar czf "$OUT/h200.tgz" -C "$W" .; }
clocks() {   # clocks FILE: SM/memory clocks, power and temperature every 250 ms until `kill $SMI` (same card,
  # different runs moved a 10 ms prefill step by ~1 ms on 2026-12-04: is it the clocks? calib_2027's README;
  # benchmarks/engine/clock_steps.py RUN_DIR FILE lines the steps up with it on the CPU)
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader,nounits \
    -lms 250 > "$1" 2>/dev/null & SMI=$!
}
whole() {   # whole FILE: the profile is not marked meta.partial (its calibration ran to the end)
  python3 -c "import json,sys; sys.exit(bool(json.load(open(sys.argv[1]))['meta'].get('partial')))" "$1"
}
stamp() { echo "== $(date +%T) $*" | tee -a "$W/stages.txt"; }
same_card() {   # same_card A B: both profiles' reference steps name one GPU (kvsim.calibrate.merge.card_uuids)
  python3 -c "import json,sys; from kvsim.calibrate.merge import card_uuids as u
a, b = (u(json.load(open(x))) for x in sys.argv[1:]); sys.exit(not (a and b and a == b))" "$1" "$2"
}
card_tag() {    # card_tag P: the first 8 characters of the profile's GPU UUID (after "GPU-")
  python3 -c "import json,sys; from kvsim.calibrate.merge import card_uuids as u
print((sorted(u(json.load(open(sys.argv[1])))) or ['card'])[0].replace('GPU-', '')[:8])" "$1"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.draw,temperature.gpu \
  --format=csv | tee "$W/gpu.txt"
(echo "host $(hostname) cpus $(nproc)"; lscpu | grep -m1 "Model name"; nvidia-smi --query-gpu=serial,pci.bus_id,power.limit \
  --format=csv,noheader) | tee -a "$W/gpu.txt"   # which machine: two lent H200s can differ by 5% (decode_gap)
# profiles of the card this call runs on: calibrate/profiles/H200/ on an H200, calibrate/profiles/H100/ on an H100
# (a call asked as nvidia-h200 may be served by an H100: never price one card's runs with another's profile)
CARD=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | grep -o 'H[0-9]00' | head -1)
PDIR=calibrate/profiles/${CARD:-H200}; mkdir -p "$PDIR"; echo "card ${CARD:-?}: profiles in $PDIR" | tee -a "$W/gpu.txt"
if [ -n "${TESTS:-}" ]; then
  stamp tests
  timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider ${TESTFILES:-tests/test_kernels_layer.py \
    tests/test_engine_graphs.py tests/test_engine.py tests/test_engine_models.py tests/test_kernels.py} 2>&1 | tail -6 | tee "$W/gpu_tests.txt"
  pack
fi
if [ -n "${TILES:-}" ]; then
  for m in $TILES; do
    stamp "prefill tiles $m"
    timeout 240 python3 benchmarks/engine/prefill_tiles.py --model "$m" --out "$W/tiles_$m" ${TILES_ARGS:-} 2>&1 \
      | grep -v -i warn > "$W/prefill_tiles_$m.txt"
    pack
  done
  PICK=$(python3 benchmarks/engine/prefill_tiles.py --pick "$W/tiles_${TILES%% *}/prefill_tiles.json" 2>> "$W/pick.txt")
  echo "pick $PICK" | tee -a "$W/pick.txt"
  [ -n "$PICK" ] && BENCH_ARGS=${BENCH_ARGS:-"--settings fused+decodekernel,fused+decodekernel+$PICK"}
fi
if [ -n "${BENCH:-}" ]; then
  stamp bench
  timeout 300 python3 benchmarks/engine/mixed_steps.py --model llama-3-8b --out "$W" ${BENCH_ARGS:-} 2>&1 | grep -v Warning \
    | grep -v '^{' | tail -60 | tee "$W/mixed_steps.txt"
  pack
fi
if [ -n "${SWAP:-}" ]; then        # swap steps priced 13-16% high (docs/calibration.md "Decode steps with copies or swaps")
  for path in ${SWAP_PATHS:-per_layer staged}; do   # staged: runtime.swap_staged (kvsim/engine/swap_staged.py)
    stamp "swap ($path)"; flag=""; [ "$path" = staged ] && flag="--staged"
    timeout 240 python3 benchmarks/engine/swap_steps.py --model opt-13b --out "$W/swap_$path" $flag ${SWAP_ARGS:-} \
      2>&1 | grep -v Warning | grep -v '^{' | tail -40 | tee "$W/swap_steps_$path.txt"
    pack
  done
fi
if [ -n "${SWEEP:-}" ]; then       # how a mixed step grows between the mixed grid's chunks (chunk_sweep.py's doc)
  for extra in "" ${SWEEP_NOROUTE:+--no-route}; do    # SWEEP_NOROUTE=1: also with every graph size replayed
    stamp "chunk sweep $extra"
    timeout 300 python3 benchmarks/engine/chunk_sweep.py --measure --out "$W/chunk_sweep" ${SWEEP_ARGS:---model llama-3-8b} \
      $extra 2>&1 | grep -v Warning | tail -4
    pack
  done
fi
if [ -n "${OVERLAP:-}" ]; then     # can a mixed step's attention run under its GEMMs (two streams)? a probe
  stamp overlap
  timeout 180 python3 benchmarks/engine/overlap_probe.py --model llama-3-8b --out "$W/overlap" ${OVERLAP_ARGS:-} 2>&1 \
    | grep -v Warning | tail -12 | tee "$W/overlap_probe.txt"
  pack
fi
probe() {   # probe LABEL SCRIPT NAME FOLDER LIMIT LINES ARGS...: a probe script's stage, its output in $W/FOLDER/NAME/
  # and its printed table in $W/SCRIPT_NAME.txt (where import_calls.py's PROBES look)
  local label=$1 script=$2 name=$3 folder=$4 limit=$5 lines=$6; shift 6
  stamp "$label"
  timeout "$limit" python3 "benchmarks/engine/$script.py" --out "$W/$folder/$name" "$@" 2>&1 | grep -v Warning \
    | tail -"$lines" | tee "$W/${script}_$name.txt"
  pack
}
for m in ${LMHEAD:-}; do           # does an LM head between graph batch sizes cost more? (kvsim.engine.runner._logits)
  probe "lm head rows $m" lm_head_rows "$m" lm_head 120 40 --model "$m" ${LMHEAD_ARGS:-}
done
for m in ${ODDROWS:-}; do          # a step between graph sizes vs the graph size's own (odd_rows.py's doc)
  probe "odd rows $m" odd_rows "$m" odd_rows 180 24 --model "$m" ${ODDROWS_ARGS:-}
done
for mset in ${STEPREPLAY:-}; do    # engine decode steps replayed the grid's way (step_replay.py's doc): model:set
  m=${mset%%:*}; set_dir=${mset#*:}
  probe "step replay $m $set_dir" step_replay "$m" step_replay "${STEPREPLAY_TIMEOUT:-240}" 40 --model "$m" \
    --set "$set_dir" ${STEPREPLAY_ARGS:-}
done
if [ -n "${KERNELS:-}" ]; then
  stamp kernels
  timeout 180 python3 benchmarks/engine/step_kernels.py --model llama-3-8b --out "$W" 2>&1 | grep -v Warning \
    | tail -40 | tee "$W/step_kernels.txt"
  timeout 240 python3 benchmarks/engine/step_kernels.py --model llama-3-8b --out "$W" --graphs ${KERNEL_GRAPHS:-unified+v1,decodekernel} \
    2>&1 | grep -v Warning | tail -70 | tee "$W/step_kernels_graphs.txt"
  pack
fi
if [ -n "${THROUGHPUT:-}" ]; then
  S=scenarios/validation/v15_llama3_8b_chunked512.yaml
  OFF="--set workload.arrival=burst --set workload.num_requests=200 --set runtime.max_wall_s=120 --set max_time_s=120"
  if [ -n "${THROUGHPUT_BEFORE:-}" ]; then   # a checkout of the engine before the change (its kvsim/ only)
    stamp "throughput before ($THROUGHPUT_BEFORE)"
    # -P: `python -m` would put the working directory (this checkout's kvsim/) ahead of PYTHONPATH, and the
    # "before" engine would be today's (so it was until 2026-12-05: results_H100/split_1127's README)
    PYTHONPATH=$THROUGHPUT_BEFORE:/tmp/site python3 -P -c "import kvsim; print('before engine from', kvsim.__file__)"
    PYTHONPATH=$THROUGHPUT_BEFORE:/tmp/site timeout 150 python3 -P -m kvsim.cli engine $S $OFF \
      --out "$W/runs/chunked512_before" 2>&1 | grep -i "throughput\|finished\|latency\|per iteration" | tail -6
  fi
  for set in ${THROUGHPUT_SETS:-runtime.mixed_decode_kernel=false runtime.mixed_decode_kernel=true \
      engine.scheduler=vllm,engine.max_num_batched_tokens=4096}; do
    stamp "throughput $set"
    timeout 150 python3 -m kvsim.cli engine $S $OFF --set ${set//,/ --set } --out "$W/runs/chunked512_${set//[=,.]/_}" \
      --outputs json,csv 2>&1 | grep -i "throughput\|finished\|latency\|per iteration" | tail -6 \
      | tee "$W/runs/chunked512_${set//[=,.]/_}.txt"
    pack                        # each run as it ends: a call cut short keeps the runs it finished (lost 2026-12-06)
  done
fi
for spec in ${CALIB:-}; do  # a model already profiled here gains the new block sizes (kvsim merge-profiles;
  # refused, and the committed profile left as it is, when that profile was measured on another physical card)
  m=${spec%%:*}; b=${spec#*:}; f="$W/profiles/$m-b${b//,/-}.json"; dest=$PDIR/$m${CALIB_SUFFIX:-}.json
  stamp "calibrate $m $b"
  clocks "${f%.json}.clocks.csv"
  runs="--serving-runs ${f%.json}.serving"   # (--fast: none, unless with --serving-block-sizes)
  case " ${CALIB_ARGS:-} " in *" --serving-block-sizes "*) ;; *" --fast "*) runs="";; esac
  timeout "${CALIB_TIMEOUT:-540}" python3 -m kvsim.cli calibrate --model "$m" --block-sizes "$b" --out "$f" ${CALIB_ARGS:-} \
    $runs --time-limit $(( ${CALIB_TIMEOUT:-540} - 20 )) 2>&1 \
    | grep -v Warning > "${f%.json}.log"; tail -2 "${f%.json}.log"; kill $SMI 2>/dev/null
  if [ -s "$f" ] && ! whole "$f"; then
    echo "partial profile (calibration stopped early): kept in $f only"   # never replaces a whole one
  elif [ -s "$f" ] && [ -s "$dest" ] && [ -z "${CALIB_REPLACE:-}" ]; then
    python3 -m kvsim.cli merge-profiles "$dest" "$f" --out "$W/profiles/$m.json" && cp "$W/profiles/$m.json" "$dest"
  elif [ -s "$f" ]; then
    # CALIB_REPLACE never overwrites a profile of another physical card (committed runs are replayed with it:
    # validation/H100-async's with H100/llama-3-8b-async.json); the new one goes beside it, named by its card
    if [ -s "$dest" ] && ! same_card "$dest" "$f"; then
      dest=${dest%.json}-$(card_tag "$f").json; echo "$PDIR holds this name from another card: kept as $dest"
    fi
    cp "$f" "$dest"; cp "$f" "$W/profiles/$m.json"; fi
  pack
done
for m in ${RESUME:-}; do    # the serving fit and prefill overhead fits of calibrate/profiles/H200/<m>.json again,
  # whole (kvsim calibrate --resume: same card as its grids, else refused); replaces it when complete
  f=$PDIR/$m.json; o="$W/profiles/$m-resumed.json"
  stamp "resume $m"
  timeout "${CALIB_TIMEOUT:-540}" python3 -m kvsim.cli calibrate --resume "$f" --out "$o" ${RESUME_ARGS:-} \
    --serving-runs "${o%.json}.serving" --time-limit $(( ${CALIB_TIMEOUT:-540} - 20 )) 2>&1 \
    | grep -v Warning > "${o%.json}.log"; tail -2 "${o%.json}.log"
  if [ -s "$o" ] && whole "$o"; then
    cp "$o" "$f"; cp "$o" "$W/profiles/$m.json"
  fi
  pack
done
PROFS=""; for f in ${SCEN_PROFILES:-$PDIR/*.json}; do PROFS="$PROFS --profile $f"; done
for s in ${SCEN:-}; do      # one scenario per validate call: a slow or failing one leaves the others' results
  n=$(basename "$s" .yaml); stamp "validate $n"
  timeout 150 python3 -m kvsim.cli validate "$s" $PROFS --out "$W/validation/$n" 2>&1 | grep -v Warning | tail -3
  pack
done
if [ -n "${ENGINE_ONE:-}" ] && [ -n "${ENGINE:-}" ]; then   # every ENGINE run in one process, the model loaded once
  stamp "engine runs in one process (benchmarks/engine/scenario_runs.py)"; mkdir -p "$W/clocks"
  clocks "$W/clocks/engine_one_process.csv"
  python3 benchmarks/engine/scenario_runs.py $ENGINE --out "$W/validation" --first "${ENGINE_FIRST:-1}" \
    --repeats "${ENGINE_REPEATS:-1}" ${ENGINE_SETS:-} --time-limit "${ENGINE_TIME:-540}" --min-left "${ENGINE_MIN_LEFT:-80}" \
    2>&1 | grep -v Warning | tail -40 | tee "$W/engine_one_process.txt"; kill $SMI 2>/dev/null
  pack; ENGINE="${ENGINE_ALSO:-}"     # ENGINE_ALSO: these again through separate `kvsim engine` processes (below)
fi
# ENGINE_FIRST=2 alone runs the second run (engine_r2/): the last run is at least the first (with ENGINE_REPEATS=1
# the loop was empty and a call spent its time on nothing: 2026-12-07, results_H100/async_opt_1207 at bfecda7)
LAST=${ENGINE_REPEATS:-1}; [ "$LAST" -lt "${ENGINE_FIRST:-1}" ] && LAST=${ENGINE_FIRST:-1}
if [ -n "${ENGINE_ONE:-}" ]; then ENGINE_FIRST=${ENGINE_ALSO_RUN:-2}; LAST=$ENGINE_FIRST; fi
for s in ${ENGINE:-}; do    # engine runs only: replayed later against a profile of the same card
  n=$(basename "$s" .yaml)
  for r in $(seq "${ENGINE_FIRST:-1}" "$LAST"); do   # repeats land where kvsim validate --replay reads them
    d=engine; [ "$r" -gt 1 ] && d=engine_r$r
    stamp "engine $n ($d)"; mkdir -p "$W/clocks"; clocks "$W/clocks/${n}_$d.csv"
    timeout 150 python3 -m kvsim.cli engine "$s" ${ENGINE_SETS:-} --out "$W/validation/$n/$n/$d" 2>&1 | grep -v Warning \
      | grep -i "throughput\|latency\|wrote" | tail -3; kill $SMI 2>/dev/null
    pack
  done
done
gap() {   # gap KIND SCENARIOS: benchmarks/engine/KIND_gap.py on each, priced by its model's H200 profile
  for g in $2; do
    n=$(basename "$g" .yaml); m=$(python3 -c "import kvsim,sys; print(kvsim.load_scenario(sys.argv[1]).model)" "$g" 2>/dev/null | tail -1)
    stamp "$1 gap $n ($m)"
    timeout "${GAP_TIMEOUT:-240}" python3 "benchmarks/engine/$1_gap.py" "$g" --samples "${GAP_SAMPLES:-40}" \
      --out "$W/$1_gap/$n" --profile "$PDIR/$m.json" 2>&1 | grep -v Warning | tail -16
    pack
  done
}
gap decode "${GAP:-}"        # decode steps re-timed in isolation (exact, uniform, at max, orders, even spread)
gap prefill "${PGAP:-}"      # prefill-only steps re-timed in isolation (own prompts, equal prompts)
for g in ${WATCH:-}; do      # kernels compiled on the clock (none expected after warm-up)
  n=$(basename "$g" .yaml); stamp "compile watch $n"
  timeout 150 python3 benchmarks/engine/compile_watch.py "$g" --out "$W/compile_watch/$n" 2>&1 | grep -v Warning | tail -14
  pack
done
if [ -n "${OVERHEAD_PARTS:-}" ]; then   # do kept engine parts change what the fits measure? (calib_0413's README)
  stamp "overhead fit: fresh engines vs kept parts"
  timeout 300 python3 benchmarks/engine/overhead_parts_check.py --profile "$PDIR/$OVERHEAD_PARTS.json" \
    --out "$W/overhead_parts" 2>&1 | grep -v Warning | tail -12
  pack
fi
if [ -n "${LONE_PREFILL:-}" ]; then   # are the serving fit's joiner prefills slower? (lone_prefill_probe.py's doc)
  stamp "lone prefills: joiners vs arrivals"
  timeout 300 python3 benchmarks/engine/lone_prefill_probe.py --profile "$PDIR/$LONE_PREFILL.json" \
    --rows "${LONE_PREFILL_ROWS:-16}" --out "$W/lone_prefill" 2>&1 | grep -v Warning | tail -8
  pack
fi
if [ -n "${ASYNC:-}" ]; then
  stamp "async overlap"
  timeout "${ASYNC_TIMEOUT:-300}" python3 benchmarks/engine/async_overlap.py $ASYNC --repeats "${ASYNC_REPEATS:-2}" \
    --out "$W/async_overlap" 2>&1 | grep -v Warning | tail -30
  pack
fi
stamp done
pack
