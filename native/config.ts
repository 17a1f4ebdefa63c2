/**
 * Hugging Face `config.json` → {@link ModelConfig}. Accepts both RoPE styles: the classic
 * `rope_theta` + `rope_scaling` (published Llama 3.1 checkpoints) and the newer
 * `rope_parameters` (transformers ≥ 5). The family (Llama, Mistral, Qwen2, Qwen3) and its fields
 * are checked in model-families.ts; anything else fails with BAD_CONFIG naming the field.
 */
import { MicroserveError } from '../common/errors.ts';
import type { ModelConfig } from './backend.ts';
import { familyOf } from './model-families.ts';

type Json = Record<string, unknown>;

function bad(field: string, why: string): never {
  throw new MicroserveError('BAD_CONFIG', `config.json: ${field} ${why}`, { field });
}

function int(c: Json, field: string, fallback?: number): number {
  const v = c[field] ?? fallback;
  if (v === undefined) bad(field, 'is missing');
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) bad(field, `must be a positive integer (got ${JSON.stringify(v)})`);
  return v;
}

function num(c: Json, field: string, fallback: number | undefined, prefix = ''): number {
  const v = c[field] ?? fallback;
  if (v === undefined) bad(prefix + field, 'is missing');
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(prefix + field, `must be a positive number (got ${JSON.stringify(v)})`);
  return v;
}

function tokenIds(c: Json, field: string): number[] {
  const v = c[field];
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) bad(field, `must be a token id or a list of them (got ${JSON.stringify(v)})`);
  }
  return list as number[];
}

/** RoPE theta and scaling from either config style. */
function rope(c: Json): Pick<ModelConfig, 'ropeTheta' | 'ropeScaling'> {
  const params = c.rope_parameters;
  let field = 'rope_scaling';
  let scaling: Json | null = null;
  let theta: number;
  if (params !== undefined && params !== null) {
    if (typeof params !== 'object' || Array.isArray(params)) bad('rope_parameters', 'must be an object');
    field = 'rope_parameters';
    scaling = params as Json;
    theta = num(scaling, 'rope_theta', (c.rope_theta as number) ?? 10000, 'rope_parameters.');
  } else {
    theta = num(c, 'rope_theta', 10000);
    const s = c.rope_scaling;
    if (s !== undefined && s !== null) {
      if (typeof s !== 'object' || Array.isArray(s)) bad('rope_scaling', 'must be an object or null');
      scaling = s as Json;
    }
  }
  const type = scaling ? (scaling.rope_type ?? scaling.type ?? 'default') : 'default';
  if (type === 'default') return { ropeTheta: theta, ropeScaling: null };
  if (type !== 'llama3') bad(`${field}.rope_type`, `'${String(type)}' is not supported (only 'default' and 'llama3')`);
  const s = scaling as Json;
  const p = `${field}.`;
  const lowFreqFactor = num(s, 'low_freq_factor', undefined, p);
  const highFreqFactor = num(s, 'high_freq_factor', undefined, p);
  if (highFreqFactor <= lowFreqFactor) bad(`${p}high_freq_factor`, 'must be greater than low_freq_factor');
  const orig = s.original_max_position_embeddings;
  if (typeof orig !== 'number' || !Number.isInteger(orig) || orig < 1) bad(`${p}original_max_position_embeddings`, 'must be a positive integer');
  return {
    ropeTheta: theta,
    ropeScaling: { type: 'llama3', factor: num(s, 'factor', undefined, p), lowFreqFactor, highFreqFactor, originalMaxPositions: orig },
  };
}

/** Parses a `config.json` object of a supported family; throws MicroserveError BAD_CONFIG naming the field. */
export function parseModelConfig(json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) bad('(root)', 'must be a JSON object');
  const c = json as Json;
  const traits = familyOf(c);
  const hiddenSize = int(c, 'hidden_size');
  const numHeads = int(c, 'num_attention_heads');
  const numKvHeads = int(c, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) bad('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  const headDefault = hiddenSize % numHeads === 0 ? hiddenSize / numHeads : undefined;
  const headDim = int(c, 'head_dim', headDefault);
  if (headDim % 2 !== 0) bad('head_dim', `must be even (got ${headDim})`);
  const tie = c.tie_word_embeddings ?? false;
  if (typeof tie !== 'boolean') bad('tie_word_embeddings', 'must be a boolean');
  const bos = c.bos_token_id ?? null;
  if (bos !== null && (typeof bos !== 'number' || !Number.isInteger(bos) || bos < 0)) bad('bos_token_id', 'must be a token id or null');
  const vocabSize = int(c, 'vocab_size');
  const eosTokenIds = tokenIds(c, 'eos_token_id');
  for (const id of [...eosTokenIds, ...(bos === null ? [] : [bos as number])]) {
    if (id >= vocabSize) bad(id === bos ? 'bos_token_id' : 'eos_token_id', `${id} is outside the vocabulary (vocab_size ${vocabSize})`);
  }
  return {
    ...traits,
    vocabSize,
    hiddenSize,
    intermediateSize: int(c, 'intermediate_size'),
    numLayers: int(c, 'num_hidden_layers'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: num(c, 'rms_norm_eps', 1e-6),
    ...rope(c),
    tieWordEmbeddings: tie,
    maxPositions: int(c, 'max_position_embeddings', 2048),
    bosTokenId: bos as number | null,
    eosTokenIds,
  };
}
