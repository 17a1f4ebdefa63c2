// Prompt logprobs on the engine (sampling.promptLogprobs, actors/engine/prompt-logprobs.ts) on the
// CPU backend: with a chunked prefill, and for a prompt whose prefix is cached (the engine must
// compute it anyway), the first tokens message carries each prompt token's logprob and top ids,
// equal to the log-softmax of the engine's own logits at every position; maxTokens 0 scores the
// prompt alone; a start_generate that would take received KV is refused naming the field.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TokenLogprob, TokensItem } from '../../actors/messages.ts';
import type { LoadedModel } from '../../native/index.ts';
import { logprobsOf } from '../shared/logit-processing-reference.ts';
import { CASES, Collector, greedy, makeCore, openFixture, run } from './helpers.ts';

let model: LoadedModel;
test.before(async () => {
  model = await openFixture(96);
});
test.after(() => model.backend.close());

/** A collector that also keeps each request's promptLogprobs (and how many messages carried them). */
function collect() {
  const c = new Collector();
  const prompt = new Map<string, TokenLogprob[][]>();
  const sink = (to: string, items: TokensItem[]) => {
    for (const m of items) if (m.promptLogprobs) prompt.set(m.id, [...(prompt.get(m.id) ?? []), m.promptLogprobs]);
    c.sink(to, items);
  };
  return { c, prompt, sink };
}

/** Checks `got` (prompt tokens 1..) against the log-softmax of the logits of every position of `ids`. */
async function checkAgainstLogits(ids: number[], got: TokenLogprob[], numTop: number) {
  const z = await model.backend.forward({ seqs: [{ tokens: Int32Array.from(ids), startPos: 0, pageTable: Int32Array.from({ length: 8 }, (_, i) => 80 + i) }], logits: 'all' });
  const V = z.length / ids.length;
  assert.is(got.length, ids.length - 1);
  got.forEach((lp, i) => {
    const ref = logprobsOf(z.subarray(i * V, (i + 1) * V), 1, ids[i + 1], numTop);
    assert.ok(Math.abs(lp.logprob - ref.logprob) < 1e-4, `token ${i + 1}: ${lp.logprob} vs ${ref.logprob}`);
    assert.equal(lp.top.map(([id]) => id), ref.top.map(([id]) => id), `token ${i + 1} top ids`);
    lp.top.forEach(([, v], k) => assert.ok(Math.abs(v - ref.top[k][1]) < 1e-4));
  });
}

test('a chunked prefill gives every prompt token its logprob, once, with the first tokens', async () => {
  const { c, prompt, sink } = collect();
  const core = makeCore(model, { collector: c, sink, maxBatchTokens: 8 });
  const ids = [...CASES[1].prompt_ids, ...CASES[2].prompt_ids].slice(0, 40);
  const out = await run(core, c, 'p', ids, greedy(3, { promptLogprobs: 4 }));
  assert.is(out.tokens.length, 3);
  assert.is(prompt.get('p')?.length, 1, 'sent once');
  await checkAgainstLogits(ids, prompt.get('p')![0], 4);
  await core.whenIdle();
});

test('a cached prompt is computed again for its logprobs; maxTokens 0 scores it alone', async () => {
  const { c, prompt, sink } = collect();
  const core = makeCore(model, { collector: c, sink });
  const ids = CASES[0].prompt_ids;
  await run(core, c, 'warm', ids, greedy(2));
  const before = core.status().counters.tokensPrefilled;
  const scored = await run(core, c, 's', ids, greedy(0, { promptLogprobs: 2 }));
  assert.equal(scored.tokens, []);
  assert.is(scored.finish, 'length');
  assert.ok(core.status().counters.tokensPrefilled - before >= ids.length, 'the whole prompt was computed');
  await checkAgainstLogits(ids, prompt.get('s')![0], 2);
  const plain = await run(core, c, 'n', ids, greedy(0));
  assert.equal(plain.tokens, []);
  assert.not.ok(prompt.has('n'), 'no prompt logprobs unasked');
  await core.whenIdle();
});

test('a start_generate on received KV with prompt logprobs is refused naming the field', async () => {
  const { c, sink } = collect();
  const core = makeCore(model, { collector: c, sink });
  const ids = CASES[2].prompt_ids;
  core.prepRecv({ id: 'r', promptIds: ids, end: ids.length - 1 });
  assert.throws(
    () => core.startGenerate({ id: 'r', promptIds: ids, begin: ids.length - 1, sampling: greedy(2, { promptLogprobs: 1 }), replyTo: 't' }),
    (e: any) => e.code === 'BAD_REQUEST' && e.info?.field === 'sampling.promptLogprobs',
  );
  core.abort('r');
  await core.whenIdle();
});

test.run();
