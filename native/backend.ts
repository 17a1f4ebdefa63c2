/**
 * The TypeScript face of the native backend (see native/src/backend.h for the C++ side).
 * `native/index.ts` loads the addon and implements this; the engine depends only on this file.
 */
import type { CpuIsa } from '../common/env.ts';
import type { ModelFamily } from './model-families.ts';

/** Hyper-parameters of a Llama-3-like model, normalised from config.json (both rope config styles). */
export interface ModelConfig {
  /** The architecture family (model-families.ts); the next two fields are what it changes. */
  family: ModelFamily;
  /** q/k/v projections have biases (Qwen2). */
  qkvBias: boolean;
  /** RMSNorm of each q and k head before RoPE (Qwen3). */
  qkNorm: boolean;
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
  /** Page ids covering positions [0, startPos + tokens.length) (an engine passes its sequence's page list as is). */
  pageTable: Int32Array | readonly number[];
}

export interface ForwardBatch {
  seqs: ForwardSeq[];
  /** [logits='last'] 'last': (numSeqs, vocab); 'all': (totalTokens, vocab). */
  logits?: 'last' | 'all';
  /**
   * [sampling] per-sequence sampling inputs: `forwardTokens` needs them, `kvIpc.forwardWithSend`
   * then returns tokens instead of logits; `forward` ignores them. Needs logits 'last'.
   */
  sampling?: ForwardSampling;
}

/**
 * Sampling on the backend's device, one entry per sequence (algorithm: native/src/common/sampling.h; TS oracle test/shared/sampling-reference.ts,
 * the same in every backend). Float32 because the device takes float32: the TS sampler rounds
 * the same way (Math.fround), so it reproduces what a host backend picks.
 */
export interface ForwardSampling {
  /** Finite; <= 0 is greedy (argmax, lowest id on ties). */
  temperature: Float32Array;
  /** In (0, 1]: nucleus mass. */
  topP: Float32Array;
  /** The request's seed. */
  seed: Uint32Array;
  /** Index of the token being generated (0: the first output token); with seed, fixes the draw. */
  step: Uint32Array;
  /** [extras] top-k, min-p, penalties, bias, logprobs, allowed mask (every backend). */
  extras?: ForwardSamplingExtras;
  /** [promptLogprobs] logprobs of prompt tokens from their own positions' logits (echo, vLLM's prompt_logprobs). */
  promptLogprobs?: ForwardPromptLogprobs;
  /**
   * [maskGate] masks supplied late (structured outputs): the forward is submitted before its
   * allowed masks exist; the backend runs it up to the logits, then waits for
   * `Backend.supplyMasks(id, ...)` and samples with them as `extras.allowedMask` (which must be
   * unset). Excludes nothing else.
   */
  maskGate?: ForwardMaskGate;
}

/** A forward's mask gate (ForwardSampling.maskGate). */
export interface ForwardMaskGate {
  /** Integer in [0, 2^32), not held by another forward of this backend that has not settled. */
  id: number;
  /** In [1, 3600000]: a gate not opened by then fails its forward with NATIVE_ERROR (details.nativeCode MASK_TIMEOUT). */
  timeoutMs: number;
}

/**
 * Prompt logprobs (native/src/backend.h PromptLogprobs): token t of the batch (sequences'
 * tokens concatenated) with targets[t] >= 0 gets, from its raw logits (no processing,
 * temperature 1), the logprob of targets[t] and its sequence's numTop top entries. Only those
 * positions' logits are computed; other rows of the outputs are left as they are.
 */
export interface ForwardPromptLogprobs {
  /** (numSeqs,) top entries in [0, 20]. */
  numTop: Int32Array;
  /** (numTokens,) the id whose logprob the token's logits give (the next prompt token); -1: none. */
  targets: Int32Array;
  /** Out (numTokens, 21): the target's logprob, then the top ones. */
  logprobsOut: Float32Array;
  /** Out (numTokens, 20): ids of the top entries, best first (-1 past the asked count). */
  topIdsOut: Int32Array;
}

/**
 * Per-sequence logit processing and logprobs (native/src/backend.h SamplingExtras, the algorithm
 * in native/src/common/logit-processing.h). Every array is optional; per-sequence arrays have
 * numSeqs entries, CSR offsets numSeqs + 1.
 */
export interface ForwardSamplingExtras {
  /** 0: off. */
  topK?: Int32Array;
  /** In [0, 1]; 0: off. */
  minP?: Float32Array;
  /** > 0; 1: off. */
  repetitionPenalty?: Float32Array;
  presencePenalty?: Float32Array;
  frequencyPenalty?: Float32Array;
  /** Penalty-state slot in the backend, -1: none; needs reset, histOffsets, histTokens, histNumOutput. */
  slot?: Int32Array;
  /** 1: rebuild the slot from the row's history (prompt + output so far). */
  reset?: Uint8Array;
  histOffsets?: Int32Array;
  histTokens?: Int32Array;
  /** How many of a reset row's last history tokens are output. */
  histNumOutput?: Int32Array;
  /** CSR of (token, additive bias); -Infinity bans a token. */
  biasOffsets?: Int32Array;
  biasTokens?: Int32Array;
  biasValues?: Float32Array;
  /** Grammar hook: (numSeqs, ceil(vocab / 32)) bitmask of allowed tokens; unset: all allowed. */
  allowedMask?: Uint32Array;
  /** -1: none, else top entries in [0, 20]; needs logprobsOut and topIdsOut. */
  numLogprobs?: Int32Array;
  /** Out (numSeqs, 21): the sampled token's logprob, then the top ones. */
  logprobsOut?: Float32Array;
  /** Out (numSeqs, 20): ids of the top entries, best first (-1 past the asked count). */
  topIdsOut?: Int32Array;
}

/**
 * The engine's memory plan, fixed once at start (native/src/backend.h MemoryPlan): every per-step
 * buffer is sized for the largest step the caps allow, then the KV pool takes what is left
 * (kvPages auto, CUDA) or its fixed size. A step past the caps is refused with OVER_PLAN; a plan
 * that does not fit the device is refused at start with DEVICE_MEMORY.
 */
export interface MemoryPlan {
  /** Tokens per step the plan holds. */
  maxBatchTokens: number;
  /** Sequences per step the plan holds (min(maxNumSeqs, maxBatchTokens)). */
  maxNumSeqs: number;
  /** Longest position a step may reach (the model's max positions). */
  maxContext: number;
  numPages: number;
  pageSize: number;
  /** numPages * pageSize. */
  kvTokens: number;
  /** Longest request the engine can hold: min(maxContext, kvTokens). */
  maxRequestTokens: number;
  /** Bytes of the weights (device on CUDA, host on CPU). */
  weightsBytes: number;
  /** Bytes of the step scratch (activations, logits, sampling, attention partials, metadata). */
  arenaBytes: number;
  /** Device bytes of the decode CUDA graphs (0 on CPU). */
  graphBytes: number;
  /** Bytes of the KV page pool. */
  kvBytes: number;
  /** The device's total memory (0 on CPU). */
  deviceTotal: number;
  /** Device memory free once the plan is allocated (0 on CPU). */
  deviceFree: number;
  /** Decode CUDA graphs captured at start (0 on CPU). */
  numGraphs: number;
  /** True when the bytes are host memory (CPU backend). */
  isHost: boolean;
}

export interface Backend {
  readonly config: ModelConfig;
  /** The device and the options the backend was built with (shown by the engine's `status`). */
  readonly nativeStatus: NativeStatus;
  /** Pages of the KV pool (an auto pool: as sized at start). */
  readonly numPages: number;
  /** The memory plan (complete once the model is open). */
  readonly plan: MemoryPlan;
  readonly pageSize: number;
  /** Bytes of one page across all layers, wire layout (per layer: K then V). */
  readonly pageBytes: number;
  readonly device: string;
  /** Runs off the event loop; calls are serialised. Resolves to float32 logits. */
  forward(batch: ForwardBatch): Promise<Float32Array>;
  /**
   * A forward that samples one token per sequence from its last token's logits on the device
   * (batch.sampling required); only the (numSeqs,) token ids come back to the host.
   */
  forwardTokens(batch: ForwardBatch & { sampling: ForwardSampling }): Promise<Int32Array>;
  /**
   * Opens the mask gate `id` of a submitted forward (ForwardSampling.maskGate), synchronously:
   * `masks` (numSeqs, ceil(vocab / 32)) are read in place until that forward settles (do not
   * write them meanwhile), null samples the rows unmasked. False when no forward waits on `id`
   * any more (it settled, failed or timed out); BAD_REQUEST when masks has the wrong length.
   */
  supplyMasks(id: number, masks: Uint32Array | null): boolean;
  /**
   * Mask gates the backend's thread waited at since it started, and how long in all: the device
   * idled for masks at most this long (CPU: exactly; CUDA: the host waited while the queued
   * forward may still have been running).
   */
  maskGateStats(): { numWaits: number; waitMs: number };
  /** (pageIds.length, pageBytes) bytes in wire layout. */
  readPages(pageIds: Int32Array): Promise<Uint8Array>;
  writePages(pageIds: Int32Array, data: Uint8Array): Promise<void>;
  close(): void;
  /**
   * KV transfer between pools on one GPU (CUDA IPC). Absent or rejecting with NO_DEVICE on
   * backends without it (the CPU backend), so callers fall back to the host transport.
   */
  readonly kvIpc?: KvIpcOps;
  /**
   * [joinNvshmem] joins an NVSHMEM job and puts the KV pool in its symmetric heap (collective with
   * the other members; before the model is finalized). CUDA builds with NVSHMEM only; others
   * reject with NO_DEVICE.
   */
  joinNvshmem?(uid: Uint8Array, rank: number, nranks: number): Promise<NvshmemMembership>;
}

/** This process's place in an NVSHMEM job. */
export interface NvshmemMembership {
  pe: number;
  npes: number;
  /** nvshmemx_init_status(): 3 = limited MPG (several PEs share one GPU). */
  initStatus: number;
  initMs: number;
}

/** This pool as a peer sees it. */
export interface KvPoolExport {
  /** 64-byte cudaIpcMemHandle_t of the page pool. */
  handle: Uint8Array;
  /** UUID (hex) of the GPU the pool lives on. */
  deviceUuid: string;
}

/** Per-layer GPU timestamps of a forward with a send, ms since the forward began. */
export interface SendTimeline {
  /** Per layer: its compute done, its copy start, its copy end. */
  layers: { computed: number; copyStart: number; copyEnd: number }[];
  /** The forward's end (compute stream) and the send's end (transfer stream). */
  computeEnd: number;
  sendEnd: number;
}

/** The pages a forwardWithSend pushes after each layer. */
export interface LayerSendSpec {
  peerId: number;
  srcPages: Int32Array;
  dstPages: Int32Array;
  peerIds?: Int32Array;
}

export interface KvIpcOps {
  exportPool(): Promise<KvPoolExport>;
  /** Opens a peer's pool (cached per handle), resolves to its peer id. */
  openPeer(handle: Uint8Array, peerNumPages: number): Promise<number>;
  /** Copies whole pages local → peer (toPeer) or peer → local; peerId -1: within this pool. Resolves to GPU ms. */
  copyPages(peerId: number, localPages: Int32Array, peerPages: Int32Array, toPeer: boolean): Promise<number>;
  /**
   * A forward whose layer L's KV of srcPages goes to the peer's dstPages right after layer L.
   * peerIds (one per page pair) lets one forward send to several peers; else all go to peerId.
   * With batch.sampling: `tokens` (numSeqs,) as forwardTokens gives, and `logits` is empty.
   */
  forwardWithSend(batch: ForwardBatch, send: LayerSendSpec): Promise<{ logits: Float32Array; tokens?: Int32Array; timeline: SendTimeline }>;
  /** The pool of PE `pe` of this process's NVSHMEM job as a peer; direct: reached through nvshmem_ptr (load/store), else one-sided puts. */
  openNvshmemPeer(pe: number): Promise<{ peerId: number; direct: boolean }>;
}

export interface BackendOptions {
  /** [device='cpu'] 'cpu' or 'cuda:N'. */
  device?: string;
  /**
   * KV pool size in pages, or 'auto': on CUDA what gpuMemoryUtilization leaves after weights, the
   * step arena and CUDA graphs; on CPU a fixed 512 pages.
   */
  numPages: number | 'auto';
  /** [maxBatchTokens=8192] tokens per step the memory plan holds; a larger step fails with OVER_PLAN. */
  maxBatchTokens?: number;
  /** [maxNumSeqs=256] sequences per step the memory plan holds; more fail with OVER_PLAN. */
  maxNumSeqs?: number;
  /** [gpuMemoryUtilization=0.9] share of the device's total memory a CUDA engine may use (kvPages auto). */
  gpuMemoryUtilization?: number;
  /** [pageSize=16] tokens per page. */
  pageSize?: number;
  /** [numThreads=0] CPU threads, 0 = all cores. */
  numThreads?: number;
  /** [native] kernel and launch options; each field unset takes its environment knob (common/env.ts). */
  native?: Partial<NativeOptions>;
}

/**
 * Kernel and launch options of a native backend (ms::BackendOptions in native/src/backend.h),
 * fixed when the backend is built: a captured CUDA graph and an eager step always agree.
 * Defaults come from common/env.ts (the knob named in brackets).
 */
export interface NativeOptions {
  /** [cpuIsa=MS_CPU_ISA, 'auto'] CPU kernel set; a set this CPU lacks falls back to a narrower one. */
  cpuIsa: CpuIsa;
  /** [cudaGraphs=MS_CUDA_GRAPHS, true] CUDA: replay captured graphs for pure-decode steps. */
  cudaGraphs: boolean;
  /** [pdl=MS_PDL, true] CUDA: programmatic dependent launch between kernels. */
  pdl: boolean;
  /** [decodeClusterCap=MS_DECODE_CLUSTER, 16] CUDA: largest decode-attention cluster; below 8 = fixed splits. */
  decodeClusterCap: number;
  /** [nvshmemPut=MS_NVSHMEM_PUT, false] CUDA: NVSHMEM peers by one-sided puts even where a direct pointer exists. */
  nvshmemPut: boolean;
}

/** What a backend was built with, as `status` shows it. */
export interface NativeStatus extends NativeOptions {
  /** e.g. "cpu (2 threads, avx512)" or "cuda:0 (NVIDIA H200, sm_90, 132 SMs)". */
  deviceName: string;
  numThreads: number;
}
