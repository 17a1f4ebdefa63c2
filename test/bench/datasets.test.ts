import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CHAT_SHAPE, chatDataset, randomDataset, sharedPrefixDataset } from '../../bench/runner/datasets.ts';
import { Rng } from '../../bench/runner/rng.ts';
import { shareGptDataset } from '../../bench/runner/sharegpt.ts';
import { parseStrategies } from '../../bench/runner/strategies.ts';
import { arrivalTimes } from '../../bench/runner/trace.ts';
import { Llama3PresetTokenizer } from '../../actors/text/llama3.ts';

const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;

test('rng: same seed same stream, other seed another; ranges hold', () => {
  const a = new Rng(42);
  const b = new Rng(42);
  const c = new Rng(43);
  const xs = Array.from({ length: 1000 }, () => a.next());
  assert.equal(xs, Array.from({ length: 1000 }, () => b.next()));
  assert.not.equal(xs.slice(0, 10), Array.from({ length: 10 }, () => c.next()));
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const ints = Array.from({ length: 2000 }, () => a.int(3, 5));
  assert.equal([...new Set(ints)].sort(), [3, 4, 5]);
  const n = Array.from({ length: 20000 }, () => a.normal());
  assert.ok(Math.abs(mean(n)) < 0.05, `normal mean ${mean(n)}`);
});

test('random: exact lengths with ratio 0, ids below tokenIdMax', () => {
  const r = randomDataset({ numPrompts: 12, seed: 0, randomInputLen: 64, randomOutputLen: 8 });
  assert.is(r.length, 12);
  assert.ok(r.every((x) => x.promptIds.length === 64 && x.outputLen === 8));
  assert.ok(r.every((x) => x.promptIds.every((id) => Number.isInteger(id) && id >= 0 && id < 128000)));
  const small = randomDataset({ numPrompts: 50, seed: 1, randomInputLen: 16, randomOutputLen: 4, tokenIdMax: 10 });
  assert.ok(small.every((x) => x.promptIds.every((id) => id < 10)));
});

test('random: range ratio and ± ranges (the reference 3000±5 / 100±5)', () => {
  const r = randomDataset({ numPrompts: 400, seed: 7, randomInputLen: 3000, randomOutputLen: 100, randomInputRange: 5, randomOutputRange: 5 });
  const ins = r.map((x) => x.promptIds.length);
  const outs = r.map((x) => x.outputLen);
  assert.equal([Math.min(...ins), Math.max(...ins), Math.min(...outs), Math.max(...outs)], [2995, 3005, 95, 105]);
  const q = randomDataset({ numPrompts: 400, seed: 7, randomInputLen: 100, randomOutputLen: 10, randomRangeRatio: 0.1 });
  assert.equal([Math.min(...q.map((x) => x.promptIds.length)), Math.max(...q.map((x) => x.promptIds.length))], [90, 110]);
  assert.equal([Math.min(...q.map((x) => x.outputLen)), Math.max(...q.map((x) => x.outputLen))], [9, 11]);
  assert.throws(() => randomDataset({ numPrompts: 1, seed: 0, randomRangeRatio: 1 }), /range-ratio/);
});

test('datasets are deterministic by seed', () => {
  for (const make of [randomDataset, chatDataset, sharedPrefixDataset]) {
    const o = { numPrompts: 20, seed: 5, randomInputLen: 32, gspSystemPromptLen: 64, gspQuestionLen: 8 };
    assert.equal(make(o), make(o));
    assert.not.equal(make(o), make({ ...o, seed: 6 }));
  }
});

test('chat: ShareGPT-like lengths within the filter, means near the reported ones', () => {
  const r = chatDataset({ numPrompts: 4000, seed: 0 });
  const ins = r.map((x) => x.promptIds.length);
  const outs = r.map((x) => x.outputLen);
  assert.ok(ins.every((n) => n >= CHAT_SHAPE.minLen && n <= CHAT_SHAPE.maxInput));
  assert.ok(r.every((x) => x.outputLen >= CHAT_SHAPE.minLen && x.promptIds.length + x.outputLen <= CHAT_SHAPE.maxTotal));
  // truncation trims the tails: the means land a little under 161 / 338
  assert.ok(mean(ins) > 120 && mean(ins) < 175, `input mean ${mean(ins)}`);
  assert.ok(mean(outs) > 250 && mean(outs) < 345, `output mean ${mean(outs)}`);
  assert.ok(Math.max(...ins) > 600, 'a long tail of inputs');
});

test('shared-prefix: every prompt is one of the group prefixes + its own question', () => {
  const r = sharedPrefixDataset({ numPrompts: 30, seed: 3, gspNumGroups: 3, gspSystemPromptLen: 100, gspQuestionLen: 10, gspOutputLen: 7 });
  const prefixes = new Set(r.map((x) => x.promptIds.slice(0, 100).join(',')));
  assert.is(prefixes.size, 3);
  assert.ok(r.every((x) => x.promptIds.length === 110 && x.outputLen === 7));
  const questions = new Set(r.map((x) => x.promptIds.slice(100).join(',')));
  assert.is(questions.size, 30);
  // interleaved, not grouped
  assert.not.equal(r.slice(0, 10).map((x) => x.promptIds[0]), Array(10).fill(r[0].promptIds[0]));
});

test('sharegpt: first turn is the prompt, the reply gives the output length; filter and seed apply', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sharegpt-'));
  const path = join(dir, 'sg.json');
  const conv = (h: string, g: string) => ({ id: h.slice(0, 5), conversations: [{ from: 'human', value: h }, { from: 'gpt', value: g }] });
  const data = [
    conv('What is the capital of France? Please answer briefly.', 'The capital of France is Paris, a city on the Seine.'),
    conv('Write a haiku about autumn leaves falling in the wind.', 'Crimson leaves drifting, the cold wind carries them home, branches bare and still.'),
    conv('hi', 'a reply long enough to count, yes indeed it is'), // prompt too short: BOS + 'hi' is 2 tokens
    { id: 'solo', conversations: [{ from: 'human', value: 'only one turn here' }] },
    conv('Explain recursion to a five year old child, with an example.', 'ok'), // reply too short
  ];
  writeFileSync(path, JSON.stringify(data));
  const tok = Llama3PresetTokenizer.get();
  const got = await shareGptDataset({ path, numPrompts: 2, seed: 0 });
  const expected = new Map(data.slice(0, 2).map((d) => [d.conversations[0].value, tok.encode(d.conversations[1].value, { addBos: false }).length]));
  for (const r of got) {
    const text = tok.decode(r.promptIds, { skipSpecialTokens: true });
    assert.ok(expected.has(text), `unexpected prompt ${text}`);
    assert.is(r.outputLen, expected.get(text));
    assert.is(r.promptIds[0], 128000);
  }
  assert.equal(await shareGptDataset({ path, numPrompts: 2, seed: 0 }), got);
  await shareGptDataset({ path, numPrompts: 3, seed: 0 }).then(
    () => assert.unreachable(),
    (e) => assert.match(e.message, /only 2 usable conversations/),
  );
  const fixed = await shareGptDataset({ path, numPrompts: 3, seed: 0, outputLen: 16 });
  assert.ok(fixed.every((r) => r.outputLen === 16));
});

test('arrivals: Poisson at the rate, same for every strategy, all at once for inf', () => {
  const a = arrivalTimes(5000, 4, 0);
  assert.equal(a, arrivalTimes(5000, 4, 0));
  assert.is(a[0], 0);
  const gaps = a.slice(1).map((t, i) => t - a[i]);
  assert.ok(gaps.every((g) => g >= 0));
  assert.ok(Math.abs(mean(gaps) - 0.25) < 0.02, `mean gap ${mean(gaps)}`);
  assert.equal(arrivalTimes(3, Infinity, 0), [0, 0, 0]);
});

test('--strategies parsing', () => {
  assert.equal(parseStrategies('dp,pd,balanced-pd:0.1'), [
    { label: 'dp', name: 'dp', params: {} },
    { label: 'pd', name: 'pd', params: {} },
    { label: 'balanced-pd:0.1', name: 'balanced-pd', params: { ratio: 0.1 } },
  ]);
  assert.equal(parseStrategies('dp-prefix:minMatch=8:maxLoadGap=2')[0].params, { minMatch: 8, maxLoadGap: 2 });
  assert.throws(() => parseStrategies('dp,dp'), /listed twice/);
  assert.throws(() => parseStrategies('pd:0.3'), /not key=value/);
});

test.run();
