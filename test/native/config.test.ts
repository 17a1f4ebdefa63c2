// parseModelConfig: both RoPE styles, defaults, and BAD_CONFIG naming the field.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import { parseModelConfig } from '../../native/config.ts';

const base = {
  model_type: 'llama',
  vocab_size: 128256,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  max_position_embeddings: 131072,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
};
const llama3 = { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
const scaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };

function fails(json: unknown, field: string) {
  try {
    parseModelConfig(json);
  } catch (e) {
    assert.ok(isMicroserveError(e, 'BAD_CONFIG'), String(e));
    assert.ok((e as Error).message.includes(field), `'${(e as Error).message}' should name ${field}`);
    return;
  }
  assert.unreachable(`expected BAD_CONFIG for ${field}`);
}

test('classic style: rope_theta + rope_scaling (rope_type or type)', () => {
  const c = parseModelConfig({ ...base, rope_theta: 500000, rope_scaling: { ...llama3, rope_type: 'llama3' } });
  assert.is(c.ropeTheta, 500000);
  assert.equal(c.ropeScaling, scaling);
  assert.is(c.headDim, 128);
  assert.is(c.tieWordEmbeddings, false);
  assert.equal(c.eosTokenIds, [128001, 128008, 128009]);
  assert.is(c.bosTokenId, 128000);
  assert.equal(parseModelConfig({ ...base, rope_theta: 500000, rope_scaling: { ...llama3, type: 'llama3' } }).ropeScaling, scaling);
});

test('new style: rope_parameters', () => {
  const c = parseModelConfig({ ...base, rope_parameters: { rope_theta: 500000, rope_type: 'llama3', ...llama3 } });
  assert.is(c.ropeTheta, 500000);
  assert.equal(c.ropeScaling, scaling);
  const plain = parseModelConfig({ ...base, rope_parameters: { rope_theta: 10000, rope_type: 'default' } });
  assert.is(plain.ropeTheta, 10000);
  assert.is(plain.ropeScaling, null);
});

test('defaults: head_dim, kv heads, theta, eos as a number, tied embeddings', () => {
  const { num_key_value_heads, ...rest } = base;
  const c = parseModelConfig({ ...rest, eos_token_id: 2, tie_word_embeddings: true, head_dim: 64 });
  assert.is(c.numKvHeads, 32);
  assert.is(c.headDim, 64);
  assert.is(c.ropeTheta, 10000);
  assert.is(c.ropeScaling, null);
  assert.equal(c.eosTokenIds, [2]);
  assert.is(c.tieWordEmbeddings, true);
  assert.equal(parseModelConfig({ ...base, eos_token_id: null, bos_token_id: null }).eosTokenIds, []);
});

test('bad configs name the field', () => {
  fails(null, '(root)');
  fails({ ...base, vocab_size: undefined }, 'vocab_size');
  fails({ ...base, hidden_size: '4096' }, 'hidden_size');
  fails({ ...base, num_key_value_heads: 5 }, 'num_key_value_heads');
  fails({ ...base, head_dim: 33 }, 'head_dim');
  fails({ ...base, rope_scaling: { ...llama3, rope_type: 'linear' } }, 'rope_scaling.rope_type');
  fails({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'rope_scaling.low_freq_factor');
  fails({ ...base, rope_parameters: { rope_type: 'llama3', rope_theta: -1 } }, 'rope_parameters.rope_theta');
  fails({ ...base, model_type: 'gemma' }, 'model_type');
  fails({ ...base, architectures: ['GemmaForCausalLM'] }, 'architectures');
  fails({ ...base, architectures: 'LlamaForCausalLM' }, 'architectures');
  fails({ ...base, architectures: ['Qwen2ForCausalLM'], model_type: 'llama' }, 'model_type');
  fails({ ...base, hidden_act: 'gelu' }, 'hidden_act');
  fails({ ...base, mlp_bias: true }, 'mlp_bias');
  fails({ ...base, attention_bias: true }, 'attention_bias');
  fails({ ...base, eos_token_id: [128001, 'x'] }, 'eos_token_id');
  fails({ ...base, eos_token_id: 200000 }, 'eos_token_id');
  fails({ ...base, tie_word_embeddings: 'yes' }, 'tie_word_embeddings');
});

test('families from architectures / model_type, and what each changes', () => {
  const qwen2 = parseModelConfig({ ...base, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', use_sliding_window: false, sliding_window: 4096 });
  assert.equal([qwen2.family, qwen2.qkvBias, qwen2.qkNorm], ['qwen2', true, false]);
  const qwen3 = parseModelConfig({ ...base, architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', head_dim: 128, hidden_size: 1024, num_attention_heads: 16 });
  assert.equal([qwen3.family, qwen3.qkvBias, qwen3.qkNorm, qwen3.headDim], ['qwen3', false, true, 128]);
  const mistral = parseModelConfig({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', sliding_window: null });
  assert.equal([mistral.family, mistral.qkvBias, mistral.qkNorm], ['mistral', false, false]);
  assert.is(parseModelConfig({ ...base, model_type: 'qwen3' }).family, 'qwen3');  // no architectures: model_type decides
  assert.is(parseModelConfig({ ...base, model_type: undefined }).family, 'llama');
  // A window no shorter than the context is full attention.
  assert.is(parseModelConfig({ ...base, model_type: 'mistral', sliding_window: 131072 }).family, 'mistral');
});

test('sliding-window and bias configs a family cannot run are refused naming the field', () => {
  fails({ ...base, model_type: 'mistral', sliding_window: 4096 }, 'sliding_window');
  fails({ ...base, model_type: 'mistral', sliding_window: 'big' }, 'sliding_window');
  fails({ ...base, model_type: 'qwen2', use_sliding_window: true, sliding_window: 4096 }, 'sliding_window');
  fails({ ...base, model_type: 'qwen3', use_sliding_window: true, sliding_window: null }, 'use_sliding_window');
  fails({ ...base, model_type: 'qwen3', attention_bias: true }, 'attention_bias');
  fails({ ...base, model_type: 'mistral', attention_bias: true }, 'attention_bias');
});

test.run();
