/**
 * The one place that loads the compiled addon (native/build/Release/microserve_native.node, or
 * the file named by MICROSERVE_NATIVE_ADDON (common/env.ts), e.g. a sanitizer build) and turns its errors
 * (`{ code, message }`) into MicroserveError.
 */
import { createRequire } from 'node:module';
import { MicroserveError, type ErrorCode } from '../common/errors.ts';
import type { ForwardSampling, NativeOptions } from './backend.ts';
import { env } from '../common/env.ts';

/** Hyper-parameters as the addon takes them (ms::ModelConfig field names). */
export interface NativeModelConfig {
  vocab: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  rmsEps: number;
  ropeTheta: number;
  llama3Scaling: boolean;
  ropeFactor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositions: number;
  tiedEmbeddings: boolean;
  /** max_position_embeddings: the plan's context cap. */
  maxPositions: number;
  /** q/k/v projection biases (Qwen2). */
  qkvBias: boolean;
  /** Per-head q/k RMSNorm before RoPE (Qwen3). */
  qkNorm: boolean;
}

/** The plan caps as the addon takes them (ms::BackendOptions; absent fields keep its defaults). */
export interface NativePlanOptions {
  maxBatchTokens?: number;
  maxNumSeqs?: number;
  gpuMemoryUtilization?: number;
}

/** The addon's class (see native/src/addon.cc). All methods validate their arguments. */
/** The addon constructor's last argument (ms::BackendOptions): every field given. */
/** The constructor's options: the native knobs, the thread count and the memory plan's caps. */
export interface NativeBackendArgs extends NativeOptions, NativePlanOptions {
  numThreads: number;
}

export interface NativeBackendHandle {
  readonly pageBytes: number;
  /** Pages of the KV pool; 0 for an auto pool until finalize sized it. */
  readonly numPages: number;
  /** The memory plan as 15 numbers (see MemoryPlan in native/src/backend.h; native-backend.ts names them). */
  memoryPlan(): Promise<Float64Array>;
  /** [free, total] device bytes now (cudaMemGetInfo); NO_DEVICE on CPU. */
  deviceMemory(): Promise<Float64Array>;
  readonly deviceName: string;
  /** The options the backend was built with. */
  readonly options: NativeBackendArgs;
  /** dtype: 0 F32, 1 F16, 2 BF16. */
  loadTensor(name: string, dtype: number, shape: number[], data: Uint8Array): Promise<void>;
  /** Whole rows [rowBegin, ...) of a tensor (Backend::loadTensorRows). */
  loadTensorRows(name: string, dtype: number, shape: number[], rowBegin: number, data: Uint8Array): Promise<void>;
  randomInit(seed: number, std: number): Promise<void>;
  finalize(): Promise<void>;
  forward(tokens: Int32Array, seqLens: Int32Array, startPos: Int32Array, pageTables: Int32Array, maxPagesPerSeq: number, allLogits: boolean): Promise<Float32Array>;
  /** With sampling: the (numSeqs,) sampled token ids; no logits leave the device. */
  forward(tokens: Int32Array, seqLens: Int32Array, startPos: Int32Array, pageTables: Int32Array, maxPagesPerSeq: number, allLogits: false, sampling: ForwardSampling): Promise<Int32Array>;
  /** Opens a forward's mask gate (sampling.maskGate); false when none waits on `id`. Throws BAD_ARGUMENT on a wrong length. */
  supplyMasks(id: number, masks: Uint32Array | null): boolean;
  /** [gates waited at, ms the backend's thread waited at them in all]. */
  maskGateStats(): Float64Array;
  readPages(pageIds: Int32Array): Promise<Uint8Array>;
  writePages(pageIds: Int32Array, data: Uint8Array): Promise<void>;
  /** 64-byte CUDA IPC handle of the KV pool, then the device UUID as 32 hex characters. */
  exportKvPool(): Promise<Uint8Array>;
  /** Resolves to [peerId]. */
  openPeerPool(handle: Uint8Array, peerNumPages: number): Promise<Int32Array>;
  /** Resolves to [GPU ms of the copy]. peerId -1: within this pool. */
  copyPeerPages(peerId: number, localPages: Int32Array, peerPages: Int32Array, toPeer: boolean): Promise<Float32Array>;
  forwardWithSend(tokens: Int32Array, seqLens: Int32Array, startPos: Int32Array, pageTables: Int32Array, maxPagesPerSeq: number, allLogits: boolean, peerId: number, srcPages: Int32Array, dstPages: Int32Array, peerIds?: Int32Array, sampling?: ForwardSampling): Promise<{ logits: Float32Array; tokens?: Int32Array; timeline: Float32Array }>;
  /** Resolves to [pe, npes, nvshmemx_init_status, init ms]. Collective; before finalize. */
  joinNvshmem(uid: Uint8Array, rank: number, nranks: number): Promise<Float64Array>;
  /** Resolves to [peerId, 1 if reached directly through nvshmem_ptr else 0]. */
  openNvshmemPeer(pe: number): Promise<Int32Array>;
  close(): void;
}

interface Addon {
  NativeBackend: {
    new (device: string, config: NativeModelConfig, numPages: number, pageSize: number, options: NativeBackendArgs): NativeBackendHandle;
  };
  hasCuda: boolean;
  /** A loader staging buffer: page-locked where built with CUDA and a device answers (DMA to the device), else ordinary memory. */
  allocHostBuffer(bytes: number, device: string): { buffer: ArrayBuffer; isPinned: boolean };
  /** Frees a buffer of allocHostBuffer now (detaches it). */
  releaseHostBuffer(buffer: ArrayBuffer): void;
  /** A new NVSHMEM job's 128-byte bootstrap id (this process joins as rank 0); throws NO_DEVICE without NVSHMEM. */
  nvshmemUniqueId(): Uint8Array;
}

let addon: Addon | null = null;

export function loadAddon(): Addon {
  if (addon) return addon;
  try {
    const file = env('nativeAddon');
    addon = createRequire(import.meta.url)(file) as Addon;
  } catch (e) {
    throw new MicroserveError('NATIVE_ERROR', `the native addon is not built (run \`npm run build:native\`): ${(e as Error).message}`);
  }
  return addon;
}

const PASSED_THROUGH = new Set<string>(['BAD_TOKEN', 'BAD_CHECKPOINT', 'BAD_CONFIG', 'NO_DEVICE', 'NATIVE_ERROR', 'OVER_PLAN', 'DEVICE_MEMORY']);

/** Native error → MicroserveError; BAD_ARGUMENT and OUT_OF_MEMORY become NATIVE_ERROR with `details.nativeCode`. */
export function toMicroserveError(e: unknown): Error {
  if (e instanceof MicroserveError) return e;
  const code = (e as { code?: unknown })?.code;
  const message = (e as Error)?.message ?? String(e);
  if (typeof code !== 'string') return e instanceof Error ? e : new Error(message);
  if (PASSED_THROUGH.has(code)) return new MicroserveError(code as ErrorCode, message);
  return new MicroserveError('NATIVE_ERROR', message, { nativeCode: code });
}

/** Runs a native call, converting both synchronous throws and rejections. */
export async function nativeCall<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw toMicroserveError(e);
  }
}
