/**
 * CPU engine throughput: prefill tok/s (one long prompt) and decode tok/s (batch 1 and batch 8,
 * greedy, one forward call per step including the argmax) for the `tiny` preset and the
 * tiny-llama-a fixture. Prints a table and writes bench/results/engine-cpu.md.
 * Usage: node --import tsx bench/engine-cpu.ts [--threads N]
 */
import { cpus, loadavg } from 'node:os';
import { mkdirSync, writeFileSync } from 'node:fs';
import { openModel } from '../native/index.ts';
import type { Backend } from '../native/backend.ts';

const PAGE = 16;
const threadsArg = process.argv.indexOf('--threads');
const numThreads = threadsArg > 0 ? Number(process.argv[threadsArg + 1]) : 0;

function argmaxRow(l: Float32Array, row: number, vocab: number): number {
  let best = row * vocab;
  for (let i = best + 1; i < (row + 1) * vocab; i++) if (l[i] > l[best]) best = i;
  return best - row * vocab;
}

function ids(n: number, vocab: number, salt: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 13) % vocab);
}

async function prefill(b: Backend, len: number): Promise<number> {
  let best = Infinity;
  const table = Int32Array.from({ length: Math.ceil(len / PAGE) }, (_, i) => i);
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    await b.forward({ seqs: [{ tokens: ids(len, b.config.vocabSize, r), startPos: 0, pageTable: table }] });
    best = Math.min(best, performance.now() - t0);
  }
  return len / (best / 1000);
}

async function decode(b: Backend, batch: number, promptLen: number, steps: number): Promise<number> {
  const vocab = b.config.vocabSize;
  const pagesPerSeq = Math.ceil((promptLen + steps) / PAGE);
  const tables = Array.from({ length: batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  let logits = await b.forward({ seqs: tables.map((pageTable, s) => ({ tokens: ids(promptLen, vocab, s), startPos: 0, pageTable })) });
  const t0 = performance.now();
  for (let step = 0; step < steps; step++) {
    const seqs = tables.map((pageTable, s) => ({ tokens: Int32Array.of(argmaxRow(logits, s, vocab)), startPos: promptLen + step, pageTable }));
    logits = await b.forward({ seqs });
  }
  return (batch * steps) / ((performance.now() - t0) / 1000);
}

const models = [
  { model: 'tiny', label: 'tiny (preset, vocab 128256, hidden 256, 4 layers, bf16 weights)', prefillLen: 1024 },
  { model: new URL('../test/fixtures/tiny-llama-a', import.meta.url).pathname, label: 'tiny-llama-a fixture (vocab 1024, hidden 64, 2 layers)', prefillLen: 512 },
];
const rows: string[] = [];
let device = '';
for (const m of models) {
  const loaded = await openModel(m.model, { numPages: 8 * 8 + 80, pageSize: PAGE, numThreads });
  const b = loaded.backend;
  device = (b as unknown as { deviceName: string }).deviceName;
  // Best of repeated runs: the numbers are for the code, not for whatever else shares the machine.
  const p = await prefill(b, m.prefillLen);
  const d1 = Math.max(await decode(b, 1, 32, 64), await decode(b, 1, 32, 64));
  const d8 = Math.max(await decode(b, 8, 32, 32), await decode(b, 8, 32, 32));
  b.close();
  rows.push(`| ${m.label} | ${p.toFixed(0)} (${m.prefillLen} tokens) | ${d1.toFixed(1)} | ${d8.toFixed(1)} |`);
  process.stderr.write(`${m.model}: prefill ${p.toFixed(0)} tok/s, decode b1 ${d1.toFixed(1)} tok/s, b8 ${d8.toFixed(1)} tok/s\n`);
}

const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores; backend ${device}; Node ${process.version}`;
const md = [
  '# CPU engine throughput',
  '',
  `Machine: ${machine}. Date: ${new Date().toISOString().slice(0, 10)}.`,
  '',
  'Prefill: one prompt in one forward call (best of 3). Decode: greedy, one forward call per step (best of 2 runs)',
  '(argmax in JS included), after a 32-token prompt; batch 8 = 8 sequences per call. f32 compute.',
  '',
  '| model | prefill tok/s | decode tok/s, batch 1 | decode tok/s, batch 8 (total) |',
  '|---|---|---|---|',
  ...rows,
  '',
  `Load average while measuring: ${loadavg().map((x) => x.toFixed(2)).join(' ')} (other work on the machine shows up`,
  'as run-to-run spread; tiny decode at batch 1 is bound by streaming the 65 MB bf16 LM head).',
  '',
  'Command: `node --import tsx bench/engine-cpu.ts`',
  '',
].join('\n');
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/engine-cpu.md', import.meta.url), md);
process.stdout.write(md);
