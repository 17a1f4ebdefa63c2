/**
 * Serving efficiency of a closed-loop workload against its bound (issue 14; the formula is the one
 * in bench/results/serve-load-gpu.md): a request of I input and O output tokens costs the GPU
 * I / P + O · S(C) / C seconds, where P is the prefill rate (tok/s) at the engine's chunk size and
 * S(C) the decode step time at batch C and context ≈ I + O / 2, both from the engine bench run in
 * the same command (`microserve_engine_bench --ctx .. --batches .. --prompts .. --json`); the
 * bound (output tok/s) is O / (I / P + O · S(C) / C).
 * Usage: node --import tsx bench/gpu/serve-bound.ts ENGINE_BENCH.json CHUNK IN OUT DIR_C1 [DIR_C2 ...]
 * (each DIR holds the `results.json` of one `microserve bench --max-concurrency C` point).
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

const rows = dirs.map((dir) => {
  const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
  const p = r.points[r.points.length - 1];
  const C = p.maxConcurrency as number;
  const d = eb.decode.find((x) => x.batch === C);
  if (!d) throw new Error(`engine bench has no decode at batch ${C}`);
  const S = d.tokensGreedyWallMs / 1e3;
  const bound = O / (I / P + (O * S) / C);
  return {
    concurrency: C,
    completed: p.completed,
    failed: p.failed,
    outputTokS: p.outputThroughput,
    boundTokS: bound,
    efficiency: p.outputThroughput / bound,
    prefillTokS: P,
    decodeStepMs: d.tokensGreedyWallMs,
    tpotMeanMs: p.tpotMs.mean,
    itlP99Ms: p.itlMs.p99,
    itlP99OverTpot: p.itlMs.p99 / p.tpotMs.mean,
    ttftP99Ms: p.ttftMs.p99,
  };
});

const out = { device: eb.device, date: eb.date, ctx: eb.ctx, chunk, input: I, output: O, rows };
writeFileSync(join(dirname(dirs[0]), 'serve-bound.json'), JSON.stringify(out, null, 2));
process.stdout.write(`serving bound: ${eb.device}, ${eb.date}; P = ${P.toFixed(0)} tok/s at ${chunk}-token chunks; S(C) at context ${eb.ctx}\n`);
process.stdout.write('| C | completed / failed | output tok/s | bound tok/s | efficiency | S(C) ms | TPOT mean ms | ITL p99 ms | ITL p99 / TPOT | TTFT p99 ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n');
for (const r of rows) {
  process.stdout.write(`| ${r.concurrency} | ${r.completed} / ${r.failed} | ${r.outputTokS.toFixed(0)} | ${r.boundTokS.toFixed(0)} | ${(100 * r.efficiency).toFixed(1)}% | ${r.decodeStepMs.toFixed(2)} | ${r.tpotMeanMs.toFixed(1)} | ${r.itlP99Ms.toFixed(1)} | ${r.itlP99OverTpot.toFixed(2)} | ${r.ttftP99Ms.toFixed(0)} |\n`);
}
