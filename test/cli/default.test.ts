/**
 * The out-of-the-box experience (issue 19): the default topology serves kjv-chat, and the README's
 * curl chat request gets English that ends with finish_reason "stop" on its own. The default file
 * runs as shipped except its two ports (free ones, so parallel runs cannot collide); the request
 * body is read from the README's curl line, so the README cannot drift from what is tested.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT, startUp, stopUp, tempHome, type UpProcess } from './helpers.ts';

const home = tempHome();
process.env.MICROSERVE_HOME = home;
let up: UpProcess;

/** Common English (and King James) function words: a reply in English is full of them. */
const COMMON = new Set(
  'a about all am an and are as at be but by for from have he her him his i in is it me my no not of on or shall she so that the thee their them they this thou thy to unto up was we were which who will with ye you your'.split(' '),
);

function readmeChatBody(): Record<string, unknown> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /curl -s localhost:8000\/v1\/chat\/completions[^\n]*\\\n\s*-d '([^']+)'/.exec(readme);
  assert.ok(m, "the README's curl chat request was not found");
  return JSON.parse(m![1]);
}

test.before(async () => {
  const shipped = readFileSync(join(ROOT, 'topology/default.yaml'), 'utf8');
  const file = join(home, 'default.yaml');
  const onFreePorts = shipped.replace(/port: 7700/, 'port: 0').replace(/port: 8000/, 'port: 0');
  assert.is.not(onFreePorts, shipped);
  writeFileSync(file, onFreePorts);
  up = await startUp(file, home, ['--no-watch']);
});

test.after(async () => {
  await stopUp(up);
});

test('the banner names the trained model and says nothing about random weights', async () => {
  // startUp returns at the banner's first line; the model and plan lines follow it
  for (let i = 0; i < 300 && !/memory plan/.test(up.output()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(up.output(), /model kjv-chat: trained weights shipped with microserve/);
  assert.not.match(up.output(), /random weights/);
});

test("the README's chat request: English, finish_reason stop on its own (no max_tokens)", async () => {
  const body = readmeChatBody();
  assert.is(body.model, 'kjv-chat');
  assert.not.ok('max_tokens' in body, 'the README request must not cap the reply: it has to stop on its own');
  for (const content of [null, 'What does the Bible say about love?']) {
    const req = content === null ? body : { ...body, messages: [{ role: 'user', content }] };
    const t0 = performance.now();
    const res = await fetch(`${up.httpUrl}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
    const seconds = (performance.now() - t0) / 1000;
    assert.is(res.status, 200);
    const r = await res.json();
    const choice = r.choices[0];
    const text: string = choice.message.content;
    assert.is(choice.finish_reason, 'stop', `did not stop on its own: ${JSON.stringify(r)}`);
    assert.ok(r.usage.completion_tokens < 512, `${r.usage.completion_tokens} tokens`);
    // readable English: printable ASCII, real words, many of them common English words
    assert.match(text, /^[\x20-\x7e\n]+$/, text);
    const words = text.toLowerCase().match(/[a-z']+/g) ?? [];
    const numCommon = words.filter((w) => COMMON.has(w)).length;
    assert.ok(words.length >= 5 && numCommon / words.length >= 0.2, `not English enough (${numCommon}/${words.length} common words): ${text}`);
    // "a few seconds" on CPU; the bound is generous for a loaded 2-core machine
    assert.ok(seconds < 60, `${seconds.toFixed(1)} s`);
  }
});

test.run();
