import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { packSampling } from '../../actors/engine/sampler.ts';
import { Request } from '../../actors/engine/request.ts';
import { SamplingBatch, SamplingScratch, SamplingSlots } from '../../actors/engine/sampling-params.ts';
import type { SamplingParams } from '../../actors/messages.ts';
import { argmax, sampleToken, sampleUniform } from '../shared/sampling-reference.ts';
import { xorshift } from '../shared/xorshift.ts';

const logits = Float32Array.from([1.0, 3.0, 2.0, 3.0, -5.0, 0.5]);

/**
 * The definition written the slow, obvious way: sort the integer weights, keep the shortest
 * heaviest prefix reaching topP (plus every token tied with its last), draw in id order.
 */
function naive(z: Float32Array, temperature: number, topP: number, seed: number, step: number): number {
  const T = Math.fround(temperature);
  const p = Math.fround(topP);
  const b = argmax(z);
  if (!(T > 0) || !Number.isFinite(z[b])) return b;
  const q = Array.from(z, (v) => (v !== v ? 0 : Math.min(Math.floor(Math.exp((v - z[b]) / T) * 2 ** 31), 2 ** 31)));
  const total = q.reduce((a, v) => a + v, 0);
  let tau = 1;
  if (p < 1) {
    const sorted = [...q].sort((x, y) => y - x);
    let cum = 0;
    for (const v of sorted) {
      cum += v;
      if (cum >= p * total) {
        tau = v;
        break;
      }
    }
  }
  const kept = q.reduce((a, v) => (v >= tau ? a + v : a), 0);
  const r = Math.min(Math.floor(sampleUniform(seed, step) * kept), kept - 1);
  let acc = 0;
  for (let i = 0; i < q.length; i++) {
    if (q[i] < tau) continue;
    acc += q[i];
    if (acc > r) return i;
  }
  return -1;
}

test('greedy is argmax (first of ties, NaN as -inf) at temperature <= 0', () => {
  assert.is(argmax(logits), 1);
  assert.is(sampleToken(logits, 0, 0.5, 1, 0), 1);
  assert.is(sampleToken(logits, -1, 1, 1, 0), 1);
  assert.is(argmax(Float32Array.from([NaN, -1, NaN, 4, 4])), 3);
  assert.is(argmax(Float32Array.from([-Infinity, -Infinity])), 0);
  // A NaN logit is never drawn.
  const withNaN = Float32Array.from([NaN, 0, 0, NaN]);
  for (let step = 0; step < 50; step++) assert.ok([1, 2].includes(sampleToken(withNaN, 1, 1, 3, step)));
});

test('the uniform of (seed, step) is splitmix64: fixed, in [0, 1), differs by step and seed', () => {
  // splitmix64's first output from state 0 is 0xe220a8397b1dcdaf.
  assert.is(sampleUniform(0, 0), Number(0xe220a8397b1dcdafn >> 11n) / 2 ** 53);
  const seen = new Set<number>();
  for (let s = 0; s < 20; s++)
    for (let k = 0; k < 20; k++) {
      const u = sampleUniform(s, k);
      assert.ok(u >= 0 && u < 1);
      seen.add(u);
    }
  assert.is(seen.size, 400);
  assert.is(sampleUniform(0xffffffff, 0xffffffff), sampleUniform(-1, -1), 'seed and step are uint32');
});

test('a token depends only on (logits, params, seed, step); frequencies over steps follow softmax(logits / T)', () => {
  const l = Float32Array.from([0, Math.log(2), Math.log(3)]);
  assert.is(sampleToken(l, 1, 1, 42, 7), sampleToken(l, 1, 1, 42, 7));
  const n = 30000;
  const counts = [0, 0, 0];
  for (let k = 0; k < n; k++) counts[sampleToken(l, 1, 1, 123, k)]++;
  [1 / 6, 2 / 6, 3 / 6].forEach((p, i) => assert.ok(Math.abs(counts[i] / n - p) < 0.015, `token ${i}: ${counts[i] / n} vs ${p}`));
  const cold = [0, 0, 0];
  for (let k = 0; k < 2000; k++) cold[sampleToken(l, 0.05, 1, 5, k)]++;
  assert.ok(cold[2] > 1990, 'a low temperature concentrates on the top token');
});

test('top-p keeps the smallest most likely set reaching p (boundary ties included)', () => {
  // probabilities 0.05, 0.5, 0.15, 0.3
  const l = Float32Array.from([Math.log(0.05), Math.log(0.5), Math.log(0.15), Math.log(0.3)]);
  const counts = new Map<number, number>();
  for (let k = 0; k < 20000; k++) {
    const t = sampleToken(l, 1, 0.75, 5, k);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  assert.equal([...counts.keys()].sort(), [1, 3], '0.5 + 0.3 >= 0.75: only the two top tokens');
  assert.ok(Math.abs(counts.get(1)! / 20000 - 0.5 / 0.8) < 0.02);
  assert.equal([...new Set(Array.from({ length: 200 }, (_, k) => sampleToken(l, 1, 0.4, 5, k)))], [1]);
  // Two tokens tied at the boundary: both stay although one alone reaches p.
  const tie = Float32Array.from([0, 0, -20]);
  assert.equal([...new Set(Array.from({ length: 200 }, (_, k) => sampleToken(tie, 1, 0.3, 1, k)))].sort(), [0, 1]);
  // A large vocabulary with a long flat tail.
  const big = new Float32Array(128256);
  big[77] = 14; // p = 0.905
  assert.equal([...new Set(Array.from({ length: 100 }, (_, k) => sampleToken(big, 1, 0.9, 9, k)))], [77]);
  assert.ok(new Set(Array.from({ length: 100 }, (_, k) => sampleToken(big, 1, 0.95, 9, k))).size > 5);
});

test('the radix threshold search equals the sorted definition on random rows', () => {
  const rnd = xorshift(99);
  for (let row = 0; row < 300; row++) {
    const n = 1 + Math.floor(rnd() * 3000);
    const spread = [0.5, 3, 10, 40][row % 4];
    const z = Float32Array.from({ length: n }, () => (rnd() - 0.5) * spread);
    if (row % 7 === 0) for (let i = 0; i < n; i += 3) z[i] = z[0]; // many ties
    const temperature = [0.3, 0.7, 1, 1.8][row % 4];
    const topP = [0.05, 0.5, 0.9, 0.999, 1][row % 5];
    const seed = Math.floor(rnd() * 2 ** 32);
    assert.is(sampleToken(z, temperature, topP, seed, row), naive(z, temperature, topP, seed, row), `row ${row}`);
  }
});

test('SamplingBatch: sampling rows draw output token k (earlier attempts included) with the request seed; extras only when used', () => {
  const gen = (id: string, outputIds: number[], sampling: Partial<SamplingParams> = {}) => {
    const r = new Request({ id, kind: 'generate', promptIds: [1, 2, 3, 4], sampling: { maxTokens: 9, temperature: 0.8, topP: 0.9, stopTokenIds: [], seed: 77, ...sampling } });
    r.outputIds.push(...outputIds);
    return r;
  };
  const slots = new SamplingSlots();
  const b = new SamplingBatch([gen('a', [5, 6]), null, gen('b', [7], { numPriorOutput: 2 })], slots);
  assert.equal([...b.sampling.temperature], [Math.fround(0.8), 0, Math.fround(0.8)]);
  assert.equal([...b.sampling.topP], [Math.fround(0.9), 1, Math.fround(0.9)]);
  assert.equal([...b.sampling.seed], [77, 0, 77]);
  assert.equal([...b.sampling.step], [2, 0, 3]);
  assert.is(b.sampling.extras, undefined, 'plain requests send no extras');
  const pen = gen('c', [9], { presencePenalty: 1, numPriorOutput: 1 });
  const e = new SamplingBatch([null, pen], slots).sampling.extras!;
  assert.equal([...e.slot!], [-1, 0]);
  assert.equal([...e.reset!], [0, 1]);
  assert.equal([...e.histTokens!], [1, 2, 3, 4, 9]);
  assert.equal([...e.histNumOutput!], [0, 2]);
  const masked = gen('d', []);
  masked.allowedMask = Uint32Array.of(0b1010, 0);
  const m = new SamplingBatch([gen('e', []), masked], slots).sampling.extras!;
  assert.equal([...m.allowedMask!], [0xffffffff, 0xffffffff, 0b1010, 0], 'the grammar mask travels with its row; others allow all');
  // a scratch lends the arrays step after step: every entry is rewritten (a null row after a sampling one, a smaller step)
  const scratch = new SamplingScratch();
  const first = new SamplingBatch([gen('f', [1]), gen('g', [2, 3]), gen('h', [])], slots, scratch).sampling;
  const again = new SamplingBatch([null, gen('i', [4])], slots, scratch).sampling;
  const fresh = new SamplingBatch([null, gen('i', [4])], slots).sampling;
  for (const k of ['temperature', 'topP', 'seed', 'step'] as const) assert.equal([...again[k]], [...fresh[k]], `reused ${k}`);
  assert.is(again.temperature.buffer, first.temperature.buffer, 'the second step reuses the first one\'s arrays');
  const p = packSampling([{ temperature: 1, topP: 0.5, seed: 2 ** 32 - 1, step: 3 }]);
  assert.ok(p.seed instanceof Uint32Array && p.seed[0] === 2 ** 32 - 1);
});

test.run();
