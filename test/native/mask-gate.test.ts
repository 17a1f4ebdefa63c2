// Masks supplied late (ForwardSampling.maskGate, Backend.supplyMasks; native/src/addon-gate.h) on
// the CPU backend: a step whose masks come after its submission samples the same tokens as with
// the masks given up front, before or after the backend reached the gate; null samples unmasked;
// a gate never opened fails its forward with a typed error instead of hanging; closing the
// backend fails a forward waiting at its gate; bad gates and masks are typed errors.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { packSampling } from '../../actors/engine/sampler.ts';
import type { Backend, ForwardBatch, ForwardSampling } from '../../native/backend.ts';
import { openModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, pageRange } from './helpers.ts';
import { xorshift } from '../shared/xorshift.ts';

const NUM_ROWS = 4;

function batchOf(): ForwardBatch {
  return {
    seqs: Array.from({ length: NUM_ROWS }, (_, i) => ({ tokens: Int32Array.from(REFERENCE.cases[i % REFERENCE.cases.length].prompt_ids), startPos: 0, pageTable: pageRange(i * 8, 8) })),
  };
}

/** Random masks, each row allowing about a quarter of the vocabulary (row 3 allows everything). */
function masksOf(vocab: number, seed: number): Uint32Array {
  const words = Math.ceil(vocab / 32);
  const rnd = xorshift(seed);
  const m = new Uint32Array(NUM_ROWS * words);
  for (let i = 0; i < m.length; i++) m[i] = (rnd() * 2 ** 32) & (rnd() * 2 ** 32) >>> 0;
  m.fill(0xffffffff, 3 * words, 4 * words);
  return m;
}

function samplingOf(): ForwardSampling {
  return packSampling(Array.from({ length: NUM_ROWS }, (_, i) => ({ temperature: i === 0 ? 0 : 0.9, topP: 1, seed: 7 + i, step: 0 })));
}

async function withBackend(f: (b: Backend) => Promise<void>): Promise<void> {
  const m = await openModel(FIXTURE, { numPages: 64, pageSize: 16, numThreads: 1 });
  try {
    await f(m.backend);
  } finally {
    m.backend.close();
  }
}

const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('late masks give the tokens of masks up front, supplied before or after the gate is reached', () =>
  withBackend(async (b) => {
    const vocab = b.config.vocabSize;
    let numMaskedDiffer = 0;
    for (let seed = 1; seed <= 3; seed++) {
      const masks = masksOf(vocab, seed);
      const upFront = await b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), extras: { allowedMask: masks } } });
      const unmasked = await b.forwardTokens({ ...batchOf(), sampling: samplingOf() });
      // supplied right after the submission (the forward has not reached its gate yet)
      const early = b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: seed, timeoutMs: 30_000 } } });
      assert.is(b.supplyMasks(seed, masks), true);
      // supplied once the backend is surely waiting at the gate
      const late = b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: 100 + seed, timeoutMs: 30_000 } } });
      await early;
      await wait(200);
      assert.is(b.supplyMasks(100 + seed, masks), true);
      assert.equal([...(await early)], [...upFront], `seed ${seed}: early supply`);
      assert.equal([...(await late)], [...upFront], `seed ${seed}: late supply`);
      // every sampled token is allowed by its row's mask
      const words = Math.ceil(vocab / 32);
      upFront.forEach((t, i) => assert.ok((masks[i * words + (t >> 5)] >>> (t & 31)) & 1, `row ${i}: token ${t} outside its mask`));
      // null: no masks, the rows sample as without any
      const none = b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: 200 + seed, timeoutMs: 30_000 } } });
      assert.is(b.supplyMasks(200 + seed, null), true);
      assert.equal([...(await none)], [...unmasked], `seed ${seed}: null masks`);
      if (upFront.some((t, i) => t !== unmasked[i])) numMaskedDiffer++;
      // the gate is gone once its forward settled
      assert.is(b.supplyMasks(seed, masks), false);
    }
    assert.ok(numMaskedDiffer > 0, 'the masks change some token');
  }));

test('a gate never opened fails its forward with MASK_TIMEOUT, and the backend keeps working', () =>
  withBackend(async (b) => {
    const t0 = performance.now();
    try {
      await b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: 1, timeoutMs: 300 } } });
      assert.unreachable('the forward should fail');
    } catch (e) {
      assert.is((e as { code?: string }).code, 'NATIVE_ERROR', (e as Error).message);
      assert.is((e as { info?: { nativeCode?: string } }).info?.nativeCode, 'MASK_TIMEOUT');
      assert.match((e as Error).message, /timeoutMs/);
    }
    assert.ok(performance.now() - t0 < 20_000);
    assert.is(b.supplyMasks(1, null), false, 'a timed-out gate is gone');
    const tokens = await b.forwardTokens({ ...batchOf(), sampling: samplingOf() });
    assert.is(tokens.length, NUM_ROWS);
  }));

test('closing the backend fails a forward waiting at its gate (no hang)', async () => {
  const m = await openModel(FIXTURE, { numPages: 64, pageSize: 16, numThreads: 1 });
  const p = m.backend.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: 5, timeoutMs: 600_000 } } });
  await wait(200);
  const t0 = performance.now();
  m.backend.close();
  try {
    await p;
    assert.unreachable('the forward should fail');
  } catch (e) {
    assert.is((e as { code?: string }).code, 'NATIVE_ERROR');
    assert.match((e as Error).message, /closed/);
  }
  assert.ok(performance.now() - t0 < 10_000);
});

test('bad gates and masks are typed errors naming the field', () =>
  withBackend(async (b) => {
    const vocab = b.config.vocabSize;
    const bad = async (gate: unknown, re: RegExp) => {
      try {
        await b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: gate as { id: number; timeoutMs: number } } });
      } catch (e) {
        assert.match((e as Error).message, re);
        return;
      }
      assert.unreachable(`expected ${re}`);
    };
    await bad({ id: -1, timeoutMs: 10 }, /sampling.maskGate.id/);
    await bad({ id: 1.5, timeoutMs: 10 }, /sampling.maskGate.id/);
    await bad({ id: 1, timeoutMs: 0 }, /sampling.maskGate.timeoutMs/);
    await bad(7, /sampling.maskGate must be an object/);
    try {
      await b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), extras: { allowedMask: masksOf(vocab, 1) }, maskGate: { id: 1, timeoutMs: 10 } } });
      assert.unreachable('allowedMask with a gate');
    } catch (e) {
      assert.match((e as Error).message, /exclude each other/);
    }
    const p = b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: 9, timeoutMs: 30_000 } } });
    try {
      await b.forwardTokens({ ...batchOf(), sampling: { ...samplingOf(), maskGate: { id: 9, timeoutMs: 30_000 } } });
      assert.unreachable('a held id');
    } catch (e) {
      assert.match((e as Error).message, /held by a forward/);
    }
    try {
      b.supplyMasks(9, new Uint32Array(3));
      assert.unreachable('wrong length');
    } catch (e) {
      assert.is((e as { code?: string }).code, 'BAD_REQUEST');
      assert.match((e as Error).message, /words, expected/);
    }
    assert.is(b.supplyMasks(9, masksOf(vocab, 2)), true);
    assert.is(b.supplyMasks(9, masksOf(vocab, 2)), false, 'opened once');
    assert.is((await p).length, NUM_ROWS);
  }));

test.run();
