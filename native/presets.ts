/**
 * Built-in models with seeded random weights (no download): the shapes are real, the weights are
 * not, and the names say so. Weights follow the fixtures' recipe (matrices N(0, 0.08), norms
 * 1 + N(0, 0.2), rounded to bf16) so logits are not flat and greedy decoding is deterministic.
 */
import type { ModelConfig } from './backend.ts';

export interface Preset {
  name: string;
  description: string;
  config: ModelConfig;
  /** Seed of the random weights [default: 0]. */
  seed: number;
  /** Standard deviation of the weight matrices. */
  std: number;
}

const LLAMA3_VOCAB = 128256;
const LLAMA3_ROPE = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 } as const;
const LLAMA_TRAITS = { family: 'llama', qkvBias: false, qkNorm: false } as const;
const LLAMA3_TOKENS = { bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009] };

export const PRESETS: Record<string, Preset> = {
  tiny: {
    name: 'tiny',
    description: 'random-weight Llama 3 shape, 4 layers, hidden 256 (~40M parameters, mostly the tied embedding)',
    seed: 0,
    std: 0.08,
    config: {
      ...LLAMA_TRAITS,
      vocabSize: LLAMA3_VOCAB,
      hiddenSize: 256,
      intermediateSize: 768,
      numLayers: 4,
      numHeads: 8,
      numKvHeads: 2,
      headDim: 32,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: { ...LLAMA3_ROPE },
      tieWordEmbeddings: true,
      maxPositions: 8192,
      ...LLAMA3_TOKENS,
    },
  },
  'llama-3.1-8b': {
    name: 'llama-3.1-8b',
    description: 'random-weight Llama 3.1 8B shape (8.0B parameters; for GPU benchmarks)',
    seed: 0,
    std: 0.08,
    config: {
      ...LLAMA_TRAITS,
      vocabSize: LLAMA3_VOCAB,
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: { ...LLAMA3_ROPE },
      tieWordEmbeddings: false,
      maxPositions: 131072,
      ...LLAMA3_TOKENS,
    },
  },
};

export function isPreset(name: string): boolean {
  return Object.hasOwn(PRESETS, name);
}
