/**
 * The serving bound's inputs on the CPU backend, for `DRY=1 bash bench/gpu/load.sh` (no GPU): the
 * same JSON fields `serve-bound.ts` reads from `microserve_engine_bench --json` — decode step wall
 * time at each batch and context (greedy, sampling on the backend, token ids out) and the wall
 * time of one prefill chunk — measured with the model `load.sh` serves, so that the dry run goes
 * through every step of the GPU one and prints the efficiency table (CPU numbers, not H200 ones).
 * Usage: node --import tsx bench/gpu/engine-bench-dry.ts MODEL CTX BATCHES CHUNK OUT.json
 */
import { writeFileSync } from 'node:fs';
import { openModel } from '../../native/index.ts';
import type { Backend, ForwardSampling } from '../../native/backend.ts';

const [model, ctxArg, batchesArg, chunkArg, outPath] = process.argv.slice(2);
if (!model || !ctxArg || !batchesArg || !chunkArg || !outPath) {
  process.stderr.write('usage: engine-bench-dry.ts MODEL CTX BATCHES CHUNK OUT.json\n');
  process.exit(2);
}
const ctx = Number(ctxArg);
const batches = batchesArg.split(',').map(Number);
const chunk = Number(chunkArg);
const PAGE = 16;
const pagesPerSeq = Math.ceil((ctx + 1) / PAGE);
const maxBatch = Math.max(...batches);

const greedy = (n: number): ForwardSampling => ({ temperature: new Float32Array(n), topP: new Float32Array(n).fill(1), seed: new Uint32Array(n), step: new Uint32Array(n) });
const table = (s: number) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i);

/** Best of `reps` wall times of `f`, in ms (the numbers are for the code, not for what shares the machine). */
async function best(reps: number, f: () => Promise<unknown>): Promise<number> {
  let ms = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await f();
    ms = Math.min(ms, performance.now() - t0);
  }
  return ms;
}

const chunkPages = Math.ceil(chunk / PAGE);
const loaded = await openModel(model, { numPages: Math.max(maxBatch * pagesPerSeq, chunkPages) + 8, pageSize: PAGE, maxBatchTokens: Math.max(chunk, maxBatch), maxNumSeqs: maxBatch });
const b: Backend = loaded.backend;
const vocab = b.config.vocabSize;
const decode = [];
for (const batch of batches) {
  // the KV of positions [0, ctx) is whatever the pool holds: the step's cost does not depend on it
  const seqs = Array.from({ length: batch }, (_, s) => ({ tokens: Int32Array.of((s * 7919 + 13) % vocab), startPos: ctx, pageTable: table(s) }));
  await b.forwardTokens({ seqs, sampling: greedy(batch) });
  const ms = await best(3, () => b.forwardTokens({ seqs, sampling: greedy(batch) }));
  decode.push({ batch, tokensGreedyWallMs: ms, gpuMs: ms, floorMs: 0 });
  process.stderr.write(`decode batch ${batch}, context ${ctx}: ${ms.toFixed(1)} ms/step\n`);
}
const prompt = { tokens: Int32Array.from({ length: chunk }, (_, i) => (i * 31 + 7) % vocab), startPos: 0, pageTable: Int32Array.from({ length: chunkPages }, (_, i) => i) };
const prefillMs = await best(3, () => b.forwardTokens({ seqs: [prompt], sampling: greedy(1) }));
process.stderr.write(`prefill ${chunk} tokens: ${prefillMs.toFixed(1)} ms\n`);
b.close();
const out = { device: `${b.device} (dry run: ${model})`, date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC', ctx, decode, prefill: [{ tokens: chunk, wallMs: prefillMs, gpuMs: prefillMs }] };
writeFileSync(outPath, JSON.stringify(out));
process.stdout.write('== engine bench summary (dry run, CPU backend)\n' + JSON.stringify(out) + '\n');
