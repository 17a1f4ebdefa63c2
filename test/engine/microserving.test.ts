/**
 * Two engine cores (each its own fixture backend) wired through prep_recv / remote_send /
 * start_generate, with kv_write going straight into the receiver (the ws hop is the runtime's
 * business; see actor.test.ts for the actor path). Every split gives exactly the tokens of one
 * engine alone, and the counters prove who computed what.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import { isMicroserveError, type ErrorCode } from '../../common/errors.ts';
import type { LoadedModel } from '../../native/index.ts';
import { CASES, Collector, directTransport, greedy, makeCore, openFixture, usedPages } from './helpers.ts';

const PS = 16;
let mp: LoadedModel;
let md: LoadedModel;
let tamper: ((pageIds: number[], data: Uint8Array) => Uint8Array) | undefined;
let writeGate: Promise<void> | null = null;
let chunkBytes = 4 * 1024 * 1024;
let numWrites = 0;

interface Pair {
  P: EngineCore;
  D: EngineCore;
  cP: Collector;
  cD: Collector;
}

function pair(maxBatchTokens = 512): Pair {
  const cP = new Collector();
  const cD = new Collector();
  const refs: { P?: EngineCore; D?: EngineCore } = {};
  const gated = (to: () => EngineCore) => {
    const t = directTransport(to, (ids, data) => (tamper ? tamper(ids, data) : data));
    return {
      ...t,
      maxChunkBytes: chunkBytes,
      write: async (...a: Parameters<typeof t.write>) => {
        numWrites++;
        await writeGate;
        return t.write(...a);
      },
    };
  };
  refs.P = makeCore(mp, { name: 'p', collector: cP, maxBatchTokens, pickTransport: () => gated(() => refs.D!) });
  refs.D = makeCore(md, { name: 'd', collector: cD, maxBatchTokens, pickTransport: () => gated(() => refs.P!) });
  return { P: refs.P, D: refs.D, cP, cD };
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return isMicroserveError(e) ? e.code : `untyped: ${(e as Error).message}`;
  }
  return 'no error';
}

/** prep_recv on D, remote_send on P, start_generate on D at `end`; resolves with D's stream. */
async function split({ P, D, cD }: Pair, id: string, prompt: number[], end: number, maxTokens = 32) {
  const { matchedLen, kvAddr } = D.prepRecv({ id, promptIds: prompt, end });
  const sent = await P.remoteSend({ id, promptIds: prompt, begin: matchedLen, end, kvAddr });
  D.startGenerate({ id, promptIds: prompt, begin: end, sampling: greedy(maxTokens), replyTo: 'router' });
  const s = await cD.done(id);
  return { s, sent, matchedLen, kvAddr };
}

async function allIdle(...cores: EngineCore[]) {
  for (const c of cores) {
    await c.whenIdle();
    c.kv.checkIntegrity();
    assert.is(usedPages(c), 0, `${c.name}: pages in use after idle`);
    assert.is(c.integrityError, null);
  }
}

test.before(async () => {
  mp = await openFixture(64, PS);
  md = await openFixture(64, PS);
});
test.after(() => {
  mp.backend.close();
  md.backend.close();
});
test.before.each(() => {
  tamper = undefined;
  writeGate = null;
  chunkBytes = 4 * 1024 * 1024;
  numWrites = 0;
});

test('P/D (end = len - 1): same tokens as one engine; D prefilled 1 token and received [0, end)', async () => {
  const pr = pair();
  for (const [i, cs] of CASES.entries()) {
    const len = cs.prompt_ids.length;
    const end = len - 1;
    const d0 = structuredClone(pr.D.counters);
    const p0 = structuredClone(pr.P.counters);
    const { s, sent } = await split(pr, `pd${i}`, cs.prompt_ids, end);
    assert.equal(s.tokens, cs.greedy_ids, `case ${i}`);
    assert.is(pr.D.counters.tokensPrefilled - d0.tokensPrefilled, len - end);
    assert.is(pr.D.counters.tokensReceived - d0.tokensReceived, end);
    assert.is(pr.D.counters.bytesReceived - d0.bytesReceived, Math.ceil(end / PS) * mp.backend.pageBytes);
    assert.is(pr.P.counters.tokensPrefilled - p0.tokensPrefilled, end);
    assert.equal(sent, { computedTokens: end, sentTokens: end, sentBytes: Math.ceil(end / PS) * mp.backend.pageBytes, transport: 'host' });
    assert.is(pr.P.counters.tokensGenerated, p0.tokensGenerated, 'P generated nothing');
  }
  assert.is(pr.P.counters.transfers.host, CASES.length);
  assert.equal(pr.cD.problems, []);
  await allIdle(pr.P, pr.D);
});

test('balanced P/D at several ratios: same tokens; D prefilled exactly len - end', async () => {
  for (const ratio of [0.2, 0.5, 0.8]) {
    const pr = pair(24); // chunked prefill on both sides
    for (const [i, cs] of CASES.entries()) {
      const len = cs.prompt_ids.length;
      const end = Math.max(1, Math.floor(len * ratio));
      const d0 = structuredClone(pr.D.counters);
      const { s } = await split(pr, `b${ratio}-${i}`, cs.prompt_ids, end);
      assert.equal(s.tokens, cs.greedy_ids, `ratio ${ratio} case ${i}`);
      assert.is(pr.D.counters.tokensPrefilled - d0.tokensPrefilled, len - end, `ratio ${ratio} case ${i}: D prefill`);
      assert.is(pr.D.counters.tokensReceived - d0.tokensReceived, end);
      assert.is(pr.D.counters.bytesReceived - d0.bytesReceived, Math.ceil(end / PS) * mp.backend.pageBytes);
    }
    await allIdle(pr.P, pr.D);
  }
});

test('transfers are split into chunks of at most maxChunkBytes (whole pages)', async () => {
  chunkBytes = 2 * mp.backend.pageBytes + 1;
  const pr = pair();
  const cs = CASES[2];
  const { s, sent } = await split(pr, 'chunks', cs.prompt_ids, 99);
  assert.equal(s.tokens, cs.greedy_ids);
  assert.is(numWrites, Math.ceil(7 / 2));
  assert.is(sent.sentBytes, 7 * mp.backend.pageBytes);
  await allIdle(pr.P, pr.D);
});

test('begin == len is taken as len - 1: the last prompt token is recomputed on D', async () => {
  const pr = pair();
  const cs = CASES[1];
  const len = cs.prompt_ids.length;
  const d0 = structuredClone(pr.D.counters);
  const { s } = await split(pr, 'full', cs.prompt_ids, len);
  assert.equal(s.tokens, cs.greedy_ids);
  assert.is(pr.D.counters.tokensPrefilled - d0.tokensPrefilled, 1);
  await allIdle(pr.P, pr.D);
});

test('migration: a prefix cached on P moves to D without recompute', async () => {
  const pr = pair();
  const cs = CASES[2];
  pr.P.generate({ id: 'warm', promptIds: cs.prompt_ids, sampling: greedy(32), replyTo: 'x' });
  assert.equal((await pr.cP.done('warm')).tokens, cs.greedy_ids);
  const end = 96; // page-aligned: all of it is in P's cache
  const p0 = structuredClone(pr.P.counters);
  const d0 = structuredClone(pr.D.counters);
  const { s, sent } = await split(pr, 'mig', cs.prompt_ids, end);
  assert.equal(s.tokens, cs.greedy_ids);
  assert.is(sent.computedTokens, 0);
  assert.is(pr.P.counters.tokensPrefilled, p0.tokensPrefilled, 'P computed nothing');
  assert.is(pr.D.counters.tokensReceived - d0.tokensReceived, 96);
  assert.is(pr.D.counters.tokensPrefilled - d0.tokensPrefilled, cs.prompt_ids.length - end);
  await allIdle(pr.P, pr.D);
});

test('corrupting one transferred page changes the output (the received KV is used)', async () => {
  const pr = pair();
  const cs = CASES[2];
  tamper = (ids, data) => {
    const out = data.slice();
    const page = out.subarray(0, mp.backend.pageBytes); // first page of the first chunk
    const f = new Float32Array(page.buffer, page.byteOffset, page.length / 4);
    for (let i = 0; i < f.length; i++) f[i] = -f[i] * 3;
    return out;
  };
  const { s } = await split(pr, 'bad', cs.prompt_ids, cs.prompt_ids.length - 1);
  assert.not.equal(s.tokens, cs.greedy_ids);
  tamper = undefined;
  // D cached the corrupted pages when 'bad' finished: a second split matches them on D (only the
  // tail is sent) and reproduces the corrupted output, while a fresh pair gives the reference.
  const { s: ok } = await split(pr, 'good', cs.prompt_ids, cs.prompt_ids.length - 1);
  const fresh = pair();
  const { s: clean } = await split(fresh, 'clean', cs.prompt_ids, cs.prompt_ids.length - 1);
  assert.equal(clean.tokens, cs.greedy_ids);
  assert.equal(ok.tokens, s.tokens, 'D reused its (corrupted) cached prefix: the cache really is used');
  await allIdle(pr.P, pr.D, fresh.P, fresh.D);
});

test('a prefix cached on the receiver is not sent again', async () => {
  const pr = pair();
  const cs = CASES[2];
  pr.D.generate({ id: 'dwarm', promptIds: cs.prompt_ids.slice(0, 70), sampling: greedy(1), replyTo: 'x' });
  await pr.cD.done('dwarm');
  const d0 = structuredClone(pr.D.counters);
  const end = cs.prompt_ids.length - 1;
  const { s, sent, matchedLen, kvAddr } = await split(pr, 'hit', cs.prompt_ids, end);
  assert.is(matchedLen, 64);
  assert.is(kvAddr.matchedLen, 64);
  assert.equal(s.tokens, cs.greedy_ids);
  assert.is(sent.sentTokens, end - 64);
  assert.is(pr.D.counters.tokensReceived - d0.tokensReceived, end - 64);
  assert.is(pr.D.counters.bytesReceived - d0.bytesReceived, (Math.ceil(end / PS) - 4) * mp.backend.pageBytes);
  await allIdle(pr.P, pr.D);
});

test('abort after prep_recv: the reservation goes back; late writes and starts are refused', async () => {
  const pr = pair();
  const cs = CASES[2];
  const { kvAddr } = pr.D.prepRecv({ id: 'a1', promptIds: cs.prompt_ids, end: 99 });
  assert.is(pr.D.kv.stats().reserved, 7);
  assert.equal(pr.D.abort('a1'), { aborted: true });
  assert.is(pr.D.kv.stats().reserved, 0);
  assert.is(await codeOf(pr.P.remoteSend({ id: 'a1', promptIds: cs.prompt_ids, begin: 0, end: 99, kvAddr })), 'UNKNOWN_REQUEST');
  await allIdle(pr.P, pr.D);
});

test('abort during remote_send: while P computes, and while pages are in flight', async () => {
  const pr = pair(8);
  const cs = CASES[2];
  const r1 = pr.D.prepRecv({ id: 'a2', promptIds: cs.prompt_ids, end: 99 });
  const send1 = pr.P.remoteSend({ id: 'a2', promptIds: cs.prompt_ids, begin: 0, end: 99, kvAddr: r1.kvAddr });
  await new Promise((r) => setImmediate(r));
  assert.ok(pr.P.kv.stats().inUse > 0, 'P is computing');
  pr.P.abort('a2');
  pr.D.abort('a2');
  assert.is(await codeOf(send1), 'ABORTED');

  let open!: () => void;
  writeGate = new Promise((r) => (open = r));
  const r2 = pr.D.prepRecv({ id: 'a3', promptIds: cs.prompt_ids, end: 99 });
  const send2 = pr.P.remoteSend({ id: 'a3', promptIds: cs.prompt_ids, begin: 0, end: 99, kvAddr: r2.kvAddr });
  while (pr.P.status().numRunning === 0 || pr.P.requests.get('send:a3')?.state !== 'computed') await new Promise((r) => setTimeout(r, 1));
  pr.P.abort('a3');
  assert.is(await codeOf(send2), 'ABORTED');
  open();
  pr.D.abort('a3');
  await allIdle(pr.P, pr.D);
});

test('abort during decode on D gives every page back on both engines', async () => {
  const pr = pair();
  const cs = CASES[2];
  const { matchedLen, kvAddr } = pr.D.prepRecv({ id: 'a4', promptIds: cs.prompt_ids, end: 80 });
  await pr.P.remoteSend({ id: 'a4', promptIds: cs.prompt_ids, begin: matchedLen, end: 80, kvAddr });
  pr.D.startGenerate({ id: 'a4', promptIds: cs.prompt_ids, begin: 80, sampling: greedy(500), replyTo: 'r' });
  while (pr.cD.get('a4').tokens.length < 4) await new Promise((r) => setTimeout(r, 1));
  pr.D.abort('a4');
  assert.is((await pr.cD.done('a4')).finish, 'abort');
  await allIdle(pr.P, pr.D);
});

test('reservations expire: pages back, then RESERVATION_EXPIRED for kv_write and start_generate', async () => {
  const pr = pair();
  const cs = CASES[1];
  const { kvAddr } = pr.D.prepRecv({ id: 'exp', promptIds: cs.prompt_ids, end: 20, ttlMs: 30 });
  assert.ok(pr.D.kv.stats().reserved > 0);
  await new Promise((r) => setTimeout(r, 80));
  assert.is(pr.D.kv.stats().reserved, 0);
  assert.is(await codeOf(pr.P.remoteSend({ id: 'exp', promptIds: cs.prompt_ids, begin: 0, end: 20, kvAddr })), 'RESERVATION_EXPIRED');
  assert.is(await codeOf(() => pr.D.startGenerate({ id: 'exp', promptIds: cs.prompt_ids, begin: 20, sampling: greedy(4), replyTo: 'r' })), 'RESERVATION_EXPIRED');
  await allIdle(pr.P, pr.D);
});

test('remote_send has a deadline: a receiver that never answers gives TRANSFER_TIMEOUT in time', async () => {
  const pr = pair();
  const cs = CASES[1];
  const { kvAddr } = pr.D.prepRecv({ id: 'slow', promptIds: cs.prompt_ids, end: 20 });
  writeGate = new Promise(() => {}); // never opens
  const t0 = Date.now();
  assert.is(await codeOf(pr.P.remoteSend({ id: 'slow', promptIds: cs.prompt_ids, begin: 0, end: 20, kvAddr, ttlMs: 150 })), 'TRANSFER_TIMEOUT');
  const took = Date.now() - t0;
  assert.ok(took >= 140 && took < 1000, `failed after ${took} ms`);
  pr.D.abort('slow');
  await allIdle(pr.P, pr.D);
});

test('kv_write is checked: unknown id, pages not reserved for it, wrong size', async () => {
  const pr = pair();
  const cs = CASES[1];
  const pb = md.backend.pageBytes;
  const { kvAddr } = pr.D.prepRecv({ id: 'w', promptIds: cs.prompt_ids, end: 20 });
  const other = [...Array(64).keys()].find((p) => !kvAddr.pageIds.includes(p))!;
  assert.is(await codeOf(pr.D.kvWrite({ id: 'zz', pageIds: [kvAddr.pageIds[0]], data: new Uint8Array(pb) })), 'UNKNOWN_REQUEST');
  assert.is(await codeOf(pr.D.kvWrite({ id: 'w', pageIds: [other], data: new Uint8Array(pb) })), 'BAD_MESSAGE');
  assert.is(await codeOf(pr.D.kvWrite({ id: 'w', pageIds: [kvAddr.pageIds[0]], data: new Uint8Array(pb - 1) })), 'BAD_MESSAGE');
  assert.is(pr.D.counters.bytesReceived, 0);
  pr.D.abort('w');
  await allIdle(pr.P, pr.D);
});

test('prep_recv admission control: KV_PAGES_EXHAUSTED at once, never blocks; duplicates refused', async () => {
  const pr = pair();
  const prompt = CASES[2].prompt_ids;
  const ids: string[] = [];
  let code = '';
  for (let i = 0; i < 20 && (code === '' || code === 'no error'); i++) {
    code = await codeOf(() => ids.push(pr.D.prepRecv({ id: `r${i}`, promptIds: [i, ...prompt.slice(1)], end: 99 }).kvAddr.engine));
  }
  assert.is(code, 'KV_PAGES_EXHAUSTED');
  assert.is(ids.length, 9, '9 reservations of 7 pages fit in 64');
  assert.is(await codeOf(() => pr.D.prepRecv({ id: 'r0', promptIds: prompt, end: 5 })), 'DUPLICATE_REQUEST');
  // the engine still serves: a small request runs next to the reservations
  pr.D.generate({ id: 'small', promptIds: [1, 2, 3], sampling: greedy(2), replyTo: 'r' });
  assert.is((await pr.cD.done('small')).tokens.length, 2);
  for (let i = 0; i < ids.length; i++) pr.D.abort(`r${i}`);
  await allIdle(pr.P, pr.D);
});

test.run();
