#!/usr/bin/env bash
# KV transfer on the GPU host: build the CUDA addon (with NVSHMEM), then bench/gpu/transfer-bench.ts
# with the fixture model and the llama-3.1-8b preset, two engine processes on one GPU, over CUDA
# IPC and over NVSHMEM (nvshmem_ptr path and one-sided puts). MS_TRANSFER_RUNS picks runs.
# Before (CPU machine, project root): bash bench/gpu/pack-serve.sh && bash bench/gpu/pack.sh (.gpu/)
# With the device tool: run(command="bash bench/gpu/transfer.sh", carry=[".gpu"]).
# Results: $OUT/kv-transfer-<model>-<transport>.json, transfer.log; a summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
mkdir -p "$OUT" /tmp/nodebin
[[ -x /tmp/nodebin/node ]] || { xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; }
export PATH=/tmp/nodebin:$PATH NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 MICROSERVE_LOG=warn
mkdir -p node_modules
[[ -f .gpu/prod_modules.tar.xz ]] && tar -C node_modules -xJf .gpu/prod_modules.tar.xz
[[ -f .gpu/node_modules.tar.xz ]] && tar -C node_modules -xJf .gpu/node_modules.tar.xz
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
echo "node $(node --version)"
t0=$(date +%s)
cmake -S native -B native/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/native/build/Release" > "$OUT/build.log" 2>&1 &&
  cmake --build native/build -j 16 --target microserve_native >> "$OUT/build.log" 2>&1 ||
  { grep -E "error" "$OUT/build.log" | head -30; tail -20 "$OUT/build.log"; echo BUILD FAILED; exit 1; }
echo "build $(( $(date +%s) - t0 )) s"
export NVSHMEM_HOME=${NVSHMEM_HOME:-$(python3 -c "import nvidia.nvshmem as m; print(list(m.__path__)[0])" 2>/dev/null)}
[[ -n "$NVSHMEM_HOME" ]] && export LD_LIBRARY_PATH=$NVSHMEM_HOME/lib:${LD_LIBRARY_PATH:-}
export NVSHMEM_REMOTE_TRANSPORT=none NVSHMEM_BOOTSTRAP_UID_SOCK_IFNAME=lo
grep -E "microserve: (NVSHMEM|no NVSHMEM)" "$OUT/build.log"
# runs: model:transport[:put] (put = NVSHMEM one-sided puts instead of the nvshmem_ptr path)
RUNS=${MS_TRANSFER_RUNS:-"fixture:cuda-ipc fixture:nvshmem fixture:nvshmem:put llama-3.1-8b:cuda-ipc llama-3.1-8b:nvshmem"}
for r in $RUNS; do
  IFS=: read -r m tr put <<< "$r"
  name="${m%%.*}-$tr${put:+-put}"
  echo "== $name ($(date -u +%T))"
  MS_BENCH_TRANSPORT=$tr MS_NVSHMEM_PUT=$([[ -n "$put" ]] && echo 1 || echo 0) \
    timeout 300 node --import tsx bench/gpu/transfer-bench.ts $m "$OUT/kv-transfer-$name.json" 2>&1 | tee -a "$OUT/transfer.log" | grep -v '"timeline"' | cut -c1-400
  echo "rc=${PIPESTATUS[0]}"
done
echo "== summary"
for f in "$OUT"/kv-transfer-*.json; do
  node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
console.log(require("path").basename(process.argv[1]), r.device, "nvshmem", JSON.stringify(r.nvshmem), "direct", r.nvshmemDirect);
console.log(" equivalence", JSON.stringify(r.equivalence.map((e) => [e.len, e.pdSame, e.migSame, e.pdFirstDiff, e.ipcSameAsHost, e.migSameAsHost, e.pdTransport, e.migTransport, e.migComputed])), JSON.stringify(r.counters));
console.log(" rate GB/s", r.rate.peer, r.rate.ipc.GBps.toFixed(0), "local", r.rate.local.GBps.toFixed(0), "bytes", r.rate.bytes);
console.log(" migration", JSON.stringify(r.migration));
if (r.abortsDuringPush) console.log(" aborts during push", JSON.stringify(r.abortsDuringPush));
for (const o of r.overlap) console.log(" overlap T", o.T, "ok", o.correct, "alone", o.tAloneMs.toFixed(2), "with", o.tWithMs.toFixed(2), "send", o.tSendMs.toFixed(3), "hidden", o.hiddenShare.toFixed(3), "tail", o.exposedTailMs.toFixed(3), "hiddenTail", o.hiddenShareTail.toFixed(3), o.layersCopyStartedBeforeLastLayerEnd);
' "$f"
done
