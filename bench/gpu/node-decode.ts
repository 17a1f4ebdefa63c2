/**
 * Decode step time through the whole Node path (openModel -> NativeBackend.forward -> addon worker
 * thread -> CUDA backend -> Float32Array logits) for the llama-3.1-8b preset on a GPU: real
 * 1024-token prefills, then greedy-free decode steps (fixed tokens) at batch 1 and 64. Prints one
 * JSON line; host time = this wall time minus the GPU time engine-bench reports for the same batch.
 * Usage: node --import tsx bench/gpu/node-decode.ts [device=cuda:0]
 */
import { openModel } from '../../native/index.ts';

const device = process.argv[2] ?? 'cuda:0';
const PAGE = 16;
const CTX = 1024;
const STEPS = 20;
const WARM = 3;
const pagesPerSeq = Math.ceil((CTX + STEPS + WARM) / PAGE);
const batches = [1, 64];
const model = await openModel('llama-3.1-8b', { device, numPages: Math.max(...batches) * pagesPerSeq + 1, pageSize: PAGE });
const vocab = model.config.vocabSize;
const results: Record<string, number>[] = [];
for (const batch of batches) {
  const tables = Array.from({ length: batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  for (let s0 = 0; s0 < batch; s0 += 8) {
    const seqs = tables.slice(s0, s0 + 8).map((pageTable, i) => ({
      tokens: Int32Array.from({ length: CTX }, (_, j) => (j * 7919 + (s0 + i) * 104729 + 13) % vocab),
      startPos: 0,
      pageTable,
    }));
    await model.backend.forward({ seqs });
  }
  const wall: number[] = [];
  let argmaxMs = 0;
  for (let step = 0; step < WARM + STEPS; step++) {
    const seqs = tables.map((pageTable, s) => ({ tokens: Int32Array.of((step * 31 + s) % vocab), startPos: CTX + step, pageTable }));
    const t0 = performance.now();
    const logits = await model.backend.forward({ seqs });
    const t1 = performance.now();
    // What an engine does next with the logits: greedy argmax per row (timed separately).
    for (let s = 0; s < batch; s++) {
      let best = s * vocab;
      for (let i = best + 1; i < (s + 1) * vocab; i++) if (logits[i] > logits[best]) best = i;
    }
    if (step >= WARM) {
      wall.push(t1 - t0);
      argmaxMs += performance.now() - t1;
    }
  }
  wall.sort((a, b) => a - b);
  results.push({ batch, forwardWallMs: wall[wall.length >> 1], argmaxMs: argmaxMs / STEPS });
}
const deviceName = (model.backend as unknown as { deviceName?: string }).deviceName ?? device;
model.backend.close();
console.log(JSON.stringify({ device: deviceName, ctx: CTX, results }));
