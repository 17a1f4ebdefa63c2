/**
 * GPU push transfers, receiver side, on the CPU (the rules are the engine's, not the GPU's): the
 * kv_push_begin lease keeps pages out of the pool through an abort or an expiry until the lease
 * ends, start_generate waits for it, a lease whose end never comes ends by itself, and every
 * refusal is typed. The messages go to the engine's real actor (handler, validation, replies).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { engineHandler } from '../../../actors/engine/actor.ts';
import type { EngineCore } from '../../../actors/engine/engine-core.ts';
import { isMicroserveError } from '../../../common/errors.ts';
import { ActorSystem } from '../../../actors/runtime/system.ts';
import type { LoadedModel } from '../../../native/index.ts';
import { CASES, Collector, greedy, makeCore, openFixture, usedPages } from '../helpers.ts';

const PS = 16;
let m: LoadedModel;
let core: EngineCore;
let c: Collector;
let send: (msg: object) => Promise<any>;

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    return isMicroserveError(e) ? e.code : `untyped: ${(e as Error).message}`;
  }
  return 'no error';
}

const prompt = CASES.flatMap((k) => k.prompt_ids).slice(0, 40); // 40 tokens: pages 0..2

let system: ActorSystem;
let n = 0;

test.before(async () => {
  m = await openFixture(32, PS);
  system = await ActorSystem.start({ nodeId: 'push-test', token: 'push-test-token-0123456789abcdef', listen: { host: '127.0.0.1', port: 0 } });
});
test.after(async () => {
  await system.close();
  m.backend.close();
});
test.before.each(() => {
  c = new Collector();
  core = makeCore(m, { name: 'd', collector: c, pushLeaseGraceMs: 150 });
  const path = `engine/d${++n}`;
  system.spawn(path, engineHandler(core));
  send = (msg) => system.ref(path).query(msg, 5000);
});
test.after.each(async () => {
  await core.whenIdle();
  core.kv.checkIntegrity();
});

test('an abort during a push keeps the pages quarantined until kv_push_end', async () => {
  const free0 = core.kv.stats().free;
  const { kvAddr } = await send({ type: 'prep_recv', id: 'a', promptIds: prompt, end: 40 });
  assert.is(kvAddr.pageIds.length, 3);
  await send({ type: 'kv_push_begin', id: 'a', pageIds: kvAddr.pageIds, ttlMs: 5000 });
  assert.is(core.status().numPushLeases, 1);
  assert.equal(await send({ type: 'abort', id: 'a' }), { aborted: true });
  assert.is(core.kv.stats().free, free0 - 3, 'pages a push may still write stay out of the pool');
  core.kv.checkIntegrity();
  const r = await send({ type: 'kv_push_end', id: 'a', ok: true });
  assert.equal(r, { ok: true, bytes: 0 }, 'nothing counts as received into an aborted reservation');
  assert.is(core.kv.stats().free, free0);
  assert.is(core.status().numPushLeases, 0);
  assert.is(core.counters.bytesReceived, 0);
});

test('kv_push_end ok marks the pages received; start_generate is refused until then', async () => {
  const { kvAddr } = await send({ type: 'prep_recv', id: 'b', promptIds: prompt, end: 40 });
  await send({ type: 'kv_push_begin', id: 'b', pageIds: kvAddr.pageIds, ttlMs: 5000 });
  const gen = { type: 'start_generate', id: 'b', promptIds: prompt, begin: 40, sampling: greedy(4), replyTo: 'x' };
  assert.is(await codeOf(() => send(gen)), 'TRANSFER_IN_PROGRESS');
  assert.is(core.requests.size, 0, 'the refused start_generate admitted nothing');
  const r = await send({ type: 'kv_push_end', id: 'b', ok: true });
  assert.is(r.bytes, 3 * m.backend.pageBytes);
  assert.is(core.counters.bytesReceived, 3 * m.backend.pageBytes);
  assert.is(core.counters.tokensReceived, 40);
  // No GPU wrote the pages here (their bytes are whatever they held), but the engine trusts the
  // push: every page counts as written and D computes only the last prompt token.
  await send(gen);
  const s = await c.done('b');
  assert.is(s.finish, 'length');
  assert.is(core.counters.tokensPrefilled, 1, 'D prefilled only the last prompt token: the push delivered [0, 40)');
});

test('a failed push (ok: false) leaves the pages unwritten: start_generate recomputes them', async () => {
  const { kvAddr } = await send({ type: 'prep_recv', id: 'c', promptIds: prompt, end: 40 });
  await send({ type: 'kv_push_begin', id: 'c', pageIds: kvAddr.pageIds, ttlMs: 5000 });
  assert.equal(await send({ type: 'kv_push_end', id: 'c', ok: false }), { ok: true, bytes: 0 });
  await send({ type: 'start_generate', id: 'c', promptIds: prompt, begin: 40, sampling: greedy(3), replyTo: 'x' });
  const s = await c.done('c');
  assert.is(s.finish, 'length');
  assert.is(core.counters.tokensPrefilled, 40, 'nothing arrived: all 40 prompt tokens computed here');
});

test('a lease whose end never comes ends at the deadline plus the grace, and frees expired pages', async () => {
  const free0 = core.kv.stats().free;
  const { kvAddr } = await send({ type: 'prep_recv', id: 'd', promptIds: prompt, end: 40, ttlMs: 50 });
  await send({ type: 'kv_push_begin', id: 'd', pageIds: kvAddr.pageIds, ttlMs: 50 });
  await new Promise((r) => setTimeout(r, 120)); // the reservation expired; the lease (50 + 150 ms) lives
  assert.is(core.reservations.has('d'), false);
  assert.is(core.kv.stats().free, free0 - 3, 'expired, but a push may still land: quarantined');
  await new Promise((r) => setTimeout(r, 150));
  assert.is(core.status().numPushLeases, 0);
  assert.is(core.kv.stats().free, free0, 'the lease ended: pages back');
  assert.is(await codeOf(() => send({ type: 'kv_push_end', id: 'd', ok: true })), 'TRANSFER_TIMEOUT', 'a late end is refused, typed');
});

test('typed refusals: unknown, duplicate, shared prefix pages, bad fields', async () => {
  assert.is(await codeOf(() => send({ type: 'kv_push_begin', id: 'nope', pageIds: [1], ttlMs: 100 })), 'UNKNOWN_REQUEST');
  assert.is(await codeOf(() => send({ type: 'kv_push_begin', id: 'e', pageIds: [], ttlMs: 100 })), 'BAD_MESSAGE');
  assert.is(await codeOf(() => send({ type: 'kv_push_begin', id: 'e', pageIds: [1], ttlMs: 0 })), 'BAD_MESSAGE'); // ttlMs >= 1 is the schema's
  assert.is(await codeOf(() => send({ type: 'kv_push_end', id: 'e', ok: 'yes' })), 'BAD_MESSAGE');
  // a cached prefix: its pages are shared, no push may write them
  await send({ type: 'generate', id: 'warm', promptIds: prompt, sampling: greedy(1), replyTo: 'x' });
  await c.done('warm');
  const { kvAddr, matchedLen } = await send({ type: 'prep_recv', id: 'e', promptIds: prompt, end: 40 });
  assert.ok(matchedLen >= 32, `prefix cached (${matchedLen})`);
  assert.is(await codeOf(() => send({ type: 'kv_push_begin', id: 'e', pageIds: [kvAddr.pageIds[0]], ttlMs: 100 })), 'BAD_MESSAGE');
  await send({ type: 'kv_push_begin', id: 'e', pageIds: kvAddr.pageIds.slice(2), ttlMs: 1000 });
  assert.is(await codeOf(() => send({ type: 'kv_push_begin', id: 'e', pageIds: kvAddr.pageIds.slice(2), ttlMs: 1000 })), 'DUPLICATE_REQUEST');
  await send({ type: 'kv_push_end', id: 'e', ok: true });
  await send({ type: 'abort', id: 'e' });
  assert.is(usedPages(core), 0);
});

test('status shows live leases; close() ends them and gives their pages back', async () => {
  const free0 = core.kv.stats().free;
  const { kvAddr } = await send({ type: 'prep_recv', id: 'f', promptIds: prompt, end: 40 });
  await send({ type: 'kv_push_begin', id: 'f', pageIds: kvAddr.pageIds, ttlMs: 60_000 });
  assert.is((await send({ type: 'status' })).numPushLeases, 1);
  core.close();
  assert.is(core.status().numPushLeases, 0);
  assert.is(core.kv.stats().free, free0, 'no lease or reservation holds pages after close');
  assert.is(core.counters.bytesReceived, 0, 'a lease ended by close counts nothing as received');
  assert.is(await codeOf(() => send({ type: 'kv_push_begin', id: 'g', pageIds: [1], ttlMs: 100 })), 'ACTOR_STOPPED');
  assert.is(await codeOf(() => send({ type: 'kv_push_end', id: 'f', ok: true })), 'TRANSFER_TIMEOUT', 'the lease is gone');
});

test.run();
