// The sampling extras on the GPU (common/logit-processing.h run by cuda/logit-processing.cu and the
// sampler): through the CUDA backend on the fixture, a prefill step and decode steps (graph
// replays with the extras' kernels, penalty slots kept on the device) with penalties, top_k,
// min_p, logit_bias, bans, an allowed mask and logprobs give the tokens and logprobs of the TS
// reference on the same step's logits (the CUDA backend's own: its bf16 logits differ from the
// CPU backend's); then an engine on each backend runs the same penalised greedy request: the same
// tokens wherever the CPU's processed margin is clear of bf16 rounding, logprobs within bf16
// tolerance; prompt logprobs from the GPU's own logits of every position. Needs an addon built with CUDA and a GPU (MICROSERVE_CUDA_DEVICE, default cuda:0);
// elsewhere it checks that a cuda device is refused with NO_DEVICE.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SamplingBatch, SamplingSlots } from '../../actors/engine/sampling-params.ts';
import { Request } from '../../actors/engine/request.ts';
import type { SamplingParams } from '../../actors/messages.ts';
import { loadAddon } from '../../native/addon.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { logprobsOf, processLogits, sampleProcessed } from '../shared/logit-processing-reference.ts';
import { argmax } from '../shared/sampling-reference.ts';
import { CASES, Collector, greedy, makeCore, run } from '../engine/helpers.ts';
import { FIXTURE, pageRange, rejects } from '../native/helpers.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const PAGE = 16;
const VOCAB = 1024;

/** Row parameters covering every extra (each request of the batch takes one). */
const ROWS: Partial<SamplingParams>[] = [
  { temperature: 0.9, topP: 0.95, seed: 1, repetitionPenalty: 1.3, presencePenalty: 0.4, frequencyPenalty: 0.3, logprobs: 5 },
  { temperature: 1.1, topP: 1, seed: 2, topK: 8, logprobs: 20 },
  { temperature: 0.8, topP: 0.9, seed: 3, minP: 0.05, logitBias: [[5, 2.5], [9, -100], [5, 0.5]] },
  { temperature: 0, topP: 1, repetitionPenalty: 0.7, frequencyPenalty: -0.5, logprobs: 0 },
  { temperature: 1.3, topP: 0.8, seed: 5, topK: 40, minP: 0.02, presencePenalty: 1, stopTokenIds: [7, 11], minTokens: 50, logprobs: 3 },
  { temperature: 0.7, topP: 1, seed: 6 }, // no extras: a plain row in an extras batch
];

if (!loadAddon().hasCuda) {
  test('without a CUDA build, a cuda device is refused with NO_DEVICE', () =>
    rejects(() => openModel(FIXTURE, { device: DEVICE, numPages: 4, pageSize: PAGE }), 'NO_DEVICE', DEVICE));
} else {
  let model: LoadedModel;
  test.before(async () => {
    model = await openModel(FIXTURE, { device: DEVICE, numPages: 96, pageSize: PAGE });
  });
  test.after(() => model.backend.close());

  test('prefill and graph decode steps with every extra: tokens and logprobs of the reference on the same logits', async () => {
    const slots = new SamplingSlots(model.backend.plan.maxNumSeqs);
    const reqs = ROWS.map((p, i) => new Request({ id: `r${i}`, kind: 'generate', promptIds: CASES[i % CASES.length].prompt_ids, sampling: greedy(12, p) }));
    // Row 1 asks for a grammar-style mask: every other token allowed.
    const mask = new Uint32Array(VOCAB / 32).fill(0x55555555);
    let greedyBad = 0, sampledDiffer = 0, numSampled = 0, lpErr = 0, topBad = 0;
    for (let k = 0; k < 10; k++) {
      reqs[1].allowedMask = k % 2 === 0 ? mask : null;
      const seqs = reqs.map((r, i) => (k === 0 ? { tokens: r.slice(0, r.totalLen), startPos: 0 } : { tokens: r.slice(r.totalLen - 1, 1), startPos: r.totalLen - 1 })).map((s, i) => ({ ...s, pageTable: pageRange(12 * i, 12) }));
      const logits = await model.backend.forward({ seqs });
      const sb = new SamplingBatch(reqs, slots);
      if (k > 0) assert.ok(sb.sampling.extras!.reset!.every((v) => v === 0), 'slots stay synced on the device');
      const tokens = await model.backend.forwardTokens({ seqs, sampling: sb.sampling });
      sb.commit();
      reqs.forEach((r, i) => {
        const p = r.sampling!;
        const numOut = r.outputIds.length;
        const bias: [number, number][] = [...(p.logitBias ?? [])];
        if (numOut < (p.minTokens ?? 0)) for (const t of p.stopTokenIds) bias.push([t, -Infinity]);
        const z = processLogits(logits.subarray(i * VOCAB, (i + 1) * VOCAB), { ...p, bias, allowedMask: r.allowedMask ?? undefined, history: p.repetitionPenalty || p.presencePenalty || p.frequencyPenalty ? r.tokens() : [], numOutput: numOut });
        if (p.temperature > 0) {
          numSampled++;
          sampledDiffer += Number(tokens[i] !== sampleProcessed(z, p.temperature, p.topP, r.seed, numOut, p.topK, p.minP));
        } else {
          greedyBad += Number(tokens[i] !== argmax(z));
        }
        if (p.logprobs !== undefined) {
          const ref = logprobsOf(z, p.temperature, tokens[i], p.logprobs);
          const got = r.lastLogprobs!;
          lpErr = Math.max(lpErr, Math.abs(got.logprob - ref.logprob), ...got.top.map(([, v], j) => Math.abs(v - ref.top[j][1])));
          topBad += Number(JSON.stringify(got.top.map(([id]) => id)) !== JSON.stringify(ref.top.map(([id]) => id)));
        }
        if (r.allowedMask) assert.ok(tokens[i] % 2 === 0, `step ${k}: the mask allows even ids only (got ${tokens[i]})`);
        r.outputIds.push(tokens[i]);
      });
    }
    assert.is(greedyBad, 0, 'greedy rows are the argmax of the processed logits');
    assert.ok(sampledDiffer * 20 <= numSampled, `${sampledDiffer} of ${numSampled} sampled tokens differ from the reference`);
    assert.is(topBad, 0, 'top logprob ids');
    assert.ok(lpErr < 1e-4, `logprobs within 1e-4 of the reference (max error ${lpErr})`);
  });

  test('bad extras are typed errors before the GPU, and the backend keeps serving', async () => {
    const seqs = [{ tokens: Int32Array.from(CASES[0].prompt_ids), startPos: 0, pageTable: pageRange(80, 8) }];
    const s = { temperature: Float32Array.of(1), topP: Float32Array.of(1), seed: Uint32Array.of(5), step: Uint32Array.of(0) };
    await rejects(model.backend.forwardTokens({ seqs, sampling: { ...s, extras: { topK: Int32Array.of(-2) } } }), 'NATIVE_ERROR', 'topK'); // native BAD_ARGUMENT (native/addon.ts)
    const past = { slot: Int32Array.of(model.backend.plan.maxNumSeqs), reset: Uint8Array.of(1), histOffsets: Int32Array.of(0, 1), histTokens: Int32Array.of(3), histNumOutput: Int32Array.of(0), repetitionPenalty: Float32Array.of(1.2) };
    await rejects(model.backend.forwardTokens({ seqs, sampling: { ...s, extras: past } }), 'NATIVE_ERROR', 'penalty slot');
    const greedyOut = await model.backend.forwardTokens({ seqs, sampling: { ...s, temperature: Float32Array.of(0) } });
    assert.is(greedyOut[0], CASES[0].greedy_ids[0]);
  });

  test("prompt logprobs: each asking token's target and top entries from its own logits (eager, head chunks)", async () => {
    const a = CASES[0].prompt_ids, b = CASES[1].prompt_ids;
    const seqs = [
      { tokens: Int32Array.from(a), startPos: 0, pageTable: pageRange(0, 8) },
      { tokens: Int32Array.from(b), startPos: 0, pageTable: pageRange(8, 8) },
    ];
    const all = await model.backend.forward({ seqs, logits: 'all' });
    const targets = [...a.slice(1), -1, ...b.slice(1).map((t, i) => (i % 2 ? t : -1)), -1];
    const n = targets.length;
    const p = { numTop: Int32Array.of(20, 3), targets: Int32Array.from(targets), logprobsOut: new Float32Array(n * 21).fill(7), topIdsOut: new Int32Array(n * 20).fill(-7) };
    const greedyS = { temperature: new Float32Array(2), topP: Float32Array.of(1, 1), seed: new Uint32Array(2), step: new Uint32Array(2) };
    const tokens = await model.backend.forwardTokens({ seqs, sampling: { ...greedyS, promptLogprobs: p } });
    assert.is(tokens[0], argmax(all.subarray((a.length - 1) * VOCAB, a.length * VOCAB)));
    let maxErr = 0;
    targets.forEach((tg, t) => {
      if (tg < 0) return assert.is(p.logprobsOut[t * 21], 7, `row ${t} untouched`);
      const k = t < a.length ? 20 : 3;
      const ref = logprobsOf(all.subarray(t * VOCAB, (t + 1) * VOCAB), 1, tg, k);
      maxErr = Math.max(maxErr, Math.abs(p.logprobsOut[t * 21] - ref.logprob), ...ref.top.map(([, v], j) => Math.abs(p.logprobsOut[t * 21 + 1 + j] - v)));
      assert.equal([...p.topIdsOut.subarray(t * 20, t * 20 + k)], ref.top.map(([id]) => id), `row ${t} top ids`);
    });
    assert.ok(maxErr < 1e-4, `within 1e-4 (max error ${maxErr})`);
  });

  test('an engine on the GPU and one on the CPU run the same penalised greedy request alike', async () => {
    const cpu = await openModel(FIXTURE, { numPages: 64, pageSize: PAGE, numThreads: 2 });
    try {
      const s = greedy(16, { repetitionPenalty: 1.4, frequencyPenalty: 0.6, presencePenalty: 0.3, logitBias: [[CASES[2].greedy_ids[0], -3]], topK: 5, logprobs: 4 });
      const prompt = CASES[2].prompt_ids;
      const cg = new Collector(), cc = new Collector();
      const [gpu, host] = await Promise.all([run(makeCore(model, { collector: cg }), cg, 'g', prompt, s), run(makeCore(cpu, { collector: cc, name: 'c0' }), cc, 'c', prompt, s)]);
      assert.is(gpu.tokens.length, 16);
      // Step by step while the two streams agree: where the CPU's processed top-2 margin is clear of
      // bf16 rounding the GPU must pick the same token; logprobs agree to bf16 tolerance.
      let compared = 0;
      for (let k = 0; k < host.tokens.length && gpu.tokens[k] === host.tokens[k]; k++, compared++) {
        assert.ok(Math.abs(gpu.logprobs[k].logprob - host.logprobs[k].logprob) < 5e-2, `logprob ${k}: ${gpu.logprobs[k].logprob} vs ${host.logprobs[k].logprob}`);
      }
      if (compared < host.tokens.length) {
        const k = compared;
        const hist = [...prompt, ...host.tokens.slice(0, k)];
        const z = await cpu.backend.forward({ seqs: [{ tokens: Int32Array.from(hist), startPos: 0, pageTable: pageRange(40, 8) }] });
        const pz = processLogits(z, { ...s, bias: s.logitBias, history: hist, numOutput: k });
        const sorted = Array.from(pz).sort((a, b) => b - a);
        assert.ok(sorted[0] - sorted[1] < 5e-2, `step ${k} differs (${gpu.tokens[k]} vs ${host.tokens[k]}) with a clear CPU margin ${sorted[0] - sorted[1]}`);
      }
      assert.ok(compared >= 4, `the streams agree on at least their first 4 tokens (${compared})`);
    } finally {
      cpu.backend.close();
    }
  });
}

test.run();
