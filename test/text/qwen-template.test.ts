// Qwen2.5's and Qwen3's chat templates render through actors/text/hf.ts (@huggingface/jinja) to
// the text transformers' apply_chat_template gives for the same messages.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadHfTokenizer } from '../../actors/text/hf.ts';
import { writeHfTokenizerFolder } from './hf-fixture.ts';
import { QWEN25_TEMPLATE, QWEN3_TEMPLATE } from './qwen-templates.ts';

function withTemplate(template: string) {
  const dir = writeHfTokenizerFolder();
  const cfg = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, bos_token: null, chat_template: template }));
  return loadHfTokenizer(dir);
}

const chat = [
  { role: 'user' as const, content: 'Hi' },
  { role: 'assistant' as const, content: 'Hello!' },
  { role: 'user' as const, content: 'Name a colour.' },
];

test('Qwen2.5: default system prompt, turns, generation prompt', () => {
  const tok = withTemplate(QWEN25_TEMPLATE);
  const text = tok.decode(tok.applyChatTemplate(chat));
  assert.is(text, '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n');
  const own = tok.decode(tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, chat[0]]));
  assert.is(own, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
});

test('Qwen3: no default system prompt; reasoning stripped from past turns (namespace, reversed loop, string methods)', () => {
  const tok = withTemplate(QWEN3_TEMPLATE);
  const text = tok.decode(tok.applyChatTemplate([chat[0], { role: 'assistant', content: '<think>\nthe user greets\n</think>\n\nHello!' }, chat[2]]));
  assert.is(text, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n');
  const sys = tok.decode(tok.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, chat[0]]));
  assert.is(sys, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
});

test.run();
