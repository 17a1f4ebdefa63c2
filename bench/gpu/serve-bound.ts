/**
 * Serving efficiency of a closed-loop workload against its bound (issue 14; the formula is the one
 * in bench/results/serve-load-gpu.md): a request of I input and O output tokens costs the GPU
 * I / P + O · S(C) / C seconds, where P is the prefill rate (tok/s) at the engine's chunk size and
 * S(C) the decode step time at batch C and context ≈ I + O / 2, both from the engine bench run in
 * the same command (`microserve_engine_bench --ctx .. --batches .. --prompts .. --json`); the
 * bound (output tok/s) is O / (I / P + O · S(C) / C).
 * Usage: node --import tsx bench/gpu/serve-bound.ts ENGINE_BENCH.json CHUNK IN OUT DIR_C1 [DIR_C2 ...]
 * (each DIR holds the `results.json` of one `microserve bench --max-concurrency C` point; where
 * `DIR.metrics.before` and `DIR.metrics` hold the router's /metrics scraped before and after that
 * point, the engine's host time per step over the point is shown too: the gap between forwards
 * (the GPU idle while the engine loop works) and the forward time, as in `status` counters.host),
 * and I is the prompt tokens the engine prefilled per request over the point where that is fewer
 * (prefix-cache hits), so that cached prompts do not raise the efficiency past 100%.
 * The `in flight` column is the point's mean number of requests in flight as the client saw them
 * (Little's law: the sum of end-to-end latencies over the point's duration): below C where the
 * batch ramps up at the start and drains at the end (the closed loop's last requests), which the
 * steady-state bound does not model; more prompts per point shrink that share.
 * Prints one row per concurrency and writes serve-bound.json next to the first DIR.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

const [enginePath, chunkArg, inArg, outArg, ...dirs] = process.argv.slice(2);
if (!enginePath || !chunkArg || !inArg || !outArg || dirs.length === 0) {
  process.stderr.write('usage: serve-bound.ts ENGINE_BENCH.json CHUNK IN OUT DIR...\n');
  process.exit(2);
}
const chunk = Number(chunkArg);
const I = Number(inArg);
const O = Number(outArg);

interface DecodeRow { batch: number; tokensGreedyWallMs: number; gpuMs: number; floorMs: number }
interface PrefillRow { tokens: number; wallMs: number }
const eb = JSON.parse(readFileSync(enginePath, 'utf8')) as { ctx: number; device: string; date: string; decode: DecodeRow[]; prefill: PrefillRow[] };
const pre = eb.prefill.find((p) => p.tokens === chunk);
if (!pre) throw new Error(`engine bench has no prefill at ${chunk} tokens`);
const P = chunk / (pre.wallMs / 1e3);

/** Sum of a metric's series (all engines) in a /metrics text; null when absent. */
function metric(text: string, name: string, labels = ''): number | null {
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    const m = line.match(/^(\w+)(\{[^}]*\})? (\S+)$/);
    if (m && m[1] === name && (m[2] ?? '').includes(labels)) sum = (sum ?? 0) + Number(m[3]);
  }
  return sum;
}

/** A metric's increase over one point: /metrics scraped before and after it (null: not scraped). */
function deltas(dir: string): ((name: string, labels?: string) => number) | null {
  let a: string, b: string;
  try {
    a = readFileSync(`${dir}.metrics.before`, 'utf8');
    b = readFileSync(`${dir}.metrics`, 'utf8');
  } catch {
    return null;
  }
  return (name: string, labels = '') => (metric(b, name, labels) ?? NaN) - (metric(a, name, labels) ?? NaN);
}

/** The engine's host time per step over one point (null: not scraped). */
function hostPerStep(dir: string): { gapMs: number; forwardMs: number; phasesMs: Record<string, number> } | null {
  const d = deltas(dir);
  if (!d) return null;
  const P = 'microserve_engine_';
  const numGaps = d(`${P}host_gap_seconds_count`);
  const numForwards = d(`${P}forward_seconds_count`);
  if (!(numGaps > 0 && numForwards > 0)) return null;
  const phasesMs: Record<string, number> = {};
  for (const ph of ['schedule', 'build', 'update', 'send']) phasesMs[ph] = (1e3 * d(`${P}host_phase_seconds_sum`, `phase="${ph}"`)) / numForwards;
  return { gapMs: (1e3 * d(`${P}host_gap_seconds_sum`)) / numGaps, forwardMs: (1e3 * d(`${P}forward_seconds_sum`)) / numForwards, phasesMs };
}

const rows = dirs.map((dir) => {
  const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
  const p = r.points[r.points.length - 1];
  const C = p.maxConcurrency as number;
  const d = eb.decode.find((x) => x.batch === C);
  if (!d) throw new Error(`engine bench has no decode at batch ${C}`);
  const S = d.tokensGreedyWallMs / 1e3;
  // The prompt tokens the engine actually prefilled per request: fewer than I where the prefix
  // cache already held them (an earlier point's prompts), and the bound must count only those.
  const dm = deltas(dir);
  const prefilled = dm ? dm('microserve_engine_tokens', 'kind="prefilled"') / p.completed : NaN;
  const Ieff = Number.isFinite(prefilled) && prefilled > 0 ? Math.min(I, prefilled) : I;
  const bound = O / (Ieff / P + (O * S) / C);
  const host = hostPerStep(dir);
  const e2el: number[] = p.samples?.e2elMs ?? [];
  const inFlight = e2el.length > 0 ? e2el.reduce((a, x) => a + x, 0) / 1e3 / p.durationS : null;
  return {
    concurrency: C,
    completed: p.completed,
    failed: p.failed,
    outputTokS: p.outputThroughput,
    boundTokS: bound,
    prefilledPerRequest: Number.isFinite(prefilled) ? prefilled : null,
    efficiency: p.outputThroughput / bound,
    meanInFlight: inFlight,
    prefillTokS: P,
    decodeStepMs: d.tokensGreedyWallMs,
    tpotMeanMs: p.tpotMs.mean,
    itlP99Ms: p.itlMs.p99,
    itlP99OverTpot: p.itlMs.p99 / p.tpotMs.mean,
    ttftP99Ms: p.ttftMs.p99,
    hostGapMs: host?.gapMs ?? null,
    forwardMs: host?.forwardMs ?? null,
    hostPhasesMs: host?.phasesMs ?? null,
  };
});

const out = { device: eb.device, date: eb.date, ctx: eb.ctx, chunk, input: I, output: O, rows };
writeFileSync(join(dirname(dirs[0]), 'serve-bound.json'), JSON.stringify(out, null, 2));
process.stdout.write(`serving bound: ${eb.device}, ${eb.date}; P = ${P.toFixed(0)} tok/s at ${chunk}-token chunks; S(C) at context ${eb.ctx}\n`);
process.stdout.write('| C | completed / failed | output tok/s | prefilled / request | bound tok/s | efficiency | in flight | S(C) ms | TPOT mean ms | ITL p99 ms | ITL p99 / TPOT | TTFT p99 ms | host gap ms/step | forward ms/step |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n');
const ms = (v: number | null, digits: number) => (v === null ? 'n/a' : v.toFixed(digits));
for (const r of rows) {
  process.stdout.write(`| ${r.concurrency} | ${r.completed} / ${r.failed} | ${r.outputTokS.toFixed(0)} | ${r.prefilledPerRequest === null ? 'n/a' : r.prefilledPerRequest.toFixed(0)} | ${r.boundTokS.toFixed(0)} | ${(100 * r.efficiency).toFixed(1)}% | ${ms(r.meanInFlight, 1)} | ${r.decodeStepMs.toFixed(2)} | ${r.tpotMeanMs.toFixed(1)} | ${r.itlP99Ms.toFixed(1)} | ${r.itlP99OverTpot.toFixed(2)} | ${r.ttftP99Ms.toFixed(0)} | ${ms(r.hostGapMs, 3)} | ${ms(r.forwardMs, 2)} |\n`);
}
if (rows.some((r) => r.hostPhasesMs)) {
  process.stdout.write('\nengine host time per step by phase (ms; schedule / build / update are in the gap, send runs during the next forward with overlap)\n');
  for (const r of rows) if (r.hostPhasesMs) process.stdout.write(`  C=${r.concurrency}: ${Object.entries(r.hostPhasesMs).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(', ')}\n`);
}
