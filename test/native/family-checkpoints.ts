/**
 * Tiny random checkpoints of each model family, written without transformers: the config.json
 * transformers would write for the family (the same shapes as bench/models/make-family-fixtures.py)
 * and seeded bf16 weights in model.safetensors. Used where the transformers-made fixtures
 * (test/fixtures/tiny-<family>/, made on the GPU host) are not needed or not there yet.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors, type StTensor } from './helpers.ts';

export type FamilyName = 'qwen2' | 'qwen3' | 'mistral' | 'llama32';
export const FAMILY_NAMES: FamilyName[] = ['qwen2', 'qwen3', 'mistral', 'llama32'];

const shape = { vocab_size: 1024, hidden_size: 64, intermediate_size: 192, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 1024, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu' };

/** config.json of each family's tiny checkpoint (keep in step with make-family-fixtures.py). */
export const FAMILY_CONFIGS: Record<FamilyName, Record<string, unknown>> = {
  // Qwen2.5-0.5B style: q/k/v biases, tied embeddings, theta 1e6, sliding window off.
  qwen2: { ...shape, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', rms_norm_eps: 1e-6, rope_theta: 1000000.0, tie_word_embeddings: true, use_sliding_window: false, sliding_window: null, max_window_layers: 2 },
  // Qwen3-0.6B style: q/k norms, head_dim 32 with hidden 64 / 4 heads (q is 128 wide), tied.
  qwen3: { ...shape, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', head_dim: 32, rms_norm_eps: 1e-6, rope_theta: 1000000.0, tie_word_embeddings: true, attention_bias: false, use_sliding_window: false, sliding_window: null },
  // Mistral 7B v0.3 style: untied, theta 1e6, no sliding window.
  mistral: { ...shape, architectures: ['MistralForCausalLM'], model_type: 'mistral', rms_norm_eps: 1e-5, rope_theta: 1000000.0, tie_word_embeddings: false, sliding_window: null },
  // Llama 3.2 style: tied embeddings, llama3 RoPE scaling (factor 32 as 3.2 has).
  llama32: { ...shape, architectures: ['LlamaForCausalLM'], model_type: 'llama', rms_norm_eps: 1e-5, rope_theta: 500000.0, tie_word_embeddings: true, attention_bias: false, mlp_bias: false, rope_scaling: { rope_type: 'llama3', factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 256 } },
};

/** mulberry32 + Box-Muller: seeded normals. */
function normals(seed: number): () => number {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** f32 → bf16 bits, round to nearest even. */
function bf16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** [name, shape, kind] of every tensor of the family's checkpoint, in checkpoint order. */
export function familyTensors(c: Record<string, unknown>): [string, number[], 'matrix' | 'norm' | 'bias'][] {
  const n = (k: string) => c[k] as number;
  const H = n('hidden_size'), I = n('intermediate_size'), hd = (c.head_dim as number) ?? H / n('num_attention_heads');
  const q = n('num_attention_heads') * hd, kv = n('num_key_value_heads') * hd;
  const out: [string, number[], 'matrix' | 'norm' | 'bias'][] = [['model.embed_tokens.weight', [n('vocab_size'), H], 'matrix']];
  for (let l = 0; l < n('num_hidden_layers'); l++) {
    const p = `model.layers.${l}.`;
    out.push([p + 'input_layernorm.weight', [H], 'norm']);
    out.push([p + 'self_attn.q_proj.weight', [q, H], 'matrix'], [p + 'self_attn.k_proj.weight', [kv, H], 'matrix'], [p + 'self_attn.v_proj.weight', [kv, H], 'matrix']);
    if (c.model_type === 'qwen2') out.push([p + 'self_attn.q_proj.bias', [q], 'bias'], [p + 'self_attn.k_proj.bias', [kv], 'bias'], [p + 'self_attn.v_proj.bias', [kv], 'bias']);
    if (c.model_type === 'qwen3') out.push([p + 'self_attn.q_norm.weight', [hd], 'norm'], [p + 'self_attn.k_norm.weight', [hd], 'norm']);
    out.push([p + 'self_attn.o_proj.weight', [H, q], 'matrix'], [p + 'post_attention_layernorm.weight', [H], 'norm']);
    out.push([p + 'mlp.gate_proj.weight', [I, H], 'matrix'], [p + 'mlp.up_proj.weight', [I, H], 'matrix'], [p + 'mlp.down_proj.weight', [H, I], 'matrix']);
  }
  out.push(['model.norm.weight', [H], 'norm']);
  if (!c.tie_word_embeddings) out.push(['lm_head.weight', [n('vocab_size'), H], 'matrix']);
  return out;
}

/**
 * Writes `dir/config.json` and `dir/model.safetensors` (bf16) for `family`: matrices N(0, 0.08),
 * norm weights 1 + N(0, 0.2), biases N(0, 0.2) (the fixtures' recipe: logits far from ties).
 */
export function makeFamilyCheckpoint(family: FamilyName, dir: string, seed = 1): void {
  mkdirSync(dir, { recursive: true });
  const config = FAMILY_CONFIGS[family];
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, torch_dtype: 'bfloat16' }, null, 1));
  const rnd = normals(seed * 7919 + family.length);
  const tensors: StTensor[] = familyTensors(config).map(([name, dims, kind]) => {
    const numel = dims.reduce((a, b) => a * b, 1);
    const bits = new Uint16Array(numel);
    for (let i = 0; i < numel; i++) bits[i] = bf16Bits(kind === 'matrix' ? 0.08 * rnd() : (kind === 'norm' ? 1 : 0) + 0.2 * rnd());
    return { name, dtype: 'BF16', shape: dims, data: new Uint8Array(bits.buffer) };
  });
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
}
