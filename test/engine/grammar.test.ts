/**
 * Structured outputs in the engine (actors/engine/grammar/) on the real kjv-chat model: the mask
 * keeps greedy output inside the grammar, a complete grammar ends with stop, one that cannot
 * finish ends with length, replay after a "migration" continues the same output, bad grammars
 * fail only their request, and aborts during a compile leak nothing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { tokenizerOption } from '../../actors/engine/actor.ts';
import type { GrammarSpec } from '../../actors/messages.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { Collector, makeCore, run, usedPages } from './helpers.ts';
import { Person, folder, personSpec, prompt, tok, withEos } from '../shared/kjv-grammar.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openModel(folder, { numPages: 128, pageSize: 16, numThreads: 2 });
});
test.after(() => model.backend.close());

const EOS = () => model.config.eosTokenIds;
const { withGrammar, text } = withEos(EOS);

test('json_object and a nested json_schema: greedy output parses and validates; stop at the grammar end', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }) });
  const any = await run(core, c, 'obj', prompt('Who was the son of Abraham? Answer in JSON.'), withGrammar({ type: 'json' }));
  assert.is(any.finish, 'stop', JSON.stringify(text(any.tokens)));
  const obj = JSON.parse(text(any.tokens));
  assert.type(obj, 'object');
  const schema = JSON.stringify(z.toJSONSchema(Person));
  const s = await run(core, c, 'person', prompt('Tell me of a man of Israel, in JSON.'), withGrammar({ type: 'json', schema }, 200));
  assert.is(s.finish, 'stop', text(s.tokens));
  const parsed = Person.parse(JSON.parse(text(s.tokens)));
  assert.ok(parsed.sons.length <= 3);
  assert.ok(!/\s{2}/.test(text(s.tokens)), 'compact JSON by default');
  assert.is(core.status().counters.requests, 2);
  await core.whenIdle();
  assert.equal(c.problems, []);
  assert.is(usedPages(core), 0);
  core.close();
});

test('regex and choice (EBNF) grammars; a grammar that cannot finish in max_tokens ends with length', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }) });
  const r = await run(core, c, 're', prompt('What year?'), withGrammar({ type: 'regex', pattern: '[0-9]{3}-(yea|nay)' }));
  assert.is(r.finish, 'stop');
  assert.match(text(r.tokens), /^[0-9]{3}-(yea|nay)$/);
  const ch = await run(core, c, 'choice', prompt('Is the LORD good?'), withGrammar({ type: 'ebnf', grammar: 'root ::= "Amen" | "Selah" | "Hallelujah"' }));
  assert.ok(['Amen', 'Selah', 'Hallelujah'].includes(text(ch.tokens)), text(ch.tokens));
  // an unbounded string: the weak model writes scripture until max_tokens
  const long = await run(core, c, 'long', prompt('Speak.'), withGrammar({ type: 'json', schema: '{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}' }, 12));
  assert.is(long.finish, 'length');
  assert.is(long.tokens.length, 12);
  assert.ok(text(long.tokens).startsWith('{"a": "'), text(long.tokens));
  await core.whenIdle();
  assert.equal(c.problems, []);
  core.close();
});

test('replaying the output so far (migration) continues exactly where the first attempt stopped', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }) });
  const spec = personSpec;
  const p = prompt('Tell me of a woman of Judah, in JSON.');
  const whole = await run(core, c, 'whole', p, withGrammar(spec, 200));
  assert.is(whole.finish, 'stop');
  const k = Math.floor(whole.tokens.length / 2);
  const first = await run(core, c, 'first', p, withGrammar(spec, k));
  assert.equal(first.tokens, whole.tokens.slice(0, k));
  const rest = await run(core, c, 'rest', [...p, ...first.tokens], withGrammar(spec, 200 - k, { numPriorOutput: k }));
  assert.equal([...first.tokens, ...rest.tokens], whole.tokens);
  assert.is(rest.finish, 'stop');
  // a replay the grammar cannot take fails that request only
  const bad = await run(core, c, 'bad', [...p, ...tok.encode('nope', { addBos: false })], withGrammar(spec, 10, { numPriorOutput: 2 }));
  assert.is(bad.finish, 'error');
  assert.is(bad.error?.code, 'BAD_GRAMMAR');
  await core.whenIdle();
  assert.is(usedPages(core), 0);
  core.close();
});

test('bad grammars fail their request with BAD_GRAMMAR (xgrammar\'s reason), the engine serves on past its cache size', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }), grammarCacheSize: 2 });
  for (const [i, g] of ([{ type: 'json', schema: '{"type": 5}' }, { type: 'regex', pattern: '[a-' }, { type: 'ebnf', grammar: 'root ::= "a" |' }, { type: 'json', schema: 'not json' }] as GrammarSpec[]).entries()) {
    const s = await run(core, c, `bad${i}`, prompt('x'), withGrammar(g));
    assert.is(s.finish, 'error');
    assert.is(s.error?.code, 'BAD_GRAMMAR', s.error?.message);
    assert.match(s.error!.message, /sampling\.grammar/);
  }
  assert.match((await run(core, c, 'reason', prompt('x'), withGrammar({ type: 'regex', pattern: '(a' }))).error!.message, /paren|\(/i);
  // the engine compiles and serves after them
  for (let i = 0; i < 3; i++) {
    const s = await run(core, c, `ok${i}`, prompt('Yea or nay?'), withGrammar({ type: 'regex', pattern: i === 2 ? '(yea|nay)' : `(yea|nay)${i}` }));
    assert.is(s.finish, 'stop');
  }
  // a schema checked at the boundary: not a grammar object
  assert.throws(() => core.generate({ id: 'shape', promptIds: prompt('x'), sampling: { ...withGrammar({ type: 'json' }), grammar: { type: 'xml' } as never }, replyTo: 't' }), /sampling\.grammar/);
  await core.whenIdle();
  assert.equal(c.problems, []);
  core.close();
});

test('abort while the grammar compiles: nothing runs, nothing leaks; no tokenizer: refused at once', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }) });
  core.generate({ id: 'a', promptIds: prompt('x'), sampling: withGrammar({ type: 'json', schema: '{"type":"array","items":{"type":"integer"}}' }), replyTo: 't' });
  assert.equal(core.abort('a'), { aborted: true });
  const s = await c.done('a');
  assert.is(s.finish, 'abort');
  await new Promise((r) => setTimeout(r, 300)); // the compile settles meanwhile
  await core.whenIdle();
  assert.is(core.counters.tokensGenerated, 0);
  assert.is(usedPages(core), 0);
  core.close();
  const bare = makeCore(model, { collector: new Collector() });
  assert.throws(() => bare.generate({ id: 'b', promptIds: prompt('x'), sampling: withGrammar({ type: 'json' }), replyTo: 't' }), /tokenizer/);
  bare.close();
});

test.run();
