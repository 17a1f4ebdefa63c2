#!/usr/bin/env bash
# The serving benchmark on one GPU (issue 8's GPU part): two engine processes share cuda:0, each
# with the llama-3.1-8b preset (random weights, bf16), and `microserve bench` compares dp, pd and
# balanced-pd on the long-input workload (input 3000±5, output 100±5, Poisson arrivals).
#   here:  bash bench/gpu/pack-serve.sh
#   there: run(command="bash bench/gpu/serve.sh [num-prompts] [rate]", carry=[".gpu"])
# Env: TRANSPORT (auto | cuda-ipc | nvshmem; nvshmem makes the two engines one NVSHMEM job through
# `up`'s bootstrap), STRATEGIES (default dp,pd,balanced-pd:0.1).
# Results: $OUT/serve/{results.json,results.md,report.html}; the table is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
NUM=${1:-40}
RATE=${2:-1.5}
TRANSPORT=${TRANSPORT:-auto}
STRATEGIES=${STRATEGIES:-dp,pd,balanced-pd:0.1}
mkdir -p "$OUT" /tmp/nodebin
[[ -x /tmp/nodebin/node ]] || { xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; }
export PATH=/tmp/nodebin:$PATH NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
NVSHMEM_HOME=${NVSHMEM_HOME:-$(python3 -c "import nvidia.nvshmem as m; print(list(m.__path__)[0])" 2>/dev/null)} && export NVSHMEM_HOME
[[ -n "${NVSHMEM_HOME:-}" ]] && export LD_LIBRARY_PATH=$NVSHMEM_HOME/lib:${LD_LIBRARY_PATH:-}
[[ -d node_modules/tsx ]] || { mkdir -p node_modules && tar -C node_modules -xJf .gpu/prod_modules.tar.xz; }
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
echo "node $(node --version)"

echo "== build ($(date -u +%T))"
cmake -S native -B native/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/native/build/Release" > "$OUT/build.log" 2>&1 &&
  cmake --build native/build -j 16 --target microserve_native >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }

echo "== smoke: generate on cuda:0 ($(date -u +%T))"
timeout 120 node bin/microserve.js generate --model llama-3.1-8b --device cuda:0 --prompt-ids 1,2,3,4,5,6,7,8 --max-tokens 8 --json 2>&1 | tail -3

cat > /tmp/gpu-serve.yaml <<YAML
model: llama-3.1-8b
transport: $TRANSPORT
control: { host: 127.0.0.1, port: 0 }
router: { host: 127.0.0.1, port: 0, strategy: dp, params: {} }
engines:
  - { name: e0, role: both, device: "cuda:0", kvPages: 6144, maxBatchTokens: 4096 }
  - { name: e1, role: both, device: "cuda:0", kvPages: 6144, maxBatchTokens: 4096 }
YAML
echo "== bench ($(date -u +%T)): $NUM prompts per strategy at $RATE req/s, transport $TRANSPORT"
MICROSERVE_LOG=warn timeout 480 node bin/microserve.js bench --topology /tmp/gpu-serve.yaml \
  --dataset-name random --random-input-len 3000 --random-input-range 5 --random-output-len 100 --random-output-range 5 \
  --request-rate "$RATE" --num-prompts "$NUM" --num-warmups 2 --seed 1 --strategies "$STRATEGIES" \
  --no-progress --result-dir "$OUT/serve" 2>&1 | tail -60
echo "== done ($(date -u +%T))"
cat "$OUT/serve/results.md" 2>/dev/null
