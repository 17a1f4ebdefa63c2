// The engine samples on the backend: a request's sampled output follows from its seed alone
// (token k is the TS definition applied to the logits after k outputs, with (seed, k)), on any
// engine and in any batch; greedy output stays the fixture's reference.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sampleToken } from '../shared/sampling-reference.ts';
import type { LoadedModel } from '../../native/index.ts';
import { CASES, Collector, greedy, makeCore, openFixture, run } from './helpers.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openFixture(96);
});
test.after(() => model.backend.close());

/** Last-token logits of `ids`, computed fresh in pages [first, first + 8). */
async function lastLogits(ids: number[], first: number): Promise<Float32Array> {
  return model.backend.forward({ seqs: [{ tokens: Int32Array.from(ids), startPos: 0, pageTable: Int32Array.from({ length: 8 }, (_, i) => first + i) }] });
}

test('a sampled stream is the definition applied step by step with (seed, step)', async () => {
  const c = new Collector();
  const core = makeCore(model, { collector: c });
  const prompt = CASES[1].prompt_ids;
  const s = greedy(10, { temperature: 0.9, topP: 0.9, seed: 4242 });
  const out = (await run(core, c, 'a', prompt, s)).tokens;
  await core.whenIdle();
  assert.is(out.length, 10);
  assert.not.equal(out, CASES[1].greedy_ids.slice(0, 10), 'sampling is not greedy');
  core.flushCache();
  for (let k = 0; k < out.length; k++) {
    const z = await lastLogits([...prompt, ...out.slice(0, k)], 80);
    assert.is(out[k], sampleToken(z, s.temperature, s.topP, s.seed!, k), `token ${k}`);
  }
});

test('the same seed gives the same output on another engine and batched with other requests', async () => {
  const c1 = new Collector();
  const c2 = new Collector();
  const e1 = makeCore(model, { collector: c1, name: 'e1' });
  const s = (seed: number) => greedy(12, { temperature: 1.2, topP: 0.95, seed });
  const a = await run(e1, c1, 'x', CASES[0].prompt_ids, s(7));
  await e1.whenIdle();
  e1.flushCache();
  const e2 = makeCore(model, { collector: c2, name: 'e2', maxBatchTokens: 16 }); // chunked prefill
  const [b, other, g] = await Promise.all([
    run(e2, c2, 'x', CASES[0].prompt_ids, s(7)),
    run(e2, c2, 'y', CASES[2].prompt_ids, s(8)),
    run(e2, c2, 'g', CASES[1].prompt_ids, greedy(CASES[1].greedy_ids.length)),
  ]);
  assert.equal(b.tokens, a.tokens);
  assert.is(other.tokens.length, 12);
  assert.equal(g.tokens, CASES[1].greedy_ids, 'greedy output unchanged next to sampled requests');
  await e2.whenIdle();
  const d = await run(e2, c2, 'z', CASES[0].prompt_ids, s(9));
  assert.not.equal(d.tokens, a.tokens, 'another seed, another stream');
});

test.run();
