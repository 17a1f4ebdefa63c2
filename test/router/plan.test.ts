/**
 * Plans: every strategy gives the same greedy text; hot reload (in-flight requests finish under
 * the old plan, new ones use the new one, roles are sent, engines untouched by a strategy-only
 * change); invalid plans are refused and the running plan stays; user strategy modules.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import { BUILTIN_STRATEGIES } from '../../actors/router/strategies/index.ts';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { expectedTokens } from './fake-engine.ts';
import { post, sse, startHarness } from './harness.ts';

const tok = Llama3PresetTokenizer.get();
const PD = [
  { name: 'p0', role: 'prefill' as const },
  { name: 'd0', role: 'decode' as const },
  { name: 'd1', role: 'decode' as const },
];

test('every strategy gives the same text at temperature 0 (twice: cold and with cache hits)', async () => {
  const h = await startHarness(PD);
  try {
    const prompt = 'A shared system prompt that is long enough to span several KV pages. Question: what is 2 + 2?';
    const want = tok.decode(expectedTokens(tok.encode(prompt), 12), { skipSpecialTokens: true });
    // pd first: its send happens while no engine has the prompt cached
    const order = ['pd', ...BUILTIN_STRATEGIES.filter((s) => s !== 'pd')];
    assert.is(order.length, 5);
    for (const strategy of order) {
      await h.router.setPlan({ engines: PD, strategy, params: {} });
      for (const round of [1, 2]) {
        const r = await post(h.url + '/v1/completions', { prompt, max_tokens: 12, temperature: 0 });
        assert.is(r.status, 200, `${strategy} round ${round}: ${JSON.stringify(r.body)}`);
        assert.is(r.body.choices[0].text, want, `${strategy} round ${round}`);
      }
    }
    const p0 = await h.ops('p0');
    assert.ok(p0.ops.some((o) => o.op === 'remote_send' && o.end === (o.len ?? 0) - 1), 'pd sent [.., len-1)');
  } finally {
    await h.close();
  }
});

test('hot reload: in-flight requests finish under the old plan, new ones use the new plan', async () => {
  const engines = [
    { name: 'a', role: 'both' as const, options: { tokenMs: 10 } },
    { name: 'b', role: 'both' as const, options: { tokenMs: 10 } },
  ];
  const h = await startHarness(engines, { strategy: 'dp' });
  try {
    const prompts = Array.from({ length: 6 }, (_, i) => tok.encode(`old plan request ${i}`));
    let started = 0;
    let onStarted!: () => void;
    const allStarted = new Promise<void>((r) => (onStarted = r));
    const old = prompts.map((prompt) =>
      sse(h.url + '/v1/completions', { prompt, max_tokens: 30, temperature: 0, stream: true, return_token_ids: true }, (ev) => {
        if (ev !== '[DONE]' && ev.choices?.[0]?.token_ids?.length && ++started === prompts.length) onStarted();
      }),
    );
    await allStarted;
    const applied = await h.router.setPlan({ engines: [{ name: 'a', role: 'prefill' }, { name: 'b', role: 'decode' }], strategy: 'pd', params: {} });
    assert.is(applied.version, 2);
    assert.is(applied.strategy, 'pd');
    assert.is(applied.inFlightOnOldPlan, prompts.length);
    assert.ok(applied.switchMs >= 0);
    const fresh = await post(h.url + '/v1/completions', { prompt: 'new plan request', max_tokens: 4, temperature: 0 });
    assert.is(fresh.status, 200);
    const results = await Promise.all(old);
    results.forEach((events, i) => {
      const ids = events.slice(0, -1).flatMap((c: any) => c.choices[0]?.token_ids ?? []);
      assert.equal(ids, expectedTokens(prompts[i], 30), `old request ${i}`);
    });
    const [a, b] = await Promise.all([h.ops('a'), h.ops('b')]);
    assert.ok(a.ops.some((o) => o.op === 'set_role') && b.ops.some((o) => o.op === 'set_role'), 'changed roles were sent');
    const sends = a.ops.filter((o) => o.op === 'remote_send');
    assert.is(sends.length, 1, 'only the new request went through prefill/decode');
    const oldIds = new Set([...a.ops, ...b.ops].filter((o) => o.op === 'start_generate' && o.begin === 0).map((o) => o.id));
    assert.is(oldIds.size, prompts.length, 'old requests ran data parallel, whole');
    for (let i = 0; i < 50 && h.router.status().lastPlanChange?.drainMs == null; i++) await new Promise((r) => setTimeout(r, 10));
    assert.type(h.router.status().lastPlanChange?.drainMs, 'number');
  } finally {
    await h.close();
  }
});

test('invalid plans are refused and the running plan stays; a strategy-only change touches no engine', async () => {
  const h = await startHarness(PD, { strategy: 'pd', params: {} });
  try {
    const before = await Promise.all(PD.map((e) => h.ops(e.name)));
    const bad = [
      { engines: PD, strategy: 'nope' },
      { engines: PD, strategy: 'balanced-pd', params: { ratio: 2 } },
      { engines: [PD[0], PD[0]], strategy: 'dp' },
      { engines: [], strategy: 'dp' },
      { engines: [{ name: 'x', role: 'leader' }], strategy: 'dp' },
    ];
    for (const plan of bad) {
      try {
        await h.router.setPlan(plan as any);
        assert.unreachable(JSON.stringify(plan));
      } catch (e) {
        assert.ok(isMicroserveError(e, 'BAD_CONFIG'), String(e));
      }
    }
    assert.is(h.router.status().planVersion, 1);
    assert.is(h.router.status().strategy, 'pd');
    const applied = await h.router.setPlan({ engines: PD, strategy: 'balanced-pd', params: { ratio: 0.5 } });
    assert.is(applied.version, 2);
    const after = await Promise.all(PD.map((e) => h.ops(e.name)));
    assert.equal(after.map((x) => x.ops.length), before.map((x) => x.ops.length), 'no engine got any operation');
    const r = await post(h.url + '/v1/completions', { prompt: [128000, 1, 2, 3, 4, 5, 6, 7, 8, 9], max_tokens: 2, temperature: 0 });
    assert.is(r.status, 200);
    const p0 = await h.ops('p0');
    assert.equal(p0.ops.filter((o) => o.op === 'remote_send').map((o) => [o.begin, o.end]), [[0, 5]], 'ratio 0.5 of 10 tokens: the sender does [0, 5)');
  } finally {
    await h.close();
  }
});

test('a user strategy module (path) is loaded by setPlan and routes requests', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ms-user-strategy-'));
  writeFileSync(
    join(dir, 'always-last.ts'),
    `export function validateParams(p: any) { if (p.tag !== undefined && typeof p.tag !== 'string') throw new Error('tag must be a string'); }
export default async function (ctx: any, req: any) {
  const all = ctx.engines();
  await ctx.startGenerate(all[all.length - 1], req.promptIds, 0);
}
`,
  );
  const h = await startHarness(PD, { baseDir: dir });
  try {
    await h.router.setPlan({ engines: PD, strategy: './always-last.ts', params: { tag: 'x' } });
    const r = await post(h.url + '/v1/completions', { prompt: 'hello', max_tokens: 3, temperature: 0 });
    assert.is(r.status, 200);
    const d1 = await h.ops('d1');
    assert.is(d1.ops.filter((o) => o.op === 'start_generate').length, 1);
    try {
      await h.router.setPlan({ engines: PD, strategy: './always-last.ts', params: { tag: 5 } });
      assert.unreachable();
    } catch (e) {
      assert.ok(isMicroserveError(e, 'BAD_CONFIG'));
    }
  } finally {
    await h.close();
  }
});

test.run();
