// The checkpoint loader's streaming (native/checkpoint.ts streamTensors) and the backends' row
// parts (loadTensorRows): tensors cut into parts of whole rows through a few small staging buffers,
// from several shards at once, load the same weights as whole tensors; parts that overlap, are not
// whole rows or leave rows out are refused naming the tensor.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MicroserveError } from '../../common/errors.ts';
import { loadAddon } from '../../native/addon.ts';
import { listTensors, planParts, streamTensors, type TensorInfo } from '../../native/checkpoint.ts';
import { parseModelConfig } from '../../native/config.ts';
import { openModel } from '../../native/index.ts';
import { NativeBackend } from '../../native/native-backend.ts';
import { resolveNativeOptions } from '../../native/options.ts';
import { FIXTURE, REFERENCE, pageRange, readSafetensors, rejects, writeSafetensors } from './helpers.ts';

const config = parseModelConfig(JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8')));
const tmp = mkdtempSync(join(tmpdir(), 'ms-stream-'));

/** The fixture's tensors in `numShards` files with an index, as sharded checkpoints ship. */
function sharded(numShards: number): string {
  const dir = join(tmp, `shards-${numShards}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), readFileSync(join(FIXTURE, 'config.json')));
  const all = readSafetensors(join(FIXTURE, 'model.safetensors'));
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < numShards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(numShards).padStart(5, '0')}.safetensors`;
    const part = all.filter((_, i) => i % numShards === s);
    writeSafetensors(join(dir, file), part);
    for (const t of part) weightMap[t.name] = file;
  }
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return dir;
}

const newBackend = () => new NativeBackend(config, 16, 16, 'cpu', { ...resolveNativeOptions(undefined, 1) });

async function logits(b: NativeBackend): Promise<Float32Array> {
  const c = REFERENCE.cases[1];
  return b.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(0, 2) }] });
}

test('planParts: whole rows within the buffer, every row once, shards interleaved', async () => {
  const tensors = await listTensors(sharded(3));
  const parts = planParts(tensors, 1000);
  const rows = new Map<string, number[]>();
  for (const p of parts) {
    const rowBytes = p.byteLength / p.numRows;
    assert.ok(Number.isInteger(rowBytes) && (p.byteLength <= 1000 || p.numRows === 1), `${p.tensor.name}: ${p.byteLength} bytes in ${p.numRows} rows`);
    assert.is(p.offset, p.tensor.offset + p.rowBegin * rowBytes);
    const seen = rows.get(p.tensor.name) ?? rows.set(p.tensor.name, []).get(p.tensor.name)!;
    for (let r = p.rowBegin; r < p.rowBegin + p.numRows; r++) seen.push(r);
  }
  for (const t of tensors) assert.equal(rows.get(t.name)!.sort((a, b) => a - b), Array.from({ length: t.shape[0] }, (_, i) => i), t.name);
  // the first parts come from different shards (read in parallel)
  assert.is(new Set(parts.slice(0, 3).map((p) => p.tensor.file)).size, 3);
});

test('tiny staging buffers over three shards load exactly what whole tensors load', async () => {
  const whole = await openModel(FIXTURE, { numPages: 16 });
  const want = await logits(whole.backend as NativeBackend);
  whole.backend.close();
  const dir = sharded(3);
  const b = newBackend();
  try {
    let numAllocs = 0;
    let numReleased = 0;
    const st = await streamTensors(await listTensors(dir), (p, data) => b.loadTensorRows(p.tensor.name, p.tensor.dtype, p.tensor.shape, p.rowBegin, data), {
      bufferBytes: 700,
      numBuffers: 3,
      alloc: (n) => (numAllocs++, new ArrayBuffer(n)),
      release: () => void numReleased++,
    });
    assert.ok(st.numParts > 100, `${st.numParts} parts`);
    assert.equal([numAllocs, numReleased, st.numBuffers], [3, 3, 3]);
    assert.ok(st.bufferBytes <= 700);
    await b.finalize();
    assert.equal(await logits(b), want);
  } finally {
    b.close();
  }
});

test('row parts that overlap, are not whole rows, or leave rows out are BAD_CHECKPOINT naming the tensor', async () => {
  const [t] = (await listTensors(FIXTURE)).filter((x: TensorInfo) => x.shape.length === 2 && x.shape[0] >= 4);
  const data = new Uint8Array(readFileSync(join(FIXTURE, 'model.safetensors')).subarray(t.offset, t.offset + t.byteLength));
  const rowBytes = t.byteLength / t.shape[0];
  const b = newBackend();
  try {
    await b.loadTensorRows(t.name, t.dtype, t.shape, 0, data.subarray(0, 2 * rowBytes));
    await rejects(() => b.loadTensorRows(t.name, t.dtype, t.shape, 1, data.subarray(rowBytes, 3 * rowBytes)), 'BAD_CHECKPOINT', 'already loaded');
    await rejects(() => b.loadTensorRows(t.name, t.dtype, t.shape, 2, data.subarray(2 * rowBytes, 3 * rowBytes - 2)), 'BAD_CHECKPOINT', 'not whole rows');
    await rejects(() => b.loadTensorRows(t.name, t.dtype, t.shape, t.shape[0] - 1, data.subarray(0, 2 * rowBytes)), 'BAD_CHECKPOINT', 'not whole rows');
    await rejects(() => b.finalize(), 'BAD_CHECKPOINT', 'missing tensor');
  } finally {
    b.close();
  }
});

test('a shard cut short fails the stream with BAD_CHECKPOINT, and every buffer is released', async () => {
  const dir = sharded(2);
  const tensors = await listTensors(dir);
  const last = tensors.filter((t) => t.file === tensors[0].file).sort((a, b) => b.offset - a.offset)[0];
  writeFileSync(last.file, readFileSync(last.file).subarray(0, last.offset + 3));
  let numReleased = 0;
  const b = newBackend();
  try {
    await rejects(
      () => streamTensors(tensors, (p, d) => b.loadTensorRows(p.tensor.name, p.tensor.dtype, p.tensor.shape, p.rowBegin, d), { bufferBytes: 4096, numBuffers: 2, release: () => void numReleased++ }),
      'BAD_CHECKPOINT',
      'truncated',
    );
    assert.is(numReleased, 2);
  } finally {
    b.close();
  }
});

test('two failing parts: the error of the earlier part is thrown even when the later one fails first', async () => {
  const tensors = await listTensors(sharded(2));
  const parts = planParts(tensors, 4096);
  assert.ok(parts.length >= 4, `${parts.length} parts`);
  const [early, late] = [parts[1], parts[2]];
  const fail = (p: (typeof parts)[number]) => p.tensor.name === early.tensor.name && p.rowBegin === early.rowBegin ? 'early'
    : p.tensor.name === late.tensor.name && p.rowBegin === late.rowBegin ? 'late' : null;
  for (let run = 0; run < 3; run++) {
    await rejects(
      () => streamTensors(tensors, async (p) => {
        const which = fail(p);
        if (which === 'early') await new Promise((r) => setTimeout(r, 30));  // fails after the later part
        if (which) throw new MicroserveError('BAD_CHECKPOINT', `failed ${which}`);
      }, { bufferBytes: 4096, numBuffers: 4 }),
      'BAD_CHECKPOINT',
      'failed early',
    );
  }
});

test('staging buffers: ordinary memory for a CPU backend (CUDA never touched), freed on release', () => {
  const addon = loadAddon();
  const b = addon.allocHostBuffer(1 << 20, 'cpu');
  assert.is(b.isPinned, false);
  assert.is(b.buffer.byteLength, 1 << 20);
  new Uint8Array(b.buffer).fill(7);
  addon.releaseHostBuffer(b.buffer);
  assert.is(b.buffer.byteLength, 0, 'detached');
  assert.throws(() => addon.allocHostBuffer(0, 'cpu'), /bytes must be an integer/);
  assert.throws(() => addon.allocHostBuffer(16, undefined as unknown as string), /device must be a string/);
});

test.run();
