/**
 * Scheduler limits and preemption accounting: a step never holds more than `maxNumSeqs`
 * sequences or `maxBatchTokens` tokens; waiting requests are admitted in order; tokens a
 * preemption makes the engine compute again are counted (tokensRecomputed), exactly.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import { Request } from '../../actors/engine/request.ts';
import { Scheduler } from '../../actors/engine/scheduler.ts';
import { KvCacheManager } from '../../actors/kvcache/manager.ts';
import type { Backend } from '../../native/backend.ts';
import type { LoadedModel } from '../../native/index.ts';
import { CASES, Collector, greedy, makeCore, openFixture, run, usedPages } from './helpers.ts';

const models: LoadedModel[] = [];
test.after(() => models.forEach((m) => m.backend.close()));

interface Shape {
  numSeqs: number;
  numTokens: number;
}

/** The real backend, with every forward's shape recorded. */
function recording(backend: Backend, shapes: Shape[]): Backend {
  const b = Object.create(backend) as Backend;
  b.forwardTokens = (batch) => {
    shapes.push({ numSeqs: batch.seqs.length, numTokens: batch.seqs.reduce((a, s) => a + s.tokens.length, 0) });
    return backend.forwardTokens(batch);
  };
  return b;
}

async function core(o: { numPages?: number; pageSize?: number; maxNumSeqs?: number; maxBatchTokens?: number }, c: Collector, shapes: Shape[]): Promise<EngineCore> {
  const m = await openFixture(o.numPages ?? 64, o.pageSize ?? 16);
  models.push(m);
  return makeCore(m, { collector: c, backend: recording(m.backend, shapes), maxNumSeqs: o.maxNumSeqs, maxBatchTokens: o.maxBatchTokens });
}

test('Scheduler: admission stops at maxNumSeqs running requests, in FIFO order', () => {
  const kv = new KvCacheManager({ numPages: 256, pageSize: 16 });
  const admitted: string[] = [];
  const s = new Scheduler(kv, { maxBatchTokens: 1024, maxNumSeqs: 3 }, { onAdmit: (r) => admitted.push(r.id), onPreempt: () => {} });
  for (let i = 0; i < 8; i++) s.enqueue(new Request({ id: `r${i}`, kind: 'generate', promptIds: [1, 2, 3, 4 + i], sampling: greedy(4) }));
  const plan = s.schedule();
  assert.is(plan.entries.length, 3);
  assert.equal(admitted, ['r0', 'r1', 'r2']);
  assert.is(s.running.length, 3);
  assert.equal(s.waiting.map((r) => r.id), ['r3', 'r4', 'r5', 'r6', 'r7']);
  // nothing computed yet, nothing finished: the next plan is the same three, nobody admitted
  assert.is(s.schedule().entries.length, 3);
  assert.is(admitted.length, 3);
});

test('maxNumSeqs 2: no forward has more than 2 sequences, and the tokens are the reference', async () => {
  const c = new Collector();
  const shapes: Shape[] = [];
  const e = await core({ maxNumSeqs: 2 }, c, shapes);
  assert.is(e.status().maxNumSeqs, 2);
  const all = [...CASES, ...CASES];
  const streams = await Promise.all(all.map((cs, i) => run(e, c, `s${i}`, cs.prompt_ids, greedy(32))));
  streams.forEach((s, i) => assert.equal(s.tokens, all[i].greedy_ids, `request ${i}`));
  assert.ok(shapes.every((s) => s.numSeqs <= 2), `step sizes ${[...new Set(shapes.map((s) => s.numSeqs))]}`);
  assert.is(Math.max(...shapes.map((s) => s.numSeqs)), 2, 'the cap was reached');
  assert.equal(c.problems, []);
  await e.whenIdle();
  assert.is(usedPages(e), 0);
});

test('default limits: 256 sequences, 512 tokens; a step never exceeds the token budget', async () => {
  const c = new Collector();
  const shapes: Shape[] = [];
  const e = await core({ maxBatchTokens: 40 }, c, shapes);
  assert.is(e.status().maxNumSeqs, 256);
  const streams = await Promise.all(CASES.map((cs, i) => run(e, c, `t${i}`, cs.prompt_ids, greedy(32))));
  streams.forEach((s, i) => assert.equal(s.tokens, CASES[i].greedy_ids, `request ${i}`));
  assert.ok(shapes.every((s) => s.numTokens <= 40), `largest step ${Math.max(...shapes.map((s) => s.numTokens))} tokens`);
});

test('preemption: recomputed tokens are exactly the positions computed twice', async () => {
  for (const numPages of [256, 34]) {
    const c = new Collector();
    const shapes: Shape[] = [];
    // 34 pages of 4 tokens: all six requests need ~115, so some are preempted (recompute)
    const e = await core({ numPages, pageSize: 4, maxBatchTokens: 64 }, c, shapes);
    const all = [...CASES, ...CASES];
    const jobs = all.map((cs, i) => {
      const done = run(e, c, `p${i}`, cs.prompt_ids, greedy(32));
      return { done, req: e.requests.get(`p${i}`)! };
    });
    const streams = await Promise.all(jobs.map((j) => j.done));
    streams.forEach((s, i) => assert.equal(s.tokens, all[i].greedy_ids, `request ${i} (${numPages} pages)`));
    await e.whenIdle();
    const fed = shapes.reduce((a, s) => a + s.numTokens, 0);
    // each request computes positions [first cache hit, prompt + 32 - 1) once, plus what it recomputes
    const once = jobs.reduce((a, j, i) => a + all[i].prompt_ids.length + 32 - 1 - j.req.numCachedOnAdmit, 0);
    const k = e.counters;
    assert.is(fed, once + k.tokensRecomputed, `fed ${fed} = once ${once} + recomputed ${k.tokensRecomputed}`);
    if (numPages === 256) {
      assert.is(k.preemptions, 0);
      assert.is(k.tokensRecomputed, 0);
    } else {
      assert.ok(k.preemptions > 0, 'preemptions happened');
      assert.ok(k.tokensRecomputed > 0, 'preempted requests recomputed positions');
    }
    assert.is(k.tokensGenerated, all.length * 32, 'preemption never generates an output token twice');
    assert.equal(c.problems, []);
    assert.is(usedPages(e), 0);
    e.kv.checkIntegrity();
  }
});

test.run();
