/**
 * Kills are test cases: a grammar worker thread terminated while its requests are being generated
 * (masks filled under the forwards, accepts staged) fails those requests with a typed error and
 * nothing else: the engine loop goes on (no gate left waiting), a request without a grammar in the
 * same steps finishes as it would alone, no page leaks, and a grammar request after the kill runs
 * on a fresh worker. The kill is the real one: `Worker.terminate()` of the engine's worker thread.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tokenizerOption } from '../../actors/engine/actor.ts';
import type { EngineCore } from '../../actors/engine/engine-core.ts';
import type { SamplingParams } from '../../actors/messages.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { Collector, makeCore, run, usedPages } from './helpers.ts';
import { Person, folder, personSpec, prompt, withEos } from '../shared/kjv-grammar.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openModel(folder, { numPages: 256, pageSize: 16, numThreads: 2 });
});
test.after(() => model.backend.close());

const { withGrammar, text } = withEos(() => model.config.eosTokenIds);
const plain = (): SamplingParams => ({ maxTokens: 60, temperature: 0, topP: 1, seed: 0, stopTokenIds: [] });

/** `p`, or a failure after `ms` (a gate left waiting would hang the loop: fail fast, not at the runner's timeout). */
function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The engine's grammar worker threads (test access: the kill a crashed worker would be). */
function workerThreads(core: EngineCore): { terminate(): Promise<number> }[] {
  const clients = (core as unknown as { grammars: { workers: { worker: { terminate(): Promise<number> } | null }[] } }).grammars.workers;
  return clients.map((c) => c.worker).filter((w): w is { terminate(): Promise<number> } => w !== null);
}

test('a grammar worker killed mid-generation fails only its requests; the engine and later grammars go on', async () => {
  const aloneC = new Collector();
  const alone = makeCore(model, { collector: aloneC });
  const solo = await run(alone, aloneC, 'plain', prompt('Speak of the morning.'), plain());
  alone.close();

  const c = new Collector();
  const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }), grammarWorkers: 1 });
  const grammarRuns = [
    run(core, c, 'g1', prompt('Tell me of a man of Israel, in JSON.'), withGrammar(personSpec, 200)),
    run(core, c, 'g2', prompt('Name a river, in JSON.'), withGrammar({ type: 'json' }, 200)),
  ];
  const plainRun = run(core, c, 'plain', prompt('Speak of the morning.'), plain());
  // kill once the grammar rows are being generated (tokens streamed), the plain row too
  for (let i = 0; i < 400 && !(c.streams.get('g1')?.tokens.length && c.streams.get('plain')?.tokens.length); i++) await new Promise((r) => setTimeout(r, 5));
  const threads = workerThreads(core);
  assert.is(threads.length, 1, 'one live grammar worker');
  await threads[0].terminate();

  const [g1, g2] = await within(60_000, Promise.all(grammarRuns), 'the grammar requests after the kill');
  for (const [id, s] of [['g1', g1], ['g2', g2]] as const) {
    if (s.finish === 'stop') continue; // it completed before the kill reached it
    assert.is(s.finish, 'error', `${id}: ${s.finish} ${text(s.tokens)}`);
    assert.is(s.error?.code, 'BAD_GRAMMAR', `${id}: ${JSON.stringify(s.error)}`);
  }
  assert.ok([g1, g2].some((s) => s.finish === 'error'), 'the kill failed a running grammar request');
  const p = await within(60_000, plainRun, 'the plain request after the kill');
  assert.equal({ tokens: p.tokens, finish: p.finish }, { tokens: solo.tokens, finish: solo.finish }, 'the request without a grammar is undisturbed');

  // a grammar request after the kill gets a fresh worker
  const after = await within(60_000, run(core, c, 'g3', prompt('Tell me of a king, in JSON.'), withGrammar(personSpec, 200)), 'a grammar request after the kill');
  assert.is(after.finish, 'stop', text(after.tokens));
  Person.parse(JSON.parse(text(after.tokens)));
  await core.whenIdle();
  assert.equal(c.problems, []);
  assert.is(usedPages(core), 0);
  core.close();
});

test.run();
