#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (see benchmarks/README.md, "On a GPU"):
# the CUDA tests, the batched-vs-loop target, paper scale's per-image cost, and one chapter at
# paper-scale cost with random weights. Each step has its own time limit, so that a slow one
# leaves the others their turn; one log, a step summary and the JSON results go to $OUT (default benchmarks/results/gpu).
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU and this repo's requirements
# A missing pure-Python package (captum on a bare image) can be put in .whl/ as a wheel.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, report the time
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  echo "=== $name: $*" >> "$OUT/log.txt"
  timeout "$limit" "$@" > "$OUT/$name.tmp" 2>&1
  local rc=$?
  cat "$OUT/$name.tmp" >> "$OUT/log.txt"; tail -n 25 "$OUT/$name.tmp"; rm -f "$OUT/$name.tmp"
  echo "$name: exit $rc in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/steps.txt"
$PY -c "import torch, torchvision, captum; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'captum', captum.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/steps.txt"
step cuda_tests 120 $PY -m pytest -q -p no:cacheprovider -k cuda tests/test_decoys.py tests/test_enhanced.py tests/test_metrics.py
step target3 120 $PY benchmarks/run.py --device cuda --only 3 --out "$OUT"
step paper_cost 120 $PY benchmarks/paper_cost.py --device cuda --out "$OUT/paper_cost_cuda.json"
step chapter_cost 180 $PY benchmarks/chapter_cost.py --device cuda --images ${CHAPTER_IMAGES:-8} --out "$OUT/chapter_cost_cuda.json"
cat "$OUT/steps.txt"
