/**
 * A plain float64 Llama forward pass in TypeScript (Hugging Face LlamaForCausalLM semantics, with
 * Qwen2ForCausalLM's q/k/v biases and Qwen3ForCausalLM's per-head q/k RMSNorm before RoPE when the
 * config says so), an independent check of the native kernels on shapes and families the
 * transformers fixtures do not cover. Slow; tiny models only.
 */
import type { ModelConfig } from '../../native/backend.ts';

export type Weights = Record<string, Float64Array>;

function ropeInvFreq(c: ModelConfig): number[] {
  const inv = Array.from({ length: c.headDim / 2 }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / c.headDim));
  const s = c.ropeScaling;
  if (!s) return inv;
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return ((1 - smooth) * f) / s.factor + smooth * f;
  });
}

function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  const r = 1 / Math.sqrt(ms + eps);
  return x.map((v, i) => v * r * w[i]);
}

/** y = W x for W (out, in) row-major. */
function matvec(w: Float64Array, x: Float64Array, out: number): Float64Array {
  const n = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[o * n + i] * x[i];
    y[o] = s;
  }
  return y;
}

function rope(v: Float64Array, pos: number, inv: number[]): void {
  const half = inv.length;
  for (let i = 0; i < half; i++) {
    const c = Math.cos(pos * inv[i]);
    const s = Math.sin(pos * inv[i]);
    const a = v[i];
    const b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

/** Logits (tokens.length, vocab) for one sequence from position 0. */
export function referenceForward(c: ModelConfig, w: Weights, tokens: number[]): Float64Array[] {
  const H = c.hiddenSize, hd = c.headDim, rep = c.numHeads / c.numKvHeads;
  const inv = ropeInvFreq(c);
  const ks: Float64Array[][] = [];
  const vs: Float64Array[][] = [];
  let xs = tokens.map((t) => w['model.embed_tokens.weight'].slice(t * H, (t + 1) * H));
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    ks.push([]);
    vs.push([]);
    xs = xs.map((x, pos) => {
      const xn = rmsNorm(x, w[p + 'input_layernorm.weight'], c.rmsNormEps);
      const q = matvec(w[p + 'self_attn.q_proj.weight'], xn, c.numHeads * hd);
      const k = matvec(w[p + 'self_attn.k_proj.weight'], xn, c.numKvHeads * hd);
      const v = matvec(w[p + 'self_attn.v_proj.weight'], xn, c.numKvHeads * hd);
      if (c.qkvBias) {
        for (const [t, name] of [[q, 'q'], [k, 'k'], [v, 'v']] as const) t.forEach((_, i) => (t[i] += w[`${p}self_attn.${name}_proj.bias`][i]));
      }
      if (c.qkNorm) {
        for (let h = 0; h < c.numHeads; h++) q.set(rmsNorm(q.subarray(h * hd, (h + 1) * hd), w[p + 'self_attn.q_norm.weight'], c.rmsNormEps), h * hd);
        for (let h = 0; h < c.numKvHeads; h++) k.set(rmsNorm(k.subarray(h * hd, (h + 1) * hd), w[p + 'self_attn.k_norm.weight'], c.rmsNormEps), h * hd);
      }
      for (let h = 0; h < c.numHeads; h++) rope(q.subarray(h * hd, (h + 1) * hd), pos, inv);
      for (let h = 0; h < c.numKvHeads; h++) rope(k.subarray(h * hd, (h + 1) * hd), pos, inv);
      ks[l].push(k);
      vs[l].push(v);
      const att = new Float64Array(c.numHeads * hd);
      for (let h = 0; h < c.numHeads; h++) {
        const g = Math.floor(h / rep);
        const scores = ks[l].map((kk) => {
          let s = 0;
          for (let d = 0; d < hd; d++) s += q[h * hd + d] * kk[g * hd + d];
          return s / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const sum = e.reduce((a, b) => a + b, 0);
        e.forEach((pe, t) => {
          for (let d = 0; d < hd; d++) att[h * hd + d] += (pe / sum) * vs[l][t][g * hd + d];
        });
      }
      const o = matvec(w[p + 'self_attn.o_proj.weight'], att, H);
      const x1 = x.map((v2, i) => v2 + o[i]);
      const xn2 = rmsNorm(x1, w[p + 'post_attention_layernorm.weight'], c.rmsNormEps);
      const gate = matvec(w[p + 'mlp.gate_proj.weight'], xn2, c.intermediateSize);
      const up = matvec(w[p + 'mlp.up_proj.weight'], xn2, c.intermediateSize);
      const hmid = gate.map((gv, i) => (gv / (1 + Math.exp(-gv))) * up[i]);
      const down = matvec(w[p + 'mlp.down_proj.weight'], hmid, H);
      return x1.map((v2, i) => v2 + down[i]);
    });
  }
  const head = c.tieWordEmbeddings ? w['model.embed_tokens.weight'] : w['lm_head.weight'];
  return xs.map((x) => matvec(head, rmsNorm(x, w['model.norm.weight'], c.rmsNormEps), c.vocabSize));
}

/** Greedy continuation of `prompt` (genLen tokens, no EOS stop) and the logits after the prompt. */
export function referenceGreedy(c: ModelConfig, w: Weights, prompt: number[], genLen: number): { ids: number[]; lastLogits: Float64Array } {
  const seq = [...prompt];
  let lastLogits: Float64Array | null = null;
  while (seq.length < prompt.length + genLen) {
    const logits = referenceForward(c, w, seq);
    const row = logits[logits.length - 1];
    lastLogits ??= row;
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
    seq.push(best);
  }
  return { ids: seq.slice(prompt.length), lastLogits: lastLogits! };
}
