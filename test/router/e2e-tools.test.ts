/**
 * Tool calling with the official `openai` client against a real `microserve up` (tiny preset:
 * Llama 3 tokenizer and chat format, random weights): tool_choice required and named give
 * tool_calls whose arguments follow the tool's schema (whole and streamed as OpenAI's deltas),
 * auto reads a Llama 3.x JSON tool call out of the output, tool calls and tool results in the
 * history render through the chat format, and the refusals name their field.
 */
import OpenAI from 'openai';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { missingForE2e, startUp, type UpCluster } from './e2e-cluster.ts';

let c: UpCluster;
let client: OpenAI;
const missing = missingForE2e();
const tok = Llama3PresetTokenizer.get();

const Weather = z.object({ city: z.string().max(12), unit: z.enum(['celsius', 'fahrenheit']) });
const Time = z.object({ zone: z.enum(['UTC', 'CET', 'PST']), hour: z.number().int().min(0).max(23) });
const TOOLS = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: z.toJSONSchema(Weather) } },
  { type: 'function', function: { name: 'get_time', parameters: z.toJSONSchema(Time) } },
];
const SCHEMAS: Record<string, z.ZodType> = { get_weather: Weather, get_time: Time };
const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
const ask = (extra: Record<string, unknown>) =>
  client.chat.completions.create({ model: 'tiny', messages, tools: TOOLS, max_tokens: 200, temperature: 0, ...extra } as any) as Promise<any>;

/** Every call names a tool and its arguments parse and validate against that tool's schema. */
function checkCalls(calls: { id: string; type: string; function: { name: string; arguments: string } }[]): void {
  assert.ok(calls.length >= 1);
  for (const call of calls) {
    assert.is(call.type, 'function');
    assert.match(call.id, /^call_/);
    assert.ok(call.function.name in SCHEMAS, call.function.name);
    SCHEMAS[call.function.name].parse(JSON.parse(call.function.arguments));
  }
}

/** The tool calls a stream's deltas build (by index, as the client accumulates them), and its finish reason. */
async function streamedCalls(extra: Record<string, unknown>) {
  const stream: any = await ask({ ...extra, stream: true });
  const calls: { id: string; type: string; function: { name: string; arguments: string } }[] = [];
  let finish = null;
  let content = '';
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    content += ch.delta?.content ?? '';
    for (const d of ch.delta?.tool_calls ?? []) {
      if (d.id) {
        assert.is(d.index, calls.length, 'a new call opens with the next index');
        assert.ok(d.function.name, 'the opening delta names the function');
        calls.push({ id: d.id, type: d.type, function: { name: d.function.name, arguments: d.function.arguments ?? '' } });
      } else {
        calls[d.index].function.arguments += d.function.arguments;
      }
    }
    finish = ch.finish_reason ?? finish;
  }
  return { calls, finish, content };
}

if (missing.length > 0) {
  test.skip('tool calling against microserve up', () => {});
} else {
  test.before(async () => {
    c = await startUp([{ name: 'e0', role: 'both' }], 'dp', {}, { kvPages: 1024 });
    client = new OpenAI({ baseURL: c.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  });
  test.after(async () => {
    await c?.close();
  });

  test('required: tool_calls that follow the tools\' schemas, finish tool_calls; streamed deltas build the same calls', async () => {
    const r = await ask({ tool_choice: 'required' });
    const m = r.choices[0].message;
    assert.is(r.choices[0].finish_reason, 'tool_calls');
    assert.is(m.content, null);
    checkCalls(m.tool_calls);
    const s = await streamedCalls({ tool_choice: 'required' });
    assert.is(s.finish, 'tool_calls');
    assert.is(s.content, '');
    checkCalls(s.calls);
    assert.equal(s.calls.map((x) => [x.function.name, x.function.arguments]), m.tool_calls.map((x: any) => [x.function.name, x.function.arguments]), 'greedy: the same calls');
    const one = await ask({ tool_choice: 'required', parallel_tool_calls: false });
    assert.is(one.choices[0].message.tool_calls.length, 1);
  });

  test('a named function: one call to it, arguments valid, whole and streamed', async () => {
    const named = { type: 'function', function: { name: 'get_time' } };
    const r = await ask({ tool_choice: named });
    assert.is(r.choices[0].finish_reason, 'tool_calls');
    const calls = r.choices[0].message.tool_calls;
    assert.is(calls.length, 1);
    assert.is(calls[0].function.name, 'get_time');
    checkCalls(calls);
    const s = await streamedCalls({ tool_choice: named });
    assert.is(s.calls.length, 1);
    assert.is(s.calls[0].function.arguments, calls[0].function.arguments);
    assert.is(s.finish, 'tool_calls');
  });

  test('auto: plain output is content; output in the Llama 3.x call format becomes tool_calls', async () => {
    const plain = await ask({ max_tokens: 8 });
    assert.type(plain.choices[0].message.content, 'string');
    assert.is(plain.choices[0].message.tool_calls, undefined);
    // the output forced into the call format (a structured output next to auto) is read as a call
    const callSchema = { type: 'object', properties: { name: { const: 'get_weather' }, parameters: z.toJSONSchema(Weather) }, required: ['name', 'parameters'] };
    const r = await ask({ tool_choice: 'auto', guided_json: callSchema });
    assert.is(r.choices[0].finish_reason, 'tool_calls');
    assert.is(r.choices[0].message.content, null);
    checkCalls(r.choices[0].message.tool_calls);
    const s = await streamedCalls({ guided_json: callSchema });
    assert.is(s.finish, 'tool_calls');
    assert.is(s.calls[0].function.arguments, r.choices[0].message.tool_calls[0].function.arguments);
  });

  test('tool calls and tool results in the history render through the Llama 3.1 format', async () => {
    const history = [
      { role: 'system', content: 'You help.' },
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: '21 degrees' },
    ];
    const r: any = await client.chat.completions.create({ model: 'tiny', messages: history, tools: TOOLS, max_tokens: 4, temperature: 0 } as any);
    assert.ok(r.usage.prompt_tokens > 50);
    const t = await fetch(c.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: history }) }).then((x) => x.json() as any);
    const text = tok.decode(t.tokens);
    assert.match(text, /<\|start_header_id\|>assistant<\|end_header_id\|>\n\n\{"name":"get_weather","parameters":\{"city":"Paris","unit":"celsius"\}\}<\|eot_id\|>/);
    assert.match(text, /<\|start_header_id\|>ipython<\|end_header_id\|>\n\n"21 degrees"<\|eot_id\|>/);
    assert.is(r.usage.prompt_tokens > t.count, true, 'the tools add their block to the first user message');
  });

  test('refusals name the field', async () => {
    const refused = async (p: Promise<unknown>, param: string) => {
      try {
        await p;
      } catch (e) {
        assert.is((e as any).status, 400, param);
        assert.is((e as any).param, param);
        return;
      }
      assert.unreachable(`${param} accepted`);
    };
    await refused(ask({ tool_choice: { type: 'function', function: { name: 'nope' } } }), 'tool_choice.function.name');
    await refused(client.chat.completions.create({ model: 'tiny', messages, tool_choice: 'auto' } as any), 'tool_choice');
    await refused(ask({ tool_choice: 'required', response_format: { type: 'json_object' } }), 'tool_choice');
    await refused(ask({ tools: [TOOLS[0], TOOLS[0]] }), 'tools[1].function.name');
    await refused(ask({ tools: [{ type: 'function', function: { name: 'bad', parameters: { type: 5 } } }], tool_choice: 'required' }), 'tools');
    await refused(ask({ tools: [{ type: 'function', function: { name: 'has space' } }] }), 'tools[0].function.name');
    const ok = await ask({ tool_choice: 'none', max_tokens: 4 });
    assert.is(ok.choices[0].message.tool_calls, undefined);
  });
}

test.run();
