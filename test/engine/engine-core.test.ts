/** EngineCore on the real fixture model (tiny-llama-a): reference tokens, batching, preemption, reuse, sampling, aborts. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError, type ErrorCode } from '../../common/errors.ts';
import type { TokensItem } from '../../actors/messages.ts';
import type { Backend } from '../../native/backend.ts';
import type { LoadedModel } from '../../native/index.ts';
import { CASES, Collector, greedy, makeCore, openFixture, run, usedPages } from './helpers.ts';

const models: LoadedModel[] = [];
async function fixture(numPages = 64, pageSize = 16) {
  const m = await openFixture(numPages, pageSize);
  models.push(m);
  return m;
}
test.after(() => models.forEach((m) => m.backend.close()));

function throwsCode(fn: () => unknown, code: ErrorCode): string {
  try {
    fn();
  } catch (e) {
    assert.ok(isMicroserveError(e, code), `expected ${code}, got ${(e as Error).message}`);
    return (e as Error).message;
  }
  assert.unreachable(`expected ${code}`);
  return '';
}

// The loop's two orders (EngineCoreOptions.overlap): the same streams, pages and counts.
for (const overlap of [true, false]) {
  const mode = overlap ? 'overlap' : 'no overlap';

  test(`${mode}: every reference case, greedy 32 tokens, one at a time`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c });
    for (const [i, cs] of CASES.entries()) {
      const s = await run(core, c, `c${i}`, cs.prompt_ids, greedy(32));
      assert.equal(s.tokens, cs.greedy_ids, `case ${i}`);
      assert.is(s.finish, 'length');
    }
    await core.whenIdle();
    assert.is(core.counters.tokensGenerated, 32 * CASES.length);
    assert.is(core.counters.tokensPrefilled, CASES.reduce((a, cs) => a + cs.prompt_ids.length, 0), 'decode inputs are not prefill');
    assert.equal(c.problems, []);
    assert.is(usedPages(core), 0);
    core.kv.checkIntegrity();
  });

  test(`${mode}: all cases at once with chunked prefill (maxBatchTokens 8) give the same tokens`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c, maxBatchTokens: 8 });
    const streams = await Promise.all(CASES.map((cs, i) => run(core, c, `b${i}`, cs.prompt_ids, greedy(32))));
    streams.forEach((s, i) => assert.equal(s.tokens, CASES[i].greedy_ids, `case ${i}`));
    assert.equal(c.problems, []);
    await core.whenIdle();
    assert.is(usedPages(core), 0);
  });

  test(`${mode}: preemption under a tiny page pool still gives the same tokens`, async () => {
    const c = new Collector();
    // 34 pages of 4 tokens: the longest case alone needs 33; all six requests need ~115.
    const core = makeCore(await fixture(34, 4), { overlap, collector: c, maxBatchTokens: 64 });
    const jobs = [...CASES, ...CASES].map((cs, i) => run(core, c, `p${i}`, cs.prompt_ids, greedy(32)));
    const streams = await Promise.all(jobs);
    streams.forEach((s, i) => assert.equal(s.tokens, CASES[i % CASES.length].greedy_ids, `request ${i}`));
    assert.ok(core.counters.preemptions > 0, `preemptions happened (${core.counters.preemptions})`);
    assert.equal(c.problems, []);
    await core.whenIdle();
    assert.is(usedPages(core), 0);
    core.kv.checkIntegrity();
  });

  test(`${mode}: the same request twice reuses the cached prefix and gives the same output`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c });
    const cs = CASES[2];
    const first = await run(core, c, 'r1', cs.prompt_ids, greedy(32));
    const before = structuredClone(core.counters);
    const second = await run(core, c, 'r2', cs.prompt_ids, greedy(32));
    assert.equal(second.tokens, first.tokens);
    assert.equal(second.tokens, cs.greedy_ids);
    const hit = core.counters.prefixHitTokens - before.prefixHitTokens;
    assert.is(hit, Math.floor((cs.prompt_ids.length - 1) / 16) * 16);
    assert.is(core.counters.tokensPrefilled - before.tokensPrefilled, cs.prompt_ids.length - hit);
    assert.is(core.matchPrefix(cs.prompt_ids).matchedLen, 96);
  });

  test(`${mode}: seeded sampling reproduces; another seed differs; top-p and temperature apply`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c });
    const p = CASES[1].prompt_ids;
    const s = (seed: number) => greedy(32, { temperature: 0.9, topP: 0.9, seed });
    const a = await run(core, c, 's1', p, s(42));
    const b = await run(core, c, 's2', p, s(42));
    const d = await run(core, c, 's3', p, s(43));
    assert.equal(a.tokens, b.tokens);
    assert.not.equal(a.tokens, d.tokens);
    assert.not.equal(a.tokens, CASES[1].greedy_ids, 'sampling is not greedy');
    // Batched together the seeded streams are still the same.
    const [x, y] = await Promise.all([run(core, c, 's4', p, s(42)), run(core, c, 's5', CASES[2].prompt_ids, s(42))]);
    assert.equal(x.tokens, a.tokens);
    assert.is(y.tokens.length, 32);
  });

  test(`${mode}: stop tokens end the stream (the stop token included); maxTokens 0 yields nothing`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c });
    const cs = CASES[0];
    const stopAt = cs.greedy_ids[5];
    const s = await run(core, c, 'st', cs.prompt_ids, greedy(32, { stopTokenIds: [stopAt] }));
    assert.equal(s.tokens, cs.greedy_ids.slice(0, cs.greedy_ids.indexOf(stopAt) + 1));
    assert.is(s.finish, 'stop');
    const z = await run(core, c, 'z', cs.prompt_ids, greedy(0));
    assert.equal(z.tokens, []);
    assert.is(z.finish, 'length');
    await core.whenIdle();
    assert.is(usedPages(core), 0);
  });

  test(`${mode}: bad requests are typed errors: BAD_TOKEN, PROMPT_TOO_LONG, DUPLICATE_REQUEST, BAD_REQUEST`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(8, 16), { overlap, collector: c });
    const base = { replyTo: 't', sampling: greedy(4) };
    assert.match(throwsCode(() => core.generate({ ...base, id: 'a', promptIds: [1, 1024] }), 'BAD_TOKEN'), /promptIds\[1\]/);
    throwsCode(() => core.generate({ ...base, id: 'a', promptIds: [1, -1] }), 'BAD_TOKEN');
    throwsCode(() => core.generate({ ...base, id: 'a', promptIds: [1.5] }), 'BAD_TOKEN');
    throwsCode(() => core.generate({ ...base, id: 'a', promptIds: [] }), 'BAD_REQUEST');
    assert.match(throwsCode(() => core.generate({ ...base, id: 'a', promptIds: new Array(1024).fill(3) }), 'PROMPT_TOO_LONG'), /context/);
    assert.match(throwsCode(() => core.generate({ ...base, id: 'a', promptIds: new Array(120).fill(3), sampling: greedy(20) }), 'PROMPT_TOO_LONG'), /pool/);
    throwsCode(() => core.generate({ ...base, id: 'a', promptIds: [1], sampling: { ...greedy(4), topP: 0 } }), 'BAD_REQUEST');
    core.generate({ ...base, id: 'dup', promptIds: [1, 2, 3] });
    throwsCode(() => core.generate({ ...base, id: 'dup', promptIds: [1, 2, 3] }), 'DUPLICATE_REQUEST');
    await c.done('dup');
    await core.whenIdle();
    assert.is(usedPages(core), 0);
  });

  test(`${mode}: abort at every stage: queued, in the forward, decoding; pages come back`, async () => {
    const c = new Collector();
    const core = makeCore(await fixture(), { overlap, collector: c, maxBatchTokens: 16 });
    const p = CASES[2].prompt_ids;
    // queued: aborted before the loop picks it up
    core.generate({ id: 'q', promptIds: p, sampling: greedy(32), replyTo: 't' });
    assert.equal(core.abort('q'), { aborted: true });
    // in a forward (chunked prefill in progress)
    core.generate({ id: 'f', promptIds: p, sampling: greedy(32), replyTo: 't' });
    await new Promise((r) => setImmediate(r));
    assert.equal(core.abort('f'), { aborted: true });
    // decoding: after some tokens
    core.generate({ id: 'd', promptIds: p, sampling: greedy(200), replyTo: 't' });
    while (c.get('d').tokens.length < 3) await new Promise((r) => setTimeout(r, 1));
    core.abort('d');
    for (const id of ['q', 'f', 'd']) assert.is((await c.done(id)).finish, 'abort');
    assert.ok(c.get('d').tokens.length < 200);
    assert.equal(core.abort('nope'), { aborted: false });
    await core.whenIdle();
    assert.is(usedPages(core), 0);
    assert.is(core.counters.aborts, 3);
    core.kv.checkIntegrity();
    assert.is(core.integrityError, null);
    assert.equal(c.problems, []);
  });
}

test('overlap: step t+1 is submitted before step t\'s tokens go to the sink; without it, after', async () => {
  const loaded = await fixture();
  for (const overlap of [true, false]) {
    const events: string[] = [];
    const backend = Object.create(loaded.backend) as Backend;
    backend.forwardTokens = (batch) => {
      events.push('F');
      return loaded.backend.forwardTokens(batch);
    };
    const c = new Collector();
    const core = makeCore(loaded, {
      name: `o${overlap}`,
      overlap,
      backend,
      collector: c,
      sink: (replyTo: string, items: TokensItem[]) => (events.push('S'), c.sink(replyTo, items)),
    });
    const s = await run(core, c, `o${overlap}`, CASES[0].prompt_ids, greedy(8));
    await core.whenIdle();
    assert.equal(s.tokens, CASES[0].greedy_ids.slice(0, 8));
    // 8 forwards (the prefill samples token 1, 7 decodes), one sink call per step
    const want = overlap ? 'FF' + 'SF'.repeat(6) + 'SS' : 'FS'.repeat(8);
    assert.is(events.join(''), want, overlap ? 'overlap' : 'no overlap');
    assert.is(core.status().overlap, overlap);
    const h = core.counters.host!;
    assert.equal([h.numForwards, h.numGaps], [8, 7]);
    assert.ok(h.gapMs > 0 && h.forwardMs > 0 && h.scheduleMs > 0 && h.buildMs > 0 && h.updateMs > 0 && h.sendMs > 0, JSON.stringify(h));
  }
});

test.run();
