// The CPU backend against transformers' reference outputs for test/fixtures/tiny-llama-a.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, argmax, bf16ToF32, greedyBatch, pageRange, readSafetensors, relL2, layer0Projection, rejects } from './helpers.ts';

const PAGE = 16;
const GEN = 32;
let model: LoadedModel;
const pagesPerSeq = (c: { prompt_ids: number[] }) => Math.ceil((c.prompt_ids.length + GEN) / PAGE);

test.before(async () => {
  model = await openModel(FIXTURE, { numPages: 64, pageSize: PAGE });
});
test.after(() => model.backend.close());

test('config and name come from the folder', () => {
  assert.is(model.name, 'tiny-llama-a');
  assert.is(model.isPreset, false);
  assert.is(model.config.vocabSize, 1024);
  assert.equal(model.config.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 256 });
  assert.is(model.backend.pageBytes, 2 * 2 * PAGE * 2 * 16 * 4);
});

test('last-position logits match transformers to 1e-4 relative', async () => {
  for (const c of REFERENCE.cases) {
    const logits = await model.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(0, pagesPerSeq(c)) }] });
    assert.is(logits.length, 1024);
    const err = relL2(logits, c.last_logits);
    assert.ok(err <= 1e-4, `case of ${c.prompt_ids.length} tokens: relative L2 ${err}`);
  }
});

test('argmax at every prompt position (logits: all)', async () => {
  for (const c of REFERENCE.cases) {
    const n = c.prompt_ids.length;
    const logits = await model.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(0, pagesPerSeq(c)) }], logits: 'all' });
    assert.is(logits.length, n * 1024);
    const got = Array.from({ length: n }, (_, i) => argmax(logits, i * 1024, (i + 1) * 1024));
    assert.equal(got, c.argmax_per_position);
    assert.ok(relL2(logits.subarray((n - 1) * 1024), c.last_logits) <= 1e-4);
  }
});

test('greedy decode through the pages, one prompt at a time, equals greedy_ids', async () => {
  for (const c of REFERENCE.cases) {
    const [r] = await greedyBatch(model.backend, [c.prompt_ids], GEN, c.prompt_ids.length, [pageRange(0, pagesPerSeq(c))]);
    assert.equal(r.ids, c.greedy_ids);
  }
});

test('ragged batch of every case with chunked prefill equals one at a time', async () => {
  const cases = REFERENCE.cases;
  let next = 0;
  const tables = cases.map((c) => pageRange((next += pagesPerSeq(c)) - pagesPerSeq(c), pagesPerSeq(c)));
  const single: { ids: number[]; firstLogits: Float32Array }[] = [];
  for (const c of cases) single.push((await greedyBatch(model.backend, [c.prompt_ids], GEN, 1000, [pageRange(0, pagesPerSeq(c))]))[0]);
  for (const chunk of [7, 32]) {
    const batched = await greedyBatch(model.backend, cases.map((c) => c.prompt_ids), GEN, chunk, tables);
    cases.forEach((c, i) => {
      assert.equal(batched[i].ids, c.greedy_ids, `chunk ${chunk}, case ${i}`);
      assert.ok(relL2(batched[i].firstLogits, single[i].firstLogits) <= 1e-6, `chunk ${chunk}, case ${i} logits`);
      assert.ok(relL2(batched[i].firstLogits, c.last_logits) <= 1e-4);
    });
  }
});

test('KV pages round-trip: readPages then writePages elsewhere gives the same next logits', async () => {
  const c = REFERENCE.cases[2]; // 100 tokens: 7 pages
  const n = pagesPerSeq(c);
  const a = pageRange(0, n);
  const b = pageRange(40, n);
  await model.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: a }] });
  const bytes = await model.backend.readPages(a);
  assert.is(bytes.length, n * model.backend.pageBytes);
  await model.backend.writePages(b, bytes);
  const step = (table: Int32Array) => model.backend.forward({ seqs: [{ tokens: Int32Array.of(c.greedy_ids[0]), startPos: c.prompt_ids.length, pageTable: table }] });
  const viaB = await step(b);
  const viaA = await step(a);
  assert.equal(Array.from(viaB), Array.from(viaA));
  assert.is(argmax(viaB), c.greedy_ids[1]);
  // Pages that never received the KV give other logits (the test can fail).
  const blank = pageRange(50, n);
  await model.backend.writePages(blank, new Uint8Array(n * model.backend.pageBytes));
  assert.ok(relL2(await step(blank), viaA) > 1e-2);
});

test('wire layout: layer 0 K of position 0 and V of position 1 at their documented offsets', async () => {
  // Recompute k/v by hand from the checkpoint: position 0 has no rotation, V is never rotated.
  const w = Object.fromEntries(readSafetensors(join(FIXTURE, 'model.safetensors')).map((t) => [t.name, bf16ToF32(t.data)]));
  const c = REFERENCE.cases[1];
  const H = 64, kvDim = 32;
  const proj = (tok: number, name: 'k_proj' | 'v_proj') => layer0Projection(w, tok, name, H, kvDim);
  await model.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(3, 2) }] });
  const page = new Float32Array((await model.backend.readPages(Int32Array.of(3))).buffer);
  const k0 = page.subarray(0, kvDim);
  const v1 = page.subarray(PAGE * kvDim + kvDim, PAGE * kvDim + 2 * kvDim);
  assert.ok(relL2(k0, proj(c.prompt_ids[0], 'k_proj')) < 1e-5);
  assert.ok(relL2(v1, proj(c.prompt_ids[1], 'v_proj')) < 1e-5);
});

test('every kernel set this CPU runs (base, avx2, avx512) matches the reference; status shows the options', async () => {
  for (const isa of ['base', 'avx2', 'avx512'] as const) {
    const m = await openModel(FIXTURE, { numPages: 32, numThreads: 2, native: { cpuIsa: isa } });
    try {
      const st = m.backend.nativeStatus;
      assert.is(st.cpuIsa, isa);
      assert.is(st.numThreads, 2);
      // A CPU without avx2/avx512 falls back to a narrower set; base is always honoured.
      if (isa === 'base') assert.ok(st.deviceName.includes('base'), `base: ran ${st.deviceName}`);
      let maxRelL2 = 0;
      let next = 0;
      for (const c of REFERENCE.cases) {
        const n = Math.ceil((c.prompt_ids.length + GEN) / PAGE);
        const [r] = await greedyBatch(m.backend, [c.prompt_ids], GEN, 7, [pageRange(next, n)]);
        next += n;
        maxRelL2 = Math.max(maxRelL2, relL2(r.firstLogits, c.last_logits));
        assert.equal(r.ids, c.greedy_ids, `${isa}: greedy ids differ`);
      }
      assert.ok(maxRelL2 <= 1e-4, `${isa}: relative L2 ${maxRelL2}`);
    } finally {
      m.backend.close();
    }
  }
});

test('bad native options are refused with BAD_CONFIG naming the field', async () => {
  await rejects(() => openModel(FIXTURE, { numPages: 4, native: { cpuIsa: 'sse9' as never } }), 'BAD_CONFIG', 'native.cpuIsa');
  await rejects(() => openModel(FIXTURE, { numPages: 4, native: { pdl: 'yes' as never } }), 'BAD_CONFIG', 'native.pdl');
  await rejects(() => openModel(FIXTURE, { numPages: 4, native: { turbo: true } as never }), 'BAD_CONFIG', 'native.turbo');
});

test.run();
