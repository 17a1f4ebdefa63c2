/**
 * Strategies' arithmetic: which engine gets which operation over which token range, and their
 * fallbacks. Driven through a recording StrategyContext (no engines needed: a strategy only sees
 * the context), and the strategy loader.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError, MicroserveError, type ErrorCode } from '../../common/errors.ts';
import type { KvAddr, Role } from '../../actors/messages.ts';
import type { RoutedRequest, StrategyContext } from '../../actors/router/strategy-api.ts';
import { balancedEnd } from '../../actors/router/strategies/balanced-pd.ts';
import { BUILTIN_STRATEGIES } from '../../actors/router/strategies/index.ts';
import { loadStrategy } from '../../actors/router/strategy-loader.ts';

interface FakeEngine {
  name: string;
  role: Role;
  load?: number;
  /** Cached prefix length it reports (match_prefix and prep_recv). */
  match?: number;
  prepFails?: ErrorCode;
  sendFails?: ErrorCode;
  isDead?: boolean;
}

function recordingCtx(engines: FakeEngine[], params: Record<string, unknown> = {}) {
  const calls: string[] = [];
  const byName = new Map(engines.map((e) => [e.name, e]));
  const get = (n: string): FakeEngine => byName.get(n) ?? (assert.unreachable(`unknown engine ${n}`) as never);
  const ctx: StrategyContext = {
    params,
    engines: (role) => engines.filter((e) => !e.isDead && (!role || e.role === role || e.role === 'both')).map((e) => e.name),
    role: (n) => get(n).role,
    load: (n) => get(n).load ?? 0,
    kv: () => null,
    matchPrefix: async (n, ids) => Math.min(get(n).match ?? 0, ids.length),
    prepRecv: async (n, ids, end) => {
      const e = get(n);
      calls.push(`prep_recv ${n} end=${end}`);
      if (e.prepFails) throw new MicroserveError(e.prepFails, 'injected');
      const matchedLen = Math.min(e.match ?? 0, end);
      const kvAddr: KvAddr = { engine: n, pageIds: [], pageSize: 16, matchedLen, end, transports: ['host'] };
      return { matchedLen, kvAddr };
    },
    remoteSend: async (n, ids, begin, end, kvAddr) => {
      const e = get(n);
      calls.push(`remote_send ${n} [${begin},${end}) -> ${kvAddr.engine}`);
      if (e.sendFails) {
        if (e.sendFails === 'CONNECTION_LOST') e.isDead = true;
        throw new MicroserveError(e.sendFails, 'injected');
      }
      return { computedTokens: end, sentTokens: end - begin, sentBytes: 0, transport: 'host' };
    },
    startGenerate: async (n, ids, begin) => {
      calls.push(`start_generate ${n} begin=${begin}`);
    },
    abort: async (n) => {
      calls.push(`abort ${n}`);
    },
    debug: () => {},
  };
  return { ctx, calls };
}

const req = (len: number): RoutedRequest => ({
  id: 'r-1',
  promptIds: Array.from({ length: len }, (_, i) => 1000 + i),
  numPromptTokens: len,
  numGenerated: 0,
  attempt: 1,
  sampling: { maxTokens: 8, temperature: 0, topP: 1, stopTokenIds: [] },
});

async function run(strategy: string, engines: FakeEngine[], len: number, params: Record<string, unknown> = {}): Promise<string[]> {
  const s = await loadStrategy(strategy, params);
  const { ctx, calls } = recordingCtx(engines, s.params);
  await s.run(ctx, req(len));
  return calls;
}

test('dp: least loaded engine that can generate, ties in plan order, NO_ENGINE when none', async () => {
  const engines: FakeEngine[] = [
    { name: 'p0', role: 'prefill', load: 0 },
    { name: 'e0', role: 'both', load: 3 },
    { name: 'd0', role: 'decode', load: 2 },
    { name: 'd1', role: 'decode', load: 2 },
  ];
  assert.equal(await run('dp', engines, 10), ['start_generate d0 begin=0']);
  assert.equal(await run('dp', [{ name: 'p0', role: 'prefill' }], 10), ['start_generate p0 begin=0'], 'no decode engine: any engine');
  try {
    await run('dp', [{ name: 'd0', role: 'decode', isDead: true }], 10);
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'NO_ENGINE'));
  }
});

test('dp-prefix: longest cached prefix wins; ties go to the least loaded; short or busy hits do not count', async () => {
  const a = (match: number, load = 0): FakeEngine => ({ name: 'a', role: 'both', match, load });
  const b = (match: number, load = 0): FakeEngine => ({ name: 'b', role: 'both', match, load });
  assert.equal(await run('dp-prefix', [a(16, 1), b(48, 1)], 64), ['start_generate b begin=0']);
  assert.equal(await run('dp-prefix', [a(32, 2), b(32, 1)], 64), ['start_generate b begin=0'], 'tie → least loaded');
  assert.equal(await run('dp-prefix', [a(0, 1), b(8, 1)], 64), ['start_generate a begin=0'], 'match below minMatch=16 → least loaded (plan order)');
  assert.equal(await run('dp-prefix', [a(0, 0), b(48, 5)], 64), ['start_generate a begin=0'], 'load gap 5 > maxLoadGap 4');
  assert.equal(await run('dp-prefix', [a(0, 0), b(48, 5)], 64, { maxLoadGap: 8 }), ['start_generate b begin=0']);
});

test('pd: prefill engine sends [matched, len-1) to the decode engine, which starts at len-1', async () => {
  const engines: FakeEngine[] = [
    { name: 'p0', role: 'prefill', load: 2 },
    { name: 'p1', role: 'prefill', load: 1 },
    { name: 'd0', role: 'decode', load: 1 },
    { name: 'd1', role: 'decode', load: 0 },
  ];
  assert.equal(await run('pd', engines, 100), ['prep_recv d1 end=99', 'remote_send p1 [0,99) -> d1', 'start_generate d1 begin=99']);
  engines[3].match = 40;
  assert.equal(await run('pd', engines, 100), ['prep_recv d1 end=99', 'remote_send p1 [40,99) -> d1', 'start_generate d1 begin=99'], 'the receiver cache hit is not sent');
  engines[3].match = 99;
  assert.equal(await run('pd', engines, 100), ['prep_recv d1 end=99', 'start_generate d1 begin=99'], 'all cached: nothing to send');
});

test('pd: with only role "both" engines the sender and the receiver still differ', async () => {
  const calls = await run('pd', [{ name: 'x', role: 'both', load: 1 }, { name: 'y', role: 'both', load: 0 }], 20);
  assert.equal(calls, ['prep_recv y end=19', 'remote_send x [0,19) -> y', 'start_generate y begin=19']);
});

test('balanced-pd: end = len - max(1, round(ratio * len)); the decode engine prefills the rest', async () => {
  const cases: [number, number, number][] = [
    [100, 0.1, 90],
    [100, 0, 99],
    [100, 0.25, 75],
    [7, 0.1, 6],
    [3, 0.5, 1],
    [1, 0.1, 0],
  ];
  for (const [len, ratio, end] of cases) assert.is(balancedEnd(len, ratio), end, `len ${len} ratio ${ratio}`);
  const engines: FakeEngine[] = [{ name: 'p0', role: 'prefill' }, { name: 'd0', role: 'decode' }];
  assert.equal(await run('balanced-pd', engines, 100, { ratio: 0.25 }), ['prep_recv d0 end=75', 'remote_send p0 [0,75) -> d0', 'start_generate d0 begin=75']);
  assert.equal(await run('balanced-pd', engines, 100), ['prep_recv d0 end=90', 'remote_send p0 [0,90) -> d0', 'start_generate d0 begin=90'], 'default ratio 0.1');
  assert.equal(await run('balanced-pd', engines, 1, { ratio: 0.1 }), ['start_generate d0 begin=0'], 'a one-token prompt runs whole on the decode engine');
});

test('migrate: the holder of the longest prefix sends it to the least-loaded engine', async () => {
  const engines: FakeEngine[] = [
    { name: 'a', role: 'both', load: 3, match: 64 },
    { name: 'b', role: 'both', load: 0, match: 16 },
  ];
  assert.equal(await run('migrate', engines, 100), ['prep_recv b end=64', 'remote_send a [16,64) -> b', 'start_generate b begin=64']);
  engines[0].match = 100;
  assert.equal(await run('migrate', engines, 100), ['prep_recv b end=99', 'remote_send a [16,99) -> b', 'start_generate b begin=99'], 'a whole-prompt hit leaves the last token');
  engines[0].match = 24;
  assert.equal(await run('migrate', engines, 100), ['start_generate b begin=0'], '8 more tokens is below minMatch 16');
  engines[1].match = 80;
  assert.equal(await run('migrate', engines, 100), ['start_generate b begin=0'], 'the destination holds the longest prefix itself');
});

test('fallbacks: a receiver out of pages → the next; none → whole request on a receiver', async () => {
  const engines: FakeEngine[] = [
    { name: 'p0', role: 'prefill' },
    { name: 'd0', role: 'decode', load: 0, prepFails: 'KV_PAGES_EXHAUSTED' },
    { name: 'd1', role: 'decode', load: 1 },
  ];
  assert.equal(await run('pd', engines, 10), ['prep_recv d0 end=9', 'prep_recv d1 end=9', 'remote_send p0 [0,9) -> d1', 'start_generate d1 begin=9']);
  engines[2].prepFails = 'KV_PAGES_EXHAUSTED';
  assert.equal(await run('pd', engines, 10), ['prep_recv d0 end=9', 'prep_recv d1 end=9', 'start_generate d0 begin=0']);
});

test('fallbacks: a failed transfer recomputes on the decode engine; a dead sender hands over to another', async () => {
  const engines: FakeEngine[] = [
    { name: 'p0', role: 'prefill', load: 0, sendFails: 'TRANSFER_FAILED' },
    { name: 'p1', role: 'prefill', load: 1 },
    { name: 'd0', role: 'decode' },
  ];
  assert.equal(await run('pd', engines, 10), ['prep_recv d0 end=9', 'remote_send p0 [0,9) -> d0', 'abort p0', 'start_generate d0 begin=0']);
  engines[0].sendFails = 'CONNECTION_LOST';
  assert.equal(await run('pd', engines, 10), ['prep_recv d0 end=9', 'remote_send p0 [0,9) -> d0', 'abort p0', 'remote_send p1 [0,9) -> d0', 'start_generate d0 begin=9']);
});

test('loader: every built-in loads by name; bad names, params and modules fail with BAD_CONFIG', async () => {
  for (const name of BUILTIN_STRATEGIES) assert.type((await loadStrategy(name)).run, 'function', name);
  const refusals: [string, Record<string, unknown>][] = [
    ['no-such-strategy', {}],
    ['balanced-pd', { ratio: 1.5 }],
    ['balanced-pd', { ratio: 'half' }],
    ['dp-prefix', { minMatch: -1 }],
    ['./does/not/exist.ts', {}],
  ];
  for (const [name, params] of refusals) {
    try {
      await loadStrategy(name, params);
      assert.unreachable(`${name} ${JSON.stringify(params)} accepted`);
    } catch (e) {
      assert.ok(isMicroserveError(e, 'BAD_CONFIG'), `${name}: ${e}`);
    }
  }
});

test('loader: a user module path loads like a built-in, and is re-read on every load', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ms-strategy-'));
  const file = join(dir, 'last-engine.ts');
  const write = (pick: string) =>
    writeFileSync(file, `export default async function (ctx: any, req: any) { const e = ctx.engines(); await ctx.startGenerate(${pick}, req.promptIds, 0); }\n`);
  write('e[e.length - 1]');
  const engines: FakeEngine[] = [{ name: 'a', role: 'both' }, { name: 'b', role: 'both' }];
  const s1 = await loadStrategy('last-engine.ts', {}, dir);
  const r1 = recordingCtx(engines);
  await s1.run(r1.ctx, req(5));
  assert.equal(r1.calls, ['start_generate b begin=0']);
  write('e[0]');
  const s2 = await loadStrategy(file);
  const r2 = recordingCtx(engines);
  await s2.run(r2.ctx, req(5));
  assert.equal(r2.calls, ['start_generate a begin=0'], 'the edited module was reloaded');
  writeFileSync(join(dir, 'bad.ts'), 'export const x = 1;\n');
  try {
    await loadStrategy(join(dir, 'bad.ts'));
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_CONFIG') && /default-export/.test((e as Error).message));
  }
});

test.run();
