// Checkpoint loading: dtypes, shards, and broken checkpoints that must fail naming the culprit.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMicroserveError } from '../../common/errors.ts';
import { openModel } from '../../native/index.ts';
import { FIXTURE, REFERENCE, bf16ToF32, pageRange, readSafetensors, relL2, writeSafetensors, type StTensor } from './helpers.ts';

const tmp = mkdtempSync(join(tmpdir(), 'ms-ckpt-'));
const tensors = readSafetensors(join(FIXTURE, 'model.safetensors'));
const config = JSON.parse(readFileSync(join(FIXTURE, 'config.json'), 'utf8'));
let n = 0;

/** A checkpoint folder in tmp with the fixture's config (or `cfg`) and the given tensors. */
function folder(ts: StTensor[], cfg: unknown = config, patch?: (h: Record<string, any>) => void): string {
  const dir = join(tmp, `c${n++}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), typeof cfg === 'string' ? cfg : JSON.stringify(cfg));
  writeSafetensors(join(dir, 'model.safetensors'), ts, patch);
  return dir;
}

async function firstLogits(dir: string): Promise<Float32Array> {
  const m = await openModel(dir, { numPages: 16 });
  try {
    const c = REFERENCE.cases[1];
    return await m.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(0, 2) }] });
  } finally {
    m.backend.close();
  }
}

async function expectFail(dir: string, code: string, ...needles: string[]) {
  try {
    const m = await openModel(dir, { numPages: 16 });
    m.backend.close();
  } catch (e) {
    assert.ok(isMicroserveError(e), `not a MicroserveError: ${e}`);
    assert.is((e as any).code, code, (e as Error).message);
    for (const s of needles) assert.ok((e as Error).message.includes(s), `message '${(e as Error).message}' lacks '${s}'`);
    return;
  }
  assert.unreachable(`loading ${dir} should fail with ${code}`);
}

function f32Bytes(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
function toF16(a: Float32Array): Uint8Array {
  const out = new Uint16Array(a.length);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let i = 0; i < a.length; i++) {
    // The fixture's bf16 values have 8 significant bits; those in f16's normal range convert exactly.
    f[0] = a[i];
    const x = u[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = ((x >>> 23) & 0xff) - 127 + 15;
    if (a[i] === 0) out[i] = sign;
    else if (exp <= 0) out[i] = sign; // underflow to zero (not hit by this fixture's magnitudes)
    else out[i] = sign | (exp << 10) | ((x >>> 13) & 0x3ff);
  }
  return new Uint8Array(out.buffer);
}

test.after(() => rmSync(tmp, { recursive: true, force: true }));

test('f32 and f16 copies of the checkpoint give the reference logits', async () => {
  const ref = REFERENCE.cases[1].last_logits;
  const f32 = tensors.map((t) => ({ ...t, dtype: 'F32', data: f32Bytes(bf16ToF32(t.data)) }));
  assert.ok(relL2(await firstLogits(folder(f32)), ref) <= 1e-4);
  const f16 = tensors.map((t) => ({ ...t, dtype: 'F16', data: toF16(bf16ToF32(t.data)) }));
  assert.ok(relL2(await firstLogits(folder(f16)), ref) <= 1e-3);
});

test('shards listed in model.safetensors.index.json load like one file', async () => {
  const dir = folder(tensors.slice(0, 1));
  rmSync(join(dir, 'model.safetensors'));
  const half = Math.ceil(tensors.length / 2);
  const shards = [tensors.slice(0, half), tensors.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((s, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    writeSafetensors(join(dir, file), s);
    for (const t of s) weightMap[t.name] = file;
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  assert.ok(relL2(await firstLogits(dir), REFERENCE.cases[1].last_logits) <= 1e-4);
});

test('rope_parameters config style and an extra rotary_emb.inv_freq load fine', async () => {
  const { rope_theta, rope_scaling, ...rest } = config;
  const cfg = { ...rest, rope_parameters: { rope_theta, ...rope_scaling } };
  const extra = { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', dtype: 'F32', shape: [8], data: new Uint8Array(32) };
  assert.ok(relL2(await firstLogits(folder([...tensors, extra], cfg)), REFERENCE.cases[1].last_logits) <= 1e-4);
});

test('missing tensor: BAD_CHECKPOINT naming it', async () => {
  await expectFail(folder(tensors.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight')), 'BAD_CHECKPOINT', 'model.layers.1.mlp.up_proj.weight', 'missing');
  await expectFail(folder(tensors.filter((t) => t.name !== 'lm_head.weight')), 'BAD_CHECKPOINT', 'lm_head.weight');
});

test('wrong shape: BAD_CHECKPOINT naming tensor, expected and got', async () => {
  const dir = folder(tensors, config, (h) => (h['model.layers.0.self_attn.q_proj.weight'].shape = [32, 128]));
  await expectFail(dir, 'BAD_CHECKPOINT', 'model.layers.0.self_attn.q_proj.weight', '[64, 64]', '[32, 128]');
});

test('unknown dtype: BAD_CHECKPOINT naming tensor and dtype', async () => {
  const dir = folder(tensors, config, (h) => {
    h['model.norm.weight'].dtype = 'I64';
  });
  await expectFail(dir, 'BAD_CHECKPOINT', 'model.norm.weight', 'I64');
});

test('truncated file: BAD_CHECKPOINT naming the tensor', async () => {
  const dir = folder(tensors);
  const file = join(dir, 'model.safetensors');
  truncateSync(file, statSync(file).size - 100);
  await expectFail(dir, 'BAD_CHECKPOINT', tensors[tensors.length - 1].name, 'truncated');
});

test('unknown tensor: BAD_CHECKPOINT naming it', async () => {
  const extra = { name: 'model.layers.0.self_attn.q_norm.weight', dtype: 'BF16', shape: [16], data: new Uint8Array(32) };
  await expectFail(folder([...tensors, extra]), 'BAD_CHECKPOINT', 'model.layers.0.self_attn.q_norm.weight');
});

test('bad config.json: BAD_CONFIG naming the field', async () => {
  const { hidden_size, ...noHidden } = config;
  await expectFail(folder(tensors, noHidden), 'BAD_CONFIG', 'hidden_size');
  await expectFail(folder(tensors, { ...config, num_key_value_heads: 3 }), 'BAD_CONFIG', 'num_key_value_heads');
  await expectFail(folder(tensors, { ...config, rope_scaling: { ...config.rope_scaling, rope_type: 'yarn' } }), 'BAD_CONFIG', 'rope_type', 'yarn');
  await expectFail(folder(tensors, '{"vocab_size": 1024,'), 'BAD_CONFIG', 'config.json');
  // A config that parses but disagrees with the tensors is caught as a shape error.
  await expectFail(folder(tensors, { ...config, intermediate_size: 256 }), 'BAD_CHECKPOINT', 'model.layers.0.mlp.down_proj.weight', '[64, 256]', '[64, 192]');
});

test('no checkpoint files, no folder: typed errors', async () => {
  const dir = folder(tensors);
  rmSync(join(dir, 'model.safetensors'));
  await expectFail(dir, 'BAD_CHECKPOINT', 'model.safetensors');
  await expectFail(join(tmp, 'nope'), 'BAD_CONFIG', 'neither a preset');
});

test.run();
