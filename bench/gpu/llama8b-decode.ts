/**
 * Greedy decode on the Llama-3.1-8B-shaped random checkpoint made by make-llama8b-reference.py:
 * `batch` sequences (the reference prompt, rotated by 7 tokens per sequence) prefilled, then `steps`
 * greedy tokens each, all sequences in every step (pure-decode steps: the CUDA graphs and the decode
 * attention plans the engine tuned at start). Prints one JSON line per batch with the tokens' FNV-1a
 * hash: two runs whose lines match generated the same tokens. Run each build more than once: every
 * process picks its cuBLASLt plans by timing, and on this random checkpoint (top-2 margins ~1e-2)
 * a plan change alone flips tokens (H200, 2026-12-04: one build gave two hashes at batch 1 and at
 * batch 64 in two processes), so only hashes that agree across a build's own runs say anything.
 * Usage: node --import tsx bench/gpu/llama8b-decode.ts CHECKPOINT_DIR [device=cuda:0] [batches=1,4,64] [steps=32]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packSampling } from '../../actors/engine/sampler.ts';
import type { ForwardSeq } from '../../native/backend.ts';
import { openModel } from '../../native/index.ts';

const dir = process.argv[2];
const device = process.argv[3] ?? 'cuda:0';
const batches = (process.argv[4] ?? '1,4,64').split(',').map(Number);
const steps = Number(process.argv[5] ?? 32);
const PAGE = 16;
const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
const ids: number[] = ref.prompt_ids;
const pagesPerSeq = Math.ceil((ids.length + steps) / PAGE);
const model = await openModel(dir, { device, numPages: Math.max(...batches) * pagesPerSeq + 1, pageSize: PAGE });
const backend = model.backend;
const greedy = (n: number, step: number) => packSampling(Array.from({ length: n }, () => ({ temperature: 0, topP: 1, seed: 0, step })));

for (const batch of batches) {
  const tables = Array.from({ length: batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  const prompts = tables.map((_, s) => Int32Array.from(ids, (_, i) => ids[(i + 7 * s) % ids.length]));
  const out: number[][] = tables.map(() => []);
  const chunk = Math.max(1, Math.floor(4096 / ids.length));  // prefill 4096 tokens per step at most
  for (let s0 = 0; s0 < batch; s0 += chunk) {
    const seqs: ForwardSeq[] = [];
    for (let s = s0; s < Math.min(batch, s0 + chunk); s++) seqs.push({ tokens: prompts[s], startPos: 0, pageTable: tables[s] });
    const t = await backend.forwardTokens({ seqs, sampling: greedy(seqs.length, 0) });
    seqs.forEach((_, k) => out[s0 + k].push(t[k]));
  }
  for (let step = 1; step < steps; step++) {
    const seqs = tables.map((pageTable, s) => ({ tokens: Int32Array.of(out[s][step - 1]), startPos: ids.length + step - 1, pageTable }));
    const t = await backend.forwardTokens({ seqs, sampling: greedy(batch, step) });
    t.forEach((tok, s) => out[s].push(tok));
  }
  let h = 0x811c9dc5;
  for (const row of out) for (const tok of row) for (let b = 0; b < 4; b++) h = Math.imul(h ^ ((tok >>> (8 * b)) & 0xff), 0x01000193) >>> 0;
  console.log(JSON.stringify({ batch, steps, promptLen: ids.length, tokensHash: h.toString(16), first: out[0].slice(0, 8), distinctFirst: new Set(out.map((r) => r[0])).size }));
}
backend.close();
