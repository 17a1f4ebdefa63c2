import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Rng, argmax, sampleToken } from '../../actors/engine/sampler.ts';

const logits = Float32Array.from([1.0, 3.0, 2.0, 3.0, -5.0, 0.5]);

test('greedy is argmax (first of ties) at temperature 0', () => {
  assert.is(argmax(logits), 1);
  assert.is(sampleToken(logits, 0, 0.5, new Rng(1)), 1);
});

test('a seed reproduces its stream; different seeds differ', () => {
  const draw = (seed: number) => {
    const r = new Rng(seed);
    return Array.from({ length: 50 }, () => sampleToken(logits, 1, 1, r));
  };
  assert.equal(draw(7), draw(7));
  assert.not.equal(draw(7), draw(8));
  const r = new Rng(0);
  for (let i = 0; i < 1000; i++) {
    const x = r.next();
    assert.ok(x >= 0 && x < 1);
  }
});

test('frequencies follow softmax(logits / T)', () => {
  const l = Float32Array.from([0, Math.log(2), Math.log(3)]);
  const r = new Rng(123);
  const n = 30000;
  const counts = [0, 0, 0];
  for (let i = 0; i < n; i++) counts[sampleToken(l, 1, 1, r)]++;
  [1 / 6, 2 / 6, 3 / 6].forEach((p, i) => assert.ok(Math.abs(counts[i] / n - p) < 0.015, `token ${i}: ${counts[i] / n} vs ${p}`));
  // a low temperature concentrates on the top token
  const cold = [0, 0, 0];
  for (let i = 0; i < 2000; i++) cold[sampleToken(l, 0.05, 1, r)]++;
  assert.ok(cold[2] > 1990);
});

test('top-p keeps the smallest most likely set reaching p', () => {
  // probabilities 0.5, 0.3, 0.15, 0.05
  const l = Float32Array.from([Math.log(0.05), Math.log(0.5), Math.log(0.15), Math.log(0.3)]);
  const r = new Rng(5);
  const seen = new Set<number>();
  const counts = new Map<number, number>();
  for (let i = 0; i < 20000; i++) {
    const t = sampleToken(l, 1, 0.75, r);
    seen.add(t);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  assert.equal([...seen].sort(), [1, 3], '0.5 + 0.3 >= 0.75: only the two top tokens');
  assert.ok(Math.abs(counts.get(1)! / 20000 - 0.5 / 0.8) < 0.02);
  const only = new Set(Array.from({ length: 200 }, () => sampleToken(l, 1, 0.4, r)));
  assert.equal([...only], [1]);
  // a large vocabulary with a long flat tail (the threshold search path)
  const big = new Float32Array(128256).fill(0);
  big[77] = 14; // p = 0.905
  const picks = new Set(Array.from({ length: 100 }, () => sampleToken(big, 1, 0.9, r)));
  assert.equal([...picks], [77]);
});

test.run();
