// The CUDA backend against transformers' reference outputs for test/fixtures/tiny-llama-a, and its
// paths against each other (prefill vs decode, graph vs eager, ragged vs alone, pages round trip).
// Needs an addon built with CUDA and a GPU (MICROSERVE_CUDA_DEVICE, default cuda:0); elsewhere it
// checks that a cuda device is refused with NO_DEVICE.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { loadAddon } from '../../native/addon.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, argmax, bf16ToF32, greedyBatch, pageRange, readSafetensors, relL2, layer0Projection, rejects } from '../native/helpers.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const PAGE = 16;
const GEN = 32;
const TOL = 2e-2; // bf16 weights, activations and KV against a float32 reference
const pagesPerSeq = (c: { prompt_ids: number[] }) => Math.ceil((c.prompt_ids.length + GEN) / PAGE);
const hasCuda = loadAddon().hasCuda;

function open(model: string, graphs = true): Promise<LoadedModel> {
  return openModel(model, { device: DEVICE, numPages: 64, pageSize: PAGE, native: { cudaGraphs: graphs } });
}

if (!hasCuda) {
  test('without a CUDA build, a cuda device is refused with NO_DEVICE', () =>
    rejects(() => openModel(FIXTURE, { device: DEVICE, numPages: 4, pageSize: PAGE }), 'NO_DEVICE', DEVICE));
} else {
  let model: LoadedModel;
  test.before(async () => {
    model = await open(FIXTURE);
  });
  test.after(() => model.backend.close());
  const forward = (tokens: number[], startPos: number, pageTable: Int32Array, logits: 'last' | 'all' = 'last') =>
    model.backend.forward({ seqs: [{ tokens: Int32Array.from(tokens), startPos, pageTable }], logits });

  test('bf16 KV pages in the wire layout', () => {
    assert.is(model.backend.pageBytes, 2 * 2 * PAGE * 2 * 16 * 2); // layers, K|V, slots, kvHeads, headDim, bf16
  });

  test('last-position logits within 2e-2 and argmax wherever the margin is >= 2e-2', async () => {
    for (const c of REFERENCE.cases) {
      const n = c.prompt_ids.length;
      const logits = await forward(c.prompt_ids, 0, pageRange(0, pagesPerSeq(c)), 'all');
      const err = relL2(logits.subarray((n - 1) * 1024), c.last_logits);
      assert.ok(err <= TOL, `case of ${n} tokens: relative L2 ${err}`);
      const margins = (c as unknown as { argmax_margin_per_position: number[] }).argmax_margin_per_position;
      for (let i = 0; i < n; i++) {
        if (margins[i] < 2e-2) continue;
        assert.is(argmax(logits, i * 1024, (i + 1) * 1024), c.argmax_per_position[i], `case of ${n} tokens, position ${i}`);
      }
    }
  });

  test('decode steps through the pages agree with prefilling the longer sequence', async () => {
    const c = REFERENCE.cases[2];
    const table = pageRange(0, pagesPerSeq(c));
    await forward(c.prompt_ids, 0, table);
    for (let k = 0; k < 6; k++) {
      const step = await forward([c.greedy_ids[k]], c.prompt_ids.length + k, table);
      const full = await forward([...c.prompt_ids, ...c.greedy_ids.slice(0, k + 1)], 0, pageRange(20, pagesPerSeq(c)));
      assert.ok(relL2(step, full) <= 1e-2, `step ${k}: relative L2 ${relL2(step, full)}`);
    }
  });

  test('graph replay equals eager decode', async () => {
    const eager = await open(FIXTURE, false);
    try {
      const cases = REFERENCE.cases;
      const tables = cases.map((c, i) => pageRange(i * 10, pagesPerSeq(c)));
      for (const b of [model.backend, eager.backend])
        for (let i = 0; i < cases.length; i++) await b.forward({ seqs: [{ tokens: Int32Array.from(cases[i].prompt_ids), startPos: 0, pageTable: tables[i] }] });
      for (let k = 0; k < 3; k++) {
        const batch = { seqs: cases.map((c, i) => ({ tokens: Int32Array.of(c.greedy_ids[k]), startPos: c.prompt_ids.length + k, pageTable: tables[i] })) };
        const g = await model.backend.forward(batch);
        const e = await eager.backend.forward(batch);
        assert.ok(relL2(g, e) <= 1e-2, `step ${k}: relative L2 ${relL2(g, e)}`);
      }
    } finally {
      eager.backend.close();
    }
  });

  test('ragged batch with chunked prefill equals one at a time', async () => {
    const cases = REFERENCE.cases;
    let next = 0;
    const tables = cases.map((c) => pageRange((next += pagesPerSeq(c)) - pagesPerSeq(c), pagesPerSeq(c)));
    const single: { ids: number[]; firstLogits: Float32Array }[] = [];
    for (const c of cases) single.push((await greedyBatch(model.backend, [c.prompt_ids], 4, 1000, [pageRange(0, pagesPerSeq(c))]))[0]);
    for (const chunk of [7, 32]) {
      const batched = await greedyBatch(model.backend, cases.map((c) => c.prompt_ids), 4, chunk, tables);
      cases.forEach((c, i) => {
        assert.ok(relL2(batched[i].firstLogits, single[i].firstLogits) <= 1e-2, `chunk ${chunk}, case ${i}`);
        assert.ok(relL2(batched[i].firstLogits, c.last_logits) <= TOL, `chunk ${chunk}, case ${i} vs reference`);
      });
    }
  });

  test('KV pages round-trip: readPages then writePages elsewhere gives the same next logits', async () => {
    const c = REFERENCE.cases[2];
    const n = pagesPerSeq(c);
    const a = pageRange(0, n);
    const b = pageRange(40, n);
    await forward(c.prompt_ids, 0, a);
    const bytes = await model.backend.readPages(a);
    assert.is(bytes.length, n * model.backend.pageBytes);
    await model.backend.writePages(b, bytes);
    const step = (table: Int32Array) => forward([c.greedy_ids[0]], c.prompt_ids.length, table);
    const viaB = await step(b);
    const viaA = await step(a);
    assert.equal(Array.from(viaB), Array.from(viaA));
    await model.backend.writePages(pageRange(50, n), new Uint8Array(n * model.backend.pageBytes));
    assert.ok(relL2(await step(pageRange(50, n)), viaA) > 1e-2);
  });

  test('wire layout: layer 0 K of position 0 and V of position 1 at their documented offsets', async () => {
    const w = Object.fromEntries(readSafetensors(join(FIXTURE, 'model.safetensors')).map((t) => [t.name, bf16ToF32(t.data)]));
    const c = REFERENCE.cases[1];
    const H = 64, kvDim = 32;
    const proj = (tok: number, name: 'k_proj' | 'v_proj') => layer0Projection(w, tok, name, H, kvDim);
    await forward(c.prompt_ids, 0, pageRange(3, 2));
    const page = bf16ToF32(await model.backend.readPages(Int32Array.of(3)));
    assert.ok(relL2(page.subarray(0, kvDim), proj(c.prompt_ids[0], 'k_proj')) < 1e-2);
    assert.ok(relL2(page.subarray(PAGE * kvDim + kvDim, PAGE * kvDim + 2 * kvDim), proj(c.prompt_ids[1], 'v_proj')) < 1e-2);
  });

  test('tiny preset (GQA 4, head dim 32, tied head): a decode batch equals its sequences alone', async () => {
    const tiny = await open('tiny');
    try {
      const vocab = tiny.config.vocabSize;
      const prompts = Array.from({ length: 5 }, (_, s) => Array.from({ length: 20 + 7 * s }, (_, i) => (i * 7919 + s * 104729 + 13) % vocab));
      const tables = prompts.map((_, s) => pageRange(s * 8, 8));
      const alone: { ids: number[]; firstLogits: Float32Array }[] = [];
      for (let s = 0; s < prompts.length; s++) alone.push((await greedyBatch(tiny.backend, [prompts[s]], 3, 1000, [tables[s]]))[0]);
      const together = await greedyBatch(tiny.backend, prompts, 3, 1000, tables);
      together.forEach((r, s) => {
        assert.ok(relL2(r.firstLogits, alone[s].firstLogits) <= 1e-2, `sequence ${s}`);
        assert.is(r.ids[0], alone[s].ids[0]);
      });
    } finally {
      tiny.backend.close();
    }
  });
}

test.run();
