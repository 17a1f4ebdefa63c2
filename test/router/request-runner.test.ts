/**
 * The runner's retry policy under load: a strategy refused with KV_PAGES_EXHAUSTED waits with
 * backoff and tries again without using up attempts (maxAttempts 2 here, far fewer than the
 * refusals), and every request completes whole; a hand-over whose reservation expired before
 * start_generate is retried as another attempt, not returned to the client as an error. Engine
 * doubles in this process, real HTTP.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { expectedTokens } from './fake-engine.ts';
import { post, startHarness } from './harness.ts';

const tok = Llama3PresetTokenizer.get();

test('KV_PAGES_EXHAUSTED from a burst is waited out, not counted as failed attempts', async () => {
  // 12 pages of 4 tokens: two of these prompts' reservations at a time
  const h = await startHarness([{ name: 'd0', role: 'both', options: { numPages: 12, tokenMs: 1 } }], {
    strategy: new URL('./reserve-first.ts', import.meta.url).pathname,
    maxAttempts: 2,
  });
  try {
    const prompts = Array.from({ length: 12 }, (_, i) => tok.encode(`Burst request ${i} with a prompt of some length.`));
    assert.ok(prompts.every((p) => p.length > 12 && p.length <= 24), `prompt lengths ${prompts.map((p) => p.length)}`);
    const rs = await Promise.all(prompts.map((prompt) => post(h.url + '/v1/completions', { prompt, max_tokens: 8, temperature: 0, return_token_ids: true })));
    rs.forEach((r, i) => {
      assert.is(r.status, 200, `request ${i}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.choices[0].token_ids, expectedTokens(prompts[i], 8), `request ${i}`);
    });
    const st = h.router.status();
    assert.ok(st.counters.busyRetries > 2, `refusals were retried (${st.counters.busyRetries}), more than maxAttempts`);
    assert.is(st.counters.errors, 0);
    assert.is(st.counters.migrations, 0);
    const text = await fetch(h.url + '/metrics').then((r) => r.text());
    assert.match(text, /^microserve_request_busy_retries_total [1-9]/m);
  } finally {
    await h.close();
  }
});

test('a reservation that expired before start_generate: the request is retried, not failed', async () => {
  const h = await startHarness([{ name: 'd0', role: 'both', options: { tokenMs: 1 } }], {
    strategy: new URL('./expire-first.ts', import.meta.url).pathname,
    transferTtlMs: 40,
    maxAttempts: 2,
  });
  try {
    const prompt = tok.encode('A request whose first hand-over runs past its reservation.');
    const r = await post(h.url + '/v1/completions', { prompt, max_tokens: 8, temperature: 0, return_token_ids: true });
    assert.is(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.choices[0].token_ids, expectedTokens(prompt, 8));
    const ops = (await h.ops('d0')).ops.map((o: any) => `${o.op}:${o.id}`);
    const starts = ops.filter((o: string) => o.startsWith('start_generate') || o.startsWith('generate'));
    assert.is(starts.length, 2, `the expired attempt refused, the second ran: ${ops.join(' ')}`);
    assert.not.equal(starts[0].split(':')[1], starts[1].split(':')[1], 'the retry has its own id');
    const st = h.router.status();
    assert.is(st.counters.errors, 0);
  } finally {
    await h.close();
  }
});

test.run();
