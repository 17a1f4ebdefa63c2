/**
 * Reads a Hugging Face safetensors checkpoint: `model.safetensors`, or the shards listed in
 * `model.safetensors.index.json`. Headers are checked up front (dtype, byte ranges inside the
 * file); tensors are then read one at a time (one read ahead), so a 16 GB checkpoint never sits
 * in memory whole. File layout: 8-byte little-endian header length, JSON header, data.
 */
import { open, readFile, stat } from 'node:fs/promises';
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

async function readTensor(t: TensorInfo): Promise<Uint8Array> {
  const fh = await open(t.file, 'r');
  try {
    const buf = new Uint8Array(t.byteLength);
    for (let done = 0; done < t.byteLength; ) {
      const { bytesRead } = await fh.read(buf, done, Math.min(MAX_READ, t.byteLength - done), t.offset + done);
      if (bytesRead === 0) bad(`tensor '${t.name}' is truncated: ${t.file} ended early`, { tensor: t.name });
      done += bytesRead;
    }
    return buf;
  } finally {
    await fh.close();
  }
}

/** Reads each tensor and hands it to `sink` (awaited), reading the next one meanwhile. */
export async function readTensors(tensors: TensorInfo[], sink: (t: TensorInfo, data: Uint8Array) => Promise<void>): Promise<void> {
  let next = tensors.length > 0 ? readTensor(tensors[0]) : null;
  for (let i = 0; i < tensors.length; i++) {
    const data = await next!;
    next = i + 1 < tensors.length ? readTensor(tensors[i + 1]) : null;
    next?.catch(() => {}); // surfaced when awaited
    await sink(tensors[i], data);
  }
}
