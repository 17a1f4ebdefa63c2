/**
 * The TypeScript face of the native backend (see native/src/backend.h for the C++ side).
 * `native/index.ts` loads the addon and implements this; the engine depends only on this file.
 */

/** Llama-3 hyper-parameters, normalised from config.json (both rope config styles). */
export interface ModelConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** null: plain RoPE. */
  ropeScaling: null | {
    type: 'llama3';
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositions: number;
  };
  tieWordEmbeddings: boolean;
  maxPositions: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

/** One sequence of a ragged batch: `tokens` go at positions [startPos, startPos + tokens.length). */
export interface ForwardSeq {
  tokens: Int32Array;
  startPos: number;
  /** Page ids covering positions [0, startPos + tokens.length). */
  pageTable: Int32Array;
}

export interface ForwardBatch {
  seqs: ForwardSeq[];
  /** [logits='last'] 'last': (numSeqs, vocab); 'all': (totalTokens, vocab). */
  logits?: 'last' | 'all';
}

export interface Backend {
  readonly config: ModelConfig;
  readonly numPages: number;
  readonly pageSize: number;
  /** Bytes of one page across all layers, wire layout (per layer: K then V). */
  readonly pageBytes: number;
  readonly device: string;
  /** Runs off the event loop; calls are serialised. Resolves to float32 logits. */
  forward(batch: ForwardBatch): Promise<Float32Array>;
  /** (pageIds.length, pageBytes) bytes in wire layout. */
  readPages(pageIds: Int32Array): Promise<Uint8Array>;
  writePages(pageIds: Int32Array, data: Uint8Array): Promise<void>;
  close(): void;
}

export interface BackendOptions {
  /** [device='cpu'] 'cpu' or 'cuda:N'. */
  device?: string;
  /** [numPages] KV pool size in pages. */
  numPages: number;
  /** [pageSize=16] tokens per page. */
  pageSize?: number;
  /** [numThreads=0] CPU threads, 0 = all cores. */
  numThreads?: number;
}
