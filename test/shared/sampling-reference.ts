/**
 * The sampling oracle: the TypeScript implementation of the one algorithm every backend runs
 * (defined in native/src/common/sampling.h; the CPU backend runs that C++ code, the CUDA backend
 * native/src/cuda/sampling.cu). The engine samples on the backend (`forwardTokens`); tests (and
 * bench/gpu/node-decode.ts) compare the backends against this file.
 *
 * Per row of logits z with temperature T, topP p (both rounded to float32, as the backends get
 * them), seed and step (the index of the token being generated):
 *  1. NaN counts as -inf; b = argmax (lowest id among equal maxima), m = z[b]. Greedy (b) when
 *     !(T > 0) or m is not finite.
 *  2. q_i = min(floor(exp((z_i - m) / T) * 2^31), 2^31): integer weights, float64 here.
 *  3. p >= 1: keep every q_i >= 1. Else target = p * sum(q) and tau = the largest t whose mass
 *     M(t) = sum of q_i >= t reaches target, found by a radix search 8 bits at a time; keep
 *     q_i >= tau (boundary ties included), kept mass M(tau).
 *  4. u = splitmix64((seed << 32) | step) / 2^64 (53 bits): the same u for the same token on any
 *     engine, so a migrated request continues its sampled output. r = min(floor(u * kept), kept - 1).
 *  5. The token: the smallest kept id whose running kept mass (id order) exceeds r.
 * All sums are exact integers (< 2^53), so the result does not depend on summation order.
 */
const SCALE = 2 ** 31;
const MASK64 = (1n << 64n) - 1n;

/** Index of the largest logit, NaN as -inf, the lowest id among equal maxima. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/** Step 4: the uniform in [0, 1) of (seed, step), both uint32. */
export function sampleUniform(seed: number, step: number): number {
  let z = (((BigInt(seed >>> 0) << 32n) | BigInt(step >>> 0)) + 0x9e3779b97f4a7c15n) & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  z ^= z >> 31n;
  return Number(z >> 11n) / 2 ** 53;
}

let weights = new Uint32Array(0);
const hist = new Float64Array(256);

/**
 * Samples one token id from `logits` (vocab,): greedy at `temperature <= 0`, else nucleus
 * sampling with the draw of (seed, step). Same inputs, same token, on every host backend.
 */
export function sampleToken(logits: Float32Array, temperature: number, topP: number, seed: number, step: number): number {
  const T = Math.fround(temperature);
  const p = Math.fround(topP);
  const best = argmax(logits);
  const m = logits[best];
  if (!(T > 0) || !Number.isFinite(m)) return best;
  const n = logits.length;
  if (weights.length < n) weights = new Uint32Array(n);
  const q = weights;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const z = logits[i];
    const v = z !== z ? 0 : Math.min(Math.floor(Math.exp((z - m) / T) * SCALE), SCALE);
    q[i] = v;
    total += v;
  }
  let tau = 1;
  let kept = total;
  if (p < 1) {
    const target = p * total;
    let prefix = 0;
    let above = 0;
    for (let shift = 24; shift >= 0; shift -= 8) {
      hist.fill(0);
      const hi = shift + 8;
      const want = hi < 32 ? prefix >>> hi : 0;
      for (let i = 0; i < n; i++) {
        const v = q[i];
        if (v === 0 || (hi < 32 && v >>> hi !== want)) continue;
        hist[(v >>> shift) & 255] += v;
      }
      let cum = above;
      let d = 255;
      for (; d > 0; d--) {
        if (cum + hist[d] >= target) break;
        cum += hist[d];
      }
      prefix += d * 2 ** shift;
      above = cum;
      kept = cum + hist[d];
    }
    tau = prefix;
  }
  let r = Math.floor(sampleUniform(seed, step) * kept);
  if (r >= kept) r = kept - 1;
  let acc = 0;
  for (let i = 0; i < n; i++) {
    const v = q[i];
    if (v < tau) continue;
    acc += v;
    if (acc > r) return i;
  }
  return best; // unreachable: the kept mass exceeds r
}
