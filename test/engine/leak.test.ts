/**
 * 1000 requests with random aborts leak no page: a pair of engines on small pools (so requests are
 * preempted and prep_recv is refused now and then) serves a random mix of plain generations and
 * P/D splits, aborting a random share at a random stage. Afterwards both engines are idle, pass
 * the integrity check and hold no page; every stream ended exactly once. With and without overlap.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import { isMicroserveError } from '../../common/errors.ts';
import { Collector, directTransport, greedy, makeCore, openFixture, usedPages } from './helpers.ts';
import { xorshift as rng } from '../shared/xorshift.ts';

const tick = () => new Promise((r) => setImmediate(r));

// both orders of the engine loop (EngineCoreOptions.overlap)
for (const overlap of [true, false]) {
  test(`${overlap ? 'overlap' : 'no overlap'}: 1000 requests with random aborts at every stage leak no page`, async () => {
    const mp = await openFixture(16, 8);
    const md = await openFixture(16, 8);
    const cP = new Collector();
    const cD = new Collector();
    const refs: { P?: EngineCore; D?: EngineCore } = {};
    const P = (refs.P = makeCore(mp, { overlap, name: 'p', collector: cP, maxBatchTokens: 48, pickTransport: () => directTransport(() => refs.D!) }));
    const D = (refs.D = makeCore(md, { overlap, name: 'd', collector: cD, maxBatchTokens: 48, pickTransport: () => directTransport(() => refs.P!) }));
    const rand = rng(2024);
    const int = (n: number) => Math.floor(rand() * n);
    const stems = Array.from({ length: 5 }, () => Array.from({ length: 48 }, () => 3 + int(1000)));
    const prompt = () => [...stems[int(stems.length)].slice(0, int(40)), ...Array.from({ length: 1 + int(16) }, () => 3 + int(1000))];
    const unexpected: string[] = [];
    const expectCodes = (e: unknown, ok: string[]) => {
      if (!isMicroserveError(e) || !ok.includes(e.code)) unexpected.push(String((e as Error)?.message ?? e));
    };
    let numAborted = 0;
    let numSplit = 0;
    let numRefused = 0;

    async function one(i: number): Promise<void> {
      const id = `q${i}`;
      const p = prompt();
      const sampling = greedy(1 + int(4));
      const abortAt = rand() < 0.3 ? int(4) : -1; // 0: at once, 1: after 1 tick, 2: after 3 ticks, 3: on first token
      const isSplit = rand() < 0.35;
      if (!isSplit) {
        const E = rand() < 0.5 ? P : D;
        const c = E === P ? cP : cD;
        E.generate({ id, promptIds: p, sampling, replyTo: 'r' });
        if (abortAt >= 0) {
          if (abortAt === 3) while (c.get(id).tokens.length === 0 && !c.get(id).finish) await tick();
          else for (let t = 0; t < [0, 1, 3][abortAt]; t++) await tick();
          E.abort(id);
          numAborted++;
        }
        const s = await c.done(id);
        if (s.finish === 'error') unexpected.push(`${id}: ${s.error?.message}`);
        return;
      }
      numSplit++;
      const end = 1 + int(p.length);
      let kvAddr;
      try {
        kvAddr = D.prepRecv({ id, promptIds: p, end, ttlMs: 2000 }).kvAddr;
      } catch (e) {
        expectCodes(e, ['KV_PAGES_EXHAUSTED']);
        numRefused++;
        return;
      }
      if (abortAt === 0) {
        D.abort(id);
        numAborted++;
        return;
      }
      const send = P.remoteSend({ id, promptIds: p, begin: kvAddr.matchedLen, end, kvAddr });
      if (abortAt === 1 || abortAt === 2) {
        for (let t = 0; t < abortAt; t++) await tick();
        P.abort(id);
        D.abort(id);
        numAborted++;
        try {
          await send;
        } catch (e) {
          expectCodes(e, ['ABORTED', 'UNKNOWN_REQUEST']);
        }
        return;
      }
      try {
        await send;
      } catch (e) {
        expectCodes(e, []);
        D.abort(id);
        return;
      }
      D.startGenerate({ id, promptIds: p, begin: end, sampling, replyTo: 'r' });
      if (abortAt === 3) {
        await tick();
        D.abort(id);
        numAborted++;
      }
      await cD.done(id);
    }

    const WAVE = 25;
    for (let w = 0; w < 1000; w += WAVE) {
      await Promise.all(Array.from({ length: WAVE }, (_, k) => one(w + k)));
      if (w % 200 === 0) {
        P.kv.checkIntegrity();
        D.kv.checkIntegrity();
      }
    }
    for (const E of [P, D]) {
      await E.whenIdle();
      E.kv.checkIntegrity();
      assert.is(usedPages(E), 0, `${E.name} holds pages`);
      assert.is(E.integrityError, null);
      assert.is(E.requests.size, 0);
      assert.is(E.status().numReserved, 0);
    }
    assert.equal(unexpected, []);
    assert.equal([...cP.problems, ...cD.problems], []);
    for (const c of [cP, cD]) for (const [id, s] of c.streams) assert.ok(s.finish, `${id} never finished`);
    assert.ok(numAborted > 200, `aborted ${numAborted}`);
    assert.ok(numSplit > 250, `splits ${numSplit}`);
    assert.ok(P.counters.preemptions + D.counters.preemptions > 0, 'the pools were short at times');
    assert.ok(numRefused > 0, 'prep_recv was refused at times');
    mp.backend.close();
    md.backend.close();
  });
}

test.run();
