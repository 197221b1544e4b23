#!/bin/bash
# The README's speed tables, re-measured (issue #14): every mode at 10,000 requests, paged at 10,000 / 100,000 /
# 1,000,000 requests as whole `kvsim run` processes, kvsim against Vidur where Vidur is installed, then the
# README block regenerated from the CSVs (benchmarks/sim/speed_readme.py). One core; ~10 minutes on the dev box
# without Vidur (the 1,000,000-request run is most of it), plus a few minutes per Vidur run.
#
# usage (repository root):
#   bash benchmarks/sim/speed_devbox.sh                  # CORE=0 REPEAT=3 SIZES=10000,100000,1000000
#   VIDUR_PYTHON=/work/vidur-venv/bin/python VIDUR_ROOT=/work/vidur-src bash benchmarks/sim/speed_devbox.sh
set -euo pipefail
CORE=${CORE:-0}; REPEAT=${REPEAT:-3}; SIZES=${SIZES:-10000,100000,1000000}
D=benchmarks/sim
load() { cut -d' ' -f1-3 /proc/loadavg; }
before=$(load)
taskset -c "$CORE" python $D/sim_modes.py --sizes 10000 --repeat "$REPEAT" --out $D/sim_modes_devbox
python $D/sim_scale.py --sizes "$SIZES" --cpu "$CORE" --csv $D/sim_scale_devbox.csv
if [ -n "${VIDUR_PYTHON:-}" ] && [ -n "${VIDUR_ROOT:-}" ]; then
  python $D/vidur_pair.py --vidur-python "$VIDUR_PYTHON" --vidur-root "$VIDUR_ROOT" --repeat "$REPEAT" \
    --out $D/vidur_pair_devbox ${VIDUR_NATIVE_PYTHON:+--vidur-native-python "$VIDUR_NATIVE_PYTHON"}
fi
after=$(load)
python - "$CORE" "$before" "$after" > $D/speed_devbox.json <<'EOF'
import json, platform, subprocess, sys, time
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "kvsim"], capture_output=True, text=True).stdout
print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit + ("+" if dirty else ""),
                  "cpu": cpu, "core": int(sys.argv[1]), "python": platform.python_version(),
                  "load_before": sys.argv[2], "load_after": sys.argv[3]}, indent=1))
EOF
python $D/speed_readme.py --readme README.md
