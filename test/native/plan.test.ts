/**
 * The memory plan on the CPU backend (the same interface as CUDA's): the caps and the bytes it
 * reports, OVER_PLAN for a step past the caps (typed, nothing runs, the backend keeps serving),
 * `kvPages: auto` = 512 pages on CPU, and option validation naming the option.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { NativeBackend } from '../../native/native-backend.ts';
import { resolveNativeOptions } from '../../native/options.ts';
import { PRESETS } from '../../native/presets.ts';
import { FIXTURE, REFERENCE, argmax, pageRange, rejects } from './helpers.ts';

const PAGE = 16;
let m: LoadedModel;

test.before(async () => {
  m = await openModel(FIXTURE, { numPages: 64, pageSize: PAGE, numThreads: 2, maxBatchTokens: 40, maxNumSeqs: 3 });
});
test.after(() => m.backend.close());

const seq = (n: number, startPos: number, first: number) => ({ tokens: Int32Array.from({ length: n }, (_, i) => (i * 7 + 3) % 1000), startPos, pageTable: pageRange(first, Math.ceil((startPos + n) / PAGE)) });

test('the plan: caps, pages and bytes (host) after open', () => {
  const p = m.backend.plan;
  const c = m.config;
  assert.is(p.maxBatchTokens, 40);
  assert.is(p.maxNumSeqs, 3);
  assert.is(p.maxContext, c.maxPositions);
  assert.is(p.numPages, 64);
  assert.is(p.kvTokens, 64 * PAGE);
  assert.is(p.maxRequestTokens, Math.min(c.maxPositions, 64 * PAGE));
  assert.is(p.kvBytes, 64 * m.backend.pageBytes);
  assert.ok(p.isHost);
  assert.is(p.graphBytes, 0);
  // every matrix (bf16 as the checkpoint stores them, or f32; padded to panels) and f32 norm
  const H = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, I = c.intermediateSize;
  const matrices = c.numLayers * ((q + 2 * kv) * H + H * q + 3 * I * H) + 2 * c.vocabSize * H;
  const norms = c.numLayers * 2 * H + H;
  assert.ok(p.weightsBytes >= 2 * matrices + 4 * norms && p.weightsBytes < 1.5 * 4 * (matrices + norms), `weights ${p.weightsBytes} for ${matrices} matrix elements`);
  // activations of 40 tokens at least (x, xb, qkv, att, gu, hid, xf) and the logits of 3 sequences
  const arena = 4 * 40 * (3 * H + q + 2 * kv + q + 3 * I) + 4 * 3 * c.vocabSize;
  assert.ok(p.arenaBytes >= arena && p.arenaBytes < 2 * arena + (1 << 20), `arena ${p.arenaBytes} vs ${arena}`);
});

test('a step over the plan is refused with OVER_PLAN naming the cap; the backend keeps serving', async () => {
  await rejects(m.backend.forward({ seqs: [seq(41, 0, 0)] }), 'OVER_PLAN', '41 tokens > maxBatchTokens 40');
  await rejects(m.backend.forward({ seqs: [seq(1, 0, 0), seq(1, 0, 1), seq(1, 0, 2), seq(1, 0, 3)] }), 'OVER_PLAN', '4 sequences > maxNumSeqs 3');
  const max = m.config.maxPositions;
  const big = await openModel(FIXTURE, { numPages: Math.ceil((max + 2) / PAGE), pageSize: PAGE, numThreads: 1 });
  try {
    await rejects(big.backend.forward({ seqs: [seq(2, max - 1, 0)] }), 'OVER_PLAN', `position ${max + 1} > maxContext ${max}`);
  } finally {
    big.backend.close();
  }
  await rejects(m.backend.forwardTokens({ seqs: [seq(50, 0, 0)], sampling: { temperature: Float32Array.of(0), topP: Float32Array.of(1), seed: Uint32Array.of(1), step: Uint32Array.of(0) } }), 'OVER_PLAN', 'maxBatchTokens');
  // exactly at the caps it runs, and computes what an unconstrained backend computes
  const c = REFERENCE.cases[0];
  const logits = await m.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(0, Math.ceil(c.prompt_ids.length / PAGE)) }] });
  assert.is(argmax(logits), c.greedy_ids[0]);
  const three = await m.backend.forward({ seqs: [seq(20, 0, 10), seq(10, 0, 20), seq(10, 0, 30)] });
  assert.is(three.length, 3 * m.config.vocabSize);
});

test('kvPages auto on CPU is the fixed CPU default of 512 pages', async () => {
  const a = await openModel(FIXTURE, { numPages: 'auto', pageSize: PAGE, numThreads: 1 });
  try {
    assert.is(a.backend.numPages, 512);
    assert.is(a.backend.plan.numPages, 512);
    assert.is(a.backend.plan.kvTokens, 512 * PAGE);
    // the defaults of the caps
    assert.is(a.backend.plan.maxBatchTokens, 8192);
    assert.is(a.backend.plan.maxNumSeqs, 256);
    const logits = await a.backend.forward({ seqs: [seq(3, 0, 511)] });
    assert.is(logits.length, a.config.vocabSize);
  } finally {
    a.backend.close();
  }
});

test('the KV pool and the step scratch are first touched in finalize (the worker thread), not in the constructor (the event loop)', async () => {
  // The constructor runs on the JS thread: filling a pool of GBs there blocked the engine's event
  // loop for seconds at start (its control connection missed heartbeats). An untouched allocation
  // is not resident, so the resident set shows where the pool was filled. 8192 pages of the tiny
  // preset (4 layers x K,V x 16 tokens x 2 heads x 32 dims x f32 = 32 KiB) = 256 MiB.
  const p = PRESETS.tiny;
  const MiB = 1 << 20;
  const rss0 = process.memoryUsage.rss();
  const b = new NativeBackend(p.config, 8192, PAGE, 'cpu', { ...resolveNativeOptions(undefined, 1), maxBatchTokens: 64, maxNumSeqs: 4, gpuMemoryUtilization: 0.9 });
  try {
    assert.is(b.pageBytes * 8192, 256 * MiB);
    const afterCtor = process.memoryUsage.rss() - rss0;
    assert.ok(afterCtor < 64 * MiB, `the constructor made ${(afterCtor / MiB).toFixed(0)} MiB resident (the pool is 256 MiB)`);
    await b.randomInit(0, p.std);
    await b.finalize();
    const afterFinalize = process.memoryUsage.rss() - rss0;
    assert.ok(afterFinalize > 200 * MiB, `finalize left ${(afterFinalize / MiB).toFixed(0)} MiB resident: the pool was not zeroed`);
    assert.ok(b.plan.arenaBytes > 0 && b.plan.kvBytes === 256 * MiB);
  } finally {
    b.close();
  }
});

test('plan options are validated, errors name the option', async () => {
  await rejects(() => openModel(FIXTURE, { numPages: 8, maxNumSeqs: 0 }), 'BAD_CONFIG', 'maxNumSeqs');
  await rejects(() => openModel(FIXTURE, { numPages: 8, maxBatchTokens: 1.5 }), 'BAD_CONFIG', 'maxBatchTokens');
  await rejects(() => openModel(FIXTURE, { numPages: 8, gpuMemoryUtilization: 1.2 }), 'BAD_CONFIG', 'gpuMemoryUtilization');
  await rejects(() => openModel(FIXTURE, { numPages: 8, gpuMemoryUtilization: 0 }), 'BAD_CONFIG', 'gpuMemoryUtilization');
  await rejects(() => openModel(FIXTURE, { numPages: 'lots' as never }), 'BAD_CONFIG', 'numPages');
  // maxNumSeqs above maxBatchTokens: the plan holds min of the two (a sequence has >= 1 token)
  const s = await openModel(FIXTURE, { numPages: 8, maxBatchTokens: 4, maxNumSeqs: 100, numThreads: 1 });
  assert.is(s.backend.plan.maxNumSeqs, 4);
  s.backend.close();
});

test.run();
