// Masks supplied late (ForwardSampling.maskGate) on the CUDA backend, kjv-chat: decode steps of
// graph buckets (the bucket's logits graph, then the extras and sampler eagerly after the gate)
// and an eager prefill step give the tokens of the same steps with the masks up front; sampled
// tokens land in their masks; a gate never opened fails its step with MASK_TIMEOUT and the
// backend serves on; the engine's gated grammar steps produce valid output. Needs an addon built
// with CUDA and a GPU (MICROSERVE_CUDA_DEVICE, default cuda:0); elsewhere it skips.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { tokenizerOption } from '../../actors/engine/actor.ts';
import { packSampling } from '../../actors/engine/sampler.ts';
import type { ForwardSampling, ForwardSeq } from '../../native/backend.ts';
import { loadAddon } from '../../native/addon.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { Collector, makeCore, run, usedPages } from '../engine/helpers.ts';
import { pageRange } from '../native/helpers.ts';
import { folder, prompt, withEos } from '../shared/kjv-grammar.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const hasCuda = Boolean((loadAddon() as { hasCuda?: boolean }).hasCuda);
let model: LoadedModel;

if (!hasCuda) {
  test('CUDA mask gate test skipped: the addon has no CUDA', () => {});
} else {
  test.before(async () => {
    model = await openModel(folder, { device: DEVICE, numPages: 1024, pageSize: 16 });
  });
  test.after(() => model.backend.close());

  /** A few allowed tokens per row (every 4th row allows everything). */
  function masksOf(rows: number, words: number, vocab: number, step: number): Uint32Array {
    const m = new Uint32Array(rows * words);
    for (let s = 0; s < rows; s++) {
      if (s % 4 === 3) m.fill(0xffffffff, s * words, (s + 1) * words);
      else for (const t of [(s * 97 + step * 13) % vocab, (s * 389 + 7) % vocab, (s * 1013 + step) % vocab]) m[s * words + (t >> 5)] |= 1 << (t & 31);
    }
    return m;
  }

  test('gated steps (graph buckets and an eager prefill) sample what masks up front sample', async () => {
    const b = model.backend;
    const vocab = b.config.vocabSize;
    const words = Math.ceil(vocab / 32);
    const ids = prompt('Hello there');
    let gateId = 1;
    for (const rows of [1, 5, 64]) {
      // two identical sets of sequences: one decodes with masks up front, the other gated
      const seqsOf = (set: number, tokens: Int32Array[], pos: number): ForwardSeq[] =>
        tokens.map((t, s) => ({ tokens: t, startPos: pos, pageTable: pageRange((set * 64 + s) * 8, 8) }));
      const prompts = Array.from({ length: rows }, () => Int32Array.from(ids));
      const sampling = (step: number): ForwardSampling => packSampling(prompts.map((_, s) => ({ temperature: s % 2 ? 1 : 0, topP: 1, seed: s, step })));
      let pos = 0;
      let a: Int32Array[] = prompts;
      let g: Int32Array[] = prompts;
      for (let step = 0; step < 4; step++) {
        const m = masksOf(rows, words, vocab, step);
        const upFront = await b.forwardTokens({ seqs: seqsOf(0, a, pos), sampling: { ...sampling(step), extras: { allowedMask: m } } });
        const id = gateId++;
        const gated = b.forwardTokens({ seqs: seqsOf(1, g, pos), sampling: { ...sampling(step), maskGate: { id, timeoutMs: 30_000 } } });
        await new Promise((r) => setTimeout(r, 5)); // the backend reaches its gate with the forward queued
        assert.is(b.supplyMasks(id, m), true);
        const late = await gated;
        assert.equal([...late], [...upFront], `rows ${rows} step ${step} (${step === 0 ? 'eager prefill' : 'graph decode'})`);
        upFront.forEach((t, s) => assert.ok((m[s * words + (t >> 5)] >>> (t & 31)) & 1, `rows ${rows} step ${step} row ${s}: ${t} outside its mask`));
        pos += a[0].length;
        a = [...upFront].map((t) => Int32Array.of(t));
        g = [...late].map((t) => Int32Array.of(t));
      }
    }
  });

  test('a gate never opened fails its step with MASK_TIMEOUT; the backend serves on', async () => {
    const b = model.backend;
    const seqs = [{ tokens: Int32Array.of(1), startPos: 0, pageTable: pageRange(900, 1) }];
    try {
      await b.forwardTokens({ seqs, sampling: { ...packSampling([{ temperature: 0, topP: 1, seed: 0, step: 0 }]), maskGate: { id: 77, timeoutMs: 200 } } });
      assert.unreachable('the step should fail');
    } catch (e) {
      assert.is((e as { info?: { nativeCode?: string } }).info?.nativeCode, 'MASK_TIMEOUT', (e as Error).message);
    }
    const out = await b.forwardTokens({ seqs, sampling: packSampling([{ temperature: 0, topP: 1, seed: 0, step: 0 }]) });
    assert.is(out.length, 1);
  });

  test('the engine on cuda: gated grammar steps give valid JSON for a batch, with two grammar workers', async () => {
    const { withGrammar, text } = withEos(() => model.config.eosTokenIds);
    const c = new Collector();
    const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }), grammarWorkers: 2 });
    const outs = await Promise.all(Array.from({ length: 12 }, (_, i) => run(core, c, `r${i}`, prompt(`Name a city of Judah, number ${i}, in JSON.`), withGrammar({ type: 'json' }, 100, i % 2 ? { temperature: 0.8, topP: 0.95, seed: i } : {}))));
    for (const s of outs) if (s.finish === 'stop') assert.type(JSON.parse(text(s.tokens)), 'object');
    assert.ok(core.grammarStats.numFills > 0);
    await core.whenIdle();
    assert.equal(c.problems, []);
    assert.is(usedPages(core), 0);
    core.close();
  });
}

test.run();
