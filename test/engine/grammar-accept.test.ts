/**
 * The grammar accept off the critical path (actors/engine/engine-core.ts `loop`,
 * grammar/grammars.ts `accept`, postprocess.ts `settle`) on the real kjv-chat model: step t+1 is
 * submitted before step t's tokens reach the matchers, so an out-of-grammar token (a backend that
 * ignores masks) is found while its request is already in step t+1: only that request fails, with
 * nothing streamed, and its t+1 token is discarded; every accept rides with the next step's fill;
 * the non-overlap loop gives the same outputs, a completion at max_tokens included.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tokenizerOption } from '../../actors/engine/actor.ts';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import type { GrammarSpec, SamplingParams, TokensItem } from '../../actors/messages.ts';
import type { Backend, ForwardBatch, ForwardSampling } from '../../native/backend.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { Collector, makeCore, run, usedPages, type Stream } from './helpers.ts';
import { Person, folder, personSpec, prompt, withEos } from '../shared/kjv-grammar.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openModel(folder, { numPages: 256, pageSize: 16, numThreads: 2 });
});
const cores: EngineCore[] = [];
test.after(() => {
  for (const core of cores) core.close(); // also those of a failed test (their grammar workers would keep the process)
  model.backend.close();
});

const { withGrammar, text } = withEos(() => model.config.eosTokenIds);
const tokenizer = () => tokenizerOption({ folder, isPreset: false });

/**
 * The real backend, but its sampling ignores grammar masks (no allowed mask, no gate: a backend
 * that does not implement them), and every forward's rows are recorded (startPos, tokens fed).
 */
function maskBlind(inner: Backend): { backend: Backend; rows: { startPos: number; n: number }[][] } {
  const rows: { startPos: number; n: number }[][] = [];
  const forwardTokens = (batch: ForwardBatch & { sampling: ForwardSampling }) => {
    rows.push(batch.seqs.map((s) => ({ startPos: s.startPos, n: s.tokens.length })));
    const { maskGate: _gate, extras, ...sampling } = batch.sampling;
    const blind: ForwardSampling = extras ? { ...sampling, extras: { ...extras, allowedMask: undefined } } : sampling;
    return inner.forwardTokens({ ...batch, sampling: blind });
  };
  const backend = new Proxy(inner, {
    get(t, p) {
      if (p === 'forwardTokens') return forwardTokens;
      if (p === 'supplyMasks') return () => false;
      const v = Reflect.get(t, p);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
  return { backend, rows };
}

test('an out-of-grammar token found while its request is in the next step fails only it; nothing of it is streamed', async () => {
  const { backend, rows } = maskBlind(model.backend);
  const c = new Collector();
  const items = new Map<string, TokensItem[]>();
  const sink: typeof c.sink = (to, list) => {
    c.sink(to, list);
    for (const it of list) items.set(it.id, [...(items.get(it.id) ?? []), it]);
  };
  const core = makeCore({ ...model, backend }, { collector: c, sink, ...tokenizer() });
  cores.push(core);
  const plainPrompt = prompt('Speak of the morning and of the evening, and of the light upon the waters.');
  const plain: SamplingParams = { maxTokens: 12, temperature: 0, topP: 1, stopTokenIds: model.config.eosTokenIds };
  const alone = await run(core, c, 'alone', plainPrompt, plain);
  const gPrompt = prompt('What year?');
  assert.ok(gPrompt.length < plainPrompt.length, 'the grammar row is told apart by its positions');
  const numForwards = rows.length;
  const [g, p] = await Promise.all([run(core, c, 'g', gPrompt, withGrammar({ type: 'regex', pattern: '~{3}[0-9]' }, 20)), run(core, c, 'p', plainPrompt, plain)]);
  await core.whenIdle();
  assert.is(g.finish, 'error');
  assert.is(g.error?.code, 'NATIVE_ERROR');
  assert.match(g.error!.message, /outside the request's grammar mask/);
  assert.equal(g.tokens, [], 'the out-of-grammar token is not streamed');
  assert.is(items.get('g')!.length, 1, 'one message: the error');
  // step t+1 was submitted before the accept answered: it fed the bad token (position = prompt length)
  const later = rows.slice(numForwards);
  assert.ok(later.some((r) => r.some((s) => s.startPos === gPrompt.length && s.n === 1)), 'the request ran in the step after its bad token');
  assert.equal(p.tokens, alone.tokens, 'the other request is untouched');
  assert.is(p.finish, alone.finish);
  assert.equal(c.problems, []);
  assert.is(usedPages(core), 0);
  core.close();
});

test('every accept goes to the workers with the next step\'s fill (after that step was submitted)', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizer() });
  cores.push(core);
  const s = await run(core, c, 'person', prompt('Tell me of a man of Israel, in JSON.'), withGrammar(personSpec, 160));
  await core.whenIdle();
  assert.is(s.finish, 'stop');
  Person.parse(JSON.parse(text(s.tokens)));
  const g = core.grammarStats;
  assert.ok(g.numFills > 5, `${g.numFills} fills`);
  assert.is(g.numAcceptsWithFill, g.numFills, 'each fill carried the previous step\'s tokens');
  assert.ok(g.numAccepts >= g.numAcceptsWithFill);
  core.close();
});

/** A mixed batch: a schema that completes, one cut at max_tokens, one completing exactly at max_tokens, and a row without a grammar. */
async function mixed(isOverlap: boolean, exactN: number): Promise<Record<string, { tokens: number[]; finish: string | null }>> {
  const c = new Collector();
  const core: EngineCore = makeCore(model, { collector: c, ...tokenizer(), overlap: isOverlap, grammarWorkers: 2 });
  cores.push(core);
  const re: GrammarSpec = { type: 'regex', pattern: '[0-9]{3}-(yea|nay)' };
  const cases: [string, number[], SamplingParams][] = [
    ['obj', prompt('Who was the son of Abraham? Answer in JSON.'), withGrammar({ type: 'json' }, 80, { temperature: 0.8, topP: 0.95, seed: 3 })],
    ['cut', prompt('Tell me of a king, in JSON.'), withGrammar(personSpec, 5)],
    ['exact', prompt('What year?'), withGrammar(re, exactN)],
    ['plain', prompt('Speak of the morning.'), { maxTokens: 20, temperature: 0.7, topP: 1, seed: 9, stopTokenIds: model.config.eosTokenIds }],
  ];
  const out: Record<string, Stream> = {};
  await Promise.all(cases.map(async ([id, p, s]) => (out[id] = await run(core, c, id, p, s))));
  await core.whenIdle();
  assert.equal(c.problems, []);
  assert.is(usedPages(core), 0);
  core.close();
  return Object.fromEntries(Object.entries(out).map(([id, s]) => [id, { tokens: s.tokens, finish: s.finish }]));
}

test('the non-overlap loop gives the outputs of the overlapped one; a grammar completing at max_tokens ends with stop in both', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizer() });
  cores.push(core);
  const free = await run(core, c, 'free', prompt('What year?'), withGrammar({ type: 'regex', pattern: '[0-9]{3}-(yea|nay)' }, 40));
  await core.whenIdle();
  core.close();
  assert.is(free.finish, 'stop');
  const overlapped = await mixed(true, free.tokens.length);
  const serial = await mixed(false, free.tokens.length);
  assert.equal(serial, overlapped);
  assert.is(overlapped.exact.finish, 'stop');
  assert.equal(overlapped.exact.tokens, free.tokens);
  assert.is(overlapped.cut.finish, 'length');
  assert.is(overlapped.cut.tokens.length, 5);
});

test.run();
