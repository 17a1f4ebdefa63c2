/**
 * The TypeScript reference of the per-request logit processing (native/src/common/logit-processing.h
 * defines it; steps P1-P4 and T1-T2 are named as there). The engine runs it on the backend; tests
 * compare the backend against this.
 */
import { argmax, sampleUniform } from './sampling-reference.ts';

/** One row's parameters; unset fields are off. */
export interface ProcessingRow {
  topK?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** Grammar hook (P1): bit i clear bans token i; unset: every token allowed. */
  allowedMask?: Uint32Array;
  /** Additive (token, bias) pairs; -Infinity bans. */
  bias?: [number, number][];
  /** Prompt + output so far; the last numOutput are output. */
  history?: readonly number[];
  numOutput?: number;
}

const SCALE = 2 ** 31;

/** P1-P4 on a copy of z (float32 arithmetic, as the backends). */
export function processLogits(z: Float32Array, r: ProcessingRow): Float32Array {
  const out = Float32Array.from(z);
  const mask = r.allowedMask;
  if (mask) for (let i = 0; i < out.length; i++) if (!((mask[i >>> 5] >>> (i & 31)) & 1)) out[i] = -Infinity;
  for (const [t, b] of r.bias ?? []) out[t] = Math.fround(out[t] + b);
  const h = r.history ?? [];
  if (h.length === 0) return out;
  const counts = new Map<number, number>();
  const numOutput = r.numOutput ?? 0;
  h.forEach((t, i) => counts.set(t, (counts.get(t) ?? 0) + (i >= h.length - numOutput ? 1 : 0)));
  const rp = Math.fround(r.repetitionPenalty ?? 1);
  const f = Math.fround(r.frequencyPenalty ?? 0);
  const p = Math.fround(r.presencePenalty ?? 0);
  for (const [t, c] of counts) {
    let v = out[t];
    if (rp !== 1) v = v > 0 ? Math.fround(v / rp) : Math.fround(v * rp);
    if (c > 0) v = Math.fround(v - Math.fround(Math.fround(c * f) + p));
    out[t] = v;
  }
  return out;
}

/** Sampling (sampler.ts steps) with T1 (top-k) and T2 (min-p) between weights and top-p. */
export function sampleProcessed(z: Float32Array, temperature: number, topP: number, seed: number, step: number, topK = 0, minP = 0): number {
  const T = Math.fround(temperature);
  const best = argmax(z);
  const m = z[best];
  if (!(T > 0) || !Number.isFinite(m)) return best;
  const n = z.length;
  const q = new Float64Array(n);
  for (let i = 0; i < n; i++) q[i] = z[i] !== z[i] ? 0 : Math.min(Math.floor(Math.exp((z[i] - m) / T) * SCALE), SCALE);
  if (topK > 0) {
    const nonzero = Array.from(q).filter((v) => v > 0).sort((a, b) => b - a);
    if (nonzero.length > topK) {
      const tau = nonzero[topK - 1];
      for (let i = 0; i < n; i++) if (q[i] < tau) q[i] = 0;
    }
  }
  if (minP > 0) {
    const tau = Math.ceil(Math.fround(minP) * SCALE);
    for (let i = 0; i < n; i++) if (q[i] < tau) q[i] = 0;
  }
  let total = 0;
  for (let i = 0; i < n; i++) total += q[i];
  let tau = 1;
  let kept = total;
  const p = Math.fround(topP);
  if (p < 1) {
    // the largest t whose mass M(t) reaches p * total: the kept set is a prefix of q sorted down
    const target = p * total;
    const sorted = Array.from(q).filter((v) => v > 0).sort((a, b) => b - a);
    let mass = 0;
    for (let i = 0; i < sorted.length; i++) {
      mass += sorted[i];
      if (mass >= target && (i + 1 === sorted.length || sorted[i + 1] !== sorted[i])) {
        tau = sorted[i];
        kept = mass;
        break;
      }
    }
  }
  let r = Math.floor(sampleUniform(seed, step) * kept);
  if (r >= kept) r = kept - 1;
  let acc = 0;
  for (let i = 0; i < n; i++) {
    if (q[i] < tau || q[i] === 0) continue;
    acc += q[i];
    if (acc > r) return i;
  }
  return best;
}

/** Logprobs of processed z at temperature T (greedy: T = 1): token's, and the top n [id, lp]. */
export function logprobsOf(z: Float32Array, temperature: number, token: number, n: number): { logprob: number; top: [number, number][] } {
  const t = temperature > 0 ? Math.fround(temperature) : 1;
  const m = z[argmax(z)] / t;
  let sum = 0;
  for (let i = 0; i < z.length; i++) if (z[i] === z[i]) sum += Math.exp(z[i] / t - m);
  const lse = m + Math.log(sum);
  const ids = Array.from(z.keys()).sort((a, b) => z[b] - z[a] || a - b);
  return { logprob: z[token] / t - lse, top: ids.slice(0, n).map((i) => [i, z[i] / t - lse]) };
}
