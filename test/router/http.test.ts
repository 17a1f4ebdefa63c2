/**
 * The router's HTTP layer against in-process engine doubles (test/router/fake-engine.ts):
 * OpenAI-shaped errors and statuses, the server serving on after bad requests, the official
 * `openai` client, streaming, stop strings, ignore_eos, usage, API key, health and metrics.
 */
import OpenAI from 'openai';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startRouter } from '../../actors/router/index.ts';
import { ActorSystem } from '../../actors/runtime/system.ts';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { expectedTokens, spawnFakeEngine } from './fake-engine.ts';
import { post, sse, startHarness, TOKEN } from './harness.ts';

const tok = Llama3PresetTokenizer.get();
const h = await startHarness([
  { name: 'e0', role: 'both' },
  { name: 'e1', role: 'both', options: { eosEvery: 0 } },
]);
const v1 = h.url + '/v1';
const client = new OpenAI({ baseURL: v1, apiKey: 'unused', maxRetries: 0 });

function assertOpenAiError(body: any, label: string): void {
  assert.type(body?.error, 'object', `${label}: no error object in ${JSON.stringify(body)}`);
  assert.equal(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'], label);
  assert.type(body.error.message, 'string', label);
  assert.ok(body.error.message.length > 0, label);
}

test('bad requests get the right status, OpenAI error shape, and the server keeps serving', async () => {
  const cases: [string, string, unknown, number, string | null][] = [
    ['bad JSON', '/completions', '{"prompt": "hi", ', 400, null],
    ['body not an object', '/completions', [1, 2], 400, null],
    ['missing prompt', '/completions', { max_tokens: 2 }, 400, 'prompt'],
    ['empty prompt ids', '/completions', { prompt: [] }, 400, 'prompt'],
    ['negative id', '/completions', { prompt: [1, -2] }, 400, 'prompt[1]'],
    ['id outside the vocabulary', '/completions', { prompt: [5, 999999] }, 400, 'prompt'],
    ['second of two prompts too long', '/completions', { prompt: ['a', 'word '.repeat(5000)] }, 400, 'prompt[1]'],
    ['unknown argument', '/completions', { prompt: 'hi', frobnicate: 1 }, 400, 'frobnicate'],
    ['nonsense min_p', '/completions', { prompt: 'hi', min_p: 5 }, 400, 'min_p'],
    ['top_k not a number', '/completions', { prompt: 'hi', top_k: 'x' }, 400, 'top_k'],
    ['logit_bias junk', '/completions', { prompt: 'hi', logit_bias: 'junk' }, 400, 'logit_bias'],
    ['response_format needs its json_schema', '/chat/completions', { messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema' } }, 400, 'response_format.json_schema'],
    ['tool_choice refused', '/chat/completions', { messages: [{ role: 'user', content: 'x' }], tool_choice: 'required' }, 400, 'tool_choice'],
    ['temperature too high', '/completions', { prompt: 'hi', temperature: 3 }, 400, 'temperature'],
    ['max_tokens 0', '/completions', { prompt: 'hi', max_tokens: 0 }, 400, 'max_tokens'],
    ['max_tokens not a number', '/completions', { prompt: 'hi', max_tokens: 'ten' }, 400, 'max_tokens'],
    ['n = 17', '/completions', { prompt: 'hi', n: 17 }, 400, 'n'],
    ['logprobs 21', '/completions', { prompt: 'hi', logprobs: 21 }, 400, 'logprobs'],
    ['stop not strings', '/completions', { prompt: 'hi', stop: [1] }, 400, 'stop'],
    ['missing messages', '/chat/completions', { model: 'tiny' }, 400, 'messages'],
    ['bad role', '/chat/completions', { messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages[0].role'],
    ['bad content', '/chat/completions', { messages: [{ role: 'user', content: 5 }] }, 400, 'messages[0].content'],
    ['unknown model', '/completions', { model: 'gpt-9', prompt: 'hi' }, 404, 'model'],
    ['prompt longer than the context', '/completions', { prompt: 'word '.repeat(5000) }, 400, 'prompt'],
    ['prompt + max_tokens over the context', '/completions', { prompt: 'hi', max_tokens: 5000 }, 400, 'max_tokens'],
    ['oversized body', '/completions', { prompt: 'x'.repeat(5 * 1024 * 1024) }, 413, null],
  ];
  for (const [label, path, body, status, param] of cases) {
    const r = await post(v1 + path, body);
    assert.is(r.status, status, `${label}: ${JSON.stringify(r.body).slice(0, 200)}`);
    assertOpenAiError(r.body, label);
    assert.is(r.body.error.param, param, label);
  }
  const tooLong = await post(v1 + '/completions', { prompt: 'word '.repeat(5000) });
  assert.is(tooLong.body.error.code, 'context_length_exceeded');
  assert.is((await post(v1 + '/completions', { model: 'gpt-9', prompt: 'hi' })).body.error.code, 'model_not_found');
  const unknownRoute = await fetch(h.url + '/v2/nothing');
  assert.is(unknownRoute.status, 404);
  assertOpenAiError(await unknownRoute.json(), 'unknown route');
  // still serving
  const ok = await post(v1 + '/completions', { model: 'tiny', prompt: 'Hello', max_tokens: 3, temperature: 0 });
  assert.is(ok.status, 200);
  assert.is(ok.body.usage.completion_tokens, 3);
  const text = await post(v1 + '/chat/completions', { messages: [{ role: 'user', content: 'x' }], max_tokens: 2, response_format: { type: 'text' } });
  assert.is(text.status, 200, 'response_format text asks for what we do anyway');
});

test('the openai client: completions and chat, streamed and not; an error surfaces as APIError', async () => {
  const prompt = 'The capital of France is';
  const promptIds = tok.encode(prompt);
  const want = tok.decode(expectedTokens(promptIds, 6), { skipSpecialTokens: true });
  const c = await client.completions.create({ model: 'tiny', prompt, max_tokens: 6, temperature: 0 });
  assert.is(c.choices[0].text, want);
  assert.is(c.choices[0].finish_reason, 'length');
  assert.equal(c.usage, { prompt_tokens: promptIds.length, completion_tokens: 6, total_tokens: promptIds.length + 6 });

  let streamed = '';
  let finish: string | null = null;
  for await (const ch of await client.completions.create({ model: 'tiny', prompt, max_tokens: 6, temperature: 0, stream: true })) {
    streamed += ch.choices[0]?.text ?? '';
    finish = ch.choices[0]?.finish_reason ?? finish;
  }
  assert.is(streamed, want);
  assert.is(finish, 'length');

  const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Hi!' }];
  const chatIds = tok.applyChatTemplate(messages);
  const chatWant = tok.decode(expectedTokens(chatIds, 5), { skipSpecialTokens: true });
  const chat = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 5, temperature: 0 });
  assert.is(chat.choices[0].message.role, 'assistant');
  assert.is(chat.choices[0].message.content, chatWant);
  assert.is(chat.usage?.prompt_tokens, chatIds.length);

  let chatStreamed = '';
  let usage: any = null;
  const stream = await client.chat.completions.create({ model: 'tiny', messages, max_completion_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
  for await (const ch of stream) {
    chatStreamed += ch.choices[0]?.delta?.content ?? '';
    if (ch.usage) usage = ch.usage;
  }
  assert.is(chatStreamed, chatWant);
  assert.equal(usage, { prompt_tokens: chatIds.length, completion_tokens: 5, total_tokens: chatIds.length + 5 });

  try {
    await client.chat.completions.create({ model: 'not-served', messages, max_tokens: 2 });
    assert.unreachable();
  } catch (e) {
    assert.instance(e, OpenAI.APIError);
    assert.is((e as InstanceType<typeof OpenAI.APIError>).status, 404);
    assert.is((e as InstanceType<typeof OpenAI.APIError>).code, 'model_not_found');
  }
  const models = await client.models.list();
  assert.equal(models.data.map((m) => m.id), ['tiny']);
});

test('stop strings end the text before the match, in JSON and in SSE, and abort the engine', async () => {
  const prompt = [128000, 9906, 1917];
  const ids = expectedTokens(prompt, 12);
  const full = tok.decode(ids, { skipSpecialTokens: true });
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
  const before = full.slice(0, full.indexOf(stop));
  const r = await post(v1 + '/completions', { prompt, max_tokens: 200, temperature: 0, stop: [stop, 'never-occurs'] });
  assert.is(r.status, 200);
  assert.is(r.body.choices[0].text, before);
  assert.is(r.body.choices[0].finish_reason, 'stop');
  assert.ok(r.body.usage.completion_tokens < 200);
  const events = await sse(v1 + '/completions', { prompt, max_tokens: 200, temperature: 0, stop, stream: true });
  assert.is(events.at(-1), '[DONE]');
  assert.is(events.slice(0, -1).map((e) => e.choices[0].text).join(''), before);
  assert.is(events.at(-2).choices[0].finish_reason, 'stop');
  const { numRunning } = await h.ops('e0');
  const { numRunning: n1 } = await h.ops('e1');
  assert.is(numRunning + n1, 0, 'the engine stopped generating');
});

test('EOS ends generation unless ignore_eos; return_token_ids carries the ids', async () => {
  await h.system.ref('engine/e0').query({ type: 'test_set', options: { eosEvery: 5 } }, 1000);
  await h.system.ref('engine/e1').query({ type: 'test_set', options: { eosEvery: 5 } }, 1000);
  try {
    const prompt = [128000, 40, 1093, 311];
    const stopped = await post(v1 + '/completions', { prompt, max_tokens: 300, temperature: 0, return_token_ids: true });
    assert.is(stopped.body.choices[0].finish_reason, 'stop');
    const ids: number[] = stopped.body.choices[0].token_ids;
    assert.is(ids.at(-1), 128009, 'the EOS token ends the stream');
    assert.is(stopped.body.usage.completion_tokens, ids.length);
    const ignored = await post(v1 + '/completions', { prompt, max_tokens: 300, temperature: 0, ignore_eos: true, return_token_ids: true });
    assert.is(ignored.body.choices[0].finish_reason, 'length');
    assert.is(ignored.body.choices[0].token_ids.length, 300);
    assert.ok(ignored.body.choices[0].token_ids.includes(128009), 'EOS was generated and passed over');
  } finally {
    await h.system.ref('engine/e0').query({ type: 'test_set', options: { eosEvery: 0 } }, 1000);
    await h.system.ref('engine/e1').query({ type: 'test_set', options: { eosEvery: 0 } }, 1000);
  }
});

test('client disconnect aborts the request on its engine', async () => {
  const ac = new AbortController();
  const r = await fetch(v1 + '/completions', { method: 'POST', body: JSON.stringify({ prompt: 'go on', max_tokens: 5000, stream: true }), headers: { 'content-type': 'application/json' }, signal: ac.signal });
  const reader = r.body!.getReader();
  await reader.read();
  ac.abort();
  const t0 = Date.now();
  for (;;) {
    const [a, b] = await Promise.all([h.ops('e0'), h.ops('e1')]);
    if (a.numRunning + b.numRunning === 0) {
      assert.ok([...a.ops, ...b.ops].some((o) => o.op === 'abort'), 'an abort reached the engine');
      break;
    }
    if (Date.now() - t0 > 3000) assert.unreachable('the engine still generates after the client left');
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.is(h.router.status().requestsInFlight, 0);
});

test('/v1/models, /health and /metrics', async () => {
  const models = await (await fetch(v1 + '/models')).json();
  assert.is(models.object, 'list');
  assert.is(models.data[0].id, 'tiny');
  // the ids a prompt may hold, and the ordinary text tokens among them (Llama 3: 128000 of 128256)
  assert.equal([models.data[0].vocab_size, models.data[0].base_vocab_size], [128256, 128000]);
  assert.is((await fetch(h.url + '/health')).status, 200);
  const text = await (await fetch(h.url + '/metrics')).text();
  for (const name of [
    'microserve_time_to_first_token_seconds_bucket',
    'microserve_time_per_output_token_seconds_bucket',
    'microserve_e2e_request_latency_seconds_bucket',
    'microserve_requests_total{finish="length"}',
    'microserve_generation_tokens_total',
    'microserve_engine_requests_waiting{engine="e0"}',
    'microserve_kv_pages{engine="e1",state="free"}',
    'microserve_engine_up{engine="e0",role="both"} 1',
    'microserve_engine_restarts{engine="e1"} 0',
    'microserve_http_errors_total{status="413"} 1',
  ]) {
    assert.ok(text.includes(name), `metrics lack ${name}`);
  }
  const ttftCount = Number(/microserve_time_to_first_token_seconds_count (\d+)/.exec(text)?.[1]);
  assert.ok(ttftCount >= 5, `ttft count ${ttftCount}`);
});

test('API key: /v1 needs it, /health does not', async () => {
  const system = await ActorSystem.start({ nodeId: 'keyed', token: TOKEN, listen: null });
  spawnFakeEngine(system, 'k0', 'both');
  const router = await startRouter(system, { port: 0, modelName: 'tiny', tokenizer: tok, contextLength: 512, engines: [{ name: 'k0', role: 'both' }], strategy: 'dp', apiKey: 'sekret', statusIntervalMs: 50 });
  try {
    await router.ready(5000);
    const body = { prompt: 'hi', max_tokens: 1 };
    for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: 'sekret' }] as Record<string, string>[]) {
      const r = await post(router.url + '/v1/completions', body, headers);
      assert.is(r.status, 401, JSON.stringify(headers));
      assertOpenAiError(r.body, 'bad key');
      assert.is(r.body.error.code, 'invalid_api_key');
    }
    assert.is((await post(router.url + '/v1/completions', body, { authorization: 'Bearer sekret' })).status, 200);
    const keyed = new OpenAI({ baseURL: router.url + '/v1', apiKey: 'sekret', maxRetries: 0 });
    assert.is((await keyed.completions.create({ model: 'tiny', prompt: 'hi', max_tokens: 2 })).usage?.completion_tokens, 2);
    assert.is((await fetch(router.url + '/health')).status, 200);
  } finally {
    await router.close();
    await system.close();
  }
});

test('no tokenizer: text is refused with 400, token ids work and come back as ids', async () => {
  const system = await ActorSystem.start({ nodeId: 'notok', token: TOKEN, listen: null });
  spawnFakeEngine(system, 'n0', 'both');
  const router = await startRouter(system, { port: 0, modelName: 'ckpt', tokenizer: null, vocabSize: 32000, contextLength: 512, engines: [{ name: 'n0', role: 'both' }], strategy: 'dp', statusIntervalMs: 50 });
  try {
    await router.ready(5000);
    const text = await post(router.url + '/v1/completions', { prompt: 'hello', max_tokens: 2 });
    assert.is(text.status, 400);
    assert.is(text.body.error.code, 'no_tokenizer');
    const chat = await post(router.url + '/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] });
    assert.is(chat.status, 400);
    const ids = await post(router.url + '/v1/completions', { prompt: [1, 2, 3], max_tokens: 4, temperature: 0 });
    assert.is(ids.status, 200);
    assert.equal(ids.body.choices[0].token_ids, expectedTokens([1, 2, 3], 4));
    assert.is(ids.body.choices[0].text, '');
  } finally {
    await router.close();
    await system.close();
  }
});

test('/health is 503 until every engine of the plan answers status', async () => {
  const system = await ActorSystem.start({ nodeId: 'late', token: TOKEN, listen: null });
  spawnFakeEngine(system, 'a', 'both');
  const router = await startRouter(system, { port: 0, modelName: 'tiny', tokenizer: tok, contextLength: 512, engines: [{ name: 'a', role: 'both' }, { name: 'b', role: 'both' }], strategy: 'dp', statusIntervalMs: 50 });
  try {
    await new Promise((r) => setTimeout(r, 150));
    const r = await fetch(router.url + '/health');
    assert.is(r.status, 503);
    assert.equal((await r.json()).waitingFor, ['b']);
    spawnFakeEngine(system, 'b', 'both');
    await router.ready(5000);
    assert.is((await fetch(router.url + '/health')).status, 200);
  } finally {
    await router.close();
    await system.close();
  }
});

test.after(() => h.close());
test.run();
