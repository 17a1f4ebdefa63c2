// The kjv-chat pipeline (models/train/) end to end, on test/fixtures/kjv-smoke: a folder written
// by models/train/train.py in a CPU smoke run (tiny shape, f32; its train-report.json records
// the exact command). Checks that what the Python trainer wrote is what microserve reads:
// tokenizer ids, chat template, EOS, and greedy generation through the normal checkpoint path
// equal to the trainer's own PyTorch model.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import { loadTokenizer } from '../../actors/text/loader.ts';
import { runGenerate } from '../../bin/commands/generate.ts';
import { resolveModelSource, shippedModelFolder } from '../../native/model-source.ts';

const FIXTURE = fileURLToPath(new URL('../fixtures/kjv-smoke', import.meta.url));
const SAMPLES: { text: string; ids: number[] }[] = JSON.parse(readFileSync(`${FIXTURE}/tokenizer-samples.json`, 'utf8'));
const REPORT: { samples: { prompt: string; ids: number[]; stoppedAtEos: boolean }[] } = JSON.parse(readFileSync(`${FIXTURE}/train-report.json`, 'utf8'));
const CONFIG = JSON.parse(readFileSync(`${FIXTURE}/config.json`, 'utf8'));
const tok = (await loadTokenizer({ folder: FIXTURE, isPreset: false }))!;

test('@huggingface/tokenizers encodes the trainer\'s documents to the ids it trained on', () => {
  assert.ok(SAMPLES.length >= 20);
  for (const s of SAMPLES) {
    assert.equal(tok.encode(s.text, { addBos: false }), s.ids, s.text.slice(0, 80));
    assert.is(tok.decode(s.ids), s.text);
  }
});

test('any text round-trips (byte-level: accents, emoji, runs of spaces, newlines)', () => {
  const text = 'Grüße, naïve café! 日本語 🦙 2024  two  spaces\n\n\tend';
  assert.is(tok.decode(tok.encode(text, { addBos: false })), text);
});

test('BOS/EOS and the chat template come from the folder', () => {
  assert.is(tok.kind, 'hf');
  assert.is(tok.bosTokenId, CONFIG.bos_token_id);
  assert.equal(tok.eosTokenIds, [CONFIG.eos_token_id]);
  // the ordinary tokens end where the special ones (<|end|> ... <|begin|>) start
  const added: { id: number }[] = JSON.parse(readFileSync(`${FIXTURE}/tokenizer.json`, 'utf8')).added_tokens;
  assert.is(tok.baseVocabSize, Math.min(...added.map((t) => t.id)));
  assert.is(tok.vocabSize, CONFIG.vocab_size);
  const ids = tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Tell me about light.' }]);
  assert.is(tok.decode(ids), '<|begin|><|system|>\nBe brief.<|end|>\n<|user|>\nTell me about light.<|end|>\n<|assistant|>\n');
  try {
    tok.applyChatTemplate([{ role: 'tool' as 'user', content: 'x' }]);
    assert.unreachable('a tool message must be refused');
  } catch (e) {
    assert.ok(isMicroserveError(e) && e.code === 'BAD_REQUEST' && /tool/.test(e.message), String(e));
  }
});

test('greedy generation through the checkpoint path equals the trainer\'s PyTorch model (and stops at EOS where it did)', async () => {
  // a 500-step smoke model may not reach EOS in its samples; where the trainer's did, the engine must stop there too
  for (const s of REPORT.samples) {
    const r = await runGenerate(
      { model: FIXTURE, prompt: s.prompt, chat: true, maxTokens: String(s.stoppedAtEos ? s.ids.length + 8 : s.ids.length), temperature: '0', topP: '1', device: 'cpu', threads: '1', pageSize: '16', json: true },
      () => {},
    );
    // the engine stops at the same EOS (it streams the stop token, as the trainer's list has it)
    assert.equal(r.ids, s.ids, s.prompt);
    if (s.stoppedAtEos) assert.ok(r.text !== null && !r.text.includes('<|end|>'), 'the EOS is not part of the text');
  }
});

test('model names: presets are random, folders and shipped names are not', () => {
  assert.is(resolveModelSource('tiny').isRandom, true);
  assert.match(resolveModelSource('tiny').weights, /random/);
  const f = resolveModelSource(FIXTURE);
  assert.equal([f.folder, f.name, f.isRandom], [FIXTURE, 'kjv-smoke', false]);
  assert.is(shippedModelFolder('../kjv-chat'), null, 'a path is never a shipped name');
  // a topology hands the shipped model on as its absolute folder: still named and described as shipped
  const shipped = resolveModelSource(shippedModelFolder('kjv-chat')!);
  assert.equal([shipped.name, shipped.isRandom], ['kjv-chat', false]);
  assert.match(shipped.weights, /^trained weights shipped with microserve/);
  assert.is(shippedModelFolder('train'), null, 'models/train has no config.json: not a model');
});

test.run();
