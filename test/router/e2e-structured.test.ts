/**
 * Structured outputs with the official `openai` client against a real `microserve up` serving the
 * real kjv-chat model (11M parameters, CPU): json_object, a nested json_schema through
 * `chat.completions.parse` with a zod schema (the client validates the parsed object), streamed
 * JSON, vLLM's guided_regex / guided_choice / structured_outputs, length when the grammar cannot
 * finish, and the refusals (400 naming the field, with xgrammar's reason); the server serves on.
 * SIGKILL of an engine during structured streams: the streams migrate (the grammar replays their
 * output on the other engine) and end equal to an undisturbed run.
 */
import OpenAI from 'openai';
import { LengthFinishReasonError } from 'openai/error';
import { zodResponseFormat } from 'openai/helpers/zod';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { missingForE2e, startUp, type UpCluster } from './e2e-cluster.ts';

let c: UpCluster;
let client: OpenAI;
const missing = missingForE2e();
const MODEL = 'kjv-chat';

const ask = (content: string, extra: Record<string, unknown> = {}) =>
  client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 160, temperature: 0, ...extra } as any) as Promise<any>;

async function refused(p: Promise<unknown>, param: string, message?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.instance(e, OpenAI.APIError);
    assert.is((e as InstanceType<typeof OpenAI.APIError>).status, 400, param);
    assert.is((e as any).param, param);
    if (message) assert.match((e as Error).message, message);
    return;
  }
  assert.unreachable(`${param} was accepted`);
}

const Person = z.object({
  name: z.string().max(20),
  mood: z.enum(['joyful', 'sorrowful', 'wrathful']),
  place: z.object({ city: z.string().max(16), year: z.number().int() }),
  sons: z.array(z.string().max(12)).max(3),
});

if (missing.length > 0) {
  test.skip('structured outputs against microserve up', () => {});
} else {
  test.before(async () => {
    c = await startUp([{ name: 'e0', role: 'both' }, { name: 'e1', role: 'both' }], 'dp', {}, { kvPages: 512, model: MODEL });
    client = new OpenAI({ baseURL: c.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  });
  test.after(async () => {
    await c?.close();
  });

  test('json_object: valid JSON, finish stop', async () => {
    const r = await ask('Who was the son of Abraham? Answer in JSON.', { response_format: { type: 'json_object' } });
    assert.is(r.choices[0].finish_reason, 'stop');
    const v = JSON.parse(r.choices[0].message.content);
    assert.ok(v !== null && typeof v === 'object' && !Array.isArray(v), r.choices[0].message.content);
  });

  test('chat.completions.parse with a nested zod schema returns a valid object; the stream parses too', async () => {
    const r = await client.chat.completions.parse({
      model: MODEL,
      messages: [{ role: 'user', content: 'Tell me of a man of Israel, in JSON.' }],
      response_format: zodResponseFormat(Person, 'person'),
      max_tokens: 200,
      temperature: 0,
    });
    const parsed = r.choices[0].message.parsed;
    assert.ok(parsed, 'parsed');
    assert.equal(Person.parse(parsed), parsed);
    assert.is(r.choices[0].finish_reason, 'stop');
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Tell me of a woman of Judah, in JSON.' }],
      response_format: zodResponseFormat(Person, 'person'),
      max_tokens: 200,
      temperature: 0.7,
      seed: 5,
      stream: true,
    });
    let text = '';
    let finish = null;
    for await (const ch of stream) {
      text += ch.choices[0]?.delta?.content ?? '';
      finish = ch.choices[0]?.finish_reason ?? finish;
    }
    assert.is(finish, 'stop');
    Person.parse(JSON.parse(text));
  });

  test('guided_regex (completions), guided_choice and structured_outputs (chat); disable_any_whitespace false has its effect', async () => {
    const cmpl: any = await client.completions.create({ model: MODEL, prompt: 'In the year', max_tokens: 20, temperature: 0, guided_regex: ' [0-9]{2,4} (BC|AD)' } as any);
    assert.match(cmpl.choices[0].text, /^ [0-9]{2,4} (BC|AD)$/);
    assert.is(cmpl.choices[0].finish_reason, 'stop');
    const choices = ['the LORD', 'Moses', 'Pharaoh "the king"'];
    const g = await ask('Who led Israel out of Egypt?', { guided_choice: choices });
    assert.ok(choices.includes(g.choices[0].message.content), g.choices[0].message.content);
    const so = await ask('Yea or nay?', { structured_outputs: { choice: ['yea', 'nay'] } });
    assert.ok(['yea', 'nay'].includes(so.choices[0].message.content));
    const js = await ask('Give a number in JSON.', { structured_outputs: { json: { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 999 } }, required: ['n'] } } });
    const n = JSON.parse(js.choices[0].message.content).n;
    assert.ok(Number.isInteger(n) && n >= 0 && n <= 999, js.choices[0].message.content);
    // free whitespace: this model fills it with spaces until max_tokens (why compact is the default)
    const ws = await ask('Answer in JSON.', { structured_outputs: { json_object: true, disable_any_whitespace: false }, max_tokens: 12 });
    assert.is(ws.choices[0].finish_reason, 'length');
    assert.match(ws.choices[0].message.content, /^\{\s{4,}/);
  });

  test('a grammar that cannot finish within max_tokens ends with length; parse() refuses it', async () => {
    const Free = z.object({ story: z.string() });
    try {
      await client.chat.completions.parse({ model: MODEL, messages: [{ role: 'user', content: 'Tell a story.' }], response_format: zodResponseFormat(Free, 'story'), max_tokens: 10, temperature: 0 });
      assert.unreachable('parse accepted an incomplete object');
    } catch (e) {
      assert.instance(e, LengthFinishReasonError);
    }
    const r = await ask('Tell a story.', { response_format: zodResponseFormat(Free, 'story'), max_tokens: 10 });
    assert.is(r.choices[0].finish_reason, 'length');
    assert.ok(r.choices[0].message.content.startsWith('{"story": "'), r.choices[0].message.content);
    assert.is(r.usage.completion_tokens, 10);
  });

  test('refusals name the field (with xgrammar\'s reason); the server serves on', async () => {
    await refused(ask('x', { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 5 } } } }), 'response_format.json_schema.schema', /type/i);
    await refused(ask('x', { guided_regex: '[a-' }), 'guided_regex', /Unclosed|\[/);
    await refused(ask('x', { guided_grammar: 'root ::= ' }), 'guided_grammar');
    await refused(ask('x', { guided_json: 'not json' }), 'guided_json', /JSON/);
    await refused(ask('x', { guided_regex: 'a', guided_choice: ['b'] }), 'guided_choice');
    await refused(ask('x', { response_format: { type: 'json_object' }, guided_regex: 'a' }), 'guided_regex');
    await refused(ask('x', { structured_outputs: { structural_tag: '{}' } }), 'structured_outputs.structural_tag');
    await refused(ask('x', { structured_outputs: {} }), 'structured_outputs');
    await refused(ask('x', { guided_choice: [] }), 'guided_choice');
    await refused(ask('x', { tools: [{ type: 'function', function: { name: 'f' } }] }), 'tools', /no tool support/);
    const ok = await ask('Yea or nay?', { guided_choice: ['yea', 'nay'] });
    assert.ok(['yea', 'nay'].includes(ok.choices[0].message.content));
    const health = await fetch(c.url + '/health');
    assert.is(health.status, 200);
  });

  test('SIGKILL an engine during structured streams: every stream ends whole, equal to an undisturbed run, still in its grammar', async () => {
    const Story = z.object({ story: z.string() });
    const rf = zodResponseFormat(Story, 'story');
    const prompts = Array.from({ length: 10 }, (_, i) => `Tell the story of the ${i + 1}th king.`);
    const body = (content: string) => ({ model: MODEL, messages: [{ role: 'user' as const, content }], response_format: rf, max_tokens: 120, temperature: 0 });
    const refs = await Promise.all(prompts.map((p) => client.chat.completions.create(body(p)).then((r) => r.choices[0].message.content!)));
    let numTokens = 0;
    let killed: Promise<number> | null = null;
    const streams = prompts.map(async (p) => {
      const stream = await client.chat.completions.create({ ...body(p), stream: true });
      let text = '';
      let finish = null;
      for await (const ch of stream) {
        const d = ch.choices[0]?.delta?.content ?? '';
        text += d;
        numTokens += d ? 1 : 0;
        finish = ch.choices[0]?.finish_reason ?? finish;
        if (!killed && numTokens >= prompts.length * 8) {
          killed = (async () => {
            const sts = await Promise.all(['e0', 'e1'].map(async (n) => ({ n, st: await c.engineStatus(n) })));
            return c.killEngine(sts.sort((a, b) => b.st.numRunning - a.st.numRunning)[0].n);
          })();
        }
      }
      return { text, finish };
    });
    const got = await Promise.all(streams);
    assert.ok(killed, 'an engine was killed while the streams ran');
    assert.type(await killed, 'number');
    got.forEach((g, i) => {
      assert.is(g.finish, 'length');
      assert.is(g.text, refs[i], `stream ${i}`);
      assert.ok(g.text.startsWith('{"story": "'), g.text);
    });
  });
}

test.run();
