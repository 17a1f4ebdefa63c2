#!/usr/bin/env bash
# Per-kernel profile of the decode step and of prefill on the GPU host (Nsight Compute):
#   bash bench/gpu/profile.sh          (after bench/gpu/run.sh build; PROFILE_BATCHES, PROFILE_PROMPTS)
# One eager decode step per batch (1k-token context) and one prefill per prompt length run between
# cudaProfilerStart/Stop (microserve_engine_bench --profile); ncu times each kernel alone (caches
# flushed between kernels, clocks left alone) and reads its DRAM bytes and tensor-pipe activity.
# bench/gpu/ncu-table.py groups the kernels of each step by name. Writes $OUT/ncu.csv, profile.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
mkdir -p "$OUT"
B=${PROFILE_BATCHES:-1,8,64,128,256}
P=${PROFILE_PROMPTS:-4096,8192}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[[ -z "$NCU" ]] && { echo "ncu not found"; exit 1; }
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed
t0=$(date +%s)
timeout ${PROFILE_TIMEOUT:-400} "$NCU" --profile-from-start off --clock-control none --metrics "$metrics" \
  --csv --page raw --log-file "$OUT/ncu.csv" \
  native/build/microserve_engine_bench --profile --batches "$B" --prompts "$P" > "$OUT/profile-run.txt" 2>&1
echo "ncu rc=$? in $(( $(date +%s) - t0 )) s; $(grep -c . "$OUT/ncu.csv") csv lines"
grep -E "profiled|error|ERROR" "$OUT/profile-run.txt" | head -20
python3 bench/gpu/ncu-table.py "$OUT/ncu.csv" --batches "$B" --prompts "$P" ${ENGINE_JSON:+--engine-json "$ENGINE_JSON"} > "$OUT/profile.md"
cat "$OUT/profile.md"
