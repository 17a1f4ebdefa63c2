/** {@link Backend} over the addon: packs ragged batches into flat Int32Arrays, maps errors. */
import { MicroserveError } from '../actors/errors.ts';
import type { Backend, ForwardBatch, ModelConfig } from './backend.ts';
import { loadAddon, nativeCall, toMicroserveError, type NativeBackendHandle, type NativeModelConfig } from './addon.ts';

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
  };
}

export class NativeBackend implements Backend {
  readonly pageBytes: number;
  readonly device: string;
  private handle: NativeBackendHandle | null;

  constructor(
    readonly config: ModelConfig,
    readonly numPages: number,
    readonly pageSize: number,
    device: string,
    numThreads: number,
  ) {
    const { NativeBackend: Ctor } = loadAddon();
    try {
      this.handle = new Ctor(device, toNativeConfig(config), numPages, pageSize, numThreads);
    } catch (e) {
      throw toMicroserveError(e);
    }
    this.pageBytes = this.handle.pageBytes;
    this.device = device;
  }

  /** Human-readable backend description (e.g. "cpu (2 threads, avx512)"). */
  get deviceName(): string {
    return this.native().deviceName;
  }

  loadTensor(name: string, dtype: keyof typeof DTYPE_CODES, shape: number[], data: Uint8Array): Promise<void> {
    return nativeCall(() => this.native().loadTensor(name, DTYPE_CODES[dtype], shape, data));
  }

  randomInit(seed: number, std: number): Promise<void> {
    return nativeCall(() => this.native().randomInit(seed, std));
  }

  finalize(): Promise<void> {
    return nativeCall(() => this.native().finalize());
  }

  forward(batch: ForwardBatch): Promise<Float32Array> {
    return nativeCall(() => {
      const seqs = batch.seqs;
      let numTokens = 0;
      let maxPages = 1;
      for (const s of seqs) {
        numTokens += s.tokens.length;
        maxPages = Math.max(maxPages, s.pageTable.length);
      }
      const tokens = new Int32Array(numTokens);
      const seqLens = new Int32Array(seqs.length);
      const startPos = new Int32Array(seqs.length);
      // Short page tables are padded with -1, which the addon rejects if a position needs it.
      const tables = new Int32Array(seqs.length * maxPages).fill(-1);
      let off = 0;
      seqs.forEach((s, i) => {
        tokens.set(s.tokens, off);
        off += s.tokens.length;
        seqLens[i] = s.tokens.length;
        startPos[i] = s.startPos;
        tables.set(s.pageTable, i * maxPages);
      });
      return this.native().forward(tokens, seqLens, startPos, tables, maxPages, batch.logits === 'all');
    });
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
