#!/usr/bin/env bash
# 8B-class checkpoints of each model family's real shape (random weights, sharded safetensors) on
# the GPU host: made by transformers (bench/gpu/make-family-8b.py: Qwen2.5-7B with q/k/v biases and
# GQA 7, Qwen3-8B with q/k norms, Mistral-7B-v0.3, Llama-3.2-3B with tied embeddings, llama3 RoPE
# scaling and GQA 3), loaded through microserve on cuda:0 and compared with transformers' float32
# greedy ids (bench/gpu/families-8b-check.ts), with the load timed against the checkpoint's bytes.
# One family at a time (the host's disk holds about one 16 GB checkpoint comfortably); each is
# deleted after its check. Prints a table; the raw JSON lines go to $OUT/families-8b.jsonl.
#   here:  bash bench/gpu/pack-serve.sh   (Node.js and the production node_modules)
#   there: run(command="bash bench/gpu/families-8b.sh", carry=[".gpu"])
# Env (defaults): FAMILIES="qwen2 qwen3 mistral llama32"; STD=0.02; BUILD=auto (1: build the CUDA
# addon first; auto: only when the built addon has no CUDA); DEVICE=cuda:0; WORK=/tmp/ms-families-8b.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
FAMILIES=${FAMILIES:-qwen2 qwen3 mistral llama32}
STD=${STD:-0.02}
DEVICE=${DEVICE:-cuda:0}
WORK=${WORK:-/tmp/ms-families-8b}
BUILD=${BUILD:-auto}
mkdir -p "$OUT"
: > "$OUT/families-8b.jsonl"

mkdir -p /tmp/nodebin
if [[ -f .gpu/node.xz && ! -x /tmp/nodebin/node ]]; then xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; fi
export PATH=/tmp/nodebin:$PATH
# the loader needs the production modules (zod, tsx): pack-serve.sh's tarball, else pack.sh's
if [[ ! -d node_modules/zod ]]; then
  mkdir -p node_modules
  for t in .gpu/prod_modules.tar.xz .gpu/node_modules.tar.xz; do [[ -f $t ]] && tar -C node_modules -xJf $t; done
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "node $(node --version), $(python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"

needBuild=$BUILD
if [[ "$BUILD" == auto ]]; then
  node -e "process.exit(require('./native/build/Release/microserve_native.node').hasCuda ? 0 : 1)" 2>/dev/null && needBuild=0 || needBuild=1
fi
if [[ "$needBuild" == 1 ]]; then
  echo "== build ($(date -u +%T))"
  cmake -S native -B native/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/native/build/Release" > "$OUT/build.log" 2>&1 &&
    cmake --build native/build -j 16 --target microserve_native >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; echo "BUILD FAILED"; exit 1; }
fi

for fam in $FAMILIES; do
  echo "== $fam ($(date -u +%T))"
  rm -rf "$WORK" && mkdir -p "$WORK"
  if ! PYTHONUNBUFFERED=1 timeout 240 python3 bench/gpu/make-family-8b.py "$fam" "$WORK/$fam" --std "$STD" 2>&1 | grep -v -i warning; then
    echo "{\"family\":\"$fam\",\"verdict\":\"FAIL\",\"error\":\"make-family-8b.py failed\"}" >> "$OUT/families-8b.jsonl"
    continue
  fi
  line=$(timeout 240 node --import tsx bench/gpu/families-8b-check.ts "$WORK/$fam" "$DEVICE" 2>&1 | tail -1)
  [[ "$line" == "{"* ]] || line="{\"family\":\"$fam\",\"verdict\":\"FAIL\",\"error\":$(printf '%s' "$line" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[-300:]))')}"
  echo "$line" | tee -a "$OUT/families-8b.jsonl"
  rm -rf "$WORK"
done

echo
python3 - "$OUT/families-8b.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| family | shape | GB | shards | load s | first token s | GB/s (host: 1-thread page-cache read / pinned H2D) | teacher-forced agree (ours / hf bf16 / f32+bf16 rounding) | greedy prefix of 32 (ours / hf bf16 / first near tie) | verdict |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    if "error" in r:
        print(f"| {r['family']} | | | | | | | | {r['error'][:80]} | {r['verdict']} |")
        continue
    t, g, h = r["teacher"], r["greedy"], r["host"]
    print(f"| {r['family']} | {r['shape']} | {r['bytes'] / 1e9:.1f} | {r['shards']} | {r['loadS']} | {r['firstTokenS']} | "
          f"{r['loadGBps']} ({h['pageCacheReadGBps']} / {h['pinnedH2dGBps']}) | "
          f"{t['share']:.3f} / {t['hfBf16']:.3f} / {t['f32RoundedToBf16']:.3f} of {t['counted']} | "
          f"{g['prefix']} / {g['hfBf16Prefix']} / {g['firstNearTie']} | {r['verdict']} |")
EOF
