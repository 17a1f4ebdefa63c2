/**
 * The grammar pieces that run in an engine's grammar worker, in-process: the compile cache (LRU,
 * checks before compiling) and a request's matcher on the kjv-chat vocabulary (special tokens
 * never inside structured text; EOS only where the grammar is complete).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GrammarCompilerCache } from '../../actors/engine/grammar/compiler.ts';
import { RequestGrammar } from '../../actors/engine/grammar/request-grammar.ts';
import { grammarVocabularyOf, loadTokenizer } from '../../actors/text/loader.ts';
import { isMicroserveError } from '../../common/errors.ts';
import { shippedModelFolder } from '../../native/model-source.ts';

const folder = shippedModelFolder('kjv-chat')!;
const source = { folder, isPreset: false };
const tok = (await loadTokenizer(source))!;
const EOS = tok.eosTokenIds;
const SPECIALS = [4091, 4092, 4093, 4094, 4095];
const cache = new GrammarCompilerCache({ vocabulary: grammarVocabularyOf(source)!, vocabSize: 4096, stopTokenIds: EOS, cacheSize: 2 });
const allowed = (mask: Uint32Array, t: number) => ((mask[t >> 5] >>> (t & 31)) & 1) === 1;

test('inside a JSON string: text tokens allowed, special tokens never; after the object: only EOS, complete', async () => {
  const entry = await cache.compile({ type: 'json', schema: '{"type":"object","properties":{"a":{"type":"string"}},"required":["a"]}' }, 'f');
  const g = await RequestGrammar.open(entry, EOS, tok.encode('{"a": "', { addBos: false }), 'f');
  assert.is(g.mask.length, 128);
  for (const t of SPECIALS) assert.not.ok(allowed(g.mask, t), `special ${t} inside a string`);
  assert.ok(allowed(g.mask, tok.encode('And', { addBos: false })[0]));
  assert.not.ok(g.isComplete);
  for (const t of tok.encode('Amen"}', { addBos: false })) {
    assert.ok(g.accept(t));
    await g.next();
  }
  assert.ok(g.isComplete, 'nothing but EOS can follow');
  assert.ok(allowed(g.mask, EOS[0]));
  assert.not.ok(g.accept(tok.encode('x', { addBos: false })[0]), 'a token outside the grammar is refused');
  g.dispose();
});

test('the cache keeps at most cacheSize grammars; a bad spec is BAD_GRAMMAR naming the field, and compiling goes on', async () => {
  for (const p of ['a+', 'b+', 'c+']) await cache.compile({ type: 'regex', pattern: p }, 'f');
  assert.is(cache.size, 2);
  try {
    await cache.compile({ type: 'json', schema: '{"type": 5}' }, 'response_format');
    assert.unreachable();
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_GRAMMAR'));
    assert.match((e as Error).message, /^response_format: /);
  }
  const entry = await cache.compile({ type: 'regex', pattern: '(yea|nay)' }, 'f');
  const g = await RequestGrammar.open(entry, EOS, tok.encode('yea', { addBos: false }), 'f');
  assert.ok(g.isComplete);
  g.dispose();
});

test.run();
