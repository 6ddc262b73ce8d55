#!/usr/bin/env bash
# The device check: one GPU, no network, <= 8 minutes. Made ready here by bench/gpu_bundle.sh (.whl/ and
# .device_bundle/, both carried). On the device, from the repo root:
#   bash bench/gpu_check.sh                    # OUT (set by the device tool) gets gpu_check.md/.json and the log
#   SMOLLM2_DIR=/path/to/SmolLM2-135M-Instruct bash bench/gpu_check.sh   # adds the sentiment recipe's accuracy
# Dry run on a CPU machine (no install, tiny sizes, cpu-ddp.yaml for FSDP):
#   GPU_CHECK_CPU=1 GPU_CHECK_SCALE=10 PYTHON=/work/main/.venv/bin/python bash bench/gpu_check.sh
# (GPU_CHECK_SCALE multiplies every time limit: a 2-core CPU is slower.) Sum of the limits on the GPU: 455 s,
# plus 150 s for the sentiment section when SMOLLM2_DIR is given.
# Each section is independent and time-boxed; a failed or timed-out one never stops the others.
if [ -z "${GPU_CHECK_CPU:-}" ]; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; else export PYTHONPATH=$PWD; fi
set -u
PY=${PYTHON:-python3}
CPU=${GPU_CHECK_CPU:+--cpu}
OUT=${OUT:-bench/results/gpu_check}
WORK=${WORK:-/tmp/gpu_check}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PATH="$(dirname "$(command -v "$PY")"):/tmp/site/bin:$PATH"   # accelerate's launcher beside the python
mkdir -p "$OUT" "$WORK"
rm -f "$WORK/status.jsonl" "$WORK"/*.json
LOG="$OUT/gpu_check.log"
: > "$LOG"
section() {  # section NAME SECONDS: run `gpu_check.py NAME` under a time limit, record its exit and time
  local name=$1 limit=$(( $2 * ${GPU_CHECK_SCALE:-1} )) start rc
  start=$(date +%s)
  echo "=== $name (limit ${limit}s) $(date -u +%T)" | tee -a "$LOG"
  timeout --kill-after=15 "$limit" "$PY" bench/gpu_check.py "$name" --work "$WORK" $CPU >> "$LOG" 2>&1
  rc=$?
  echo "{\"section\": \"$name\", \"exit\": $rc, \"seconds\": $(( $(date +%s) - start ))}" >> "$WORK/status.jsonl"
  echo "=== $name: exit $rc in $(( $(date +%s) - start ))s" | tee -a "$LOG"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$LOG" 2>&1
section versions 45
section speed 180
section precision 60
section export 60
section fsdp 110
section sentiment 150   # skipped in seconds without SMOLLM2_DIR
"$PY" bench/gpu_check.py report --work "$WORK" --out "$OUT" | tee -a "$LOG"
cp "$WORK/speed.json" "$OUT/speed.json" 2>/dev/null
true
