// Logit processing before sampling (common/logit-processing.h): the C++ code (through
// test/native/sampling-extras-check.cc, built with the host compiler: the addon has no
// sampleLogits) equals the TS reference (test/shared/logit-processing-reference.ts) on random logits for
// top-k, min-p, penalties, bias and logprobs; each parameter changes the outcome the way it
// should; bad extras given to the CPU backend's forwardTokens are typed errors naming the field.
import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { logprobsOf, processLogits, sampleProcessed, type ProcessingRow } from '../shared/logit-processing-reference.ts';
import { packSampling, type SampleRow } from '../../actors/engine/sampler.ts';
import type { ForwardBatch, ForwardSampling, ForwardSamplingExtras } from '../../native/backend.ts';
import { openModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, hostCheck, hostCheckInput, pageRange } from './helpers.ts';
import { xorshift } from '../shared/xorshift.ts';


/** The 15 extras arrays in sampling-extras-check.cc's order (absent: empty). */
const EXTRAS_ORDER = ['topK', 'minP', 'repetitionPenalty', 'presencePenalty', 'frequencyPenalty', 'slot', 'reset', 'histOffsets', 'histTokens', 'histNumOutput', 'biasOffsets', 'biasTokens', 'biasValues', 'numLogprobs', 'allowedMask'] as const;

/** The C++ processing + sampling on `z` (rows, vocab) with `x`; fills x.logprobsOut / x.topIdsOut when present. */
function cppSample(z: Float32Array, vocab: number, rows: SampleRow[], x: ForwardSamplingExtras): number[] {
  const parts: Buffer[] = [hostCheckInput(vocab, rows)];
  for (const k of EXTRAS_ORDER) {
    const a = x[k] as ArrayLike<number> | undefined;
    const arr = !a ? new Int32Array(0) : a instanceof Uint8Array ? Int32Array.from(a) : (a as Int32Array | Float32Array | Uint32Array);
    parts.push(Buffer.from(Int32Array.of(arr.length).buffer), Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
  }
  parts.push(Buffer.from(z.buffer, z.byteOffset, z.byteLength));
  const run = spawnSync(hostCheck('sampling-extras-check'), [], { input: Buffer.concat(parts), maxBuffer: 1 << 26 });
  assert.is(run.status, 0, `sampling-extras-check exited with an error: ${run.stderr}`);
  const out = run.stdout.buffer.slice(run.stdout.byteOffset, run.stdout.byteOffset + run.stdout.byteLength);
  const n = rows.length;
  if (x.logprobsOut) x.logprobsOut.set(new Float32Array(out, 4 * n, 21 * n));
  if (x.topIdsOut) x.topIdsOut.set(new Int32Array(out, 4 * n + 84 * n, 20 * n));
  return [...new Int32Array(out, 0, n)];
}

type Row = SampleRow & ProcessingRow & { numLogprobs?: number };

/** The extras arrays of `rows` (every row with a history gets a slot and a reset). */
function extrasOf(rows: Row[]): ForwardSamplingExtras {
  const n = rows.length;
  const hist: number[] = [];
  const histOffsets = [0];
  const biasT: number[] = [];
  const biasV: number[] = [];
  const biasOffsets = [0];
  for (const r of rows) {
    hist.push(...(r.history ?? []));
    histOffsets.push(hist.length);
    for (const [t, b] of r.bias ?? []) biasT.push(t), biasV.push(b);
    biasOffsets.push(biasT.length);
  }
  return {
    topK: Int32Array.from(rows, (r) => r.topK ?? 0),
    minP: Float32Array.from(rows, (r) => r.minP ?? 0),
    repetitionPenalty: Float32Array.from(rows, (r) => r.repetitionPenalty ?? 1),
    presencePenalty: Float32Array.from(rows, (r) => r.presencePenalty ?? 0),
    frequencyPenalty: Float32Array.from(rows, (r) => r.frequencyPenalty ?? 0),
    slot: Int32Array.from(rows, (r, i) => (r.history ? i : -1)),
    reset: Uint8Array.from(rows, (r) => (r.history ? 1 : 0)),
    histOffsets: Int32Array.from(histOffsets),
    histTokens: Int32Array.from(hist),
    histNumOutput: Int32Array.from(rows, (r) => r.numOutput ?? 0),
    biasOffsets: Int32Array.from(biasOffsets),
    biasTokens: Int32Array.from(biasT),
    biasValues: Float32Array.from(biasV),
    numLogprobs: Int32Array.from(rows, (r) => r.numLogprobs ?? -1),
    logprobsOut: new Float32Array(n * 21),
    topIdsOut: new Int32Array(n * 20),
  };
}

function nativeSample(z: Float32Array, vocab: number, rows: Row[]): { tokens: number[]; x: ForwardSamplingExtras } {
  const x = extrasOf(rows);
  return { tokens: cppSample(z, vocab, rows, x), x };
}

function tsSample(z: Float32Array, vocab: number, r: Row, i: number): number {
  const p = processLogits(z.subarray(i * vocab, (i + 1) * vocab), r);
  return sampleProcessed(p, r.temperature, r.topP, r.seed, r.step, r.topK ?? 0, r.minP ?? 0);
}

test('native processing + sampling equals the TS reference on random logits', () => {
  const rnd = xorshift(77);
  for (const vocab of [50, 1000, 32000]) {
    for (let rep = 0; rep < 12; rep++) {
      const history = Array.from({ length: 40 }, () => Math.floor(rnd() * vocab));
      const rows: Row[] = [
        { temperature: 0.8, topP: 1, seed: rep, step: 1, topK: 5 },
        { temperature: 1.2, topP: 0.9, seed: rep + 1, step: 2, minP: 0.1 },
        { temperature: 1, topP: 1, seed: rep + 2, step: 3, repetitionPenalty: 1.3, history, numOutput: 10 },
        { temperature: 0.7, topP: 0.95, seed: rep + 3, step: 4, presencePenalty: 1.5, frequencyPenalty: 0.5, history, numOutput: 25 },
        { temperature: 0, topP: 1, seed: 0, step: 0, bias: [[3, 100]] },
        { temperature: 1.5, topP: 0.8, seed: rep + 5, step: 9, topK: 40, minP: 0.02, repetitionPenalty: 0.8, frequencyPenalty: -0.3, history, numOutput: 5, bias: [[1, -Infinity], [7, 2]] },
      ];
      const z = Float32Array.from({ length: vocab * rows.length }, () => (rnd() - 0.5) * [2, 8, 20][rep % 3]);
      const { tokens } = nativeSample(z, vocab, rows);
      assert.equal(tokens, rows.map((r, i) => tsSample(z, vocab, r, i)), `vocab ${vocab} rep ${rep}`);
      assert.is(tokens[4], 3, 'a +100 bias wins a greedy row');
    }
  }
});

test('each parameter has its effect', () => {
  const vocab = 64;
  const rnd = xorshift(5);
  const z = Float32Array.from({ length: vocab }, () => rnd() * 4);
  const many = (r: Partial<Row>) => {
    const rows: Row[] = Array.from({ length: 200 }, (_, k) => ({ temperature: 1, topP: 1, seed: 11, step: k, ...r }));
    const zz = new Float32Array(vocab * rows.length);
    rows.forEach((_, i) => zz.set(z, i * vocab));
    return new Set(nativeSample(zz, vocab, rows).tokens);
  };
  const sorted = Array.from(z.keys()).sort((a, b) => z[b] - z[a]);
  assert.ok(many({}).size > 10, 'plain sampling spreads');
  assert.equal([...many({ topK: 3 })].sort(), sorted.slice(0, 3).sort(), 'top_k 3 keeps the 3 best');
  assert.equal([...many({ topK: 1 })], [sorted[0]], 'top_k 1 is greedy');
  const best = z[sorted[0]];
  const minP = 0.5;
  for (const t of many({ minP })) assert.ok(Math.exp(z[t] - best) >= minP - 1e-6, `min_p keeps only likely tokens (${t})`);
  assert.ok(!many({ bias: [[sorted[0], -Infinity]] }).has(sorted[0]), 'a -inf bias bans');
  const greedyRow = (r: Partial<Row>) => nativeSample(z, vocab, [{ temperature: 0, topP: 1, seed: 0, step: 0, ...r }]).tokens[0];
  assert.is(greedyRow({}), sorted[0]);
  assert.is.not(greedyRow({ presencePenalty: 100, history: [sorted[0]], numOutput: 1 }), sorted[0], 'presence penalty on an output token');
  assert.is(greedyRow({ presencePenalty: 100, history: [sorted[0]], numOutput: 0 }), sorted[0], 'presence does not count prompt tokens');
  assert.is.not(greedyRow({ repetitionPenalty: 100, history: [sorted[0]], numOutput: 0 }), sorted[0], 'repetition counts prompt tokens');
  assert.is.not(greedyRow({ frequencyPenalty: 50, history: [sorted[0], sorted[0]], numOutput: 2 }), sorted[0], 'frequency penalty');
});

test('logprobs are the log-softmax of the processed logits at the temperature', () => {
  const vocab = 300;
  const rnd = xorshift(9);
  const z = Float32Array.from({ length: vocab * 2 }, () => (rnd() - 0.5) * 10);
  const rows: Row[] = [
    { temperature: 0, topP: 1, seed: 0, step: 0, numLogprobs: 5 },
    { temperature: 0.5, topP: 1, seed: 3, step: 0, numLogprobs: 20, presencePenalty: 2, history: [1, 2, 3], numOutput: 2 },
  ];
  const { tokens, x } = nativeSample(z, vocab, rows);
  rows.forEach((r, i) => {
    const ref = logprobsOf(processLogits(z.subarray(i * vocab, (i + 1) * vocab), r), r.temperature, tokens[i], r.numLogprobs!);
    const lp = x.logprobsOut!.subarray(i * 21, (i + 1) * 21);
    assert.ok(Math.abs(lp[0] - ref.logprob) < 1e-4, `row ${i} token logprob ${lp[0]} vs ${ref.logprob}`);
    ref.top.forEach(([id, l], k) => {
      assert.is(x.topIdsOut![i * 20 + k], id, `row ${i} top ${k}`);
      assert.ok(Math.abs(lp[1 + k] - l) < 1e-4);
    });
  });
  assert.is(x.topIdsOut![5], -1, 'entries past the asked count stay empty');
});

test('the grammar hook: an allowed-token mask restricts what is drawn, as the reference does', () => {
  const vocab = 100;
  const words = Math.ceil(vocab / 32);
  const rnd = xorshift(31);
  const allowed = [3, 40, 41, 99];
  const rows: Row[] = Array.from({ length: 50 }, (_, k) => ({ temperature: 1.3, topP: 0.95, seed: 8, step: k }));
  const mask = new Uint32Array(rows.length * words);
  rows.forEach((_, s) => allowed.forEach((t) => (mask[s * words + (t >>> 5)] |= 1 << (t & 31))));
  const z = Float32Array.from({ length: vocab * rows.length }, () => (rnd() - 0.5) * 6);
  const tokens = cppSample(z, vocab, rows, { allowedMask: mask });
  assert.ok(tokens.every((t) => allowed.includes(t)), `${tokens}`);
  assert.ok(new Set(tokens).size > 1);
  const ref = rows.map((r, i) => tsSample(z, vocab, { ...r, allowedMask: mask.subarray(i * words, (i + 1) * words) }, i));
  assert.equal(tokens, ref);
});

test('bad extras are typed errors naming the field (CPU backend forwardTokens)', async () => {
  const fixture = await openModel(FIXTURE, { numPages: 16, pageSize: 16, numThreads: 1 });
  const b = fixture.backend;
  const vocab = b.config.vocabSize;
  const batch: ForwardBatch = { seqs: [{ tokens: Int32Array.from(REFERENCE.cases[0].prompt_ids), startPos: 0, pageTable: pageRange(0, 8) }] };
  const base: ForwardSampling = packSampling([{ temperature: 1, topP: 1, seed: 1, step: 0 }]);
  const checks: [Record<string, unknown>, RegExp][] = [];
  const bad = (x: Record<string, unknown>, re: RegExp) => checks.push([x, re]);
  bad({ topK: Int32Array.of(-1) }, /topK/);
  bad({ topK: Int32Array.of(1, 2) }, /sampling.extras.topK/);
  bad({ minP: Float32Array.of(2) }, /minP/);
  bad({ repetitionPenalty: Float32Array.of(0) }, /repetitionPenalty/);
  bad({ biasOffsets: Int32Array.of(0, 1), biasTokens: Int32Array.of(vocab), biasValues: Float32Array.of(1) }, /bias token/);
  bad({ biasOffsets: Int32Array.of(0, 2), biasTokens: Int32Array.of(1), biasValues: Float32Array.of(1) }, /biasOffsets/);
  bad({ slot: Int32Array.of(0) }, /slot needs/);
  bad({ numLogprobs: Int32Array.of(21), logprobsOut: new Float32Array(21), topIdsOut: new Int32Array(20) }, /numLogprobs/);
  bad({ numLogprobs: Int32Array.of(2) }, /logprobsOut/);
  try {
    for (const [x, re] of checks) {
      try {
        await b.forwardTokens({ ...batch, sampling: { ...base, extras: x as ForwardSamplingExtras } });
      } catch (e) {
        assert.ok(re.test((e as Error).message), `'${(e as Error).message}' does not match ${re}`);
        assert.is((e as any).code, 'NATIVE_ERROR', (e as Error).message); // native BAD_ARGUMENT, mapped by native/addon.ts
        continue;
      }
      assert.unreachable(`expected an error matching ${re}`);
    }
    // the backend keeps working
    const tokens = await b.forwardTokens({ ...batch, sampling: base });
    assert.is(tokens.length, 1);
  } finally {
    b.close();
  }
});

test('penalty slots first seen together in one step keep their counts (CPU backend forwardTokens)', async () => {
  // 64 rows whose slots are all new: the slot table grows within the step (it once moved states
  // that earlier rows already pointed at: the first step's counts were lost, and at batch 64 with
  // long histories the process crashed). Two steps; each row's second-step logprobs (which see
  // the first step's token through the penalties) equal the same row run alone.
  const fixture = await openModel(FIXTURE, { numPages: 128, pageSize: 16, numThreads: 2 });
  const b = fixture.backend;
  const n = 64;
  const prompt = Int32Array.from(REFERENCE.cases[0].prompt_ids);
  const table = (s: number) => pageRange(2 * s, 2);
  const hist = Int32Array.from({ length: 1024 }, (_, i) => (i * 7919 + 13) % b.config.vocabSize); // a long history: large count tables
  const extrasFor = (rows: number[], slot0: number, reset: boolean): ForwardSamplingExtras => {
    const len = reset ? hist.length : 0;
    const histTokens = new Int32Array(rows.length * len);
    if (reset) rows.forEach((_, i) => histTokens.set(hist, i * len));
    return {
      repetitionPenalty: new Float32Array(rows.length).fill(1.3),
      presencePenalty: new Float32Array(rows.length).fill(0.5),
      frequencyPenalty: new Float32Array(rows.length).fill(2),
      slot: Int32Array.from(rows, (s) => slot0 + s * 7),
      reset: new Uint8Array(rows.length).fill(reset ? 1 : 0),
      histOffsets: Int32Array.from({ length: rows.length + 1 }, (_, i) => i * len),
      histTokens,
      histNumOutput: new Int32Array(rows.length),
      numLogprobs: new Int32Array(rows.length).fill(5),
      logprobsOut: new Float32Array(rows.length * 21),
      topIdsOut: new Int32Array(rows.length * 20),
    };
  };
  const sample = (rows: number[], step: number) => packSampling(rows.map((s) => ({ temperature: 0.9, topP: 0.95, seed: s, step })));
  /** Two steps of `rows` on slots from slot0: each row's second-step logprobs (21 numbers). */
  const twoSteps = async (rows: number[], slot0: number) => {
    const x1 = extrasFor(rows, slot0, true);
    const t1 = await b.forwardTokens({ seqs: rows.map((s) => ({ tokens: prompt, startPos: 0, pageTable: table(s) })), sampling: { ...sample(rows, 0), extras: x1 } });
    const x2 = extrasFor(rows, slot0, false);
    const seqs = rows.map((s, i) => ({ tokens: Int32Array.of(t1[i]), startPos: prompt.length, pageTable: table(s) }));
    await b.forwardTokens({ seqs, sampling: { ...sample(rows, 1), extras: x2 } });
    return rows.map((_, i) => [...x2.logprobsOut!.subarray(i * 21, i * 21 + 6)]);
  };
  try {
    const all = Array.from({ length: n }, (_, s) => s);
    const together = await twoSteps(all, 1000);
    for (const s of [0, 1, 17, n - 1]) {
      const [alone] = await twoSteps([s], 5000);
      assert.equal(together[s], alone, `row ${s}`);
    }
  } finally {
    b.close();
  }
});

test.run();
