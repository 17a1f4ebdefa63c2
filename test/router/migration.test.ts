/**
 * Request migration with real processes: engine doubles (test/router/fake-engine.ts) run in their
 * own OS processes and are SIGKILLed mid-request; the router must finish every stream, whole and
 * equal to an undisturbed greedy run (no token repeated or missing). Also: the watchdog for a
 * silent engine, and a client disconnect aborting every engine a request reached.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import type { FakeEngineOptions } from './fake-engine.ts';
import { expectedTokens } from './fake-engine.ts';
import { sse, startHarness, type Harness } from './harness.ts';

const tok = Llama3PresetTokenizer.get();
const NUM_STREAMS = 20;
const MAX_TOKENS = 40;

const prompts = Array.from({ length: NUM_STREAMS }, (_, i) => tok.encode(`Request number ${i}: tell me a long story about the number ${i * 7}.`));

async function topology(strategy: string, opts: FakeEngineOptions, params: Record<string, unknown> = {}): Promise<Harness> {
  const engines = [
    { name: 'p0', role: 'prefill' as const, options: opts, inProcess: false },
    { name: 'd0', role: 'decode' as const, options: opts, inProcess: false },
    { name: 'd1', role: 'decode' as const, options: opts, inProcess: false },
  ];
  return startHarness(engines, { strategy, params, requestTimeoutMs: 5000 });
}

/** Runs all streams; calls `disturb` once `after` tokens have arrived in total. */
async function runStreams(h: Harness, after: number, disturb: () => void | Promise<void>) {
  let total = 0;
  let isDisturbed = false;
  const results = await Promise.all(
    prompts.map((prompt) =>
      sse(h.url + '/v1/completions', { prompt, max_tokens: MAX_TOKENS, temperature: 0, stream: true, return_token_ids: true }, (ev) => {
        if (ev === '[DONE]' || !ev.choices?.[0]?.token_ids) return;
        total += ev.choices[0].token_ids.length;
        if (!isDisturbed && total >= after) {
          isDisturbed = true;
          void disturb();
        }
      }),
    ),
  );
  return { results, isDisturbed };
}

function assertWhole(results: any[][], label: string): void {
  results.forEach((events, i) => {
    assert.is(events.at(-1), '[DONE]', `${label} #${i}: no [DONE]`);
    const chunks = events.slice(0, -1);
    assert.not.ok(chunks.some((c) => c.error), `${label} #${i}: error ${JSON.stringify(chunks.find((c) => c.error))}`);
    const ids = chunks.flatMap((c) => c.choices[0]?.token_ids ?? []);
    const want = expectedTokens(prompts[i], MAX_TOKENS);
    assert.equal(ids, want, `${label} #${i}: token stream differs from the undisturbed run`);
    assert.is(chunks.map((c) => c.choices[0]?.text ?? '').join(''), tok.decode(want, { skipSpecialTokens: true }), `${label} #${i}: text`);
    assert.is(chunks.at(-1).choices[0].finish_reason, 'length', `${label} #${i}`);
  });
}

for (const strategy of ['dp', 'pd', 'balanced-pd']) {
  test(`${strategy}: SIGKILL of a decode engine during decode — all ${NUM_STREAMS} streams complete, whole`, async () => {
    const h = await topology(strategy, { tokenMs: 8 }, strategy === 'balanced-pd' ? { ratio: 0.3 } : {});
    try {
      const { results, isDisturbed } = await runStreams(h, NUM_STREAMS * 5, () => h.kill('d0'));
      assert.ok(isDisturbed, 'the kill happened');
      assertWhole(results, strategy);
      const st = h.router.status();
      assert.ok(st.counters.migrations > 0, `no request migrated (${JSON.stringify(st.counters)})`);
      assert.is(st.counters.errors, 0);
      assert.is(st.engines.find((e) => e.name === 'd0')?.isAlive, false);
    } finally {
      await h.close();
    }
  });
}

for (const strategy of ['pd', 'balanced-pd']) {
  test(`${strategy}: SIGKILL of the prefill engine during remote_send — decode engines recompute, streams whole`, async () => {
    const h = await topology(strategy, { tokenMs: 4, sendChunks: 4, sendChunkMs: 60 });
    try {
      setTimeout(() => h.kill('p0'), 120);
      const { results } = await runStreams(h, Infinity, () => {});
      assertWhole(results, strategy);
      const [d0, d1] = await Promise.all([h.ops('d0'), h.ops('d1')]);
      const starts = [...d0.ops, ...d1.ops].filter((o) => o.op === 'start_generate');
      assert.ok(starts.some((o) => o.begin === 0), 'some request fell back to recompute on the decode engine');
      assert.is(d0.numReservations + d1.numReservations, 0, 'no reservation left behind');
      assert.is(h.router.status().counters.errors, 0);
    } finally {
      await h.close();
    }
  });
}

test('watchdog: a silent engine is treated as failed and the request moves on', async () => {
  const h = await startHarness(
    [
      { name: 'a', role: 'both', options: { tokenMs: 3 } },
      { name: 'b', role: 'both', options: { tokenMs: 3 } },
    ],
    { strategy: 'dp', requestTimeoutMs: 300 },
  );
  try {
    const prompt = prompts[0];
    let isStalled = false;
    const events = await sse(h.url + '/v1/completions', { prompt, max_tokens: MAX_TOKENS, temperature: 0, stream: true, return_token_ids: true }, (ev) => {
      if (isStalled || ev === '[DONE]') return;
      isStalled = true;
      // the first engine (plan order, both idle) goes silent after its first token
      void h.system.ref('engine/a').query({ type: 'test_stall', on: true }, 1000);
    });
    const ids = events.slice(0, -1).flatMap((c) => c.choices[0]?.token_ids ?? []);
    assert.equal(ids, expectedTokens(prompt, MAX_TOKENS));
    const b = await h.ops('b');
    assert.ok(b.ops.some((o) => o.op === 'start_generate' && (o.len ?? 0) > prompt.length), 'b resumed from prompt + streamed tokens');
    assert.is(h.router.status().counters.migrations, 1);
    const a = await h.ops('a');
    assert.ok(a.ops.some((o) => o.op === 'abort'), 'the silent engine got an abort');
  } finally {
    await h.close();
  }
});

test('client disconnect during remote_send aborts on the sender and the receiver (reservation freed)', async () => {
  const h = await startHarness(
    [
      { name: 'p', role: 'prefill', options: { sendChunks: 4, sendChunkMs: 150 } },
      { name: 'd', role: 'decode' },
    ],
    { strategy: 'pd' },
  );
  try {
    const ac = new AbortController();
    const pending = fetch(h.url + '/v1/completions', { method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: prompts[1], max_tokens: 10 }) }).catch(() => null);
    for (let i = 0; i < 100 && (await h.ops('p')).numSending === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.is((await h.ops('d')).numReservations, 1, 'd holds a reservation during the send');
    ac.abort();
    await pending;
    for (let i = 0; i < 100 && h.router.status().requestsInFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
    const [p, d] = await Promise.all([h.ops('p'), h.ops('d')]);
    assert.ok(p.ops.some((o) => o.op === 'abort'), 'sender aborted');
    assert.ok(d.ops.some((o) => o.op === 'abort'), 'receiver aborted');
    assert.is(d.numReservations, 0, 'reservation released');
    assert.is(p.numSending, 0);
    assert.not.ok(d.ops.some((o) => o.op === 'start_generate'), 'generation never started');
  } finally {
    await h.close();
  }
});

test.run();
