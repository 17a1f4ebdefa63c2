// Sampling on the GPU through the CUDA backend (eager prefill and CUDA-graph decode): greedy tokens
// equal the argmax of the same step's logits, sampled tokens equal the TS sampler on them (the GPU
// computes weights in float32, so a boundary may rarely move: at most one row in 20 may differ).
// Needs an addon built with CUDA and a GPU (MICROSERVE_CUDA_DEVICE, default cuda:0); elsewhere it
// checks that a cuda device is refused with NO_DEVICE.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { packSampling, type SampleRow } from '../../actors/engine/sampler.ts';
import { argmax, sampleToken } from '../shared/sampling-reference.ts';
import { loadAddon } from '../../native/addon.ts';
import type { ForwardBatch } from '../../native/backend.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, pageRange, rejects } from '../native/helpers.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const PAGE = 16;
const VOCAB = 1024;

if (!loadAddon().hasCuda) {
  test('without a CUDA build, a cuda device is refused with NO_DEVICE', () =>
    rejects(() => openModel(FIXTURE, { device: DEVICE, numPages: 4, pageSize: PAGE }), 'NO_DEVICE', DEVICE));
} else {
  let model: LoadedModel;
  test.before(async () => {
    model = await openModel(FIXTURE, { device: DEVICE, numPages: 64, pageSize: PAGE });
  });
  test.after(() => model.backend.close());

  const rowsFor = (n: number, salt: number): SampleRow[] =>
    Array.from({ length: n }, (_, s) => ({ temperature: [0, 0.8, 1.3, 0.5][s % 4], topP: [1, 0.9, 1, 0.6][(s + salt) % 4], seed: 77 + s, step: salt }));

  /** Same batch twice: logits, then tokens; counts where they disagree (greedy must not). */
  async function compare(batch: ForwardBatch, rows: SampleRow[]): Promise<{ greedyBad: number; sampledDiffer: number; numSampled: number }> {
    const logits = await model.backend.forward(batch);
    const tokens = await model.backend.forwardTokens({ ...batch, sampling: packSampling(rows) });
    let greedyBad = 0;
    let sampledDiffer = 0;
    let numSampled = 0;
    rows.forEach((r, s) => {
      const z = logits.subarray(s * VOCAB, (s + 1) * VOCAB);
      if (r.temperature <= 0) greedyBad += Number(tokens[s] !== argmax(z));
      else {
        numSampled++;
        sampledDiffer += Number(tokens[s] !== sampleToken(z, r.temperature, r.topP, r.seed, r.step));
      }
    });
    return { greedyBad, sampledDiffer, numSampled };
  }

  test('prefill (eager) and decode steps (graph replay): tokens on the GPU match the logits path', async () => {
    const cases = REFERENCE.cases;
    const pages = (i: number) => pageRange(8 * i, 8);
    const prefill: ForwardBatch = { seqs: cases.map((c, i) => ({ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pages(i) })) };
    let totals = { greedyBad: 0, sampledDiffer: 0, numSampled: 0 };
    const add = (r: typeof totals) => (totals = { greedyBad: totals.greedyBad + r.greedyBad, sampledDiffer: totals.sampledDiffer + r.sampledDiffer, numSampled: totals.numSampled + r.numSampled });
    add(await compare(prefill, rowsFor(cases.length, 0)));
    // Greedy decode of every case, batched: the tokens path alone drives it and must reproduce
    // the logits path's argmax at each step.
    const greedy = packSampling(cases.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 })));
    let next = [...(await model.backend.forwardTokens({ ...prefill, sampling: greedy }))];
    for (let k = 1; k < 12; k++) {
      const step: ForwardBatch = { seqs: cases.map((c, i) => ({ tokens: Int32Array.of(next[i]), startPos: c.prompt_ids.length + k - 1, pageTable: pages(i) })) };
      add(await compare(step, rowsFor(cases.length, k)));
      next = [...(await model.backend.forwardTokens({ ...step, sampling: greedy }))];
    }
    assert.is(totals.greedyBad, 0, 'greedy tokens are the argmax of the logits');
    assert.ok(totals.sampledDiffer * 20 <= totals.numSampled, `${totals.sampledDiffer} of ${totals.numSampled} sampled tokens differ from TS`);
  });

  test('a seeded step is reproducible and bad inputs are refused before the GPU', async () => {
    const batch: ForwardBatch = { seqs: [{ tokens: Int32Array.from(REFERENCE.cases[0].prompt_ids), startPos: 0, pageTable: pageRange(40, 8) }] };
    const s = packSampling([{ temperature: 1, topP: 0.95, seed: 5, step: 9 }]);
    const a = await model.backend.forwardTokens({ ...batch, sampling: s });
    const b = await model.backend.forwardTokens({ ...batch, sampling: s });
    assert.equal([...a], [...b]);
    try {
      await model.backend.forwardTokens({ ...batch, sampling: { ...s, topP: Float32Array.of(2) } });
      assert.unreachable('topP 2 accepted');
    } catch (e) {
      assert.is((e as { code?: string }).code, 'BAD_REQUEST');
    }
  });

}

test.run();
