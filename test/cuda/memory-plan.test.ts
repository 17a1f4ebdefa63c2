// The CUDA memory plan (native/src/cuda/memory-plan.cc) on the GPU host: steps of every shape up
// to the plan allocate nothing on the device (cudaMemGetInfo free bytes identical before and after
// a burst), a step past the plan is OVER_PLAN, kvPages auto gives a pool that fits within
// gpuMemoryUtilization, and an impossible plan is refused at start with DEVICE_MEMORY and the
// numbers. Needs an addon built with CUDA and a GPU (MICROSERVE_CUDA_DEVICE, default cuda:0);
// elsewhere it checks that a cuda device is refused with NO_DEVICE.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadAddon } from '../../native/addon.ts';
import type { ForwardBatch, ForwardSampling } from '../../native/backend.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import type { NativeBackend } from '../../native/native-backend.ts';
import { FIXTURE, rejects } from '../native/helpers.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const PAGE = 16;
const MAX_TOKENS = 96;
const MAX_SEQS = 12;

if (!loadAddon().hasCuda) {
  test('without a CUDA build, a cuda device with kvPages auto is refused with NO_DEVICE', () =>
    rejects(() => openModel(FIXTURE, { device: DEVICE, numPages: 'auto', pageSize: PAGE }), 'NO_DEVICE', DEVICE));
} else {
  let m: LoadedModel;
  test.before(async () => {
    m = await openModel(FIXTURE, { device: DEVICE, numPages: 'auto', pageSize: PAGE, maxBatchTokens: MAX_TOKENS, maxNumSeqs: MAX_SEQS, gpuMemoryUtilization: 0.3 });
  });
  test.after(() => m.backend.close());
  const native = () => m.backend as NativeBackend;

  test('kvPages auto: a pool that fits within gpuMemoryUtilization, reported in the plan', async () => {
    const p = m.backend.plan;
    const { free, total } = await native().deviceMemory();
    assert.is(p.deviceTotal, total);
    assert.ok(!p.isHost);
    assert.ok(p.numPages > 1000, `only ${p.numPages} pages`);
    assert.is(m.backend.numPages, p.numPages);
    assert.is(p.kvTokens, p.numPages * PAGE);
    assert.is(p.kvBytes, (p.numPages + 1) * m.backend.pageBytes); // + the graphs' padding page
    assert.ok(p.weightsBytes > 0 && p.arenaBytes > 0 && p.graphBytes >= 0 && p.numGraphs > 0, JSON.stringify(p));
    // the pool, the arena and the graphs stay within 0.3 of the device (this process's own use)
    assert.ok(p.kvBytes + p.arenaBytes + p.weightsBytes + p.graphBytes <= 0.3 * total, JSON.stringify(p));
    assert.ok(free > 0);
    assert.is(p.maxRequestTokens, Math.min(p.maxContext, p.kvTokens));
    assert.is(p.maxBatchTokens, MAX_TOKENS);
    assert.is(p.maxNumSeqs, MAX_SEQS);
  });

  // A batch of n sequences: decodes at assorted contexts, or prefill chunks splitting `tokens`.
  function batch(n: number, tokens: number, ctx: number, salt: number): ForwardBatch {
    const seqs = [];
    let left = tokens;
    for (let s = 0; s < n; s++) {
      const len = Math.max(1, Math.floor(left / (n - s)));
      left -= len;
      const startPos = Math.max(0, Math.min(ctx - len, ctx - ((s * 37 + salt) % ctx)));
      const need = Math.ceil((startPos + len) / PAGE);
      seqs.push({ tokens: Int32Array.from({ length: len }, (_, i) => (i * 13 + s + salt) % 1000), startPos, pageTable: Int32Array.from({ length: need }, (_, i) => (s * 64 + i) % m.backend.numPages) });
    }
    return { seqs };
  }
  const sampling = (n: number): ForwardSampling => ({ temperature: new Float32Array(n).fill(0.7), topP: new Float32Array(n).fill(0.9), seed: Uint32Array.from({ length: n }, (_, i) => i), step: new Uint32Array(n) });

  test('no device allocation in steps: free bytes identical around a burst of every shape up to the plan', async () => {
    const shapes: ForwardBatch[] = [];
    const maxCtx = m.backend.plan.maxContext;
    for (let n = 1; n <= MAX_SEQS; n++) {
      for (const ctx of [1, 200, 300, 600, maxCtx]) shapes.push(batch(n, n, ctx, n)); // pure decode: graphs
      shapes.push(batch(n, MAX_TOKENS, maxCtx, n)); // prefill chunks up to the token cap
      shapes.push(batch(n, Math.min(MAX_TOKENS, 3 * n + 1), Math.min(maxCtx, 700), n + 1)); // mixed
    }
    const run = async () => {
      for (const b of shapes) {
        await m.backend.forward(b);
        await m.backend.forward({ ...b, logits: 'all' });
        await m.backend.forwardTokens({ ...b, sampling: sampling(b.seqs.length) });
      }
    };
    // the first burst may load kernel modules lazily (CUDA_MODULE_LOADING=LAZY): report, bound it
    const before0 = (await native().deviceMemory()).free;
    await run();
    const after0 = (await native().deviceMemory()).free;
    assert.ok(before0 - after0 <= 64 * 2 ** 20, `the first burst took ${before0 - after0} device bytes`);
    const before = (await native().deviceMemory()).free;
    await run();
    const after = (await native().deviceMemory()).free;
    assert.is(after, before, `a burst of ${shapes.length * 3} steps changed free device memory by ${before - after} bytes`);
  });

  test('a step past the plan: OVER_PLAN, nothing allocated, the backend keeps serving', async () => {
    const before = (await native().deviceMemory()).free;
    await rejects(m.backend.forward(batch(1, MAX_TOKENS + 1, m.backend.plan.maxContext, 0)), 'OVER_PLAN', 'maxBatchTokens');
    await rejects(m.backend.forward(batch(MAX_SEQS + 1, MAX_SEQS + 1, 100, 0)), 'OVER_PLAN', 'maxNumSeqs');
    await rejects(m.backend.forwardTokens({ ...batch(MAX_SEQS + 1, MAX_SEQS + 1, 100, 0), sampling: sampling(MAX_SEQS + 1) }), 'OVER_PLAN', 'maxNumSeqs');
    assert.is((await native().deviceMemory()).free, before);
    assert.is((await m.backend.forward(batch(MAX_SEQS, MAX_SEQS, 100, 0))).length, MAX_SEQS * m.config.vocabSize);
  });

  test('an impossible plan is refused at start with DEVICE_MEMORY and the numbers', async () => {
    const { total } = await native().deviceMemory();
    const tooMany = Math.ceil((1.2 * total) / m.backend.pageBytes);
    for (const numPages of [tooMany] as const) {
      try {
        const x = await openModel(FIXTURE, { device: DEVICE, numPages, pageSize: PAGE });
        x.backend.close();
        assert.unreachable('a pool larger than the device was accepted');
      } catch (e) {
        assert.is((e as any).code, 'DEVICE_MEMORY', (e as Error).message);
        for (const w of ['weights', 'step arena', 'CUDA graphs', 'KV', 'free of']) assert.ok((e as Error).message.includes(w), `'${(e as Error).message}' lacks '${w}'`);
      }
    }
    // auto with a share too small for one step of maxBatchTokens
    await rejects(() => openModel(FIXTURE, { device: DEVICE, numPages: 'auto', pageSize: PAGE, gpuMemoryUtilization: 1e-6 }), 'DEVICE_MEMORY', 'kvPages auto');
    // the refused plans left nothing behind: the running engine still serves
    assert.is((await m.backend.forward(batch(2, 2, 100, 5))).length, 2 * m.config.vocabSize);
  });
}

test.run();
