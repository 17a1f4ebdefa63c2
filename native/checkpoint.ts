/**
 * Reads a Hugging Face safetensors checkpoint: `model.safetensors`, or the shards listed in
 * `model.safetensors.index.json`. Headers are checked up front (dtype, byte ranges inside the
 * file); tensors are then streamed in parts of whole rows through a few reused staging buffers,
 * several shards read at once while the device copies (streamTensors), so a 16 GB checkpoint never
 * sits in memory whole. File layout: 8-byte little-endian header length, JSON header, data.
 */
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { MicroserveError } from '../common/errors.ts';

export type TensorDType = 'BF16' | 'F16' | 'F32';
const DTYPE_BYTES: Record<TensorDType, number> = { BF16: 2, F16: 2, F32: 4 };
/** Largest single fs read (reads above 2 GiB are not guaranteed whole). */
const MAX_READ = 1 << 30;

export interface TensorInfo {
  name: string;
  dtype: TensorDType;
  shape: number[];
  file: string;
  /** Absolute byte offset of the data in `file`. */
  offset: number;
  byteLength: number;
}

function bad(message: string, details?: Record<string, unknown>): never {
  throw new MicroserveError('BAD_CHECKPOINT', message, details);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

/** Parses and checks one file's header; `skip(name)` tensors are left out unchecked. */
export async function readHeader(file: string, skip: (name: string) => boolean): Promise<TensorInfo[]> {
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(8);
    if (size < 8 || (await fh.read(head, 0, 8, 0)).bytesRead < 8) bad(`${file}: too short for a safetensors header`);
    const headerLen = Number(head.readBigUInt64LE(0));
    if (headerLen > size - 8 || headerLen > 100 * 1024 * 1024) bad(`${file}: header length ${headerLen} exceeds the file (${size} bytes)`);
    const json = Buffer.alloc(headerLen);
    await fh.read(json, 0, headerLen, 8);
    let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    try {
      header = JSON.parse(json.toString('utf8'));
    } catch (e) {
      bad(`${file}: header is not valid JSON (${(e as Error).message})`);
    }
    const dataStart = 8 + headerLen;
    const out: TensorInfo[] = [];
    for (const [name, t] of Object.entries(header)) {
      if (name === '__metadata__' || skip(name)) continue;
      if (!t || typeof t.dtype !== 'string' || !Array.isArray(t.shape) || !Array.isArray(t.data_offsets)) bad(`tensor '${name}': malformed header entry`, { tensor: name });
      if (!(t.dtype in DTYPE_BYTES)) bad(`tensor '${name}' has dtype ${t.dtype} (supported: BF16, F16, F32)`, { tensor: name, dtype: t.dtype });
      const dtype = t.dtype as TensorDType;
      const [begin, end] = t.data_offsets;
      const numel = t.shape.reduce((a, b) => a * b, 1);
      if (end - begin !== numel * DTYPE_BYTES[dtype]) bad(`tensor '${name}': data_offsets span ${end - begin} bytes, shape [${t.shape.join(', ')}] ${dtype} needs ${numel * DTYPE_BYTES[dtype]}`, { tensor: name });
      if (begin < 0 || dataStart + end > size) bad(`tensor '${name}' is truncated: ${file} has ${size} bytes, the tensor ends at byte ${dataStart + end}`, { tensor: name });
      out.push({ name, dtype, shape: t.shape, file, offset: dataStart + begin, byteLength: end - begin });
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** Every tensor of the checkpoint in `folder`, headers checked. */
export async function listTensors(folder: string, skip: (name: string) => boolean = () => false): Promise<TensorInfo[]> {
  const single = join(folder, 'model.safetensors');
  const index = join(folder, 'model.safetensors.index.json');
  if (await exists(index)) {
    let weightMap: Record<string, string>;
    try {
      weightMap = JSON.parse(await readFile(index, 'utf8')).weight_map;
      if (typeof weightMap !== 'object' || weightMap === null) throw new Error('no weight_map');
    } catch (e) {
      bad(`${index}: ${(e as Error).message}`);
    }
    const files = [...new Set(Object.values(weightMap))].sort();
    const tensors: TensorInfo[] = [];
    for (const f of files) tensors.push(...(await readHeader(join(folder, f), skip)));
    const seen = new Set(tensors.map((t) => t.name));
    for (const [name, f] of Object.entries(weightMap)) {
      if (!skip(name) && !seen.has(name)) bad(`tensor '${name}' is listed in the index but missing from ${f}`, { tensor: name });
    }
    return tensors;
  }
  if (await exists(single)) return readHeader(single, skip);
  bad(`${folder}: no model.safetensors or model.safetensors.index.json`);
}

/** One read of the loader: rows [rowBegin, rowBegin + numRows) of a tensor, bytes [offset, offset + byteLength) of its file. */
export interface TensorPart {
  tensor: TensorInfo;
  rowBegin: number;
  numRows: number;
  offset: number;
  byteLength: number;
}

/** Options of streamTensors. */
export interface StreamOptions {
  /** [bufferBytes=64 MiB] bytes of one staging buffer; larger tensors go in parts of whole rows (a buffer holds at least one row). */
  bufferBytes?: number;
  /** [numBuffers=4] staging buffers, i.e. parts read or copied at once (reads run on libuv's pool: 4 threads unless UV_THREADPOOL_SIZE says more). */
  numBuffers?: number;
  /** [alloc: ordinary memory] makes a staging buffer: the model loader passes page-locked memory, which the device copies from by DMA. */
  alloc?: (bytes: number) => ArrayBuffer;
  /** [release: none] frees a buffer of `alloc` once every part that used it was handed over. */
  release?: (buffer: ArrayBuffer) => void;
}

/** What streamTensors did. */
export interface StreamStats {
  bytes: number;
  seconds: number;
  numParts: number;
  numBuffers: number;
  bufferBytes: number;
}

const rowBytesOf = (t: TensorInfo) => (t.shape.length >= 2 ? t.shape.slice(1).reduce((a, b) => a * b, 1) : 1) * DTYPE_BYTES[t.dtype];

/**
 * Cuts tensors into parts of whole rows of at most `bufferBytes` (at least one row each) and orders
 * them round-robin over the files, so parts read at once come from different shards.
 */
export function planParts(tensors: readonly TensorInfo[], bufferBytes: number): TensorPart[] {
  const byFile = new Map<string, TensorPart[]>();
  for (const t of [...tensors].sort((a, b) => (a.file === b.file ? a.offset - b.offset : a.file < b.file ? -1 : 1))) {
    const rowBytes = rowBytesOf(t);
    const numRows = t.shape.length >= 1 ? t.shape[0] : 1;
    const perPart = Math.max(1, Math.floor(bufferBytes / rowBytes));
    const parts = byFile.get(t.file) ?? byFile.set(t.file, []).get(t.file)!;
    for (let r = 0; r < numRows; r += perPart) {
      const n = Math.min(perPart, numRows - r);
      parts.push({ tensor: t, rowBegin: r, numRows: n, offset: t.offset + r * rowBytes, byteLength: n * rowBytes });
    }
  }
  const lists = [...byFile.values()];
  const total = lists.reduce((a, l) => a + l.length, 0);
  const out: TensorPart[] = [];
  for (let i = 0; out.length < total; i++) for (const l of lists) if (i < l.length) out.push(l[i]);
  return out;
}

async function readInto(fh: FileHandle, buf: Uint8Array, p: TensorPart): Promise<void> {
  for (let done = 0; done < p.byteLength; ) {
    const { bytesRead } = await fh.read(buf, done, Math.min(MAX_READ, p.byteLength - done), p.offset + done);
    if (bytesRead === 0) bad(`tensor '${p.tensor.name}' is truncated: ${p.tensor.file} ended early`, { tensor: p.tensor.name });
    done += bytesRead;
  }
}

/**
 * Streams every tensor to `sink` in parts of whole rows through a few reused staging buffers:
 * `numBuffers` parts are in flight at once, each read from its shard into its buffer (shards in
 * parallel) and then handed to `sink` (awaited before the buffer is read into again), so the
 * device copies one part while the next ones are read. Memory stays at numBuffers x bufferBytes
 * whatever the checkpoint's size. A failure stops handing out parts; the failure of the earliest
 * part is thrown (the parts before it were all handed out, so it is the same error every run,
 * whichever buffer finished first).
 */
export async function streamTensors(tensors: readonly TensorInfo[], sink: (part: TensorPart, data: Uint8Array) => Promise<void>, o: StreamOptions = {}): Promise<StreamStats> {
  const t0 = performance.now();
  const maxRow = tensors.reduce((a, t) => Math.max(a, rowBytesOf(t)), 1);
  const parts = planParts(tensors, Math.max(o.bufferBytes ?? 64 << 20, maxRow));
  const bufferBytes = parts.reduce((a, p) => Math.max(a, p.byteLength), 1);
  const numBuffers = Math.max(1, Math.min(o.numBuffers ?? 4, parts.length));
  const files = new Map<string, Promise<FileHandle>>();
  const handle = (file: string) => files.get(file) ?? files.set(file, open(file, 'r')).get(file)!;
  let next = 0;
  let failure: { index: number; error: unknown } | null = null;
  const worker = async () => {
    const buffer = o.alloc ? o.alloc(bufferBytes) : new ArrayBuffer(bufferBytes);
    let index = -1;
    try {
      const view = new Uint8Array(buffer);
      while (failure === null && next < parts.length) {
        index = next++;
        const p = parts[index];
        await readInto(await handle(p.tensor.file), view, p);
        await sink(p, view.subarray(0, p.byteLength));
      }
    } catch (e) {
      if (failure === null || index < failure.index) failure = { index, error: e };
    } finally {
      o.release?.(buffer);
    }
  };
  try {
    await Promise.all(Array.from({ length: numBuffers }, worker));
  } finally {
    await Promise.all([...files.values()].map((f) => f.then((h) => h.close(), () => undefined)));
  }
  if (failure !== null) throw (failure as { error: unknown }).error;
  return { bytes: parts.reduce((a, p) => a + p.byteLength, 0), seconds: (performance.now() - t0) / 1000, numParts: parts.length, numBuffers, bufferBytes };
}
