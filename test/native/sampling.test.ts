// Sampling inside the backend: the C++ sampler equals the TS definition on random logits, the
// CPU backend's forwardTokens equals TS sampling of its own logits (greedy = the fixture's
// reference), and bad sampling inputs are typed errors.
import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { packSampling, type SampleRow } from '../../actors/engine/sampler.ts';
import { sampleToken } from '../shared/sampling-reference.ts';
import type { NativeBackendHandle } from '../../native/addon.ts';
import type { ForwardBatch, ForwardSampling } from '../../native/backend.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, hostCheck, hostCheckInput, pageRange, rejects } from './helpers.ts';
import { xorshift } from '../shared/xorshift.ts';

let fixture: LoadedModel;
test.before(async () => {
  fixture = await openModel(FIXTURE, { numPages: 32, pageSize: 16, numThreads: 2 });
});
test.after(() => fixture.backend.close());

const ROWS: SampleRow[] = [
  { temperature: 0, topP: 1, seed: 1, step: 0 },
  { temperature: 1, topP: 1, seed: 7, step: 3 },
  { temperature: 0.7, topP: 0.9, seed: 9, step: 1 },
  { temperature: 1.5, topP: 0.5, seed: 4, step: 100 },
  { temperature: 0.05, topP: 0.999, seed: 2 ** 32 - 1, step: 2 ** 32 - 1 },
  { temperature: 3, topP: 0.01, seed: 123456, step: 17 },
];

/** The C++ sampler (common/sampling.h) on `z` (rows, vocab), through test/native/sampling-check.cc built with the host compiler. */
function cppTokens(z: Float32Array, vocab: number, rows: SampleRow[]): number[] {
  const input = Buffer.concat([hostCheckInput(vocab, rows), Buffer.from(z.buffer, z.byteOffset, z.byteLength)]);
  const run = spawnSync(hostCheck('sampling-check'), [], { input, maxBuffer: 1 << 20 });
  assert.is(run.status, 0, 'sampling-check exited with an error');
  return [...new Int32Array(run.stdout.buffer.slice(run.stdout.byteOffset, run.stdout.byteOffset + 4 * rows.length))];
}

function tsTokens(z: Float32Array, vocab: number, rows: SampleRow[]): number[] {
  return rows.map((r, i) => sampleToken(z.subarray(i * vocab, (i + 1) * vocab), r.temperature, r.topP, r.seed, r.step));
}

test('the C++ sampler equals the TS one on random logits (Llama 3 vocabulary and small ones)', () => {
  const rnd = xorshift(2024);
  for (const [vocab, reps] of [[128256, 2], [1000, 40], [7, 40]] as const) {
    for (let rep = 0; rep < reps; rep++) {
      const rows = ROWS.map((r, i) => ({ ...r, seed: (r.seed + rep * 7919) >>> 0, step: (r.step + rep + i) >>> 0 }));
      const spread = [1, 8, 30][rep % 3];
      const z = Float32Array.from({ length: vocab * rows.length }, () => (rnd() - 0.5) * spread);
      if (rep % 5 === 1) for (let i = 0; i < z.length; i += 4) z[i] = z[1]; // ties
      if (rep % 5 === 2) for (let i = 0; i < z.length; i += 9) z[i] = i % 2 ? NaN : -Infinity;
      assert.equal(cppTokens(z, vocab, rows), tsTokens(z, vocab, rows), `vocab ${vocab}, rep ${rep}`);
    }
  }
});

test('forwardTokens samples on the backend what TS samples from its logits; greedy rows are the reference', async () => {
  const b = fixture.backend;
  const cases = REFERENCE.cases.slice(0, 3);
  const prefill = (first: number): ForwardBatch => ({
    seqs: cases.map((c, i) => ({ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(first + 8 * i, 8) })),
  });
  const logits = await b.forward(prefill(0));
  const rows = ROWS.slice(0, 3);
  const tokens = await b.forwardTokens({ ...prefill(0), sampling: packSampling(rows) });
  assert.equal([...tokens], tsTokens(logits, b.config.vocabSize, rows));
  assert.is(tokens[0], cases[0].greedy_ids[0]);
  // A greedy decode step batched over the three sequences reproduces the reference continuation.
  const greedy = packSampling(cases.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 })));
  const next = [...(await b.forwardTokens({ ...prefill(0), sampling: greedy }))];
  for (let k = 1; k < 4; k++) {
    const decode: ForwardBatch = {
      seqs: cases.map((c, i) => ({ tokens: Int32Array.of(next[i]), startPos: c.prompt_ids.length + k - 1, pageTable: pageRange(8 * i, 8) })),
    };
    const got = await b.forwardTokens({ ...decode, sampling: greedy });
    cases.forEach((c, i) => assert.is(got[i], c.greedy_ids[k], `case ${i} token ${k}`));
    next.splice(0, 3, ...got);
  }
});


test('bad sampling inputs are typed errors naming the field; the backend keeps working', async () => {
  const b = fixture.backend;
  const batch: ForwardBatch = { seqs: [{ tokens: Int32Array.from(REFERENCE.cases[0].prompt_ids), startPos: 0, pageTable: pageRange(0, 8) }] };
  const ok = packSampling([{ temperature: 1, topP: 0.9, seed: 1, step: 0 }]);
  const bad = (patch: Partial<Record<keyof ForwardSampling, unknown>>) => b.forwardTokens({ ...batch, sampling: { ...ok, ...patch } as ForwardSampling });
  await rejects(bad({ temperature: Float32Array.of(NaN) }), 'BAD_REQUEST', 'sampling.temperature');
  await rejects(bad({ temperature: Float32Array.of(Infinity) }), 'BAD_REQUEST', 'finite');
  await rejects(bad({ topP: Float32Array.of(0) }), 'BAD_REQUEST', 'sampling.topP');
  await rejects(bad({ topP: Float32Array.of(1.5) }), 'BAD_REQUEST', '(0, 1]');
  await rejects(bad({ seed: Uint32Array.of(1, 2) }), 'BAD_REQUEST', 'one per sequence');
  await rejects(bad({ step: [0] }), 'BAD_REQUEST', 'Uint32Array');
  await rejects(bad({ temperature: new Float64Array(1) }), 'BAD_REQUEST', 'Float32Array');
  await rejects(b.forwardTokens({ ...batch, logits: 'all', sampling: ok }), 'BAD_REQUEST', "'last'");
  await rejects(b.forwardTokens({ ...batch } as any), 'BAD_REQUEST', 'sampling');
  // The addon checks on its own too (callers other than NativeBackend): its forward, called raw.
  const raw = (b as unknown as { native(): NativeBackendHandle }).native();
  const prompt = Int32Array.from(REFERENCE.cases[0].prompt_ids);
  const rawForward = async (sampling: ForwardSampling) => raw.forward(prompt, Int32Array.of(prompt.length), Int32Array.of(0), pageRange(0, 8), 8, false, sampling);
  const rawRejects = async (sampling: ForwardSampling, needle: RegExp) => {
    const e: any = await rawForward(sampling).then(() => null, (err) => err);
    assert.ok(e && e.code === 'BAD_ARGUMENT' && needle.test(e.message), `raw forward: ${e?.code}: ${e?.message}`);
  };
  await rawRejects({ ...ok, topP: Float32Array.of(-1) }, /topP/);
  await rawRejects({ ...ok, seed: new Uint32Array(2) }, /sampling.seed/);
  const tokens = await b.forwardTokens({ ...batch, sampling: packSampling([{ temperature: 0, topP: 1, seed: 0, step: 0 }]) });
  assert.is(tokens[0], REFERENCE.cases[0].greedy_ids[0]);
});

test.run();
