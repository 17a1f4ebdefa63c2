// Prompt logprobs on the CPU backend (Batch::promptLogprobs, native/src/backend.h): in a sampling
// forward, the tokens that ask get the logprob of their target (the next prompt token) and the top
// entries of their own position's raw logits, equal to the log-softmax of the same positions'
// logits from a logits forward; tokens that do not ask are left untouched; a sequence without them
// in the same batch samples as before; bad inputs are typed errors naming the field.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { packSampling } from '../../actors/engine/sampler.ts';
import type { ForwardPromptLogprobs } from '../../native/backend.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { logprobsOf } from '../shared/logit-processing-reference.ts';
import { FIXTURE, REFERENCE, pageRange, rejects } from './helpers.ts';

const VOCAB = 1024;
let model: LoadedModel;
test.before(async () => {
  model = await openModel(FIXTURE, { numPages: 64, pageSize: 16, numThreads: 2, maxNumSeqs: 4 });
});
test.after(() => model.backend.close());

function promptInput(numTokens: number, numTop: number[], targets: number[]): ForwardPromptLogprobs {
  return {
    numTop: Int32Array.from(numTop),
    targets: Int32Array.from(targets),
    logprobsOut: new Float32Array(numTokens * 21).fill(7),
    topIdsOut: new Int32Array(numTokens * 20).fill(-7),
  };
}

test("each asking token's target logprob and top entries are the log-softmax of its own logits", async () => {
  const a = REFERENCE.cases[0].prompt_ids, b = REFERENCE.cases[1].prompt_ids;
  const seqs = [
    { tokens: Int32Array.from(a), startPos: 0, pageTable: pageRange(0, 8) },
    { tokens: Int32Array.from(b), startPos: 0, pageTable: pageRange(8, 8) },
  ];
  const all = await model.backend.forward({ seqs, logits: 'all' });
  // Sequence 0 asks for every position but its last (the next token there is sampled); sequence 1
  // for none. maxNumSeqs 4: the rows go through the head in several chunks.
  const targets = [...a.slice(1), -1, ...b.map(() => -1)];
  const p = promptInput(a.length + b.length, [5, 0], targets);
  const greedy = packSampling([0, 1].map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 })));
  const tokens = await model.backend.forwardTokens({ seqs, sampling: { ...greedy, promptLogprobs: p } });
  assert.equal([...tokens], [REFERENCE.cases[0].greedy_ids[0], REFERENCE.cases[1].greedy_ids[0]], 'sampling unchanged');
  let maxErr = 0;
  for (let t = 0; t < targets.length; t++) {
    const lp = p.logprobsOut.subarray(t * 21, (t + 1) * 21);
    const ids = p.topIdsOut.subarray(t * 20, (t + 1) * 20);
    if (targets[t] < 0) {
      assert.ok(lp.every((v) => v === 7) && ids.every((v) => v === -7), `row ${t} without a target is untouched`);
      continue;
    }
    const ref = logprobsOf(all.subarray(t * VOCAB, (t + 1) * VOCAB), 1, targets[t], 5);
    maxErr = Math.max(maxErr, Math.abs(lp[0] - ref.logprob), ...ref.top.map(([, v], k) => Math.abs(lp[1 + k] - v)));
    assert.equal([...ids.subarray(0, 5)], ref.top.map(([id]) => id), `row ${t} top ids`);
    assert.equal([...ids.subarray(5)], new Array(15).fill(-1), `row ${t}: -1 past the asked count`);
    assert.ok(lp.subarray(6).every((v) => v === -Infinity));
  }
  assert.ok(maxErr < 1e-4, `logprobs within 1e-4 (max error ${maxErr})`);
});

test('bad prompt logprob inputs are typed errors naming the field', async () => {
  const seqs = [{ tokens: Int32Array.of(1, 2, 3), startPos: 0, pageTable: pageRange(20, 1) }];
  const s = packSampling([{ temperature: 0, topP: 1, seed: 0, step: 0 }]);
  await rejects(model.backend.forwardTokens({ seqs, sampling: { ...s, promptLogprobs: promptInput(3, [21], [2, 3, -1]) } }), 'NATIVE_ERROR', 'numTop'); // native BAD_ARGUMENT
  await rejects(model.backend.forwardTokens({ seqs, sampling: { ...s, promptLogprobs: promptInput(3, [1], [2, VOCAB, -1]) } }), 'BAD_TOKEN', 'targets');
  await rejects(model.backend.forwardTokens({ seqs, sampling: { ...s, promptLogprobs: promptInput(2, [1], [2, 3]) } }), 'NATIVE_ERROR', 'targets');
  const ok = await model.backend.forwardTokens({ seqs, sampling: { ...s, promptLogprobs: promptInput(3, [0], [2, 3, -1]) } });
  assert.is(ok.length, 1);
});

test.run();
