#!/usr/bin/env bash
# Same-command A/B on the GPU host: this tree against a base commit, engine bench and KV-transfer bench.
#   here:  git archive <commit> | xz > .gpu/base.tar.xz && bash bench/gpu/pack-serve.sh && bash bench/gpu/pack.sh
#   there: bash bench/gpu/ab.sh [engine] [transfer]        (carry .gpu; default both)
# Both trees are built side by side (base in /tmp/base), then the benches run alternately: base, this,
# base (quick), this (quick), so the spread of each is seen next to the difference. AB_TRANSFER_RUNS
# picks the transfer runs (default: the 8B preset over cuda-ipc and nvshmem). Results: $OUT/ab-*.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
mkdir -p "$OUT" /tmp/nodebin
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(engine transfer)   # "build" alone: only the two builds
has() { local s; for s in "${steps[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
[[ -f .gpu/base.tar.xz ]] || { echo "no .gpu/base.tar.xz (git archive <commit> | xz > .gpu/base.tar.xz)"; exit 1; }
[[ -x /tmp/nodebin/node ]] || { xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; }
export PATH=/tmp/nodebin:$PATH NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1 MICROSERVE_LOG=warn
mkdir -p node_modules
[[ -f node_modules/.ab-unpacked ]] || { tar -C node_modules -xJf .gpu/prod_modules.tar.xz && tar -C node_modules -xJf .gpu/node_modules.tar.xz && touch node_modules/.ab-unpacked; }
export NVSHMEM_HOME=${NVSHMEM_HOME:-$(python3 -c "import nvidia.nvshmem as m; print(list(m.__path__)[0])" 2>/dev/null)}
[[ -n "$NVSHMEM_HOME" ]] && export LD_LIBRARY_PATH=$NVSHMEM_HOME/lib:${LD_LIBRARY_PATH:-}
BASE=/tmp/base
[[ -d $BASE/native/src ]] || { mkdir -p $BASE && tar -C $BASE -xf .gpu/base.tar.xz && ln -s "$PWD/node_modules" $BASE/node_modules && ln -s "$PWD/.gpu" $BASE/.gpu; }
build() {  # $1 tree, $2 log
  cmake -S "$1/native" -B "$1/native/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$1/native/build/Release" > "$2" 2>&1 &&
    cmake --build "$1/native/build" -j 8 --target microserve_native microserve_engine_bench >> "$2" 2>&1
}
t0=$(date +%s)
build "$PWD" "$OUT/ab-build-this.log" & p1=$!
build "$BASE" "$OUT/ab-build-base.log" & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
echo "builds: this rc=$r1 base rc=$r2 in $(( $(date +%s) - t0 )) s"
[[ $r1 -ne 0 || $r2 -ne 0 ]] && { tail -20 "$OUT"/ab-build-*.log; exit 1; }
if has engine; then
  for pass in 1 2; do
    q=""; [[ $pass == 2 ]] && q="--quick"
    for side in base this; do
      tree=$PWD; extra="--no-variants"; [[ $side == base ]] && tree=$BASE && extra=""
      echo "== engine bench $side pass $pass ($(date -u +%T))"
      timeout 300 "$tree/native/build/microserve_engine_bench" $q $extra --json "$OUT/ab-engine-$side-$pass.json" > "$OUT/ab-engine-$side-$pass.txt" 2>&1
      echo "rc=$?"
    done
  done
fi
if has transfer; then
  for side in base this; do
    tree=$PWD; [[ $side == base ]] && tree=$BASE
    echo "== transfer bench $side ($(date -u +%T))"
    mkdir -p "$OUT/ab-transfer-$side"
    OUT="$OUT/ab-transfer-$side" MS_TRANSFER_RUNS=${AB_TRANSFER_RUNS:-"llama-3.1-8b:cuda-ipc llama-3.1-8b:nvshmem"} \
      timeout 400 bash "$tree/bench/gpu/transfer.sh" > "$OUT/ab-transfer-$side.txt" 2>&1
    echo "rc=$?"; sed -n '/== summary/,$p' "$OUT/ab-transfer-$side.txt" | grep -E "rate|kv-transfer"
  done
fi
echo "== A/B summary"
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(side, p):
    f = f"{out}/ab-engine-{side}-{p}.json"
    return json.load(open(f)) if os.path.exists(f) else None
for p in (1, 2):
    b, t = load("base", p), load("this", p)
    if not b or not t: continue
    print(f"pass {p}: read TB/s base {b['readTBs']:.3f} this {t['readTBs']:.3f}")
    bd = {d["batch"]: d for d in b["decode"]}
    for d in t["decode"]:
        x = bd.get(d["batch"])
        if x: print(f"  decode b={d['batch']:<3} gpu ms (graph, logits) base {x['gpuMs']:.3f} this {d['gpuMs']:.3f} ({d['gpuMs']/x['gpuMs']-1:+.1%}); tokens greedy base {x.get('tokensGreedyGpuMs',0):.3f} this {d.get('tokensGreedyGpuMs',0):.3f}")
    bp = {q["tokens"]: q for q in b["prefill"]}
    for q in t["prefill"]:
        x = bp.get(q["tokens"])
        if x: print(f"  prefill {q['tokens']:<5} wall ms base {x['wallMs']:.2f} this {q['wallMs']:.2f} ({q['wallMs']/x['wallMs']-1:+.1%})")
PY
