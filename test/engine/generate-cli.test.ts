/** `microserve generate` against the fixture (no tokenizer) and the tiny preset (Llama 3 tokenizer). */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runGenerate } from '../../bin/commands/generate.ts';
import { isMicroserveError } from '../../common/errors.ts';
import { CASES, FIXTURE } from './helpers.ts';

const BIN = fileURLToPath(new URL('../../bin/microserve.js', import.meta.url));
const base = { model: FIXTURE, maxTokens: '32', temperature: '0', topP: '1', device: 'cpu', threads: '0', pageSize: '16', json: true };

test('--prompt-ids ... --max-tokens 32 --temperature 0 --json gives greedy_ids for every case (text null)', async () => {
  for (const [i, cs] of CASES.entries()) {
    let printed = '';
    const r = await runGenerate({ ...base, promptIds: cs.prompt_ids.join(',') }, (s) => (printed += s));
    assert.equal(r.ids, cs.greedy_ids, `case ${i}`);
    assert.equal(JSON.parse(printed), { ids: cs.greedy_ids, text: null });
  }
});

test('--prompt on a model without a tokenizer is NO_TOKENIZER; bad ids are typed', async () => {
  const code = async (o: object) => {
    try {
      await runGenerate({ ...base, ...o }, () => {});
    } catch (e) {
      return isMicroserveError(e) ? e.code : String(e);
    }
    return 'no error';
  };
  assert.is(await code({ prompt: 'hello' }), 'NO_TOKENIZER');
  assert.is(await code({ promptIds: '1,x' }), 'BAD_REQUEST');
  assert.is(await code({ promptIds: '1,5000' }), 'BAD_TOKEN');
  assert.is(await code({}), 'BAD_REQUEST');
});

test('tiny preset with text: seeded sampling reproduces, the text decodes the ids', async () => {
  const o = { ...base, model: 'tiny', prompt: 'Hello, my name is', maxTokens: '6', temperature: '0.8', topP: '0.9', seed: '7', ignoreEos: true };
  let note = '';
  const a = await runGenerate(o, () => {}, (s) => (note += s));
  const b = await runGenerate(o, () => {});
  assert.match(note, /model 'tiny' has random weights/, 'generate says when the weights are random');
  assert.is(a.ids.length, 6);
  assert.equal(a, b);
  assert.type(a.text, 'string');
});

test('the default model is kjv-chat (trained: no random-weights note); its chat reply stops at EOS', async () => {
  let note = '';
  let text = '';
  const { model: _fixture, ...rest } = base;
  const r = await runGenerate({ ...rest, json: false, prompt: 'Hello', chat: true, maxTokens: '256' }, (s) => (text += s), (s) => (note += s));
  assert.is(note, '');
  assert.ok(r.ids.length < 256, `no EOS in ${r.ids.length} tokens: ${text}`);
  assert.match(text, /King James/);
});

test('the CLI binary prints one JSON line with exactly greedy_ids', async () => {
  const cs = CASES[1];
  const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'generate', '--model', FIXTURE, '--prompt-ids', cs.prompt_ids.join(','), '--max-tokens', '32', '--temperature', '0', '--json']);
  assert.equal(JSON.parse(stdout), { ids: cs.greedy_ids, text: null });
});

test.run();
