// Each model family (Qwen2, Qwen3, Mistral, Llama 3.2) on the CPU backend: a tiny random
// checkpoint of the family loads from its folder, and its greedy ids and logits equal an
// independent float64 forward pass (reference-forward.ts); where the transformers-made fixture
// test/fixtures/tiny-<family>/ is present (bench/models/make-family-fixtures.py, on the GPU host),
// they equal transformers' too. Also: the family traits the loader reads from config.json.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openModel } from '../../native/index.ts';
import { FAMILY_NAMES, makeFamilyCheckpoint, type FamilyName } from './family-checkpoints.ts';
import { bf16ToF32, greedyBatch, pageRange, readSafetensors, relL2, rejects, writeSafetensors } from './helpers.ts';
import { referenceGreedy, type Weights } from './reference-forward.ts';

const PAGE = 16;
const GEN = 12;
const PROMPTS = [
  [5, 900, 17, 333, 64],
  [3, 14, 15, 92, 65, 35, 89, 79, 323, 84, 626, 433, 832, 795, 28, 841, 971, 693, 99, 375, 105, 820, 97],
];
const dir = mkdtempSync(join(tmpdir(), 'ms-families-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const TRAITS: Record<FamilyName, { family: string; qkvBias: boolean; qkNorm: boolean; headDim: number; tie: boolean }> = {
  qwen2: { family: 'qwen2', qkvBias: true, qkNorm: false, headDim: 16, tie: true },
  qwen3: { family: 'qwen3', qkvBias: false, qkNorm: true, headDim: 32, tie: true },
  mistral: { family: 'mistral', qkvBias: false, qkNorm: false, headDim: 16, tie: false },
  llama32: { family: 'llama', qkvBias: false, qkNorm: false, headDim: 16, tie: true },
};

for (const family of FAMILY_NAMES) {
  test(`${family}: greedy ids and logits equal the float64 reference forward`, async () => {
    const folder = join(dir, family);
    makeFamilyCheckpoint(family, folder);
    const m = await openModel(folder, { numPages: 16, pageSize: PAGE, numThreads: 2 });
    try {
      const t = TRAITS[family];
      assert.is(m.config.family, t.family);
      assert.is(m.config.qkvBias, t.qkvBias);
      assert.is(m.config.qkNorm, t.qkNorm);
      assert.is(m.config.headDim, t.headDim);
      assert.is(m.config.tieWordEmbeddings, t.tie);
      const w: Weights = Object.fromEntries(readSafetensors(join(folder, 'model.safetensors')).map((x) => [x.name, Float64Array.from(bf16ToF32(x.data))]));
      const tables = PROMPTS.map((p, i) => pageRange(i * 4, 4));
      const got = await greedyBatch(m.backend, PROMPTS, GEN, 7, tables); // chunked prefill, ragged batch
      PROMPTS.forEach((p, i) => {
        const ref = referenceGreedy(m.config, w, p, GEN);
        assert.equal(got[i].ids, ref.ids, `${family}, prompt ${i}: greedy ids`);
        const err = relL2(got[i].firstLogits, ref.lastLogits);
        assert.ok(err <= 1e-4, `${family}, prompt ${i}: relative L2 ${err}`);
      });
    } finally {
      m.backend.close();
    }
  });
}

// The transformers references, once the lead has unpacked them into test/fixtures/.
for (const family of FAMILY_NAMES) {
  const fixture = new URL(`../fixtures/tiny-${family}/`, import.meta.url).pathname;
  if (!existsSync(join(fixture, 'reference.json'))) continue;
  test(`${family}: greedy ids equal transformers' (test/fixtures/tiny-${family})`, async () => {
    const ref: { cases: { prompt_ids: number[]; greedy_ids: number[]; last_logits: number[] }[] } = JSON.parse(readFileSync(join(fixture, 'reference.json'), 'utf8'));
    const m = await openModel(fixture, { numPages: 32, pageSize: PAGE, numThreads: 2 });
    try {
      for (const c of ref.cases) {
        const n = Math.ceil((c.prompt_ids.length + c.greedy_ids.length) / PAGE);
        const [r] = await greedyBatch(m.backend, [c.prompt_ids], c.greedy_ids.length, 7, [pageRange(0, n)]);
        assert.equal(r.ids, c.greedy_ids, `${family}: ${c.prompt_ids.length}-token prompt`);
        const err = relL2(r.firstLogits, c.last_logits);
        assert.ok(err <= 1e-4, `${family}: relative L2 ${err}`);
      }
    } finally {
      m.backend.close();
    }
  });
}

test('a checkpoint missing a family tensor is refused naming it', async () => {
  const folder = join(dir, 'qwen3-no-knorm');
  makeFamilyCheckpoint('qwen3', folder);
  const file = join(folder, 'model.safetensors');
  writeSafetensors(file, readSafetensors(file).filter((t) => t.name !== 'model.layers.1.self_attn.k_norm.weight'));
  await rejects(openModel(folder, { numPages: 4 }), 'BAD_CHECKPOINT', 'model.layers.1.self_attn.k_norm.weight');
  // A Llama checkpoint with Qwen2 biases in it: the extra tensor is named.
  const llama = join(dir, 'llama-with-bias');
  makeFamilyCheckpoint('qwen2', llama);
  const cfg = JSON.parse(readFileSync(join(llama, 'config.json'), 'utf8'));
  writeFileSync(join(llama, 'config.json'), JSON.stringify({ ...cfg, architectures: ['LlamaForCausalLM'], model_type: 'llama' }));
  await rejects(openModel(llama, { numPages: 4 }), 'BAD_CHECKPOINT', 'q_proj.bias');
});

test.run();
