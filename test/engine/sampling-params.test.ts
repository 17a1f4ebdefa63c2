// The engine's per-request sampling parameters on the CPU backend: a penalised, seeded stream is
// the TS reference applied step by step (the penalty state the backend keeps per slot matches the
// history), logprobs come with each token, min_tokens holds back the stop tokens, and a request
// resumed elsewhere from prompt + its first tokens (numPriorOutput) continues the same stream.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { logprobsOf, processLogits, sampleProcessed } from '../shared/logit-processing-reference.ts';
import { checkExtrasSupported } from '../../actors/engine/sampling-params.ts';
import type { LoadedModel } from '../../native/index.ts';
import { CASES, Collector, greedy, makeCore, openFixture, run } from './helpers.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openFixture(96);
});
test.after(() => model.backend.close());

async function lastLogits(ids: number[], first: number): Promise<Float32Array> {
  return model.backend.forward({ seqs: [{ tokens: Int32Array.from(ids), startPos: 0, pageTable: Int32Array.from({ length: 8 }, (_, i) => first + i) }] });
}

const PENALISED = { temperature: 0.9, topP: 0.95, seed: 99, topK: 20, minP: 0.01, repetitionPenalty: 1.2, presencePenalty: 0.7, frequencyPenalty: 0.4, logprobs: 3 };

test('a penalised seeded stream is the reference step by step, with its logprobs', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c });
  const prompt = CASES[1].prompt_ids;
  const s = { ...greedy(12, PENALISED), seed: PENALISED.seed };
  const [out, plain] = await Promise.all([run(core, c, 'a', prompt, s), run(core, c, 'b', CASES[0].prompt_ids, greedy(5))]);
  await core.whenIdle();
  assert.equal(plain.tokens, CASES[0].greedy_ids.slice(0, 5), 'a plain request batched with it is unchanged');
  assert.is(out.tokens.length, 12);
  assert.is(out.logprobs.length, 12);
  core.flushCache();
  for (let k = 0; k < out.tokens.length; k++) {
    const history = [...prompt, ...out.tokens.slice(0, k)];
    const z = processLogits(await lastLogits(history, 80), { ...s, history, numOutput: k });
    assert.is(out.tokens[k], sampleProcessed(z, s.temperature, s.topP, s.seed, k, s.topK, s.minP), `token ${k}`);
    const ref = logprobsOf(z, s.temperature, out.tokens[k], 3);
    assert.ok(Math.abs(out.logprobs[k].logprob - ref.logprob) < 1e-3, `logprob ${k}`);
    assert.equal(out.logprobs[k].top.map(([id]) => id), ref.top.map(([id]) => id));
  }
});

test('penalties change a greedy stream; a resumed request (numPriorOutput) continues it exactly', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c });
  const prompt = CASES[2].prompt_ids;
  const s = greedy(10, { frequencyPenalty: 2, presencePenalty: 1, temperature: 0.8, seed: 5 });
  const full = await run(core, c, 'f', prompt, s);
  const plain = await run(core, c, 'p', prompt, greedy(10, { temperature: 0.8, seed: 5 }));
  assert.not.equal(full.tokens, plain.tokens, 'penalties have an effect');
  await core.whenIdle();
  const c2 = new Collector();
  const other = makeCore(model, { collector: c2, name: 'e1' });
  const rest = await run(other, c2, 'r', [...prompt, ...full.tokens.slice(0, 4)], { ...s, maxTokens: 6, numPriorOutput: 4 });
  assert.equal(rest.tokens, full.tokens.slice(4));
});

test('min_tokens bans the stop tokens until the output is long enough', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c });
  const prompt = CASES[0].prompt_ids;
  const first = CASES[0].greedy_ids[0];
  const stopped = await run(core, c, 's', prompt, greedy(8, { stopTokenIds: [first] }));
  assert.equal(stopped.tokens, [first]);
  assert.is(stopped.finish, 'stop');
  const held = await run(core, c, 'm', prompt, greedy(8, { stopTokenIds: [first], minTokens: 3 }));
  assert.ok(held.tokens.length >= 3 && !held.tokens.slice(0, 3).includes(first), `no stop token before 3 tokens: ${held.tokens}`);
});

test('bad extension fields are typed errors naming the field', () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c });
  const bad = (extra: Record<string, unknown>, field: string) =>
    assert.throws(() => core.generate({ id: `x${field}`, promptIds: [1, 2], sampling: greedy(2, extra as any), replyTo: 't' }), (e: any) => e.code.startsWith('BAD_') && e.info?.field === field);
  bad({ topK: -1 }, 'sampling.topK');
  bad({ minP: 2 }, 'sampling.minP');
  bad({ repetitionPenalty: 0 }, 'sampling.repetitionPenalty');
  bad({ logprobs: 21 }, 'sampling.logprobs');
  bad({ logitBias: [[1e9, 1]] }, 'sampling.logitBias');
  bad({ logitBias: 'junk' }, 'sampling.logitBias');
  bad({ numPriorOutput: 2 }, 'sampling.numPriorOutput');
});

test('a backend without the extras (CUDA for now) refuses requests that need them, and only those', () => {
  assert.throws(() => checkExtrasSupported(greedy(2, { topK: 5 }), 'cuda:0', 'generate'), (e: any) => e.code === 'BAD_REQUEST' && e.info.field === 'sampling');
  assert.throws(() => checkExtrasSupported(greedy(2, { logprobs: 0 }), 'cuda:0', 'generate'), (e: any) => e.code === 'BAD_REQUEST');
  checkExtrasSupported(greedy(2, { temperature: 1, topP: 0.5, seed: 3 }), 'cuda:0', 'generate');
  checkExtrasSupported(greedy(2, { topK: 5 }), 'cpu', 'generate');
});

test.run();
