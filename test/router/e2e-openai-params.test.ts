/**
 * OpenAI API parity, parameter by parameter, with the official `openai` client against a real
 * `microserve up` (tiny preset, one CPU engine): each sampling parameter has its effect or is
 * refused with a 400 naming it; logprobs match the engine's own logits (a forward of the same
 * preset in this process); echo with logprobs and prompt_logprobs match the log-softmax of every
 * prompt position's logits (whole, streamed, n > 1, max_tokens 0); n shares one prefill; several prompts; echo; stop_reason; usage in
 * streams; /tokenize, /detokenize, /version; and a 1 MB chat prompt is a 400 while /health keeps
 * answering.
 */
import OpenAI from 'openai';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { missingForE2e, startUp, type UpCluster } from './e2e-cluster.ts';

const tok = Llama3PresetTokenizer.get();
let c: UpCluster;
let client: OpenAI;
let model: LoadedModel;
const missing = missingForE2e();

const post = async (path: string, body: unknown) => {
  const r = await fetch(c.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as any };
};
const chat = (content: string, extra: Record<string, unknown> = {}) =>
  client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content }], max_tokens: 8, temperature: 0, ...extra } as any) as Promise<any>;
const complete = (prompt: unknown, extra: Record<string, unknown> = {}) =>
  client.completions.create({ model: 'tiny', prompt, max_tokens: 8, temperature: 0, ...extra } as any) as Promise<any>;

async function refused(p: Promise<unknown>, param: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, OpenAI.APIError);
    assert.is((e as InstanceType<typeof OpenAI.APIError>).status, 400, param);
    assert.is((e as any).param, param);
    return;
  }
  assert.unreachable(`${param} was accepted`);
}

/** Log-softmax of the engine's last-token logits for `ids` (a fresh forward of the same preset). */
async function logSoftmax(ids: number[]): Promise<Float64Array> {
  const pages = Math.ceil(ids.length / 16) + 1;
  const z = await model.backend.forward({ seqs: [{ tokens: Int32Array.from(ids), startPos: 0, pageTable: Int32Array.from({ length: pages }, (_, i) => i) }] });
  let m = -Infinity;
  for (const v of z) m = Math.max(m, v);
  let s = 0;
  for (const v of z) s += Math.exp(v - m);
  const lse = m + Math.log(s);
  return Float64Array.from(z, (v) => v - lse);
}

if (missing.length > 0) {
  test.skip('openai parameters against microserve up', () => {});
} else {
  test.before(async () => {
    c = await startUp([{ name: 'e0', role: 'both' }], 'dp', {}, { kvPages: 2048 });
    client = new OpenAI({ baseURL: c.url + '/v1', apiKey: 'unused', maxRetries: 0 });
    model = await openModel('tiny', { numPages: 64, numThreads: 1 });
  });
  test.after(async () => {
    model?.backend.close();
    await c?.close();
  });

  test('unimplemented and unknown arguments are 400s naming them', async () => {
    await refused(chat('x', { response_format: { type: 'json_schema' } }), 'response_format.json_schema');
    await refused(chat('x', { tool_choice: 'required' }), 'tool_choice');
    await refused(chat('x', { guided_whitespace_pattern: ' *' }), 'guided_whitespace_pattern');
    await refused(complete('x', { suffix: 'y' }), 'suffix');
    await refused(complete('x', { best_of: 2 }), 'best_of');
    await refused(complete('x', { frobnicate: true }), 'frobnicate');
    await refused(complete('x', { min_p: 5 }), 'min_p');
    await refused(complete('x', { top_k: 'x' }), 'top_k');
    await refused(complete('x', { logit_bias: 'junk' }), 'logit_bias');
    await refused(complete('x', { logit_bias: { 999999: 1 } }), 'logit_bias');
    await refused(complete('x', { stream_options: { include_usage: true } }), 'stream_options');
    await refused(chat('x', { top_logprobs: 3 }), 'top_logprobs');
    await refused(complete('x', { max_tokens: 0 }), 'max_tokens');
    await refused(complete('x', { prompt_logprobs: 21 }), 'prompt_logprobs');
    await refused(chat('x', { continue_final_message: true }), 'messages');
  });

  test('top_k, min_p, penalties, logit_bias change the output as they should; seeds reproduce', async () => {
    const prompt = 'Once upon a time there was';
    const greedy = (await complete(prompt, { max_tokens: 12, return_token_ids: true })).choices[0];
    const sampled = (await complete(prompt, { max_tokens: 12, temperature: 1.5, seed: 3, return_token_ids: true })).choices[0];
    assert.not.equal(sampled.token_ids, greedy.token_ids, 'temperature 1.5 samples');
    const again = (await complete(prompt, { max_tokens: 12, temperature: 1.5, seed: 3, return_token_ids: true })).choices[0];
    assert.equal(again.token_ids, sampled.token_ids, 'same seed, same output');
    for (const extra of [{ top_k: 1 }, { min_p: 1 }]) {
      const r = (await complete(prompt, { max_tokens: 12, temperature: 1.5, seed: 3, return_token_ids: true, ...extra })).choices[0];
      assert.equal(r.token_ids, greedy.token_ids, `${JSON.stringify(extra)} leaves only the most likely token`);
    }
    // three tokens far above the rest: greedy repeats the best of them; penalties make it move on
    const numDistinct = (ids: number[]) => new Set(ids).size;
    const three = tok.encode(' apple pear plum', { addBos: false });
    const bias = Object.fromEntries(three.map((t) => [t, 100]));
    const repeated = (await complete(prompt, { max_tokens: 6, return_token_ids: true, logit_bias: bias })).choices[0];
    assert.ok(numDistinct(repeated.token_ids) < 6, `greedy repeats: ${repeated.token_ids}`);
    for (const extra of [{ frequency_penalty: 2 }, { presence_penalty: 2 }, { repetition_penalty: 3 }]) {
      const r = (await complete(prompt, { max_tokens: 6, return_token_ids: true, logit_bias: bias, ...extra })).choices[0];
      assert.not.equal(r.token_ids, repeated.token_ids, `${JSON.stringify(extra)} changes the output: ${r.token_ids}`);
      assert.is(r.token_ids[0], repeated.token_ids[0], 'nothing to penalise before the first output token');
      assert.ok(r.token_ids.every((t: number) => three.includes(t)));
    }
    const forced = tok.encode(' banana', { addBos: false })[0];
    const biased = (await complete(prompt, { max_tokens: 4, return_token_ids: true, logit_bias: { [forced]: 100 } })).choices[0];
    assert.equal(biased.token_ids, [forced, forced, forced, forced]);
  });

  test('stop_token_ids: the token text is left out (unless include_stop_str_in_output), stop_reason, min_tokens', async () => {
    const prompt = 'The weather today is';
    const greedy = (await complete(prompt, { max_tokens: 6, return_token_ids: true })).choices[0];
    const first = greedy.token_ids[0];
    const stopped = (await complete(prompt, { max_tokens: 6, stop_token_ids: [first] })).choices[0];
    assert.is(stopped.text, '');
    assert.is(stopped.finish_reason, 'stop');
    assert.is(stopped.stop_reason, first);
    const kept = (await complete(prompt, { max_tokens: 6, stop_token_ids: [first], include_stop_str_in_output: true })).choices[0];
    assert.is(kept.text, tok.decode([first]));
    const held = (await complete(prompt, { max_tokens: 6, stop_token_ids: [first], min_tokens: 3, return_token_ids: true })).choices[0];
    assert.ok(held.token_ids.length >= 3 && !held.token_ids.slice(0, 3).includes(first), `min_tokens: ${held.token_ids}`);
    const word = greedy.text.trim().split(/\s+/)[1] ?? greedy.text.trim();
    const byString = (await complete(prompt, { max_tokens: 6, stop: [word] })).choices[0];
    assert.is(byString.stop_reason, word);
    assert.ok(!byString.text.includes(word));
    const withString = (await complete(prompt, { max_tokens: 6, stop: [word], include_stop_str_in_output: true })).choices[0];
    assert.ok(withString.text.endsWith(word), `${JSON.stringify(withString.text)} ends with the stop string`);
  });

  test('logprobs match the engine logits (chat top_logprobs, completions logprobs)', async () => {
    const messages = [{ role: 'user' as const, content: 'Name a colour.' }];
    const r = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 5 });
    const content = r.choices[0].logprobs!.content!;
    assert.is(content.length, 4);
    const ids = tok.applyChatTemplate(messages);
    const outIds = tok.encode(r.choices[0].message.content!, { addBos: false });
    const lsm = await logSoftmax(ids);
    let best = 0;
    for (let i = 1; i < lsm.length; i++) if (lsm[i] > lsm[best]) best = i;
    assert.is(content[0].token, tok.decode([best]));
    assert.ok(Math.abs(content[0].logprob - lsm[best]) < 2e-3, `logprob ${content[0].logprob} vs engine ${lsm[best]}`);
    assert.is(content[0].top_logprobs.length, 5);
    const sorted = Float64Array.from(lsm).sort().reverse();
    content[0].top_logprobs.forEach((t, k) => assert.ok(Math.abs(t.logprob - sorted[k]) < 2e-3, `top ${k}`));
    assert.ok(outIds.length > 0);
    const cr = await complete('Hello there', { max_tokens: 3, logprobs: 2 });
    const lp = cr.choices[0].logprobs;
    assert.is(lp.tokens.length, 3);
    assert.is(lp.token_logprobs.length, 3);
    assert.is(Object.keys(lp.top_logprobs[0]).length, 2);
    assert.equal(lp.text_offset[0], 0);
    const first = (await logSoftmax(tok.encode('Hello there')))!;
    assert.ok(Math.abs(lp.token_logprobs[0] - first.reduce((a, b) => Math.max(a, b), -Infinity)) < 2e-3);
  });

  test("echo with logprobs and prompt_logprobs are the log-softmax of each prompt position's logits", async () => {
    const text = 'The cat sat on the mat';
    const ids = tok.encode(text);
    const pages = Math.ceil(ids.length / 16) + 1;
    const z = await model.backend.forward({ seqs: [{ tokens: Int32Array.from(ids), startPos: 0, pageTable: Int32Array.from({ length: pages }, (_, i) => i) }], logits: 'all' });
    const V = z.length / ids.length;
    // lsm(i, t): log-softmax at position i of token t
    const lsm = ids.map((_, i) => {
      const row = z.subarray(i * V, (i + 1) * V);
      let m = -Infinity;
      for (const v of row) m = Math.max(m, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - m);
      return Float64Array.from(row, (v) => v - m - Math.log(sum));
    });
    const best = (i: number, k: number) => Array.from(lsm[i].keys()).sort((a, b) => lsm[i][b] - lsm[i][a] || a - b).slice(0, k);
    const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 2e-3, `${what}: ${a} vs engine ${b}`);

    const r = await complete(text, { max_tokens: 3, echo: true, logprobs: 2, prompt_logprobs: 3 });
    const ch = r.choices[0];
    assert.ok(ch.text.startsWith(text));
    const lp = ch.logprobs;
    assert.is(lp.tokens.length, ids.length + 3, 'prompt tokens, then the completion');
    assert.is(lp.token_logprobs[0], null);
    assert.is(lp.top_logprobs[0], null);
    for (let i = 1; i < ids.length; i++) {
      near(lp.token_logprobs[i], lsm[i - 1][ids[i]], `echo logprob of prompt token ${i}`);
      assert.is(Object.keys(lp.top_logprobs[i]).length, Math.min(2, new Set(best(i - 1, 2).map((t) => tok.decode([t]))).size));
    }
    near(lp.token_logprobs[ids.length], lsm[ids.length - 1][best(ids.length - 1, 1)[0]], 'the first generated token (greedy)');
    const pl = ch.prompt_logprobs;
    assert.is(pl.length, ids.length);
    assert.is(pl[0], null);
    for (let i = 1; i < ids.length; i++) {
      near(pl[i][ids[i]].logprob, lsm[i - 1][ids[i]], `prompt_logprobs ${i}`);
      best(i - 1, 3).forEach((t, k) => {
        near(pl[i][t].logprob, lsm[i - 1][t], `prompt_logprobs ${i} top ${k}`);
        if (t !== ids[i]) assert.is(pl[i][t].rank, k + 1);
      });
    }

    // max_tokens 0 scores the prompt alone; n = 2 asks once (the shared prefill); a stream opens with them
    const scored = await complete(text, { max_tokens: 0, echo: true, logprobs: 1 });
    assert.is(scored.choices[0].text, text);
    assert.equal(scored.choices[0].logprobs.token_logprobs, lp.token_logprobs.slice(0, ids.length));
    assert.is(scored.usage.completion_tokens, 0);
    const two = await complete(text, { max_tokens: 2, n: 2, temperature: 1, seed: 4, prompt_logprobs: 0 });
    for (const c2 of two.choices) {
      assert.is(c2.prompt_logprobs.length, ids.length);
      near(c2.prompt_logprobs[3][ids[3]].logprob, lsm[2][ids[3]], 'n = 2');
    }
    const stream = await client.completions.create({ model: 'tiny', prompt: text, max_tokens: 3, temperature: 0, echo: true, logprobs: 1, stream: true } as any);
    const chunks: any[] = [];
    for await (const x of stream as any) chunks.push(x);
    assert.is(chunks[0].choices[0].text, text, 'the first chunk echoes the prompt');
    assert.equal(chunks[0].choices[0].logprobs.token_logprobs, lp.token_logprobs.slice(0, ids.length));
    assert.is(chunks.map((x) => x.choices[0]?.text ?? '').join(''), ch.text);
    const chatR = await post('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, temperature: 0, prompt_logprobs: 1 });
    assert.is(chatR.status, 200);
    assert.is(chatR.body.prompt_logprobs.length, tok.applyChatTemplate([{ role: 'user', content: 'Hi' }]).length);
  });

  test('n shares one prefill; several prompts; echo', async () => {
    const long = 'The quick brown fox jumps over the lazy dog. '.repeat(20);
    const numPrompt = tok.encode(long).length;
    const before = (await c.engineStatus('e0')).counters;
    const r = await complete(long, { n: 3, temperature: 1, seed: 9, max_tokens: 5, return_token_ids: true });
    const after = (await c.engineStatus('e0')).counters;
    assert.equal(r.choices.map((ch: any) => ch.index), [0, 1, 2]);
    assert.ok(new Set(r.choices.map((ch: any) => ch.token_ids.join())).size > 1, 'choices differ (seed + i)');
    const prefilled = after.tokensPrefilled - before.tokensPrefilled;
    console.log(`n=3 over a ${numPrompt}-token prompt prefilled ${prefilled} tokens`);
    assert.ok(prefilled < 1.5 * numPrompt, `one prefill for n = 3 (prefilled ${prefilled}, prompt ${numPrompt})`);
    const multi = await complete(['Red is', 'Blue is'], { n: 2, max_tokens: 3 });
    assert.equal(multi.choices.map((ch: any) => ch.index), [0, 1, 2, 3]);
    const alone = await complete('Blue is', { max_tokens: 3 });
    assert.is(multi.choices[2].text, alone.choices[0].text, 'prompt 1 greedy = the same prompt alone');
    assert.is(multi.usage.completion_tokens, 12);
    const echoed = await complete('Green is', { max_tokens: 3, echo: true });
    assert.ok(echoed.choices[0].text.startsWith('Green is'));
  });

  test('streams: n choices, include_usage and continuous_usage_stats', async () => {
    const stream = await client.completions.create({ model: 'tiny', prompt: 'Count:', max_tokens: 4, temperature: 0, n: 2, stream: true, stream_options: { include_usage: true, continuous_usage_stats: true } } as any);
    const texts = ['', ''];
    let numWithUsage = 0;
    let last: any = null;
    for await (const ch of stream as any) {
      if (ch.usage) numWithUsage++;
      last = ch;
      for (const choice of ch.choices) texts[choice.index] += choice.text;
    }
    const whole = await complete('Count:', { max_tokens: 4 });
    assert.equal(texts, [whole.choices[0].text, whole.choices[0].text]);
    assert.is(last.choices.length, 0);
    assert.is(last.usage.completion_tokens, 8);
    assert.ok(numWithUsage > 3, `usage in every chunk (${numWithUsage})`);
  });

  test('/tokenize, /detokenize, /version; add_generation_prompt, continue_final_message', async () => {
    const t = await post('/tokenize', { prompt: 'Hello world' });
    assert.equal(t.body.tokens, tok.encode('Hello world'));
    assert.is(t.body.count, t.body.tokens.length);
    assert.is(t.body.max_model_len, 8192);
    const d = await post('/detokenize', { tokens: tok.encode('Hello world', { addBos: false }) });
    assert.is(d.body.prompt, 'Hello world');
    assert.is((await post('/tokenize', { prompt: 'x', frob: 1 })).body.error.param, 'frob');
    assert.is((await post('/detokenize', { tokens: [-1] })).body.error.param, 'tokens[0]');
    const messages = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello, I am' }];
    const withGen = (await post('/tokenize', { messages })).body.tokens;
    const noGen = (await post('/tokenize', { messages, add_generation_prompt: false })).body.tokens;
    const cont = (await post('/tokenize', { messages, continue_final_message: true })).body.tokens;
    assert.ok(withGen.length > noGen.length && noGen.length > cont.length);
    assert.equal(cont, noGen.slice(0, cont.length), 'the continued message is the rendering without its end of turn');
    const r = await client.chat.completions.create({ model: 'tiny', messages: messages as any, max_tokens: 2, temperature: 0, continue_final_message: true, add_generation_prompt: false } as any);
    assert.is(r.usage!.prompt_tokens, cont.length);
    const v = await fetch(c.url + '/version');
    assert.match(((await v.json()) as any).version, /^\d+\.\d+\.\d+/);
  });

  test('a 1 MB chat prompt is a 400 (context length); /health answers meanwhile', async () => {
    const words = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'];
    const big = Array.from({ length: 180_000 }, (_, i) => words[i % words.length] + (i % 97)).join(' ');
    assert.ok(big.length >= 1_000_000);
    let isDone = false;
    const worst: number[] = [];
    const poll = (async () => {
      while (!isDone) {
        const t0 = performance.now();
        const h = await fetch(c.url + '/health');
        await h.arrayBuffer();
        worst.push(performance.now() - t0);
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const t0 = performance.now();
    const r = await post('/v1/chat/completions', { model: 'tiny', messages: [{ role: 'user', content: big }], max_tokens: 4 });
    const ms = performance.now() - t0;
    isDone = true;
    await poll;
    assert.is(r.status, 400, JSON.stringify(r.body).slice(0, 300));
    assert.is(r.body.error.param, 'messages');
    assert.is(r.body.error.code, 'context_length_exceeded');
    const max = Math.max(...worst);
    console.log(`1 MB chat prompt answered in ${ms.toFixed(0)} ms; /health polled ${worst.length} times, slowest ${max.toFixed(1)} ms`);
    assert.ok(worst.length >= 3, 'polled while tokenizing');
    assert.ok(max < 500, `/health took ${max.toFixed(0)} ms while a huge prompt was tokenized`);
    assert.is((await complete('still serving', { max_tokens: 2 })).choices[0].finish_reason, 'length');
  });
}

test.run();
