/**
 * The e2e scenarios of the router issue, written against an UpCluster (test/router/e2e-cluster.ts)
 * so they read as what a user does: HTTP requests, a strategy change, a SIGKILL.
 */
import OpenAI from 'openai';
import * as assert from 'uvu/assert';
import type { UpCluster } from './e2e-cluster.ts';
import { sseEvents } from '../shared/sse.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function openaiClientScenario(c: UpCluster): Promise<void> {
  const client = new OpenAI({ baseURL: c.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const prompt = 'Once upon a time, in a land far away,';
  const one = await client.completions.create({ model: 'tiny', prompt, max_tokens: 12, temperature: 0 });
  assert.is(one.choices[0].finish_reason, 'length');
  assert.is(one.usage?.completion_tokens, 12);
  let streamed = '';
  for await (const ch of await client.completions.create({ model: 'tiny', prompt, max_tokens: 12, temperature: 0, stream: true })) streamed += ch.choices[0]?.text ?? '';
  assert.is(streamed, one.choices[0].text, 'streamed completion = whole completion');

  const messages = [{ role: 'user' as const, content: 'Say something.' }];
  const chat = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0 });
  assert.is(chat.choices[0].message.role, 'assistant');
  assert.is(chat.usage?.completion_tokens, 10);
  let chatStreamed = '';
  let usage: OpenAI.CompletionUsage | undefined;
  const stream = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
  for await (const ch of stream) {
    chatStreamed += ch.choices[0]?.delta?.content ?? '';
    usage = ch.usage ?? usage;
  }
  assert.is(chatStreamed, chat.choices[0].message.content);
  assert.is(usage?.completion_tokens, 10);

  for (const [args, status] of [
    [{ model: 'no-such-model', prompt, max_tokens: 2 }, 404],
    [{ model: 'tiny', prompt, max_tokens: 2, temperature: 5 }, 400],
    [{ model: 'tiny', prompt: 'word '.repeat(9000), max_tokens: 2 }, 400],
  ] as const) {
    try {
      await client.completions.create(args as any);
      assert.unreachable(`accepted ${JSON.stringify(args).slice(0, 80)}`);
    } catch (e) {
      assert.instance(e, OpenAI.APIError);
      assert.is((e as InstanceType<typeof OpenAI.APIError>).status, status);
    }
  }
  const after = await client.completions.create({ model: 'tiny', prompt, max_tokens: 12, temperature: 0 });
  assert.is(after.choices[0].text, one.choices[0].text, 'still serving, same answer');
}

export const STRATEGY_PARAMS: Record<string, Record<string, unknown>> = { dp: {}, 'dp-prefix': {}, pd: {}, 'balanced-pd': { ratio: 0.2 }, migrate: {} };

export async function sameTextEveryStrategyScenario(c: UpCluster): Promise<void> {
  const prompt = 'A fixed prompt for comparing strategies: the quick brown fox jumps over the lazy dog. '.repeat(4);
  let reference: { text: string; ids: number[] } | null = null;
  for (const [strategy, params] of Object.entries(STRATEGY_PARAMS)) {
    await c.setStrategy(strategy, params);
    for (const round of [1, 2]) {
      const r = await fetch(c.url + '/v1/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt, max_tokens: 16, temperature: 0, return_token_ids: true }),
      }).then((x) => x.json());
      const got = { text: r.choices[0].text, ids: r.choices[0].token_ids };
      reference ??= got;
      assert.equal(got, reference, `${strategy} (round ${round}) differs from dp`);
    }
  }
}

async function completeAll(c: UpCluster, prompts: string[], maxTokens: number): Promise<number[][]> {
  const rs = await Promise.all(
    prompts.map((prompt) =>
      fetch(c.url + '/v1/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, return_token_ids: true }),
      }).then((x) => x.json()),
    ),
  );
  return rs.map((r) => r.choices[0].token_ids);
}

/** Streams all prompts at once; `onProgress(totalTokens)` after every chunk. Returns ids and texts per stream. */
async function streamAll(c: UpCluster, prompts: string[], maxTokens: number, onProgress: (total: number) => void) {
  let total = 0;
  return Promise.all(
    prompts.map(async (prompt) => {
      const r = await fetch(c.url + '/v1/completions', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt, max_tokens: maxTokens, temperature: 0, ignore_eos: true, return_token_ids: true, stream: true }),
      });
      assert.is(r.status, 200);
      const ids: number[] = [];
      let text = '';
      let finish: string | null = null;
      for await (const ev of sseEvents(r.body)) {
        if (ev.error) throw new Error(`stream error: ${JSON.stringify(ev.error)}`);
        const ch = ev.choices[0];
        ids.push(...(ch.token_ids ?? []));
        text += ch.text ?? '';
        finish = ch.finish_reason ?? finish;
        total += ch.token_ids?.length ?? 0;
        onProgress(total);
      }
      return { ids, text, finish };
    }),
  );
}

/** Every engine alive in the router's view and answering a status query itself (the router's polls can lag a kill). */
async function waitAllEnginesUp(c: UpCluster): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const engines = (await c.routerStatus()).engines;
    const isAnswering = async () => (await Promise.all(engines.map((e) => c.engineStatus(e.name).then(() => true, () => false)))).every(Boolean);
    if (engines.every((e) => e.isAlive) && (await isAnswering())) return;
    if (Date.now() - t0 > 60_000) throw new Error('a killed engine did not come back within 60 s');
    await sleep(100);
  }
}

export interface KillScenario {
  strategy: string;
  /** 'decode': SIGKILL the busiest decode engine during decode; 'prefill': SIGKILL p0 during remote_send. */
  victim: 'decode' | 'prefill';
  numStreams: number;
  maxTokens: number;
}

/**
 * SIGKILL during `numStreams` concurrent streams: all complete, each whole and equal to an
 * undisturbed run at temperature 0 (run afterwards, so the disturbed run has a cold cache).
 */
export async function killScenario(c: UpCluster, s: KillScenario): Promise<void> {
  await waitAllEnginesUp(c);
  await c.setStrategy(s.strategy, STRATEGY_PARAMS[s.strategy]);
  const migrationsBefore = (await c.routerStatus()).counters.migrations;
  const sendFailuresBefore = await sendFailures(c);
  const filler = s.victim === 'prefill' ? ' and then the story went on with many more details about everything'.repeat(20) : '';
  const prompts = Array.from({ length: s.numStreams }, (_, i) => `[${s.strategy}/${s.victim} #${i}] Tell me about the number ${i * 13}${filler}.`);
  let killed: Promise<number> | null = null;
  let watcher: Promise<void> = Promise.resolve();
  if (s.victim === 'prefill') {
    // p0 is busy computing and sending prompts' KV as soon as the requests land
    watcher = (async () => {
      const t0 = Date.now();
      while (!killed && Date.now() - t0 < 30_000) {
        const st = await c.engineStatus('p0').catch(() => null);
        if (st && st.numRunning + st.numWaiting > 0) killed = c.killEngine('p0');
        else await sleep(10);
      }
    })();
  }
  const disturbed = await streamAll(c, prompts, s.maxTokens, (total) => {
    if (s.victim === 'decode' && !killed && total >= s.numStreams * 4) {
      killed = (async () => {
        const sts = await Promise.all(['d0', 'd1'].map((n) => c.engineStatus(n).then((st) => ({ n, load: st.numRunning + st.numWaiting }))));
        return c.killEngine(sts.sort((a, b) => b.load - a.load)[0].n);
      })();
      killed.catch(() => {}); // a failure fails the assertion below, not the process (which would orphan `up`)
    }
  });
  await watcher;
  assert.ok(killed, 'the engine was killed while the streams ran');
  assert.type(await killed, 'number');
  const reference = await completeAll(c, prompts, s.maxTokens);
  disturbed.forEach((d, i) => {
    assert.is(d.finish, 'length', `stream ${i} finish`);
    assert.equal(d.ids, reference[i], `stream ${i}: tokens differ from the undisturbed run`);
  });
  if (s.victim === 'decode') assert.ok((await c.routerStatus()).counters.migrations > migrationsBefore, 'requests migrated');
  else assert.ok((await sendFailures(c)) > sendFailuresBefore, 'a remote_send failed and was recovered from');
}

/** Failed remote_send operations so far (router metrics). */
async function sendFailures(c: UpCluster): Promise<number> {
  const text = await fetch(c.url + '/metrics').then((r) => r.text());
  return [...text.matchAll(/^microserve_engine_op_failures_total\{op="remote_send"[^}]*\} (\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
}
