/** Shared helpers of the native tests: the fixture, safetensors read/write, greedy drivers, host-built checks. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { isMicroserveError } from '../../common/errors.ts';
import type { Backend } from '../../native/backend.ts';

export const FIXTURE = new URL('../fixtures/tiny-llama-a/', import.meta.url).pathname;

export interface RefCase {
  prompt_ids: number[];
  greedy_ids: number[];
  argmax_per_position: number[];
  last_logits: number[];
}
export const REFERENCE: { cases: RefCase[] } = JSON.parse(readFileSync(join(FIXTURE, 'reference.json'), 'utf8'));

export interface StTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

export function readSafetensors(file: string): StTensor[] {
  const buf = readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
  return Object.entries(header)
    .filter(([k]) => k !== '__metadata__')
    .map(([name, t]: [string, any]) => ({ name, dtype: t.dtype, shape: t.shape, data: buf.subarray(8 + len + t.data_offsets[0], 8 + len + t.data_offsets[1]) }));
}

/** Writes tensors in order; `headerPatch` edits header entries after layout (to forge bad files). */
export function writeSafetensors(file: string, tensors: StTensor[], headerPatch?: (h: Record<string, any>) => void): void {
  const header: Record<string, any> = {};
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] };
    off += t.data.length;
  }
  headerPatch?.(header);
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([head, json, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.length))]));
}

export function bf16ToF32(data: Uint8Array): Float32Array {
  const u16 = new Uint16Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
  const u32 = new Uint32Array(u16.length);
  for (let i = 0; i < u16.length; i++) u32[i] = u16[i] << 16;
  return new Float32Array(u32.buffer);
}

export function relL2(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function argmax(a: Float32Array, from = 0, to = a.length): number {
  let best = from;
  for (let i = from + 1; i < to; i++) if (a[i] > a[best]) best = i;
  return best - from;
}

/** Page ids [first, first + n). */
export function pageRange(first: number, n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => first + i);
}

/**
 * Greedy generation of several prompts in one ragged batch per step: each step carries, per
 * unfinished sequence, its next prompt chunk (`chunk` tokens) or its last generated token.
 * Returns the generated ids and the logits that produced the first generated token.
 */
export async function greedyBatch(backend: Backend, prompts: number[][], genLen: number, chunk: number, pageTables: Int32Array[]) {
  const state = prompts.map((p, i) => ({ prompt: p, pos: 0, out: [] as number[], first: null as Float32Array | null, table: pageTables[i] }));
  const vocab = backend.config.vocabSize;
  for (;;) {
    const live = state.filter((s) => s.out.length < genLen);
    if (live.length === 0) break;
    const seqs = live.map((s) => {
      const tokens = s.pos < s.prompt.length ? s.prompt.slice(s.pos, s.pos + chunk) : [s.out[s.out.length - 1]];
      return { tokens: Int32Array.from(tokens), startPos: s.pos, pageTable: s.table };
    });
    const logits = await backend.forward({ seqs });
    live.forEach((s, i) => {
      s.pos += seqs[i].tokens.length;
      if (s.pos < s.prompt.length) return; // mid-prompt chunk: its logits are not used
      const row = logits.subarray(i * vocab, (i + 1) * vocab);
      if (s.out.length === 0) s.first = row.slice();
      s.out.push(argmax(row));
    });
  }
  return state.map((s) => ({ ids: s.out, firstLogits: s.first! }));
}

/**
 * Layer 0's `k_proj` / `v_proj` output for one token of the fixture, by hand from the checkpoint
 * (RMSNorm then the projection, no RoPE): K at position 0 and V anywhere equal what the backend
 * stores. `w` maps tensor names to f32 values. (kvDim,)
 */
export function layer0Projection(w: Record<string, Float32Array>, tok: number, name: 'k_proj' | 'v_proj', H = 64, kvDim = 32): number[] {
  const x = w['model.embed_tokens.weight'].subarray(tok * H, (tok + 1) * H);
  const ms = x.reduce((a, v) => a + v * v, 0) / H;
  const xn = x.map((v, i) => (v / Math.sqrt(ms + 1e-5)) * w['model.layers.0.input_layernorm.weight'][i]);
  const m = w[`model.layers.0.self_attn.${name}.weight`];
  return Array.from({ length: kvDim }, (_, o) => xn.reduce((a, v, i) => a + v * m[o * H + i], 0));
}

/** Asserts that p (or the promise fn returns) rejects with a MicroserveError of this code whose message names needle. */
export async function rejects(p: Promise<unknown> | (() => Promise<unknown>), code: string, needle: string) {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    assert.ok(isMicroserveError(e), `not a MicroserveError: ${e}`);
    assert.is((e as any).code, code, (e as Error).message);
    assert.ok((e as Error).message.includes(needle), `'${(e as Error).message}' lacks '${needle}'`);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const hostChecks = new Map<string, string>();

/** test/native/NAME.cc built once with the host compiler (CXX, else c++) against native/src; its path. */
export function hostCheck(name: string): string {
  let bin = hostChecks.get(name);
  if (!bin) {
    bin = join(mkdtempSync(join(tmpdir(), `ms-${name}-`)), name);
    const cc = spawnSync(process.env.CXX || 'c++', ['-O2', '-std=c++17', '-I', join(ROOT, 'native/src'), join(ROOT, `test/native/${name}.cc`), '-o', bin], { encoding: 'utf8' });
    assert.is(cc.status, 0, `building ${name}.cc: ${cc.stderr}`);
    hostChecks.set(name, bin);
  }
  return bin;
}

/** The stdin header of the host sampling checks (check-input.h): rows, vocab and each row's sampling parameters. */
export function hostCheckInput(vocab: number, rows: { temperature: number; topP: number; seed: number; step: number }[]): Buffer {
  const head = new DataView(new ArrayBuffer(8 + 16 * rows.length));
  head.setInt32(0, rows.length, true);
  head.setInt32(4, vocab, true);
  rows.forEach((r, i) => {
    head.setFloat32(8 + 16 * i, r.temperature, true);
    head.setFloat32(12 + 16 * i, r.topP, true);
    head.setUint32(16 + 16 * i, r.seed, true);
    head.setUint32(20 + 16 * i, r.step, true);
  });
  return Buffer.from(head.buffer);
}
