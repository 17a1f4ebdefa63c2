/**
 * One suite of actor semantics, run against a local and a remote ref (same process vs. another
 * process over ws). `setup` returns a system to query from and the path of a test actor hosted
 * where the variant wants it.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MicroserveError } from '../../common/errors.ts';
import type { ActorSystemApi } from '../../actors/runtime/types.ts';

export interface Fixture {
  caller: ActorSystemApi;
  /** Path of an echo actor (see test/runtime/echo-actor.ts). */
  echo: string;
  teardown(): Promise<void>;
}

export function actorSuite(name: string, setup: () => Promise<Fixture>) {
  const s = suite<{ fx: Fixture }>(name);
  s.before(async (ctx) => {
    ctx.fx = await setup();
  });
  s.after(async (ctx) => {
    await ctx.fx.teardown();
  });

  s('query gets the reply', async ({ fx }) => {
    const r = await fx.caller.ref(fx.echo).query<any>({ type: 'echo', value: 42 }, 2000);
    assert.equal(r, { type: 'echo', value: 42 });
  });

  s('async handler reply; binary payload round-trips as bytes', async ({ fx }) => {
    const data = new Uint8Array(1 << 20).map((_, i) => i * 7);
    const r = await fx.caller.ref(fx.echo).query<any>({ type: 'slow-echo', ms: 20, data }, 2000);
    assert.ok(r.data instanceof Uint8Array);
    assert.is(r.data.length, data.length);
    assert.is(Buffer.compare(Buffer.from(r.data), Buffer.from(data)), 0);
  });

  s('typed error from the handler arrives typed', async ({ fx }) => {
    try {
      await fx.caller.ref(fx.echo).query({ type: 'fail', code: 'KV_PAGES_EXHAUSTED' }, 2000);
      assert.unreachable();
    } catch (e) {
      assert.instance(e, MicroserveError);
      assert.is((e as MicroserveError).code, 'KV_PAGES_EXHAUSTED');
    }
  });

  s('a crash answers ACTOR_CRASHED and the actor keeps serving (resume)', async ({ fx }) => {
    try {
      await fx.caller.ref(fx.echo).query({ type: 'crash' }, 2000);
      assert.unreachable();
    } catch (e) {
      assert.is((e as MicroserveError).code, 'ACTOR_CRASHED');
    }
    const r = await fx.caller.ref(fx.echo).query<any>({ type: 'echo', value: 1 }, 2000);
    assert.is(r.value, 1);
  });

  s('query timeout is typed and on time', async ({ fx }) => {
    const t0 = Date.now();
    try {
      await fx.caller.ref(fx.echo).query({ type: 'never' }, 200);
      assert.unreachable();
    } catch (e) {
      assert.is((e as MicroserveError).code, 'QUERY_TIMEOUT');
    }
    assert.ok(Date.now() - t0 < 1500);
  });

  s('unknown actor fails fast with ACTOR_NOT_FOUND', async ({ fx }) => {
    const t0 = Date.now();
    try {
      await fx.caller.ref('engine/nope').query({ type: 'status' }, 5000);
      assert.unreachable();
    } catch (e) {
      assert.is((e as MicroserveError).code, 'ACTOR_NOT_FOUND');
    }
    assert.ok(Date.now() - t0 < 2000);
  });

  s('query requires a timeout', async ({ fx }) => {
    assert.throws(() => fx.caller.ref(fx.echo).query({ type: 'echo' }, undefined as any), /timeout/);
  });

  s('dispatch is delivered in order', async ({ fx }) => {
    const ref = fx.caller.ref(fx.echo);
    for (let i = 0; i < 50; i++) ref.dispatch({ type: 'record', value: i });
    const r = await ref.query<any>({ type: 'recorded' }, 2000);
    assert.equal(r.values.slice(-50), [...Array(50).keys()]);
  });

  s('mailbox is not blocked by a slow async handler', async ({ fx }) => {
    const ref = fx.caller.ref(fx.echo);
    const slow = ref.query({ type: 'slow-echo', ms: 600 }, 3000);
    const t0 = Date.now();
    await ref.query({ type: 'echo' }, 2000);
    assert.ok(Date.now() - t0 < 400, `echo took ${Date.now() - t0} ms behind a slow handler`);
    await slow;
  });

  return s;
}
