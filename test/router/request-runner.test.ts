/**
 * The runner's retry policy under load: a strategy refused with KV_PAGES_EXHAUSTED waits with
 * backoff and tries again without using up attempts (maxAttempts 2 here, far fewer than the
 * refusals), and every request completes whole. Engine doubles in this process, real HTTP.
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

test.run();
