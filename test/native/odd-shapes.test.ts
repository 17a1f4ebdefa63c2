// The CPU backend against a float64 TypeScript forward pass on shapes the fixture lacks: sizes
// that are not multiples of the vector or panel width, head_dim 24 and 128, K over the cache block,
// plain RoPE and rope_parameters, tied and untied heads, f32 and bf16 weights, odd page sizes.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModel, parseModelConfig } from '../../native/index.ts';
import { pageRange, relL2, writeSafetensors, type StTensor } from './helpers.ts';
import { referenceForward, type Weights } from './reference-forward.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ms-odd-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

/** mulberry32 + Box-Muller. */
function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const uni = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uni())) * Math.cos(2 * Math.PI * uni());
}

/** Rounds to bf16 in place (ties away from zero; fine for test data), so bf16 and f32 checkpoints hold the same numbers. */
function roundBf16(v: Float32Array): Float32Array {
  const u = new Uint32Array(v.buffer, v.byteOffset, v.length);
  for (let i = 0; i < u.length; i++) u[i] = (u[i] + 0x8000) & 0xffff0000;
  return v;
}

function makeCheckpoint(name: string, cfgJson: Record<string, unknown>, dtype: 'F32' | 'BF16', seed: number) {
  const c = parseModelConfig(cfgJson);
  const rnd = gaussian(seed);
  const H = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, I = c.intermediateSize;
  const shapes: [string, number[]][] = [['model.embed_tokens.weight', [c.vocabSize, H]], ['model.norm.weight', [H]]];
  if (!c.tieWordEmbeddings) shapes.push(['lm_head.weight', [c.vocabSize, H]]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    shapes.push([p + 'input_layernorm.weight', [H]], [p + 'post_attention_layernorm.weight', [H]]);
    shapes.push([p + 'self_attn.q_proj.weight', [q, H]], [p + 'self_attn.k_proj.weight', [kv, H]], [p + 'self_attn.v_proj.weight', [kv, H]]);
    shapes.push([p + 'self_attn.o_proj.weight', [H, q]], [p + 'mlp.gate_proj.weight', [I, H]], [p + 'mlp.up_proj.weight', [I, H]]);
    shapes.push([p + 'mlp.down_proj.weight', [H, I]]);
  }
  const weights: Weights = {};
  const tensors: StTensor[] = shapes.map(([tname, shape]) => {
    const isNorm = shape.length === 1;
    const v = roundBf16(Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (isNorm ? 1 + 0.2 * rnd() : 0.08 * rnd())));
    weights[tname] = Float64Array.from(v);
    const data = dtype === 'F32' ? new Uint8Array(v.buffer) : new Uint8Array(Uint16Array.from(new Uint32Array(v.buffer), (x) => x >>> 16).buffer);
    return { name: tname, dtype, shape, data };
  });
  const dir = join(tmp, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfgJson));
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  return { dir, config: c, weights };
}

async function check(name: string, cfgJson: Record<string, unknown>, dtype: 'F32' | 'BF16', pageSize: number) {
  const { dir, config, weights } = makeCheckpoint(name, cfgJson, dtype, name.length * 7919);
  const prompt = Array.from({ length: 21 }, (_, i) => (i * 37 + 11) % config.vocabSize);
  const ref = referenceForward(config, weights, prompt);
  const m = await openModel(dir, { numPages: 16, pageSize });
  try {
    const V = config.vocabSize;
    const table = pageRange(3, Math.ceil(21 / pageSize));
    // Prefill of 20 tokens in two chunks (9, then 11 from position 9), every position's logits.
    const a = await m.backend.forward({ seqs: [{ tokens: Int32Array.from(prompt.slice(0, 9)), startPos: 0, pageTable: table }], logits: 'all' });
    const b = await m.backend.forward({ seqs: [{ tokens: Int32Array.from(prompt.slice(9, 20)), startPos: 9, pageTable: table }], logits: 'all' });
    for (let i = 0; i < 20; i++) {
      const got = i < 9 ? a.subarray(i * V, (i + 1) * V) : b.subarray((i - 9) * V, (i - 8) * V);
      const err = relL2(got, ref[i]);
      assert.ok(err < 2e-5, `${name}: position ${i} relative L2 ${err}`);
    }
    // One decode step (the direct attention path).
    const d = await m.backend.forward({ seqs: [{ tokens: Int32Array.of(prompt[20]), startPos: 20, pageTable: table }] });
    assert.ok(relL2(d, ref[20]) < 2e-5, `${name}: decode relative L2 ${relL2(d, ref[20])}`);
  } finally {
    m.backend.close();
  }
}

test('odd sizes: vocab 1000, hidden 72, head_dim 24, 3:1 GQA, intermediate 100, tied, plain RoPE, f32, pages of 5', async () => {
  await check('odd', {
    vocab_size: 1000, hidden_size: 72, intermediate_size: 100, num_hidden_layers: 2, num_attention_heads: 3,
    num_key_value_heads: 1, head_dim: 24, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true,
  }, 'F32', 5);
});

test('wide: hidden 512, head_dim 128, intermediate 1000 (partial K blocks), llama3 rope_parameters, bf16, pages of 16', async () => {
  await check('wide', {
    vocab_size: 520, hidden_size: 512, intermediate_size: 1000, num_hidden_layers: 1, num_attention_heads: 4,
    num_key_value_heads: 2, rms_norm_eps: 1e-5,
    rope_parameters: { rope_theta: 500000, rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
  }, 'BF16', 16);
});

test.run();
