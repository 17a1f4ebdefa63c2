/**
 * Read throughput of the checkpoint loader from the page cache, on any machine (no device):
 * a synthetic sharded checkpoint (bf16 matrices in SHARDS files) is written to a temp folder and
 * read once to warm the cache, then read with a sink that does nothing:
 *  - `one at a time`: what the loader did before streaming: a fresh buffer per tensor, one read
 *    ahead (kept here as the baseline);
 *  - `streamTensors`: parts of whole rows through reused staging buffers, several shards at once,
 *    at 1, 4 and 8 buffers.
 * Prints one line per way, best of REPEATS runs. Usage:
 *   node --import tsx bench/checkpoint-read.ts [GB=1] [SHARDS=4] [REPEATS=3]
 */
import { mkdtempSync, openSync, rmSync, writeSync, closeSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listTensors, streamTensors, type TensorInfo } from '../native/checkpoint.ts';

const gb = Number(process.argv[2] ?? 1);
const numShards = Number(process.argv[3] ?? 4);
const repeats = Number(process.argv[4] ?? 3);
const ROWS = 16384;
const COLS = 2048; // 64 MiB bf16 tensors, the size of a 7B model's larger matrices
const tensorBytes = ROWS * COLS * 2;
const numTensors = Math.max(numShards, Math.round((gb * 1e9) / tensorBytes));

const dir = mkdtempSync(join(tmpdir(), 'ms-ckpt-read-'));
try {
  const chunk = Buffer.alloc(tensorBytes, 0x3f);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < numShards; s++) {
    const file = `model-${s + 1}-of-${numShards}.safetensors`;
    const names = Array.from({ length: numTensors }, (_, i) => i).filter((i) => i % numShards === s);
    const header: Record<string, unknown> = {};
    names.forEach((i, k) => (header[`t${i}`] = { dtype: 'BF16', shape: [ROWS, COLS], data_offsets: [k * tensorBytes, (k + 1) * tensorBytes] }));
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const fd = openSync(join(dir, file), 'w');
    writeSync(fd, len);
    writeSync(fd, json);
    for (const _ of names) writeSync(fd, chunk);
    closeSync(fd);
    for (const i of names) weightMap[`t${i}`] = file;
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
  const tensors = await listTensors(dir);
  const bytes = tensors.reduce((a, t) => a + t.byteLength, 0);

  /** The loader before streaming: a fresh buffer per tensor, the next read started before the sink. */
  const oneAtATime = async () => {
    const read = async (t: TensorInfo) => {
      const fh = await open(t.file, 'r');
      try {
        const buf = new Uint8Array(t.byteLength);
        for (let done = 0; done < t.byteLength; ) done += (await fh.read(buf, done, t.byteLength - done, t.offset + done)).bytesRead;
        return buf;
      } finally {
        await fh.close();
      }
    };
    let next = read(tensors[0]);
    for (let i = 0; i < tensors.length; i++) {
      const data = await next;
      next = i + 1 < tensors.length ? read(tensors[i + 1]) : (null as never);
      void data;
    }
  };
  const best = async (f: () => Promise<unknown>) => {
    let s = Infinity;
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      await f();
      s = Math.min(s, (performance.now() - t0) / 1000);
    }
    return s;
  };
  await streamTensors(tensors, async () => {}); // warm the page cache
  console.log(`${(bytes / 1e9).toFixed(2)} GB in ${numShards} shards, ${tensors.length} tensors of ${tensorBytes >> 20} MiB, page-cached, best of ${repeats}`);
  const line = (what: string, s: number) => console.log(`${what.padEnd(40)} ${s.toFixed(3)} s  ${(bytes / 1e9 / s).toFixed(2)} GB/s`);
  line('one at a time (the loader before)', await best(oneAtATime));
  for (const n of [1, 4, 8]) line(`streamTensors, ${n} x 64 MiB buffers`, await best(() => streamTensors(tensors, async () => {}, { numBuffers: n })));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
