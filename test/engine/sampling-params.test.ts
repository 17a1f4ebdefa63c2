// The engine's per-request sampling parameters on the CPU backend: a penalised, seeded stream is
// the TS reference applied step by step (the penalty state the backend keeps per slot matches the
// history), logprobs come with each token, min_tokens holds back the stop tokens, and a request
// resumed elsewhere from prompt + its first tokens (numPriorOutput) continues the same stream;
// penalty slots stay within the backend's plan (a request that lost its slot rebuilds it).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { logprobsOf, processLogits, sampleProcessed } from '../shared/logit-processing-reference.ts';
import { SamplingBatch, SamplingSlots } from '../../actors/engine/sampling-params.ts';
import { Request } from '../../actors/engine/request.ts';
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

test('penalty slots stay below the capacity: a request outside the step gives its slot up and is rebuilt later', () => {
  const slots = new SamplingSlots(2);
  const req = (id: string, penalised = true) => new Request({ id, kind: 'generate', promptIds: [1, 2, 3], sampling: greedy(4, penalised ? { repetitionPenalty: 1.5 } : {}) });
  const [a, b, c, plain] = [req('a'), req('b'), req('c'), req('p', false)];
  assert.is(slots.slotOf(plain, new Set([plain])), -1, 'no penalties, no slot');
  assert.is(slots.slotOf(a, new Set([a, b])), 0);
  assert.is(slots.slotOf(b, new Set([a, b])), 1);
  a.isSlotSynced = b.isSlotSynced = true;
  assert.is(slots.slotOf(c, new Set([b, c])), 0, 'c takes the slot of a, which is not in its step');
  assert.is(a.samplingSlot, -1);
  assert.is(a.isSlotSynced, false, 'a rebuilds its state when it samples again');
  assert.is(b.isSlotSynced, true, 'b keeps its slot and state');
  assert.throws(() => slots.slotOf(a, new Set([a, b, c])), (e: any) => e.code === 'NATIVE_ERROR', 'a step larger than the capacity');
  slots.release(b);
  assert.is(slots.slotOf(a, new Set([a, c])), 1);
  assert.is(slots.numHeld, 2);
  assert.throws(() => new SamplingSlots(0), (e: any) => e.code === 'BAD_CONFIG');
});

test('a step whose penalised request lost its slot sends its history again (reset) and samples the same stream', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c });
  const prompt = CASES[1].prompt_ids;
  const s = greedy(6, { frequencyPenalty: 1.5, presencePenalty: 0.5, temperature: 0.7, seed: 11 });
  const whole = await run(core, c, 'w', prompt, s);
  // The same request in steps of its own, its slot taken away after every step (as a full table does).
  const slots = new SamplingSlots(1);
  const r = new Request({ id: 'r', kind: 'generate', promptIds: prompt, sampling: s });
  const tokens: number[] = [];
  for (let k = 0; k < 6; k++) {
    const sb = new SamplingBatch([r], slots);
    assert.is(sb.sampling.extras!.reset![0], 1, `step ${k} rebuilds the slot`);
    const ids = r.slice(0, r.totalLen);
    const out = await model.backend.forwardTokens({ seqs: [{ tokens: ids, startPos: 0, pageTable: Int32Array.from({ length: 8 }, (_, i) => 80 + i) }], sampling: sb.sampling });
    sb.commit();
    tokens.push(out[0]);
    r.outputIds.push(out[0]);
    slots.slotOf(new Request({ id: `thief${k}`, kind: 'generate', promptIds: [1], sampling: s }), new Set());
  }
  assert.equal(tokens, whole.tokens);
});

test.run();
