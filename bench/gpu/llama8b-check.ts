/**
 * The CUDA backend on the Llama-3.1-8B-shaped random checkpoint made by make-llama8b-reference.py
 * (loaded through openModel, i.e. the real safetensors loader): teacher-forced argmax per prompt
 * position against transformers float32, counted where the reference margin is >= 2e-2 (goal:
 * >= 99% agree), and the relative L2 error of the last position's logits. Prints one JSON line.
 * Usage: node --import tsx bench/gpu/llama8b-check.ts CHECKPOINT_DIR [device=cuda:0]
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openModel } from '../../native/index.ts';

const dir = process.argv[2];
const device = process.argv[3] ?? 'cuda:0';
const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
const ids: number[] = ref.prompt_ids;
const t0 = performance.now();
const model = await openModel(dir, { device, numPages: Math.max(64, Math.ceil(ids.length / 16)), pageSize: 16 });
const loadS = (performance.now() - t0) / 1000;
const vocab = model.config.vocabSize;
const pageTable = Int32Array.from({ length: Math.ceil(ids.length / 16) }, (_, i) => i);
const logits = await model.backend.forward({ seqs: [{ tokens: Int32Array.from(ids), startPos: 0, pageTable }], logits: 'all' });
let counted = 0;
let agree = 0;
for (let i = 0; i < ids.length; i++) {
  if (ref.argmax_margin_per_position[i] < 2e-2) continue;
  counted++;
  let best = i * vocab;
  for (let j = best + 1; j < (i + 1) * vocab; j++) if (logits[j] > logits[best]) best = j;
  if (best - i * vocab === ref.argmax_per_position[i]) agree++;
}
const last = logits.subarray((ids.length - 1) * vocab, ids.length * vocab);
let num = 0;
let den = 0;
for (let j = 0; j < vocab; j++) {
  num += (last[j] - ref.last_logits[j]) ** 2;
  den += ref.last_logits[j] ** 2;
}
model.backend.close();
console.log(JSON.stringify({ positions: ids.length, counted, agree, agreeShare: agree / counted, lastLogitsRelL2: Math.sqrt(num / den), loadS }));
