/**
 * The cost of the sampling extras on GPU decode (issue 18: penalties and the like must cost at most
 * 5% of decode throughput at batch 64): decode steps through the whole Node path (forwardTokens,
 * CUDA graphs) at batch 1 and 64 after 1024-token prefills, T 0.8 / top-p 0.9 on every row, with
 *  - none: plain sampling (the graph without the extras' kernels);
 *  - penalties: repetition 1.1, presence 0.3, frequency 0.2 on every row (a penalty slot each,
 *    rebuilt from the prompt at the first step, then kept on the device);
 *  - mask: a grammar's allowed-token bitmask on every row (structured outputs' device cost: about
 *    half the vocabulary allowed, another mask every step), nothing else;
 *  - topk: top_k 50 + min_p 0.02; logprobs: 20 top logprobs;
 *  - all: penalties + top_k 50 + min_p 0.02 + 20 top logprobs on every row.
 * Prints one JSON line: median wall ms per step per mode and the extras' cost in % of `none`.
 * Usage: node --import tsx bench/gpu/extras-decode.ts [device=cuda:0] [preset=llama-3.1-8b]
 */
import { packSampling } from '../../actors/engine/sampler.ts';
import type { ForwardSampling, ForwardSamplingExtras, ForwardSeq } from '../../native/backend.ts';
import { openModel } from '../../native/index.ts';

const device = process.argv[2] ?? 'cuda:0';
const PAGE = 16;
const CTX = 1024;
const STEPS = 30;
const WARM = 3;
const MODES = ['none', 'penalties', 'mask', 'topk', 'logprobs', 'all'] as const;
const pagesPerSeq = Math.ceil((CTX + MODES.length * (STEPS + WARM) + 1) / PAGE);
const batches = [1, 64];
const model = await openModel(process.argv[3] ?? 'llama-3.1-8b', { device, numPages: Math.max(...batches) * pagesPerSeq + 1, pageSize: PAGE });
const backend = model.backend;
const vocab = model.config.vocabSize;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];
const promptOf = (s: number) => Int32Array.from({ length: CTX }, (_, j) => (j * 7919 + s * 104729 + 13) % vocab);

/** Extras of `mode` for `batch` rows; reset: rebuild every row's slot from its prompt. */
function extrasOf(mode: (typeof MODES)[number], batch: number, reset: boolean, step: number): ForwardSamplingExtras | undefined {
  if (mode === 'none') return undefined;
  if (mode === 'mask') {
    const words = Math.ceil(vocab / 32);
    const m = new Uint32Array(batch * words);
    for (let i = 0; i < m.length; i++) m[i] = Math.imul(i + 1, 2654435761 + step) >>> 0;  // ~half the bits
    return { allowedMask: m };
  }
  if (mode === 'topk') return { topK: new Int32Array(batch).fill(50), minP: new Float32Array(batch).fill(0.02) };
  if (mode === 'logprobs')
    return { numLogprobs: new Int32Array(batch).fill(20), logprobsOut: new Float32Array(batch * 21), topIdsOut: new Int32Array(batch * 20) };
  const all = mode === 'all';
  const hist = reset ? Array.from({ length: batch }, (_, s) => promptOf(s)) : [];
  const histTokens = new Int32Array(hist.reduce((a, h) => a + h.length, 0));
  const histOffsets = new Int32Array(batch + 1);
  hist.forEach((h, s) => (histTokens.set(h, histOffsets[s]), (histOffsets[s + 1] = histOffsets[s] + h.length)));
  if (!reset) histOffsets.fill(0);
  return {
    topK: new Int32Array(batch).fill(all ? 50 : 0),
    minP: new Float32Array(batch).fill(all ? 0.02 : 0),
    repetitionPenalty: new Float32Array(batch).fill(1.1),
    presencePenalty: new Float32Array(batch).fill(0.3),
    frequencyPenalty: new Float32Array(batch).fill(0.2),
    slot: Int32Array.from({ length: batch }, (_, s) => s),
    reset: new Uint8Array(batch).fill(reset ? 1 : 0),
    histOffsets,
    histTokens,
    histNumOutput: new Int32Array(batch),
    numLogprobs: new Int32Array(batch).fill(all ? 20 : -1),
    logprobsOut: new Float32Array(batch * 21),
    topIdsOut: new Int32Array(batch * 20),
  };
}

const results: Record<string, number>[] = [];
for (const batch of batches) {
  const tables = Array.from({ length: batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  for (let s0 = 0; s0 < batch; s0 += 8) {
    const seqs = tables.slice(s0, s0 + 8).map((pageTable, i) => ({ tokens: promptOf(s0 + i), startPos: 0, pageTable }));
    await backend.forwardTokens({ seqs, sampling: packSampling(seqs.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 }))) });
  }
  const row: Record<string, number> = { batch };
  let pos = CTX;
  const stepSeqs = (step: number): ForwardSeq[] => tables.map((pageTable, s) => ({ tokens: Int32Array.of((step * 31 + s) % vocab), startPos: pos, pageTable }));
  for (const mode of MODES) {
    const base = packSampling(tables.map((_, s) => ({ temperature: 0.8, topP: 0.9, seed: s, step: 0 })));
    const wall: number[] = [];
    for (let step = 0; step < WARM + STEPS; step++, pos++) {
      base.step.fill(step);
      const sampling: ForwardSampling = { ...base };
      const x = extrasOf(mode, batch, step === 0, step);
      if (x) sampling.extras = x;
      const t0 = performance.now();
      await backend.forwardTokens({ seqs: stepSeqs(step), sampling });
      if (step >= WARM) wall.push(performance.now() - t0);
    }
    row[`${mode}Ms`] = median(wall);
  }
  for (const m of MODES.slice(1)) row[`${m}CostPct`] = (100 * (row[`${m}Ms`] - row.noneMs)) / row.noneMs;
  results.push(row);
}
backend.close();
console.log(JSON.stringify({ device, ctx: CTX, steps: STEPS, results }));
