// The native boundary: bad inputs give typed errors and the process survives; devices and
// options are checked; long native work leaves the event loop free; the tiny preset.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, argmax, pageRange, rejects } from './helpers.ts';

let fixture: LoadedModel;
const prompt = Int32Array.from(REFERENCE.cases[1].prompt_ids);


test.before(async () => {
  fixture = await openModel(FIXTURE, { numPages: 8, pageSize: 16 });
});
test.after(() => fixture.backend.close());

test('token ids outside the vocabulary: BAD_TOKEN, and the backend keeps working', async () => {
  const b = fixture.backend;
  await rejects(b.forward({ seqs: [{ tokens: Int32Array.of(1, 1024), startPos: 0, pageTable: pageRange(0, 1) }] }), 'BAD_TOKEN', '1024');
  await rejects(b.forward({ seqs: [{ tokens: Int32Array.of(-3), startPos: 0, pageTable: pageRange(0, 1) }] }), 'BAD_TOKEN', '-3');
  const logits = await b.forward({ seqs: [{ tokens: prompt, startPos: 0, pageTable: pageRange(0, 2) }] });
  assert.is(argmax(logits), REFERENCE.cases[1].greedy_ids[0]);
});

test('page ids, page tables and positions are checked', async () => {
  const b = fixture.backend;
  const one = (pageTable: Int32Array, startPos = 0, tokens = prompt) => b.forward({ seqs: [{ tokens, startPos, pageTable }] });
  await rejects(one(Int32Array.of(0, 8)), 'NATIVE_ERROR', 'page id 8');
  await rejects(one(Int32Array.of(-1, 0)), 'NATIVE_ERROR', 'page id -1');
  await rejects(one(Int32Array.of(0)), 'NATIVE_ERROR', 'maxPagesPerSeq'); // 23 tokens need 2 pages
  await rejects(one(pageRange(0, 2), -1), 'NATIVE_ERROR', 'startPos');
  await rejects(one(pageRange(0, 2), 0, new Int32Array(0)), 'NATIVE_ERROR', 'seqLen');
  await rejects(b.forward({ seqs: [] }), 'NATIVE_ERROR', 'at least one sequence');
  // In a batch, a page table shorter than its positions need is padded with -1 and refused.
  const batch = [{ tokens: prompt, startPos: 0, pageTable: pageRange(0, 2) }, { tokens: prompt, startPos: 0, pageTable: pageRange(2, 1) }];
  await rejects(b.forward({ seqs: batch }), 'NATIVE_ERROR', 'sequence 1: page id -1');
  await rejects(b.readPages(Int32Array.of(0, 99)), 'NATIVE_ERROR', 'page id 99');
  await rejects(b.writePages(Int32Array.of(0), new Uint8Array(3)), 'NATIVE_ERROR', 'bytes');
  await rejects(b.writePages(Int32Array.of(8), new Uint8Array(b.pageBytes)), 'NATIVE_ERROR', 'page id 8');
  const logits = await one(pageRange(2, 2));
  assert.is(argmax(logits), REFERENCE.cases[1].greedy_ids[0]);
});

test('devices and options', async () => {
  await rejects(() => openModel(FIXTURE, { numPages: 4, device: 'cuda:0' }), 'NO_DEVICE', 'cuda:0');
  await rejects(() => openModel(FIXTURE, { numPages: 4, device: 'tpu' }), 'NO_DEVICE', 'tpu');
  await rejects(() => openModel(FIXTURE, { numPages: 0 }), 'BAD_CONFIG', 'numPages');
  await rejects(() => openModel(FIXTURE, { numPages: 4, pageSize: 2.5 }), 'BAD_CONFIG', 'pageSize');
  const m = await openModel(FIXTURE, { numPages: 4 });
  m.backend.close();
  m.backend.close();
  await rejects(() => m.backend.forward({ seqs: [{ tokens: prompt, startPos: 0, pageTable: pageRange(0, 2) }] }), 'NATIVE_ERROR', 'closed');
});

test('tiny preset: deterministic per seed, not flat, and a 2000-token prefill leaves the event loop free', async () => {
  const tiny = await openModel('tiny', { numPages: 130, pageSize: 16 });
  try {
    assert.is(tiny.isPreset, true);
    assert.is(tiny.folder, null);
    assert.is(tiny.config.vocabSize, 128256);
    const ids = Int32Array.from({ length: 2000 }, (_, i) => (i * 7919) % 128000);
    let maxGap = 0;
    let ticks = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 5);
    const t0 = performance.now();
    const logits = await tiny.backend.forward({ seqs: [{ tokens: ids, startPos: 0, pageTable: pageRange(0, 125) }] });
    const took = performance.now() - t0;
    clearInterval(timer);
    assert.ok(took > 100, `prefill took ${took} ms: too short to show anything`);
    assert.ok(ticks >= took / 20, `${ticks} ticks in ${took.toFixed(0)} ms`);
    if (process.env.MS_TEST_VERBOSE) process.stderr.write(`prefill ${took.toFixed(0)} ms, ${ticks} ticks, max gap ${maxGap.toFixed(1)} ms\n`);
    // A forward on the event loop would stall it for about the whole prefill; off the loop, only
    // scheduling noise remains (generous: CI machines are small and busy).
    assert.ok(maxGap < took / 2, `event loop stalled ${maxGap.toFixed(1)} ms of a ${took.toFixed(0)} ms prefill`);
    // Logits spread out (the recipe keeps them from being flat) and repeat for the same seed.
    let min = Infinity, max = -Infinity;
    for (const v of logits) (min = Math.min(min, v)), (max = Math.max(max, v));
    assert.ok(max - min > 1, `logit range ${max - min}`);
    const again = await tiny.backend.forward({ seqs: [{ tokens: ids.subarray(0, 10), startPos: 0, pageTable: pageRange(0, 1) }] });
    const other = await openModel('tiny', { numPages: 1, seed: 1 });
    const diff = await other.backend.forward({ seqs: [{ tokens: ids.subarray(0, 10), startPos: 0, pageTable: pageRange(0, 1) }] });
    other.backend.close();
    const same = await openModel('tiny', { numPages: 1, numThreads: 1 });
    const rep = await same.backend.forward({ seqs: [{ tokens: ids.subarray(0, 10), startPos: 0, pageTable: pageRange(0, 1) }] });
    same.backend.close();
    assert.equal(Array.from(rep), Array.from(again));
    assert.not.equal(Array.from(diff.subarray(0, 100)), Array.from(again.subarray(0, 100)));
  } finally {
    tiny.backend.close();
  }
});

test.run();
