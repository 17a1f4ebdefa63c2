/**
 * Decode step time through the whole Node path (openModel -> NativeBackend -> addon worker thread
 * -> CUDA backend) for the llama-3.1-8b preset on a GPU: real 1024-token prefills, then decode
 * steps (fixed tokens) at batch 1 and 64, three ways:
 *  - logits: `forward()` returns f32 logits (a new Float32Array per step), then a JS argmax (timed apart);
 *  - tokens: `forwardTokens()` samples on the GPU and returns numSeqs int32, greedy and T 0.8 / top-p 0.9.
 * Then a check of the sampled path against the logits path on one step: greedy tokens equal the
 * argmax of the logits, sampled tokens equal the TS sampler on them (allowed to differ only where
 * float32 vs float64 weights move a boundary: rare).
 * Prints one JSON line; host time = wall time here minus the GPU time engine-bench reports for the
 * same batch. Usage: node --import tsx bench/gpu/node-decode.ts [device=cuda:0] [preset=llama-3.1-8b]
 *
 * `--masks [--batch 64] [--ctx 1024] [--steps 20] [--workers N]`: instead, structured outputs' cost
 * per decode step (grammar workers + masked sampling vs. plain steps, masks computed before the
 * step (serial) and while its forward runs (gated, the engine's path); mask-decode.ts), one JSON line.
 */
import { packSampling } from '../../actors/engine/sampler.ts';
import { argmax, sampleToken } from '../../test/shared/sampling-reference.ts';
import type { ForwardSeq } from '../../native/backend.ts';
import { openModel } from '../../native/index.ts';
import { maskBenchPagesPerSeq, runMaskBench } from './mask-decode.ts';

const flag = (name: string, d: number) => (process.argv.includes(`--${name}`) ? Number(process.argv[process.argv.indexOf(`--${name}`) + 1]) : d);
const positional = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !(i > 0 && all[i - 1].startsWith('--') && all[i - 1] !== '--masks'));
if (process.argv.includes('--masks')) {
  const o = { batch: flag('batch', 64), ctx: flag('ctx', 1024), steps: flag('steps', 20), warm: 3, pageSize: 16, workers: process.argv.includes('--workers') ? flag('workers', 1) : undefined };
  const m = await openModel(positional[1] ?? 'llama-3.1-8b', { device: positional[0] ?? 'cuda:0', numPages: o.batch * maskBenchPagesPerSeq(o) + 1, pageSize: o.pageSize });
  const r = await runMaskBench(m, o);
  const name = (m.backend as unknown as { deviceName?: string }).deviceName ?? positional[0];
  m.backend.close();
  console.log(JSON.stringify({ device: name, mode: 'masks', ...r }));
  process.exit(0);
}
const device = process.argv[2] ?? 'cuda:0';
const PAGE = 16;
const CTX = 1024;
const STEPS = 20;
const WARM = 3;
const MODES = ['logits', 'greedy', 'sampled'] as const;
const pagesPerSeq = Math.ceil((CTX + MODES.length * (STEPS + WARM) + 1) / PAGE);
const batches = [1, 64];
const model = await openModel(process.argv[3] ?? 'llama-3.1-8b', { device, numPages: Math.max(...batches) * pagesPerSeq + 1, pageSize: PAGE });
const backend = model.backend;
const vocab = model.config.vocabSize;
const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];
const results: Record<string, number | string>[] = [];
for (const batch of batches) {
  const tables = Array.from({ length: batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  for (let s0 = 0; s0 < batch; s0 += 8) {
    const seqs = tables.slice(s0, s0 + 8).map((pageTable, i) => ({
      tokens: Int32Array.from({ length: CTX }, (_, j) => (j * 7919 + (s0 + i) * 104729 + 13) % vocab),
      startPos: 0,
      pageTable,
    }));
    const sampling = packSampling(seqs.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 })));
    await backend.forwardTokens({ seqs, sampling });
  }
  const row: Record<string, number | string> = { batch };
  let pos = CTX;
  const stepSeqs = (step: number): ForwardSeq[] => tables.map((pageTable, s) => ({ tokens: Int32Array.of((step * 31 + s) % vocab), startPos: pos, pageTable }));
  for (const mode of MODES) {
    const sampling = packSampling(tables.map((_, s) => ({ temperature: mode === 'sampled' ? 0.8 : 0, topP: 0.9, seed: s, step: 0 })));
    const wall: number[] = [];
    let argmaxMs = 0;
    for (let step = 0; step < WARM + STEPS; step++, pos++) {
      const seqs = stepSeqs(step);
      sampling.step.fill(step);
      const t0 = performance.now();
      if (mode === 'logits') {
        const logits = await backend.forward({ seqs });
        const t1 = performance.now();
        for (let s = 0; s < batch; s++) argmax(logits.subarray(s * vocab, (s + 1) * vocab));
        if (step >= WARM) argmaxMs += performance.now() - t1;
        if (step >= WARM) wall.push(t1 - t0);
      } else {
        await backend.forwardTokens({ seqs, sampling });
        if (step >= WARM) wall.push(performance.now() - t0);
      }
    }
    row[`${mode}WallMs`] = median(wall);
    if (mode === 'logits') row.argmaxMs = argmaxMs / STEPS;
  }
  // One step both ways (the same inputs write the same KV): sampled on the GPU vs TS on the logits.
  const seqs = stepSeqs(0);
  const logits = await backend.forward({ seqs });
  const rows = tables.map((_, s) => ({ temperature: s % 2 ? 0.8 : 0, topP: s % 4 === 1 ? 1 : 0.9, seed: 1000 + s, step: 5 }));
  const tokens = await backend.forwardTokens({ seqs, sampling: packSampling(rows) });
  let greedySame = 0;
  let sampledSame = 0;
  rows.forEach((r, s) => {
    const ts = sampleToken(logits.subarray(s * vocab, (s + 1) * vocab), r.temperature, r.topP, r.seed, r.step);
    if (r.temperature === 0) greedySame += Number(ts === tokens[s]);
    else sampledSame += Number(ts === tokens[s]);
  });
  row.greedyAgree = `${greedySame}/${rows.filter((r) => r.temperature === 0).length}`;
  row.sampledAgree = `${sampledSame}/${rows.filter((r) => r.temperature !== 0).length}`;
  results.push(row);
}
const deviceName = (backend as unknown as { deviceName?: string }).deviceName ?? device;
backend.close();
console.log(JSON.stringify({ device: deviceName, ctx: CTX, results }));
