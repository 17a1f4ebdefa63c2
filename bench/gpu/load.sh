#!/usr/bin/env bash
# Issue 14 (load) on one GPU: ONE engine with the defaults (kvPages auto, maxNumSeqs 256,
# gpuMemoryUtilization 0.9, maxBatchTokens as the topology's default) on cuda:0 with the llama-3.1-8b
# preset, started by `microserve up`, then `microserve bench` against it at request rate inf:
#   (a) chat:   --dataset-name chat --num-prompts 2000
#   (b) random: 3000 in / 200 out, 1000 prompts
#   engine:      the engine bench before `up` (decode at batches 64/128/256, context 512 + 256/2,
#                prefill at the engine's chunk size): the serving bound's inputs
#   concurrency: random 512 in / 256 out at --max-concurrency 64, 128, 256 (CONC_PER_C x C prompts
#                each: the point's last requests drain the batch, a tail that weighs ~8% at 4 x C),
#                then bench/gpu/serve-bound.ts: output tok/s against the bound, ITL p99 / TPOT, and
#                the engine's host time per step (the GPU idle between forwards) over each point
#   structured:  structured outputs under a burst: random STRUCT_IN in / STRUCT_OUT out (512 / 256),
#                STRUCT_PROMPTS (1000) at rate inf, every request with response_format json_object (a
#                request ends early, finish stop, once its JSON is complete)
#   sweep:       chat at SWEEP_RATES (1000 prompts each), goodput at TTFT <= 1 s, TPOT <= 50 ms
# It prints the engine's memory plan (the `up` banner), each part's completed / failed counts and
# errors, the server's token counters from /metrics (generated / delivered / recomputed where
# the router exports them; "n/a" where it does not) and the engine's host time per step over the
# part (microserve_engine_host_*: gap between forwards, by phase), and at the end a summary: the
# efficiency table and the host gap of every part. MICROSERVE_OVERLAP=0 runs the engine without
# overlap (the A/B of what it is worth).
#   here:  bash bench/gpu/pack-serve.sh
#   there: run(command="bash bench/gpu/load.sh", carry=[".gpu"])            # both parts
#          run(command="PARTS=chat bash bench/gpu/load.sh", carry=[".gpu"]) # one part per command
# Env (defaults): PARTS=chat,random; CHAT_PROMPTS=2000; RANDOM_PROMPTS=1000; RANDOM_IN=3000;
# RANDOM_OUT=200; CONCURRENCY=64,128,256; CONC_IN=512; CONC_OUT=256, CONC_PER_C=12 (the concurrency workload);
# MAX_BATCH_TOKENS (unset: the default); MAX_NUM_SEQS (unset: the default 256); KV_PAGES
# (unset: auto); GPU_UTIL (unset: 0.9); BUILD=1 (0 skips the build: a warm machine);
# PART_TIMEOUT=420 s per part, so one device command stays under 9 minutes with the engine start;
# DRY=1 runs the same steps with the tiny model on CPU (no GPU needed; small counts; the engine
# bench's bound inputs come from bench/gpu/engine-bench-dry.ts on the CPU backend).
# Results: $OUT/load/<part>/{results.json,results.md}, $OUT/load/<part>.metrics (the /metrics text).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ms-out}
PARTS=${PARTS:-chat,random}
DRY=${DRY:-0}
CHAT_PROMPTS=${CHAT_PROMPTS:-2000}
RANDOM_PROMPTS=${RANDOM_PROMPTS:-1000}
RANDOM_IN=${RANDOM_IN:-3000}
RANDOM_OUT=${RANDOM_OUT:-200}
PART_TIMEOUT=${PART_TIMEOUT:-420}
CONCURRENCY=${CONCURRENCY:-64,128,256}
CONC_IN=${CONC_IN:-512}
CONC_OUT=${CONC_OUT:-256}
CONC_PER_C=${CONC_PER_C:-12}
SWEEP_RATES=${SWEEP_RATES:-10,20,30,40}
STRUCT_PROMPTS=${STRUCT_PROMPTS:-1000}
STRUCT_IN=${STRUCT_IN:-512}
STRUCT_OUT=${STRUCT_OUT:-256}
SWEEP_PROMPTS=${SWEEP_PROMPTS:-1000}
# the engine's maxBatchTokens (unset: the topology's default, 1024 on a GPU, 512 on CPU)
CHUNK=${MAX_BATCH_TOKENS:-1024}
BUILD=${BUILD:-1}
MODEL=llama-3.1-8b
DEVICE='"cuda:0"'
if [[ "$DRY" == 1 ]]; then
  MODEL=tiny DEVICE=cpu BUILD=0 CHUNK=${MAX_BATCH_TOKENS:-512}
  CHAT_PROMPTS=${DRY_PROMPTS:-20} RANDOM_PROMPTS=${DRY_PROMPTS:-20} RANDOM_IN=${DRY_IN:-300} RANDOM_OUT=${DRY_OUT:-20}
  CONCURRENCY=${DRY_CONCURRENCY:-4,8} CONC_IN=${DRY_IN:-128} CONC_OUT=${DRY_OUT:-32}
  STRUCT_PROMPTS=${DRY_PROMPTS:-20} STRUCT_IN=${DRY_IN:-128} STRUCT_OUT=${DRY_OUT:-32}
fi
mkdir -p "$OUT/load"

if [[ "$DRY" != 1 ]]; then
  mkdir -p /tmp/nodebin
  [[ -x /tmp/nodebin/node ]] || { xz -dc .gpu/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node; }
  export PATH=/tmp/nodebin:$PATH NCCL_NVLS_ENABLE=0 NVSHMEM_DISABLE_NVLS=1
  NVSHMEM_HOME=${NVSHMEM_HOME:-$(python3 -c "import nvidia.nvshmem as m; print(list(m.__path__)[0])" 2>/dev/null)} && export NVSHMEM_HOME
  [[ -n "${NVSHMEM_HOME:-}" ]] && export LD_LIBRARY_PATH=$NVSHMEM_HOME/lib:${LD_LIBRARY_PATH:-}
  [[ -d node_modules/tsx ]] || { mkdir -p node_modules && tar -C node_modules -xJf .gpu/prod_modules.tar.xz; }
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
fi
echo "node $(node --version)"

if [[ "$BUILD" == 1 ]]; then
  echo "== build ($(date -u +%T))"
  cmake -S native -B native/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include;$PWD/node_modules/node-addon-api" \
    -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/native/build/Release" > "$OUT/build.log" 2>&1 &&
    cmake --build native/build -j 16 --target microserve_native $([[ ",$PARTS," == *,engine,* ]] && echo microserve_engine_bench) >> "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi

# One engine with the defaults (but what the env overrides).
ENGINE="{ name: e0, role: both, device: $DEVICE"
[[ -n "${MAX_BATCH_TOKENS:-}" ]] && ENGINE+=", maxBatchTokens: $MAX_BATCH_TOKENS"
[[ -n "${MAX_NUM_SEQS:-}" ]] && ENGINE+=", maxNumSeqs: $MAX_NUM_SEQS"
[[ -n "${KV_PAGES:-}" ]] && ENGINE+=", kvPages: $KV_PAGES"
[[ -n "${GPU_UTIL:-}" ]] && ENGINE+=", gpuMemoryUtilization: $GPU_UTIL"
ENGINE+=" }"
TOPO="$OUT/load/topology.yaml"
cat > "$TOPO" <<YAML
model: $MODEL
control: { host: 127.0.0.1, port: 0 }
router: { host: 127.0.0.1, port: 0, strategy: dp, params: {} }
engines:
  - $ENGINE
YAML
cat "$TOPO"

export MICROSERVE_HOME=$(mktemp -d)
UP_LOG="$OUT/load/up.log"
UP_PID=
stop_up() {
  if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -TERM "$UP_PID"
    for _ in $(seq 1 100); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$UP_PID" 2>/dev/null && kill -KILL "$UP_PID"
  fi
  UP_PID=
}
trap stop_up EXIT

# Starts `up` and waits for its banner (the engine's memory plan follows it); sets URL.
start_up() {
  echo "== up ($(date -u +%T))"
  MICROSERVE_LOG=${MICROSERVE_LOG:-warn} node bin/microserve.js up "$TOPO" --no-watch > "$UP_LOG" 2>&1 &
  UP_PID=$!
  URL=
  for _ in $(seq 1 900); do
    URL=$(sed -n 's/^microserve up: router \(http[^ ]*\).*/\1/p' "$UP_LOG" | head -1)
    [[ -n "$URL" ]] && break
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.2
  done
  sleep 1  # the plan lines come right after the banner
  if [[ -z "$URL" ]]; then
    echo "up did not become ready:"; tail -30 "$UP_LOG"; return 1
  fi
  grep -E '^microserve up:|memory plan' "$UP_LOG"
}

# The metrics this issue asks for, read defensively: a counter the router does not export is n/a.
print_counters() {
  local file=$1
  node -e '
    const text = require("fs").readFileSync(process.argv[1], "utf8");
    const sum = (re) => { let n = null; for (const l of text.split("\n")) { if (l.startsWith("#")) continue; const m = l.match(/^(\S+?)(\{[^}]*\})?\s+([0-9.eE+-]+)$/); if (m && re.test(m[1] + (m[2] ?? ""))) n = (n ?? 0) + Number(m[3]); } return n; };
    const show = (label, re) => console.log(`  ${label.padEnd(34)} ${sum(re) ?? "n/a"}`);
    show("generation tokens (router)", /^microserve_generation_tokens_total$/);
    show("engine tokens generated", /^microserve_engine_tokens\w*\{.*kind="generated"/);
    show("engine tokens prefilled", /^microserve_engine_tokens\w*\{.*kind="prefilled"/);
    show("tokens delivered", /deliver/);
    show("tokens recomputed", /recomput/);
    show("preemptions", /preempt/);
    show("requests rejected (429)", /reject|429/);
    const gap = sum(/^microserve_engine_host_gap_seconds_sum/), steps = sum(/^microserve_engine_host_gap_seconds_count/);
    console.log(`  ${"engine host gap (cumulative)".padEnd(34)} ${gap === null ? "n/a" : `${(1e3 * gap).toFixed(0)} ms over ${steps} steps`}`);
    show("migrations", /^microserve_request_migrations_total/);
    show("engine restarts", /^microserve_engine_restarts/);
    // the event loop of each process since it started (common/loop-monitor.ts): a block past the
    // heartbeat deadline (1.6 s) is what lost the engine under the random burst
    const loops = text.split("\n").filter((l) => /^microserve_event_loop_(block_max_seconds|blocks|delay_p99_seconds)\{/.test(l));
    if (loops.length) console.log("  event loops:\n    " + loops.join("\n    "));
    const extra = text.split("\n").filter((l) => !l.startsWith("#") && /(deliver|recomput|preempt|generat)/.test(l));
    if (extra.length) console.log("  matching lines:\n    " + extra.slice(0, 20).join("\n    "));
  ' "$file"
}

print_results() {
  local dir=$1
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1] + "/results.json", "utf8"));
    for (const p of r.points) {
      console.log(`  ${p.strategy} rate ${p.requestRate}: ${p.completed} completed, ${p.failed} failed of ${p.numPrompts}; ` +
        `${p.outputThroughput.toFixed(1)} out tok/s, TTFT p99 ${p.ttftMs.p99?.toFixed?.(0) ?? "?"} ms, E2EL p99 ${p.e2elMs.p99?.toFixed?.(0) ?? "?"} ms`);
      for (const [msg, n] of Object.entries(p.errors ?? {})) console.log(`    ${n} x ${msg}`);
    }
  ' "$dir" 2>/dev/null || echo "  (no results.json in $dir)"
}

# The engine's host time per step between two /metrics scrapes (deltas of microserve_engine_host_*).
print_host() {
  node -e '
    const fs = require("fs");
    const read = (f) => { try { return fs.readFileSync(f, "utf8"); } catch { return ""; } };
    const [a, b] = [read(process.argv[1]), read(process.argv[2])];
    const val = (text, name, label = "") => { let n = 0; for (const l of text.split("\n")) { const m = l.match(/^(\w+)(\{[^}]*\})? (\S+)$/); if (m && m[1] === name && (m[2] ?? "").includes(label)) n += Number(m[3]); } return n; };
    const d = (name, label) => val(b, name, label) - val(a, name, label);
    const P = "microserve_engine_";
    const gaps = d(P + "host_gap_seconds_count"), fwd = d(P + "forward_seconds_count");
    if (!(gaps > 0 && fwd > 0)) { console.log("  engine host time: n/a (no microserve_engine_host_* in /metrics)"); process.exit(0); }
    const ph = ["schedule", "build", "update", "send"].map((p) => `${p} ${(1e3 * d(P + "host_phase_seconds_sum", `phase="${p}"`) / fwd).toFixed(3)}`).join(", ");
    console.log(`  engine host gap ${(1e3 * d(P + "host_gap_seconds_sum") / gaps).toFixed(3)} ms/step over ${gaps} steps (forward ${(1e3 * d(P + "forward_seconds_sum") / fwd).toFixed(2)} ms/step; ${ph})`);
  ' "$1" "$2"
}

run_part() {
  local part=$1; shift
  echo "== $part ($(date -u +%T)): $*"
  curl -s --max-time 10 "$URL/metrics" > "$OUT/load/$part.metrics.before" || echo "  (no /metrics)"
  MICROSERVE_LOG=warn timeout "$PART_TIMEOUT" node bin/microserve.js bench --base-url "$URL" \
    --request-rate inf --seed 1 --no-progress --request-timeout "$PART_TIMEOUT" --result-dir "$OUT/load/$part" "$@" > "$OUT/load/$part.log" 2>&1
  echo "  bench exit $?"
  tail -5 "$OUT/load/$part.log"
  print_results "$OUT/load/$part"
  sleep 1.5  # engine counters reach /metrics through the router's status poll (every 0.5 s)
  curl -s --max-time 10 "$URL/metrics" > "$OUT/load/$part.metrics" || echo "  (no /metrics)"
  echo "  server counters after $part (cumulative since up):"
  print_counters "$OUT/load/$part.metrics"
  print_host "$OUT/load/$part.metrics.before" "$OUT/load/$part.metrics"
}

# The engine bench needs the GPU to itself: it runs before `up` takes its memory.
if [[ ",$PARTS," == *,engine,* ]]; then
  CTX=$((CONC_IN + CONC_OUT / 2))
  echo "== engine bench ($(date -u +%T)): context $CTX, batches $CONCURRENCY, prefill $CHUNK"
  if [[ "$DRY" == 1 ]]; then
    timeout 300 node --import tsx bench/gpu/engine-bench-dry.ts "$MODEL" "$CTX" "$CONCURRENCY" "$CHUNK" "$OUT/load/engine-bench.json" > "$OUT/load/engine-bench.txt" 2>&1
  else
    timeout 300 native/build/microserve_engine_bench --no-variants --ctx "$CTX" --batches "$CONCURRENCY" \
      --prompts "$CHUNK" --json "$OUT/load/engine-bench.json" > "$OUT/load/engine-bench.txt" 2>&1
  fi
  echo "  exit $?"; sed -n '/== engine bench summary/,$p' "$OUT/load/engine-bench.txt"
fi
start_up || exit 1
for part in ${PARTS//,/ }; do
  case $part in
    engine) ;;
    chat) run_part chat --dataset-name chat --num-prompts "$CHAT_PROMPTS" ;;
    random) run_part random --dataset-name random --random-input-len "$RANDOM_IN" --random-output-len "$RANDOM_OUT" --num-prompts "$RANDOM_PROMPTS" ;;
    concurrency)
      dirs=()
      for c in ${CONCURRENCY//,/ }; do
        run_part "c$c" --dataset-name random --random-input-len "$CONC_IN" --random-output-len "$CONC_OUT" --num-prompts $((CONC_PER_C * c)) --max-concurrency "$c" --flush-caches
        dirs+=("$OUT/load/c$c")
      done
      if [[ -f "$OUT/load/engine-bench.json" ]]; then
        node --import tsx bench/gpu/serve-bound.ts "$OUT/load/engine-bench.json" "$CHUNK" "$CONC_IN" "$CONC_OUT" "${dirs[@]}" | tee "$OUT/load/serve-bound.md"
      else
        echo "  (no engine bench in this command: PARTS=engine,concurrency gives the efficiency table)"
      fi
      ;;
    structured) run_part structured --dataset-name random --random-input-len "$STRUCT_IN" --random-output-len "$STRUCT_OUT" --num-prompts "$STRUCT_PROMPTS" \
      --extra-body '{"response_format":{"type":"json_object"}}' ;;
    sweep) run_part sweep --dataset-name chat --request-rate "$SWEEP_RATES" --num-prompts "$SWEEP_PROMPTS" --goodput ttft:1000 tpot:50 ;;
    *) echo "unknown part '$part' (engine, chat, random, concurrency, structured, sweep)"; exit 2 ;;
  esac
done
echo "== engine log lines about memory or load ($(date -u +%T))"
grep -Ei 'cudaMalloc|DEVICE_MEMORY|OVER_PLAN|out of memory|preempt|error' "$UP_LOG" | tail -20
stop_up
echo "== summary: engine host time per step by part (overlap ${MICROSERVE_OVERLAP:-1})"
for part in ${PARTS//,/ }; do
  case $part in
    engine) ;;
    concurrency) for c in ${CONCURRENCY//,/ }; do echo -n "  c$c:"; print_host "$OUT/load/c$c.metrics.before" "$OUT/load/c$c.metrics" | sed 's/^  / /'; done ;;
    *) echo -n "  $part:"; print_host "$OUT/load/$part.metrics.before" "$OUT/load/$part.metrics" | sed 's/^  / /' ;;
  esac
done
if [[ -f "$OUT/load/serve-bound.md" ]]; then
  echo "== summary: serving efficiency against the bound"
  cat "$OUT/load/serve-bound.md"
fi
echo "== done ($(date -u +%T))"
