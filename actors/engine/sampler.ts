/**
 * Token sampling: greedy (temperature 0), temperature, top-p (nucleus), each request with its own
 * seeded RNG so that the same seed and the same logits give the same tokens.
 */

/** xoshiro128** seeded through splitmix32: small, fast, and good enough for sampling. */
export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Uniform in [0, 1). */
  next(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result / 0x100000000;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Index of the largest logit (the first one on ties). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestV = logits[0];
  for (let i = 1; i < logits.length; i++) {
    if (logits[i] > bestV) {
      bestV = logits[i];
      best = i;
    }
  }
  return best;
}

let scratch = new Float64Array(0);

/**
 * Samples one token id from `logits` (vocab,). `temperature <= 0` is greedy; otherwise softmax of
 * logits / temperature, restricted to the smallest set of most likely tokens whose mass reaches
 * `topP` (ties broken by lower id), then one draw from `rng`.
 */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, rng: Rng): number {
  if (!(temperature > 0)) return argmax(logits);
  const n = logits.length;
  if (scratch.length < n) scratch = new Float64Array(n);
  const w = scratch;
  const max = logits[argmax(logits)];
  let sum = 0;
  let maxW = 0;
  for (let i = 0; i < n; i++) {
    const v = Math.exp((logits[i] - max) / temperature);
    w[i] = v;
    sum += v;
    if (v > maxW) maxW = v;
  }
  if (!(topP < 1)) {
    let r = rng.next() * sum;
    for (let i = 0; i < n; i++) {
      r -= w[i];
      if (r < 0) return i;
    }
    return n - 1;
  }
  // The nucleus is a prefix of the tokens sorted by weight; every token of it weighs at least
  // the lightest one kept. Lower a threshold until the tokens above it carry topP of the mass,
  // then sort only those.
  const target = Math.max(topP, 0) * sum;
  let thr = maxW;
  for (let round = 0; ; round++) {
    let mass = 0;
    for (let i = 0; i < n; i++) if (w[i] >= thr) mass += w[i];
    if (mass >= target || round > 60) break;
    thr = round === 60 ? 0 : thr / 4;
  }
  const cand: number[] = [];
  for (let i = 0; i < n; i++) if (w[i] >= thr) cand.push(i);
  cand.sort((a, b) => w[b] - w[a] || a - b);
  let kept = 0;
  let keptMass = 0;
  while (kept < cand.length) {
    keptMass += w[cand[kept++]];
    if (keptMass >= target) break;
  }
  let r = rng.next() * keptMass;
  for (let j = 0; j < kept; j++) {
    r -= w[cand[j]];
    if (r < 0) return cand[j];
  }
  return cand[kept - 1];
}
