/**
 * Model loading: a preset name or a Hugging Face checkpoint folder → a ready {@link Backend}.
 * The engine imports this module and `backend.ts` only.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { MicroserveError } from '../common/errors.ts';
import { log } from '../common/log.ts';
import type { Backend, BackendOptions, ModelConfig, NvshmemMembership } from './backend.ts';
import { loadAddon, toMicroserveError } from './addon.ts';
import { listTensors, streamTensors } from './checkpoint.ts';
import { parseModelConfig } from './config.ts';
import { NativeBackend } from './native-backend.ts';
import { nvshmemHeapBytes, resolveNativeOptions } from './options.ts';
import { PRESETS, isPreset } from './presets.ts';
import { resolveModelSource } from './model-source.ts';

export { parseModelConfig } from './config.ts';
export { PRESETS, isPreset } from './presets.ts';
export type { Backend, BackendOptions, ForwardBatch, ForwardSeq, MemoryPlan, ModelConfig, NativeOptions, NativeStatus } from './backend.ts';

export interface LoadedModel {
  backend: Backend;
  /** The NVSHMEM job this backend's pool joined (OpenModelOptions.nvshmem), else null. */
  nvshmem: NvshmemJoin;
  /** Preset name, or the checkpoint folder's base name. */
  name: string;
  /** Absolute checkpoint folder; null for presets. */
  folder: string | null;
  isPreset: boolean;
  config: ModelConfig;
}

export interface OpenModelOptions extends BackendOptions {
  /** [seed=preset's seed (0)] Seed of a preset's random weights; ignored for checkpoints. */
  seed?: number;
  /**
   * [nvshmem] join this NVSHMEM job before the weights load: the KV pool goes to the symmetric
   * heap. Collective: every member opens its model with the same uid and an equal KV pool.
   */
  nvshmem?: { uid: Uint8Array; rank: number; nranks: number };
}

/** What openModel did about NVSHMEM (null: not asked). */
export type NvshmemJoin = NvshmemMembership | null;

/** A new NVSHMEM job's bootstrap id; the calling process must join as rank 0. NO_DEVICE without NVSHMEM. */
export function nvshmemUniqueId(): Uint8Array {
  try {
    return loadAddon().nvshmemUniqueId();
  } catch (e) {
    throw toMicroserveError(e);
  }
}

function checkInt(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new MicroserveError('BAD_CONFIG', `option ${name} must be an integer >= ${min} (got ${JSON.stringify(v)})`, { field: name });
  }
  return v;
}

/** Tensors a loader never hands to the backend: derived buffers and a tied head's copy. */
function skipTensor(config: ModelConfig): (name: string) => boolean {
  return (name) => name.endsWith('rotary_emb.inv_freq') || (config.tieWordEmbeddings && name === 'lm_head.weight');
}

async function readConfig(folder: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await readFile(resolve(folder, 'config.json'), 'utf8');
  } catch {
    throw new MicroserveError('BAD_CONFIG', `${folder}: no config.json`, { field: 'config.json' });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new MicroserveError('BAD_CONFIG', `${folder}/config.json is not valid JSON: ${(e as Error).message}`, { field: 'config.json' });
  }
  return parseModelConfig(json);
}

/**
 * Opens `model` (a preset name: `tiny`, `llama-3.1-8b`; a shipped model's name: `kjv-chat`; or a
 * checkpoint folder path — see model-source.ts) on
 * `opts.device`. Errors: BAD_CONFIG (options, config.json, unknown model), BAD_CHECKPOINT
 * (missing/extra tensor, wrong shape, unknown dtype, truncated file), NO_DEVICE, NATIVE_ERROR.
 */
export async function openModel(model: string, opts: OpenModelOptions): Promise<LoadedModel> {
  const numPages = opts.numPages === 'auto' ? 0 : checkInt('numPages', opts.numPages, 1);
  const pageSize = checkInt('pageSize', opts.pageSize ?? 16, 1);
  const numThreads = checkInt('numThreads', opts.numThreads ?? 0, 0);
  const device = opts.device ?? 'cpu';
  const native = { ...resolveNativeOptions(opts.native, numThreads), ...planOptions(opts) };

  if (isPreset(model)) {
    const p = PRESETS[model];
    const backend = new NativeBackend(p.config, numPages, pageSize, device, native);
    let nvshmem: NvshmemJoin = null;
    try {
      nvshmem = await join(backend, opts);
      await backend.randomInit(checkInt('seed', opts.seed ?? p.seed, 0), p.std);
      await backend.finalize();
    } catch (e) {
      backend.close();
      throw e;
    }
    return { backend, nvshmem, name: model, folder: null, isPreset: true, config: p.config };
  }

  const folder = resolveModelSource(model).folder!;
  const isDir = await stat(folder).then((s) => s.isDirectory(), () => false);
  if (!isDir) {
    throw new MicroserveError('BAD_CONFIG', `model '${model}' is neither a preset (${Object.keys(PRESETS).join(', ')}) nor a checkpoint folder`, { field: 'model' });
  }
  const config = await readConfig(folder);
  const tensors = await listTensors(folder, skipTensor(config));
  const backend = new NativeBackend(config, numPages, pageSize, device, native);
  let nvshmem: NvshmemJoin = null;
  try {
    nvshmem = await join(backend, opts);
    const addon = loadAddon();
    let isPinned = false;
    const st = await streamTensors(tensors, (p, data) => backend.loadTensorRows(p.tensor.name, p.tensor.dtype, p.tensor.shape, p.rowBegin, data), {
      alloc: (bytes) => {
        const b = addon.allocHostBuffer(bytes, device);
        isPinned ||= b.isPinned;
        return b.buffer;
      },
      release: (b) => addon.releaseHostBuffer(b),
    });
    log.info('weights read', { model: basename(folder), device, gb: +(st.bytes / 1e9).toFixed(3), seconds: +st.seconds.toFixed(2), gbPerS: +(st.bytes / 1e9 / st.seconds).toFixed(2), parts: st.numParts, buffers: st.numBuffers, isPinned });
    await backend.finalize();
  } catch (e) {
    backend.close();
    throw e;
  }
  return { backend, nvshmem, name: basename(folder), folder, isPreset: false, config };
}

/** The memory plan caps of `opts`, checked (BAD_CONFIG naming the option). */
function planOptions(opts: OpenModelOptions): { maxBatchTokens: number; maxNumSeqs: number; gpuMemoryUtilization: number } {
  const u = opts.gpuMemoryUtilization ?? 0.9;
  if (typeof u !== 'number' || !(u > 0 && u <= 1)) {
    throw new MicroserveError('BAD_CONFIG', `option gpuMemoryUtilization must be a number in (0, 1] (got ${JSON.stringify(u)})`, { field: 'gpuMemoryUtilization' });
  }
  return { maxBatchTokens: checkInt('maxBatchTokens', opts.maxBatchTokens ?? 8192, 1), maxNumSeqs: checkInt('maxNumSeqs', opts.maxNumSeqs ?? 256, 1), gpuMemoryUtilization: u };
}

async function join(backend: NativeBackend, opts: OpenModelOptions): Promise<NvshmemJoin> {
  const j = opts.nvshmem;
  if (!j) return null;
  if (!(j.uid instanceof Uint8Array) || j.uid.length !== 128) throw new MicroserveError('BAD_CONFIG', 'nvshmem.uid must be 128 bytes', { field: 'nvshmem.uid' });
  const nranks = checkInt('nvshmem.nranks', j.nranks, 1);
  const rank = checkInt('nvshmem.rank', j.rank, 0);
  if (rank >= nranks) throw new MicroserveError('BAD_CONFIG', `nvshmem.rank ${rank} must be < nranks ${nranks}`, { field: 'nvshmem.rank' });
  // The symmetric heap must hold the pool (and its padding page); a user's setting wins. NVSHMEM
  // reads it from the environment when it initialises (the one variable of its own we set here).
  process.env.NVSHMEM_SYMMETRIC_SIZE ??= String(nvshmemHeapBytes((backend.numPages + 1) * backend.pageBytes));
  return backend.joinNvshmem(j.uid, rank, nranks);
}
