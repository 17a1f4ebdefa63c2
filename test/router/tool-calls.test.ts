/** tool-calls.ts: the output of each tool mode → tool_calls, whole and in deltas cut anywhere. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseLlama3Calls, ToolCallOutput, type ToolCallDelta } from '../../actors/router/http/tool-calls.ts';

const NAMES = new Set(['get_weather', 'get_time']);

/** Feeds `text` in pieces of `size` chars; returns the calls the deltas build and the content. */
function feed(out: ToolCallOutput, text: string, size: number) {
  const deltas: ToolCallDelta[] = [];
  let content = '';
  for (let i = 0; i < text.length; i += size) {
    const d = out.push(text.slice(i, i + size));
    content += d.content;
    deltas.push(...d.calls);
  }
  const end = out.finish();
  content += end.content;
  deltas.push(...end.calls);
  const built: { id: string; name: string; args: string }[] = [];
  for (const d of deltas) {
    if (d.id) built[d.index] = { id: d.id, name: d.function.name!, args: d.function.arguments };
    else built[d.index].args += d.function.arguments;
  }
  return { built, content };
}

test('required: an array of calls, split at every boundary, builds the same calls; strings with braces and escapes', () => {
  const text = '[{"name": "get_weather", "parameters": {"city": "P{a}r\\"is", "unit": "celsius"}}, {"name": "get_time", "parameters": {"zone": "UTC", "n": {"a": [1, {"b": 2}]}}}]';
  for (const size of [1, 2, 3, 7, 1000]) {
    const out = new ToolCallOutput('required', NAMES, null);
    const { built, content } = feed(out, text, size);
    assert.is(content, '');
    assert.equal(built.map((b) => [b.name, b.args]), [
      ['get_weather', '{"city": "P{a}r\\"is", "unit": "celsius"}'],
      ['get_time', '{"zone": "UTC", "n": {"a": [1, {"b": 2}]}}'],
    ], `pieces of ${size}`);
    assert.equal(out.calls.map((c) => [c.function.name, c.function.arguments]), built.map((b) => [b.name, b.args]));
    assert.equal(out.calls.map((c) => c.id), built.map((b) => b.id));
    assert.is(out.content, null);
  }
});

test('required, cut by max_tokens: the calls so far, the last one incomplete', () => {
  const out = new ToolCallOutput('required', NAMES, null);
  feed(out, '[{"name": "get_time", "parameters": {"zone": "UT', 4);
  assert.equal(out.calls.map((c) => [c.function.name, c.function.arguments]), [['get_time', '{"zone": "UT']]);
});

test('named: the whole output is the arguments', () => {
  const out = new ToolCallOutput('named', NAMES, 'get_time');
  const { built } = feed(out, '{"zone": "CET"}', 3);
  assert.equal(built.map((b) => [b.name, b.args]), [['get_time', '{"zone": "CET"}']]);
  assert.is(out.content, null);
});

test('auto: Llama 3.x JSON calls (one, several joined by ;, "arguments" too) become calls; anything else is content', () => {
  const call = new ToolCallOutput('auto', NAMES, null);
  const a = feed(call, ' {"name": "get_weather", "parameters": {"city": "Rome"}}; {"name": "get_time", "arguments": {"zone": "UTC"}}', 5);
  assert.is(a.content, '');
  assert.equal(a.built.map((b) => [b.name, b.args]), [['get_weather', '{"city":"Rome"}'], ['get_time', '{"zone":"UTC"}']]);
  assert.is(call.content, null);
  const prose = new ToolCallOutput('auto', NAMES, null);
  const p = feed(prose, 'In the beginning {was} the word', 4);
  assert.is(p.content, 'In the beginning {was} the word');
  assert.is(prose.calls.length, 0);
  const jsonNotCall = new ToolCallOutput('auto', NAMES, null);
  const j = feed(jsonNotCall, '{"name": "unknown_tool", "parameters": {}}', 6);
  assert.is(j.content, '{"name": "unknown_tool", "parameters": {}}');
  assert.is(jsonNotCall.content, '{"name": "unknown_tool", "parameters": {}}');
  assert.is(parseLlama3Calls('{"name": "get_time", "parameters": {"zone": "UTC"}} trailing', NAMES), null);
  assert.is(parseLlama3Calls('{"name": "get_time", "parameters": "x"}', NAMES), null);
});

test.run();
