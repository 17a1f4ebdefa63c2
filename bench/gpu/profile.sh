#!/usr/bin/env bash
# Per-kernel profile of the decode step and of prefill on the GPU host (Nsight Compute):
#   bash bench/gpu/profile.sh          (after bench/gpu/run.sh build; PROFILE_BATCHES, PROFILE_PROMPTS)
# One eager decode step per batch (1k-token context) and one prefill per prompt length run between
# cudaProfilerStart/Stop (microserve_engine_bench --profile); ncu times each kernel alone and reads
# its DRAM bytes. One replay pass per kernel: only gpu__time_duration, dram__bytes_read and
# dram__bytes_write (one counter pass on sm_90; every further metric group is another pass, and a
# pass after the first restores the device memory the kernel may write, ~25 GB here), caches not
# flushed (--cache-control none: the numbers are the kernel in its step), clocks left alone. The
# engine bench allocates KV pages for the largest batch only, so profile few batches (default: 64;
# prefill 4096). the bench's output goes to $OUT/profile-run.txt.
# CHOICES=FILE (from a normal run's `microserve_engine_bench --choices-out FILE`): the profiled run
# applies those start-time choices (skinny or cuBLASLt, cuBLASLt's candidates, decode attention
# plans) after its own tuning; without it, it keeps what it tuned under ncu, whose serialised
# launches time candidates differently (2026-12-03: other products at b=8, another attention plan
# at b=64 than the normal run's).
# bench/gpu/ncu-table.py groups the kernels of each step by name. Writes $OUT/ncu.csv, profile.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
mkdir -p "$OUT"
B=${PROFILE_BATCHES:-64}
P=${PROFILE_PROMPTS:-4096}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[[ -z "$NCU" ]] && { echo "ncu not found"; exit 1; }
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum
t0=$(date +%s)
timeout ${PROFILE_TIMEOUT:-300} "$NCU" --profile-from-start off --clock-control none --cache-control none \
  --replay-mode kernel --metrics "$metrics" \
  --csv --page raw --log-file "$OUT/ncu.csv" \
  native/build/microserve_engine_bench --profile --batches "$B" --prompts "$P" ${CHOICES:+--choices "$CHOICES"} \
  > "$OUT/profile-run.txt" 2>&1
echo "ncu rc=$? in $(( $(date +%s) - t0 )) s; $(grep -c . "$OUT/ncu.csv") csv lines"
grep -E "profiled|choices|error|ERROR" "$OUT/profile-run.txt" | head -20
# ncu prints "N passes" per kernel (into its log file): more than 1 means the metric list grew past one pass.
echo "replay passes per kernel (count of kernels): $(cat "$OUT/ncu.csv" "$OUT/profile-run.txt" | grep -oE "[0-9]+ pass(es)?" | sort | uniq -c | tr -s ' \n' ' ')"
python3 bench/gpu/ncu-table.py "$OUT/ncu.csv" --batches "$B" --prompts "$P" ${ENGINE_JSON:+--engine-json "$ENGINE_JSON"} > "$OUT/profile.md"
cat "$OUT/profile.md"
