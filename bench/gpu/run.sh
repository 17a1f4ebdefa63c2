#!/usr/bin/env bash
# One script for the GPU host: builds the CUDA addon and tools, checks correctness, times.
#   bash bench/gpu/run.sh [steps...]     steps: build check fixture kjv bench node extras peer check8b (default: all)
#   quick variants: bench-quick, peer-quick; on request only: kbench (bench/kernels: the candidate
#   kernels' checks and timings against the shipped ones; KBENCH names them, default
#   prefill-attention-wgmma; e.g. KBENCH="prefill-attention-wgmma gemm-swiglu-wgmma")
# Before (on a CPU machine, in the project root): bash bench/gpu/pack.sh  (writes .gpu/, ignored)
# With the device tool: run(command="bash bench/gpu/run.sh", carry=[".gpu"]). Results go to $OUT
# (or /tmp/ms-out): build.log, kernels-check.txt, fixture.txt, engine-bench.{txt,json}, choices.txt,
# node-decode.json, extras-decode.json, peer.{txt,json}; the last lines printed are a summary table.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
mkdir -p "$OUT"
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(build check fixture kjv bench node extras peer check8b)
has() { local s; for s in "${steps[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
stage() { echo "== $* ($(date -u +%T))"; }
summary=()

# Node.js and the few node_modules the tests need (the host has neither).
mkdir -p /tmp/nodebin
if [[ -f .gpu/node.xz && ! -x /tmp/nodebin/node ]]; then xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; fi
export PATH=/tmp/nodebin:$PATH
mkdir -p node_modules
for t in prod_modules node_modules; do [[ -f .gpu/$t.tar.xz ]] && tar -C node_modules -xJf .gpu/$t.tar.xz; done
export NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv,noheader
echo "node $(node --version 2>/dev/null || echo missing), nvcc $(nvcc --version | grep -o 'release [0-9.]*'), cmake $(cmake --version | head -1)"

BUILD=native/build
if has build; then
  stage build
  t0=$(date +%s)
  cmake -S native -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/$BUILD/Release" > "$OUT/build.log" 2>&1 &&
    cmake --build $BUILD -j 16 --target microserve_native microserve_kernels_check microserve_engine_bench >> "$OUT/build.log" 2>&1
  rc=$?
  grep -E "microserve:|error|warning" "$OUT/build.log" | head -40
  summary+=("build: rc=$rc in $(( $(date +%s) - t0 )) s")
  [[ $rc -ne 0 ]] && { tail -40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
fi

if has check; then
  stage kernel checks
  timeout 300 $BUILD/microserve_kernels_check 2>&1 | tee "$OUT/kernels-check.txt"
  summary+=("kernels: $(tail -1 "$OUT/kernels-check.txt")")
fi

if has kbench; then
  stage kernel benches
  for k in ${KBENCH:-prefill-attention-wgmma}; do  # each built alone: one that fails to build stops only itself
    cmake --build $BUILD -j 16 --target $k >> "$OUT/build.log" 2>&1 || tail -20 "$OUT/build.log"
    timeout 300 $BUILD/$k 2>&1 | tee "$OUT/kbench-$k.txt"
    summary+=("kernel bench $k: $(tail -1 "$OUT/kbench-$k.txt")")
  done
fi

if has fixture; then
  stage fixture test
  timeout 300 node --import tsx test/cuda/fixture.test.ts 2>&1 | tee "$OUT/fixture.txt"
  summary+=("fixture test: $(grep -E 'Passed|Total|FAIL' "$OUT/fixture.txt" | tr -s ' \n' ' ')")
  for t in sampling sampling-extras; do  # the sampler, and the extras (issue 18) against the reference
    timeout 300 node --import tsx test/cuda/$t.test.ts 2>&1 | tee "$OUT/$t.txt"
    summary+=("$t test: $(grep -E 'Passed|Total|FAIL' "$OUT/$t.txt" | tr -s ' \n' ' ')")
  done
fi

if has kjv; then
  stage kjv-chat on CUDA against the CPU backend
  # it serves through `up`: the production modules (bash bench/gpu/pack-serve.sh) besides pack.sh's
  timeout 300 node --import tsx test/cuda/kjv-chat.test.ts 2>&1 | tee "$OUT/kjv-chat.txt"
  summary+=("kjv-chat test: $(grep -E 'Passed|Total|FAIL' "$OUT/kjv-chat.txt" | tr -s ' \n' ' ')")
fi

if has bench || has bench-quick; then
  stage engine bench
  q=""; has bench-quick && ! has bench && q="--quick"
  # choices.txt: the start-time choices, for CHOICES=$OUT/choices.txt bash bench/gpu/profile.sh
  timeout 420 $BUILD/microserve_engine_bench $q --json "$OUT/engine-bench.json" --choices-out "$OUT/choices.txt" 2>&1 |
    tee "$OUT/engine-bench.txt"
  summary+=("$(sed -n '/== engine bench summary/,$p' "$OUT/engine-bench.txt")")
fi

if has node; then
  stage node decode
  timeout 240 node --import tsx bench/gpu/node-decode.ts cuda:0 2>&1 | tee "$OUT/node-decode.json"
  summary+=("node path: $(tail -1 "$OUT/node-decode.json")")
fi

if has extras; then  # issue 18: penalties & co. at batch 64 must cost <= 5% of decode
  stage sampling extras decode cost
  timeout 300 node --import tsx bench/gpu/extras-decode.ts cuda:0 2>&1 | tee "$OUT/extras-decode.json"
  summary+=("extras cost: $(tail -1 "$OUT/extras-decode.json")")
fi

if has peer || has peer-quick; then
  stage transformers peer
  q=""; has peer-quick && ! has peer && q="--quick"
  PYTHONUNBUFFERED=1 timeout 420 python3 bench/gpu/peer-transformers.py $q --json "$OUT/peer.json" 2>&1 | grep -v Warning | tee "$OUT/peer.txt"
  summary+=("$(grep -E '^(roofline|hf )' "$OUT/peer.txt")")
fi

if has check8b; then
  stage 8B-shaped checkpoint against transformers float32
  # the recipe's std (0.08), then a smaller one (MS_CHECK8B_STDS) where bf16 rounding flips fewer winners
  for sd in ${MS_CHECK8B_STDS:-0.08}; do
    rm -rf /tmp/llama8b && PYTHONUNBUFFERED=1 timeout 300 python3 bench/gpu/make-llama8b-reference.py /tmp/llama8b 256 $sd 2>&1 | grep -v Warning
    timeout 240 node --import tsx bench/gpu/llama8b-check.ts /tmp/llama8b cuda:0 2>&1 | tee "$OUT/llama8b-check-$sd.json"
    summary+=("8B-shaped check (std $sd): $(tail -1 "$OUT/llama8b-check-$sd.json")")
  done
fi

echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
