/**
 * What the bench asks the server (bench/runner/served-model.ts): the model card of a real router
 * (in-process engine doubles, test/router/harness.ts), its /tokenize as sharegpt's tokenizer, and
 * the range and vocabulary checks.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';
import { checkTraceVocab, fetchServedModel, resolveTokenIdMax, serverEncoder } from '../../bench/runner/served-model.ts';
import { startHarness } from '../router/harness.ts';
import { startFakeServer } from './fake-server.ts';

test('a real router: the model card carries the vocabulary; /tokenize encodes as the model does', async () => {
  const h = await startHarness([{ name: 'e0', role: 'both' }]);
  try {
    const m = await fetchServedModel(h.url);
    assert.equal(m, { id: 'tiny', vocabSize: 128256, baseVocabSize: 128000 });
    const encode = await serverEncoder(h.url, m);
    assert.ok(encode, 'the router has /tokenize');
    const tok = Llama3PresetTokenizer.get();
    const text = 'What is the capital of France? Please answer briefly.';
    assert.equal(await encode!(text, true), tok.encode(text, { addBos: true }));
    assert.equal(await encode!(text, false), tok.encode(text, { addBos: false }));
  } finally {
    await h.close();
  }
});

test('a server without /tokenize or a vocabulary: no encoder, the fallback range', async () => {
  const s = await startFakeServer({ firstDelayMs: 1, gapMs: 1 });
  try {
    const m = await fetchServedModel(s.url);
    assert.equal(m, { id: 'fake', vocabSize: null, baseVocabSize: null });
    assert.is(await serverEncoder(s.url, m), null);
    assert.is(resolveTokenIdMax(undefined, m), 128000);
    assert.is(resolveTokenIdMax(500_000, m), 500_000, 'nothing to check against');
  } finally {
    await s.close();
  }
});

test('ranges and vocabulary checks', () => {
  const kjv = { id: 'kjv-chat', vocabSize: 4096, baseVocabSize: 4091 };
  assert.is(resolveTokenIdMax(undefined, kjv), 4091);
  assert.is(resolveTokenIdMax(4096, kjv), 4096);
  assert.throws(() => resolveTokenIdMax(4097, kjv), (e: any) => e.code === 'BAD_CONFIG' && e.info.field === 'token-id-max' && /4097 is beyond .* 'kjv-chat' \(4096 token ids\)/.test(e.message));
  assert.is(resolveTokenIdMax(undefined, { id: 'x', vocabSize: 300, baseVocabSize: null }), 300);
  checkTraceVocab([{ promptIds: [0, 4095] }], kjv, 'trace');
  assert.throws(() => checkTraceVocab([{ promptIds: [1] }, { promptIds: [2, 9000] }], kjv, 'sharegpt'), (e: any) => e.code === 'BAD_CONFIG' && /sharegpt: token id 9000 is beyond/.test(e.message));
});

test.run();
