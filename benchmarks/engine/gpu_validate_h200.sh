#!/usr/bin/env bash
# One device call for issue #10 on the H200: (optionally) measure a profile for MODEL at BLOCKS, then
# `kvsim validate` SCEN against PROFILES on this card, results tarred into $OUT/validate.tgz.
# usage (repo root, GPU machine, $OUT set):
#   [MODEL=llama-3-8b BLOCKS=16] SCEN="scenarios/validation/v2[1-3]*.yaml" bash benchmarks/engine/gpu_validate_h200.sh
set -u
export PYTHONPATH=$PWD
python -m pip install -q --no-deps --no-index .whl/*.whl 2>&1 | tail -2; python -c "import simpy" || exit 3
W=$OUT/work; mkdir -p "$W/profiles"
pack() { tar czf "$OUT/validate.tgz" -C "$W" .; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/gpu.txt"
P=calibrate/profiles/H200
if [ -n "${MODEL:-}" ]; then
  python -m kvsim.cli calibrate --model "$MODEL" --block-sizes "$BLOCKS" --out "$W/profiles/$MODEL.json" 2>&1 \
    | grep -v Warning | tail -4
  cp "$W/profiles/$MODEL.json" "$P/$MODEL.json"
  pack
fi
PROFS=""; for f in $P/*.json; do PROFS="$PROFS --profile $f"; done
for s in $SCEN; do     # one scenario per validate call, so a slow or failing one leaves the others' results
  python -m kvsim.cli validate "$s" $PROFS --out "$W/validation/$(basename "$s" .yaml)" 2>&1 | grep -v Warning | tail -3
  pack
done
