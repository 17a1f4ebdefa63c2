import llama3 from 'llama3-tokenizer-js';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import { LLAMA3_TOKENS } from '../../actors/text/llama3.ts';
import { loadTokenizer } from '../../actors/text/loader.ts';
import type { Tokenizer } from '../../actors/text/tokenizer.ts';
import { HF_SPECIAL, writeHfTokenizerFolder } from './hf-fixture.ts';

const FIXTURE = fileURLToPath(new URL('../fixtures/tiny-llama-a', import.meta.url));
const preset = (await loadTokenizer({ folder: null, isPreset: true }))!;
const SAMPLE = 'Grüße, naïve café! 日本語のテキスト 🦙🦙 emoji ✓ and code: `x => x ** 2`\n\tdone.';

/** Pushes ids one at a time; returns the pieces and the text. */
function streamOneByOne(tok: Tokenizer, ids: number[]): { pieces: string[]; text: string } {
  const d = tok.createStreamDecoder();
  const pieces = ids.map((id) => d.push([id]));
  pieces.push(d.flush());
  return { pieces, text: pieces.join('') };
}

const byteToken = (byte: number): number => {
  // GPT-2 byte alphabet: 0xC3 and 0xA9 are printable, so they stand for themselves
  const id = llama3.vocabByString.get(String.fromCodePoint(byte));
  if (id === undefined) throw new Error(`no single-byte token for ${byte}`);
  return id;
};

test('preset: known Llama 3 ids and BOS handling', () => {
  assert.equal(preset.kind, 'llama3');
  assert.equal(preset.encode('Hello world!'), [128000, 9906, 1917, 0]);
  assert.equal(preset.encode('Hello world!', { addBos: false }), [9906, 1917, 0]);
  assert.equal(preset.bosTokenId, 128000);
  assert.equal(preset.eosTokenIds, [128001, 128008, 128009]);
  assert.is(preset.vocabSize, 128256);
});

test('preset: encode/decode round trip, special tokens kept or skipped', () => {
  const ids = preset.encode(SAMPLE);
  assert.ok(ids.length > 20);
  assert.is(preset.decode(ids), '<|begin_of_text|>' + SAMPLE);
  assert.is(preset.decode(ids, { skipSpecialTokens: true }), SAMPLE);
  assert.is(preset.decode([...ids.slice(1), LLAMA3_TOKENS.endOfTurn], { skipSpecialTokens: true }), SAMPLE);
});

test('preset: decode refuses ids outside the vocabulary', () => {
  for (const bad of [128256, -1, 1.5]) {
    try {
      preset.decode([9906, bad]);
      assert.unreachable(`id ${bad} accepted`);
    } catch (e) {
      assert.ok(isMicroserveError(e, 'BAD_TOKEN'), String(e));
    }
  }
});

test('preset: chat template ids (Llama 3 format, content trimmed, ends with the assistant header)', () => {
  const ids = preset.applyChatTemplate([
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: [{ type: 'text', text: '  Hi ' }] },
  ]);
  const [bos, sh, eh, eot] = [128000, 128006, 128007, 128009];
  // 9125 = "system", 882 = "user", 78191 = "assistant", 271 = "\n\n", 13347 = "Hi"
  const expected = [bos, sh, 9125, eh, 271, ...preset.encode('You are terse.', { addBos: false }), eot, sh, 882, eh, 271, 13347, eot, sh, 78191, eh, 271];
  assert.equal(ids, expected);
  // the same as tokenizing the rendered template string (the library parses special tokens in text)
  const rendered =
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
    '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n';
  assert.equal(ids, llama3.encode(rendered, { bos: false, eos: false }));
});

test('preset: stream decoder holds back a character split across tokens', () => {
  const d = preset.createStreamDecoder();
  assert.is(d.push([byteToken(0xc3)]), '', 'first byte of é alone must not be emitted');
  assert.is(d.push([byteToken(0xa9)]), 'é');
  assert.is(d.push([byteToken(0xc3), 9906]), '\uFFFDHello', 'a broken sequence is replaced, the next token flows');
  assert.is(d.push([byteToken(0xe6)]), '');
  assert.is(d.flush(), '\uFFFD', 'flush emits what can never complete');
});

test('preset: streaming one token at a time equals decode, no partial characters', () => {
  const ids = preset.encode(SAMPLE, { addBos: false });
  const llama = preset.encode('🦙', { addBos: false });
  assert.ok(llama.length >= 2, 'the llama emoji spans several tokens');
  const { pieces, text } = streamOneByOne(preset, [...ids, LLAMA3_TOKENS.endOfTurn]);
  assert.is(text, SAMPLE);
  for (const p of pieces) assert.not.ok(p.includes('\uFFFD'), `piece ${JSON.stringify(p)} has a replacement character`);
  assert.ok(pieces.some((p) => p === ''), 'some tokens completed no character');
});

test('loadTokenizer: a checkpoint without tokenizer.json has none', async () => {
  assert.is(await loadTokenizer({ folder: FIXTURE, isPreset: false }), null);
});

test('hf: tokenizer.json, BOS/EOS from configs, round trip, chat template', async () => {
  const tok = (await loadTokenizer({ folder: writeHfTokenizerFolder(), isPreset: false }))!;
  assert.is(tok.kind, 'hf');
  assert.is(tok.bosTokenId, HF_SPECIAL.bos);
  assert.equal(tok.eosTokenIds.sort(), [HF_SPECIAL.eos, HF_SPECIAL.eot]);
  const ids = tok.encode('hello world');
  assert.equal(ids, [HF_SPECIAL.bos, 259, 260, 111, 114, 108, 100]);
  assert.is(tok.decode(tok.encode(SAMPLE, { addBos: false })), SAMPLE);
  const chat = tok.applyChatTemplate([{ role: 'user', content: ' hello ' }]);
  assert.is(tok.decode(chat), '<s>[user]hello<eot>[assistant]');
  assert.is(chat[0], HF_SPECIAL.bos);
  assert.is(chat.filter((x) => x === HF_SPECIAL.bos).length, 1, 'BOS once: the template writes it');
});

test('hf: stream decoder over a generic decode', async () => {
  const tok = (await loadTokenizer({ folder: writeHfTokenizerFolder(), isPreset: false }))!;
  const ids = tok.encode(SAMPLE, { addBos: false });
  const { pieces, text } = streamOneByOne(tok, [...ids, HF_SPECIAL.eot]);
  assert.is(text, SAMPLE);
  for (const p of pieces) assert.not.ok(p.includes('\uFFFD'));
  const d = tok.createStreamDecoder();
  assert.is(d.push([0xf0, 0x9f]), '');
  assert.is(d.push([0xa6, 0x99]), '🦙');
});

test('hf: a folder without a chat template refuses chat with BAD_REQUEST', async () => {
  const tok = (await loadTokenizer({ folder: writeHfTokenizerFolder({ withTemplate: false }), isPreset: false }))!;
  try {
    tok.applyChatTemplate([{ role: 'user', content: 'hi' }]);
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_REQUEST'));
  }
});

test.run();
