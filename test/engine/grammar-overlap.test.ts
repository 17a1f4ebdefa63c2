/**
 * Grammar masks computed while the next forward runs (actors/engine/grammar/grammars.ts `accept` /
 * `prepare`, the backend's mask gate) on the real kjv-chat model: several grammar workers give
 * the outputs of one; a grammar that completes at the request's last token still ends with
 * `stop`; a failed step retried in halves gives the same outputs; aborts and an engine close
 * during gated steps end every stream once and leak nothing.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tokenizerOption } from '../../actors/engine/actor.ts';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import type { GrammarSpec, SamplingParams } from '../../actors/messages.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { Collector, makeCore, run, usedPages, type Stream } from './helpers.ts';
import { Person, folder, personSpec, prompt, withEos } from '../shared/kjv-grammar.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openModel(folder, { numPages: 256, pageSize: 16, numThreads: 2 });
});
test.after(() => model.backend.close());

const { withGrammar, text } = withEos(() => model.config.eosTokenIds);

/** A mixed batch: schemas, json_object, regex, choice, greedy and seeded, and a row without a grammar. */
function cases(): [string, number[], SamplingParams][] {
  const sampled = (seed: number) => ({ temperature: 0.8, topP: 0.95, seed });
  return [
    ['person', prompt('Tell me of a man of Israel, in JSON.'), withGrammar(personSpec, 160)],
    ['person-s', prompt('Tell me of a king, in JSON.'), withGrammar(personSpec, 160, sampled(11))],
    ['obj', prompt('Who was the son of Abraham? Answer in JSON.'), withGrammar({ type: 'json' }, 80, sampled(3))],
    ['re', prompt('What year?'), withGrammar({ type: 'regex', pattern: '[0-9]{3}-(yea|nay)' }, 40, sampled(5))],
    ['choice', prompt('Is the LORD good?'), withGrammar({ type: 'ebnf', grammar: 'root ::= "Amen" | "Selah" | "Hallelujah"' })],
    ['plain', prompt('Speak of the morning.'), { maxTokens: 30, temperature: 0.7, topP: 1, seed: 9, stopTokenIds: model.config.eosTokenIds }],
    ['person-2', prompt('Tell me of a prophet, in JSON.'), withGrammar(personSpec, 160, sampled(21))],
    ['obj-g', prompt('Name a river, in JSON.'), withGrammar({ type: 'json' }, 60)],
  ];
}

async function runAll(core: EngineCore, c: Collector): Promise<Record<string, Stream>> {
  const out: Record<string, Stream> = {};
  await Promise.all(cases().map(async ([id, p, s]) => (out[id] = await run(core, c, id, p, s))));
  return out;
}

const summary = (r: Record<string, Stream>) => Object.fromEntries(Object.entries(r).map(([id, s]) => [id, { tokens: s.tokens, finish: s.finish }]));

test('several grammar workers give the outputs of one; masks are computed under the forwards', async () => {
  const results: Record<string, Stream>[] = [];
  for (const numWorkers of [1, 3]) {
    const c = new Collector();
    const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }), grammarWorkers: numWorkers });
    results.push(await runAll(core, c));
    await core.whenIdle();
    assert.equal(c.problems, []);
    assert.is(usedPages(core), 0);
    const g = core.grammarStats;
    assert.ok(g.numFills > 10, `masks filled under forwards (${g.numFills} fills)`);
    assert.ok(g.numAccepts >= g.numFills);
    core.close();
  }
  assert.equal(summary(results[1]), summary(results[0]));
  const r = results[0];
  // a grammar found complete ends its request at once: the token its row drew meanwhile is not streamed
  for (const [id, s] of Object.entries(r)) if (id !== 'plain' && s.finish === 'stop') assert.ok(!s.tokens.some((t) => model.config.eosTokenIds.includes(t)), `${id}: no stop token streamed`);
  for (const id of ['person', 'person-s', 'person-2']) {
    assert.is(r[id].finish, 'stop', `${id}: ${text(r[id].tokens)}`);
    Person.parse(JSON.parse(text(r[id].tokens)));
  }
  assert.type(JSON.parse(text(r.obj.tokens)), 'object');
  assert.match(text(r.re.tokens), /^[0-9]{3}-(yea|nay)$/);
  assert.ok(['Amen', 'Selah', 'Hallelujah'].includes(text(r.choice.tokens)));
});

test('a grammar that completes at the last token max_tokens allows ends with stop, as with masks up front', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }) });
  const spec: GrammarSpec = { type: 'regex', pattern: '[0-9]{3}-(yea|nay)' };
  const free = await run(core, c, 'free', prompt('What year?'), withGrammar(spec, 40));
  assert.is(free.finish, 'stop');
  assert.ok(!free.tokens.some((t) => model.config.eosTokenIds.includes(t)), 'completion ends the request without a stop token');
  const n = free.tokens.length;
  const exact = await run(core, c, 'exact', prompt('What year?'), withGrammar(spec, n));
  assert.is(exact.finish, 'stop');
  assert.equal(exact.tokens, free.tokens.slice(0, n));
  await core.whenIdle();
  assert.equal(c.problems, []);
  core.close();
});

test('a failed step retried in halves gives the same outputs (masks kept for the halves)', async () => {
  const runOnce = async (failAt: number[]) => {
    const c = new Collector();
    let numSeen = 0;
    const sink: typeof c.sink = (to, items) => {
      c.sink(to, items);
      numSeen += items.reduce((a, x) => a + x.tokens.length, 0);
      while (failAt.length && numSeen >= failAt[0]) failAt.shift(), core.failNextSteps(1);
    };
    const core: EngineCore = makeCore(model, { collector: c, sink, ...tokenizerOption({ folder, isPreset: false }), testHooks: true });
    const r = await runAll(core, c);
    await core.whenIdle();
    const counters = core.status().counters;
    assert.equal(c.problems, []);
    assert.is(usedPages(core), 0);
    core.close();
    return { r, retries: counters.stepRetries };
  };
  const base = await runOnce([]);
  const failed = await runOnce([30, 90, 200]);
  assert.ok(failed.retries >= 3, `steps retried: ${failed.retries}`);
  assert.equal(summary(failed.r), summary(base.r));
});

test('aborts and an engine close during gated steps end every stream once and leak nothing', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }), grammarWorkers: 2 });
  const all = cases();
  for (const [id, p, s] of all) core.generate({ id, promptIds: p, sampling: { ...s, maxTokens: 200 }, replyTo: 'test' });
  // abort two while their grammar rows are gated
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (c.get('person').tokens.length >= 8) clearInterval(t), resolve();
    }, 2);
  });
  core.abort('person');
  core.abort('obj-g');
  const aborted = await c.done('person');
  assert.is(aborted.finish, 'abort');
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (c.get('person-2').tokens.length >= 12) clearInterval(t), resolve();
    }, 2);
  });
  const t0 = performance.now();
  core.close();
  await core.whenIdle();
  assert.ok(performance.now() - t0 < 10_000, 'close does not wait for a gate');
  const streams = await Promise.all(all.map(([id]) => c.done(id)));
  for (const s of streams) assert.ok(s.finish !== null);
  assert.equal(c.problems, []);
  assert.is(usedPages(core), 0);
  // the backend serves on after the engine closed mid-step
  const c2 = new Collector();
  const core2 = makeCore(model, { collector: c2, ...tokenizerOption({ folder, isPreset: false }) });
  const again = await run(core2, c2, 're', prompt('What year?'), withGrammar({ type: 'regex', pattern: '[0-9]{3}-(yea|nay)' }));
  assert.is(again.finish, 'stop');
  await core2.whenIdle();
  core2.close();
});

test.run();
