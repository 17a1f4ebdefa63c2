// Structured outputs on the CUDA backend: kjv-chat (a real model) on a cuda engine with a json
// grammar and a nested json_schema, greedy: the output parses and validates and ends with `stop`,
// as on the CPU (the mask is applied in the logit-processing kernel before the sampling kernels).
// And every token a masked step drew is one its mask allowed (a mask of a few tokens per step:
// the draw must land in it even at temperature 1). Needs an addon built with CUDA and a GPU
// (MICROSERVE_CUDA_DEVICE, default cuda:0); elsewhere it skips.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { tokenizerOption } from '../../actors/engine/actor.ts';
import { packSampling } from '../../actors/engine/sampler.ts';
import { loadAddon } from '../../native/addon.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { Collector, makeCore, run, usedPages } from '../engine/helpers.ts';
import { pageRange } from '../native/helpers.ts';
import { Person, folder, prompt, withEos } from '../shared/kjv-grammar.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const hasCuda = Boolean((loadAddon() as { hasCuda?: boolean }).hasCuda);
let model: LoadedModel;

if (!hasCuda) {
  test('CUDA grammar test skipped: the addon has no CUDA', () => {});
} else {
  test.before(async () => {
    model = await openModel(folder, { device: DEVICE, numPages: 256, pageSize: 16 });
  });
  test.after(() => model.backend.close());

  const { withGrammar, text } = withEos(() => model.config.eosTokenIds);

  test('json_object and a nested json_schema on a cuda engine: valid, validated, stop', async () => {
    const c = new Collector();
    const core = makeCore(model, { collector: c, ...tokenizerOption({ folder, isPreset: false }) });
    const any = await run(core, c, 'obj', prompt('Who was the son of Abraham? Answer in JSON.'), withGrammar({ type: 'json' }, 160));
    assert.is(any.finish, 'stop', text(any.tokens));
    assert.type(JSON.parse(text(any.tokens)), 'object');
    const schema = JSON.stringify(z.toJSONSchema(Person));
    const s = await run(core, c, 'person', prompt('Tell me of a man of Israel, in JSON.'), withGrammar({ type: 'json', schema }, 200));
    assert.is(s.finish, 'stop', text(s.tokens));
    Person.parse(JSON.parse(text(s.tokens)));
    await core.whenIdle();
    assert.equal(c.problems, []);
    assert.is(usedPages(core), 0);
    core.close();
  });

  test('a sampled row lands in its mask (temperature 1, a few allowed tokens per row)', async () => {
    const b = model.backend;
    const vocab = b.config.vocabSize;
    const words = Math.ceil(vocab / 32);
    const rows = 16;
    const ids = prompt('Hello');
    const seqs = Array.from({ length: rows }, (_, s) => ({ tokens: Int32Array.from(ids), startPos: 0, pageTable: pageRange(s * 8, 8) }));
    for (let step = 0; step < 3; step++) {
      const mask = new Uint32Array(rows * words);
      const allowed = Array.from({ length: rows }, (_, s) => [(s * 97 + step * 13) % vocab, (s * 389 + 7) % vocab, (s * 1013 + step) % vocab]);
      allowed.forEach((a, s) => a.forEach((t) => (mask[s * words + (t >> 5)] |= 1 << (t & 31))));
      const sampling = { ...packSampling(seqs.map((_, s) => ({ temperature: 1, topP: 1, seed: s, step }))), extras: { allowedMask: mask } };
      const out = await b.forwardTokens({ seqs, sampling });
      out.forEach((t, s) => assert.ok(allowed[s].includes(t), `step ${step} row ${s}: ${t} not in ${allowed[s]}`));
    }
  });
}

test.run();
