/** {@link Backend} over the addon: packs ragged batches into flat Int32Arrays, maps errors. */
import { MicroserveError } from '../common/errors.ts';
import type { Backend, ForwardBatch, ForwardSampling, KvIpcOps, MemoryPlan, ModelConfig, NativeStatus, NvshmemMembership, SendTimeline } from './backend.ts';
import { loadAddon, nativeCall, toMicroserveError, type NativeBackendArgs, type NativeBackendHandle, type NativeModelConfig } from './addon.ts';

/** Dtype codes of NativeBackendHandle.loadTensor. */
export const DTYPE_CODES = { F32: 0, F16: 1, BF16: 2 } as const;

export function toNativeConfig(c: ModelConfig): NativeModelConfig {
  const s = c.ropeScaling;
  return {
    vocab: c.vocabSize,
    hidden: c.hiddenSize,
    intermediate: c.intermediateSize,
    layers: c.numLayers,
    heads: c.numHeads,
    kvHeads: c.numKvHeads,
    headDim: c.headDim,
    rmsEps: c.rmsNormEps,
    ropeTheta: c.ropeTheta,
    llama3Scaling: s !== null,
    ropeFactor: s?.factor ?? 1,
    lowFreqFactor: s?.lowFreqFactor ?? 1,
    highFreqFactor: s?.highFreqFactor ?? 4,
    originalMaxPositions: s?.originalMaxPositions ?? c.maxPositions,
    tiedEmbeddings: c.tieWordEmbeddings,
    maxPositions: c.maxPositions,
    qkvBias: c.qkvBias,
    qkNorm: c.qkNorm,
  };
}

/** The order of the addon's memoryPlan() numbers. */
const PLAN_FIELDS = ['maxBatchTokens', 'maxNumSeqs', 'maxContext', 'numPages', 'pageSize', 'kvTokens', 'maxRequestTokens', 'weightsBytes', 'arenaBytes', 'graphBytes', 'kvBytes', 'deviceTotal', 'deviceFree', 'numGraphs', 'isHost'] as const;

function toPlan(v: Float64Array): MemoryPlan {
  const o: Record<string, number | boolean> = {};
  PLAN_FIELDS.forEach((k, i) => (o[k] = k === 'isHost' ? v[i] === 1 : v[i]));
  return o as unknown as MemoryPlan;
}

export class NativeBackend implements Backend {
  readonly pageBytes: number;
  readonly device: string;
  readonly nativeStatus: NativeStatus;
  private handle: NativeBackendHandle | null;
  private memPlan: MemoryPlan | null = null;
  private pages: number;
  private readonly packer = new BatchPacker();

  /** numPages 0 = auto (sized by finalize on CUDA; 512 on CPU). */
  constructor(
    readonly config: ModelConfig,
    numPages: number,
    readonly pageSize: number,
    device: string,
    options: NativeBackendArgs,
  ) {
    const { NativeBackend: Ctor } = loadAddon();
    try {
      this.handle = new Ctor(device, toNativeConfig(config), numPages, pageSize, options);
    } catch (e) {
      throw toMicroserveError(e);
    }
    this.pageBytes = this.handle.pageBytes;
    this.pages = this.handle.numPages;
    this.device = device;
    this.nativeStatus = Object.freeze({ deviceName: this.handle.deviceName, ...this.handle.options });
  }

  /** Pages of the KV pool (0 for an auto pool before finalize). */
  get numPages(): number {
    return this.pages;
  }

  /** The memory plan; complete after finalize. */
  get plan(): MemoryPlan {
    if (!this.memPlan) throw new MicroserveError('NATIVE_ERROR', 'the memory plan is known after finalize');
    return this.memPlan;
  }

  /** Human-readable backend description (e.g. "cpu (2 threads, avx512)"). */
  get deviceName(): string {
    return this.native().deviceName;
  }

  loadTensor(name: string, dtype: keyof typeof DTYPE_CODES, shape: number[], data: Uint8Array): Promise<void> {
    return nativeCall(() => this.native().loadTensor(name, DTYPE_CODES[dtype], shape, data));
  }

  /** Whole rows [rowBegin, ...) of a tensor (a 1-D tensor's rows are its elements); the tensor is complete once every row arrived. */
  loadTensorRows(name: string, dtype: keyof typeof DTYPE_CODES, shape: number[], rowBegin: number, data: Uint8Array): Promise<void> {
    return nativeCall(() => this.native().loadTensorRows(name, DTYPE_CODES[dtype], shape, rowBegin, data));
  }

  randomInit(seed: number, std: number): Promise<void> {
    return nativeCall(() => this.native().randomInit(seed, std));
  }

  /** Free and total device bytes now (cudaMemGetInfo; tests and benchmarks). NO_DEVICE on CPU. */
  deviceMemory(): Promise<{ free: number; total: number }> {
    return nativeCall(async () => {
      const r = await this.native().deviceMemory();
      return { free: r[0], total: r[1] };
    });
  }

  /** Checks the weights, fixes the memory plan (an auto pool is sized here) and reads it back. */
  finalize(): Promise<void> {
    return nativeCall(async () => {
      await this.native().finalize();
      this.memPlan = toPlan(await this.native().memoryPlan());
      this.pages = this.memPlan.numPages;
    });
  }

  forward(batch: ForwardBatch): Promise<Float32Array> {
    return nativeCall(() => {
      const a = this.packer.pack(batch);
      return this.native().forward(a.tokens, a.seqLens, a.startPos, a.tables, a.maxPages, batch.logits === 'all');
    });
  }

  forwardTokens(batch: ForwardBatch & { sampling: ForwardSampling }): Promise<Int32Array> {
    return nativeCall(() => {
      const sampling = checkSampling(batch);
      const a = this.packer.pack(batch);
      return this.native().forward(a.tokens, a.seqLens, a.startPos, a.tables, a.maxPages, false, sampling);
    });
  }

  /** CUDA IPC KV transfer (see KvIpcOps); on the CPU backend every call rejects with NO_DEVICE. */
  readonly kvIpc: KvIpcOps = {
    exportPool: () =>
      nativeCall(async () => {
        const b = await this.native().exportKvPool();
        return { handle: b.slice(0, 64), deviceUuid: Buffer.from(b.subarray(64)).toString('latin1') };
      }),
    openPeer: (handle, peerNumPages) => nativeCall(async () => (await this.native().openPeerPool(handle, peerNumPages))[0]),
    copyPages: (peerId, localPages, peerPages, toPeer) => nativeCall(async () => (await this.native().copyPeerPages(peerId, localPages, peerPages, toPeer))[0]),
    forwardWithSend: (batch, send) =>
      nativeCall(async () => {
        const a = this.packer.pack(batch);
        const sampling = batch.sampling ? checkSampling(batch) : undefined;
        const r = await this.native().forwardWithSend(a.tokens, a.seqLens, a.startPos, a.tables, a.maxPages, batch.logits === 'all', send.peerId, send.srcPages, send.dstPages, send.peerIds, sampling);
        return r.tokens ? { logits: r.logits, tokens: r.tokens, timeline: toTimeline(r.timeline) } : { logits: r.logits, timeline: toTimeline(r.timeline) };
      }),
    openNvshmemPeer: (pe) =>
      nativeCall(async () => {
        const r = await this.native().openNvshmemPeer(pe);
        return { peerId: r[0], direct: r[1] === 1 };
      }),
  };

  joinNvshmem(uid: Uint8Array, rank: number, nranks: number): Promise<NvshmemMembership> {
    return nativeCall(async () => {
      const r = await this.native().joinNvshmem(uid, rank, nranks);
      return { pe: r[0], npes: r[1], initStatus: r[2], initMs: r[3] };
    });
  }

  supplyMasks(id: number, masks: Uint32Array | null): boolean {
    try {
      return this.native().supplyMasks(id, masks);
    } catch (e) {
      const err = toMicroserveError(e);
      throw (err as MicroserveError).code === 'NATIVE_ERROR' && (err as MicroserveError).info?.nativeCode === 'BAD_ARGUMENT'
        ? new MicroserveError('BAD_REQUEST', err.message, { field: 'masks' })
        : err;
    }
  }

  maskGateStats(): { numWaits: number; waitMs: number } {
    const v = this.native().maskGateStats();
    return { numWaits: v[0], waitMs: v[1] };
  }

  readPages(pageIds: Int32Array): Promise<Uint8Array> {
    return nativeCall(() => this.native().readPages(pageIds));
  }

  writePages(pageIds: Int32Array, data: Uint8Array): Promise<void> {
    return nativeCall(() => this.native().writePages(pageIds, data));
  }

  /** Queued calls still finish; later calls fail with NATIVE_ERROR. Idempotent. */
  close(): void {
    this.handle?.close();
    this.handle = null;
  }

  private native(): NativeBackendHandle {
    if (!this.handle) throw new MicroserveError('NATIVE_ERROR', 'backend is closed');
    return this.handle;
  }
}

/** A batch flattened into the addon's arrays. */
interface PackedBatch {
  tokens: Int32Array;
  seqLens: Int32Array;
  startPos: Int32Array;
  /** (numSeqs, maxPages) page ids, -1 past a sequence's pages (the addon rejects those if a position needs them). */
  tables: Int32Array;
  maxPages: number;
}

/**
 * Flattens ragged batches into the addon's arrays, reusing its buffers from one call to the next
 * (grown when a batch needs more): the addon copies its inputs before the call returns, so the
 * views a call gets are free again as soon as the native call was made.
 */
class BatchPacker {
  private tokens = new Int32Array(0);
  private seqLens = new Int32Array(0);
  private startPos = new Int32Array(0);
  private tables = new Int32Array(0);

  pack(batch: ForwardBatch): PackedBatch {
    const seqs = batch.seqs;
    const n = seqs.length;
    let numTokens = 0;
    let maxPages = 1;
    for (const s of seqs) {
      numTokens += s.tokens.length;
      if (s.pageTable.length > maxPages) maxPages = s.pageTable.length;
    }
    if (this.tokens.length < numTokens) this.tokens = new Int32Array(Math.max(numTokens, 2 * this.tokens.length));
    if (this.seqLens.length < n) {
      this.seqLens = new Int32Array(Math.max(n, 2 * this.seqLens.length));
      this.startPos = new Int32Array(this.seqLens.length);
    }
    if (this.tables.length < n * maxPages) this.tables = new Int32Array(Math.max(n * maxPages, 2 * this.tables.length));
    const tokens = this.tokens.subarray(0, numTokens);
    const tables = this.tables.subarray(0, n * maxPages);
    let off = 0;
    for (let i = 0; i < n; i++) {
      const s = seqs[i];
      tokens.set(s.tokens, off);
      off += s.tokens.length;
      this.seqLens[i] = s.tokens.length;
      this.startPos[i] = s.startPos;
      const base = i * maxPages;
      tables.set(s.pageTable, base);
      if (s.pageTable.length < maxPages) tables.fill(-1, base + s.pageTable.length, base + maxPages);
    }
    return { tokens, seqLens: this.seqLens.subarray(0, n), startPos: this.startPos.subarray(0, n), tables, maxPages };
  }
}

/** BAD_REQUEST naming the field unless batch.sampling fits the batch (types, one entry per sequence, values). */
function checkSampling(batch: ForwardBatch): ForwardSampling {
  const s = batch.sampling;
  const bad = (field: string, what: string) => new MicroserveError('BAD_REQUEST', `sampling.${field} ${what}`, { field: `sampling.${field}` });
  if (!s) throw new MicroserveError('BAD_REQUEST', 'forwardTokens needs batch.sampling', { field: 'sampling' });
  if (batch.logits === 'all') throw new MicroserveError('BAD_REQUEST', "sampling uses last-token logits: batch.logits must be 'last'", { field: 'logits' });
  const n = batch.seqs.length;
  const arrays = [['temperature', Float32Array], ['topP', Float32Array], ['seed', Uint32Array], ['step', Uint32Array]] as const;
  for (const [field, Type] of arrays) {
    const a = s[field];
    if (!(a instanceof Type)) throw bad(field, `must be a ${Type.name}`);
    if (a.length !== n) throw bad(field, `has ${a.length} entries, expected ${n} (one per sequence)`);
  }
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(s.temperature[i])) throw bad('temperature', `[${i}] must be a finite number (got ${s.temperature[i]})`);
    if (!(s.topP[i] > 0 && s.topP[i] <= 1)) throw bad('topP', `[${i}] must be in (0, 1] (got ${s.topP[i]})`);
  }
  return s;
}

function toTimeline(t: Float32Array): SendTimeline {
  const n = (t.length - 2) / 3;
  const layers = [];
  for (let l = 0; l < n; l++) layers.push({ computed: t[3 * l], copyStart: t[3 * l + 1], copyEnd: t[3 * l + 2] });
  return { layers, computeEnd: t[3 * n], sendEnd: t[3 * n + 1] };
}
