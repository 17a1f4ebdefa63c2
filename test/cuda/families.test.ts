// Each model family (Qwen2 biases, Qwen3 q/k norms with head_dim 32, Mistral, Llama 3.2 tied +
// llama3 RoPE) on the CUDA backend against the CPU backend (float32, itself checked against a
// float64 reference in test/native/families.test.ts) on the same tiny checkpoint: logits within
// 2e-2 after prefill and at every teacher-forced decode step (graph and eager decode: RoPE fused
// into decode attention, and the ropeAppend path), and greedy ids as long as no near-tie parts
// them. Against transformers where test/fixtures/tiny-<family>/ is present. Needs an addon built
// with CUDA and a GPU (MICROSERVE_CUDA_DEVICE, default cuda:0); elsewhere it checks that a family
// checkpoint is refused on a cuda device with NO_DEVICE.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadAddon } from '../../native/addon.ts';
import { openModel, type LoadedModel } from '../../native/index.ts';
import { FAMILY_NAMES, makeFamilyCheckpoint } from '../native/family-checkpoints.ts';
import { argmax, pageRange, relL2, rejects } from '../native/helpers.ts';

const DEVICE = process.env.MICROSERVE_CUDA_DEVICE ?? 'cuda:0';
const PAGE = 16;
const GEN = 16;
const TOL = 2e-2; // bf16 weights, activations and KV against float32
const PROMPTS = [
  [5, 900, 17, 333, 64],
  Array.from({ length: 70 }, (_, i) => 3 + ((i * 7919) % 1000)),
];
const dir = mkdtempSync(join(tmpdir(), 'ms-cuda-families-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** Logits after the prompt and after each of `ids` fed one at a time (teacher-forced decode). */
async function decodeLogits(m: LoadedModel, prompt: number[], ids: number[]): Promise<Float32Array[]> {
  const table = pageRange(0, Math.ceil((prompt.length + ids.length + 1) / PAGE));
  const out = [await m.backend.forward({ seqs: [{ tokens: Int32Array.from(prompt), startPos: 0, pageTable: table }] })];
  for (let k = 0; k < ids.length; k++) {
    out.push(await m.backend.forward({ seqs: [{ tokens: Int32Array.of(ids[k]), startPos: prompt.length + k, pageTable: table }] }));
  }
  return out;
}

/** Second-best margin (top1 - top2) / |top1| of a logits row. */
function margin(row: Float32Array): number {
  const s = Array.from(row).sort((a, b) => b - a);
  return (s[0] - s[1]) / Math.abs(s[0]);
}

if (!loadAddon().hasCuda) {
  test('without a CUDA build, a family checkpoint on a cuda device is refused with NO_DEVICE', async () => {
    makeFamilyCheckpoint('qwen3', join(dir, 'qwen3'));
    await rejects(() => openModel(join(dir, 'qwen3'), { device: DEVICE, numPages: 4, pageSize: PAGE }), 'NO_DEVICE', DEVICE);
  });
} else {
  for (const family of FAMILY_NAMES) {
    test(`${family}: CUDA (graphs on and off) agrees with the CPU backend`, async () => {
      const folder = join(dir, family);
      makeFamilyCheckpoint(family, folder);
      const cpu = await openModel(folder, { numPages: 16, pageSize: PAGE, numThreads: 2 });
      try {
        for (const graphs of [true, false]) {
          const gpu = await openModel(folder, { device: DEVICE, numPages: 16, pageSize: PAGE, native: { cudaGraphs: graphs } });
          try {
            for (const p of PROMPTS) {
              // CPU greedy ids, then both backends teacher-forced along them.
              const ref = await decodeLogits(cpu, p, []);
              const ids: number[] = [];
              let rows = ref;
              for (let k = 0; k < GEN; k++) {
                ids.push(argmax(rows[rows.length - 1]));
                rows = await decodeLogits(cpu, p, ids);
              }
              const got = await decodeLogits(gpu, p, ids.slice(0, -1));
              const want = await decodeLogits(cpu, p, ids.slice(0, -1));
              for (let k = 0; k < GEN; k++) {
                const err = relL2(got[k], want[k]);
                assert.ok(err <= TOL, `${family}, graphs ${graphs}, ${p.length}-token prompt, step ${k}: relative L2 ${err}`);
                if (margin(want[k]) >= 2e-2) assert.is(argmax(got[k]), ids[k], `${family}, graphs ${graphs}, step ${k}: argmax`);
              }
            }
          } finally {
            gpu.backend.close();
          }
        }
      } finally {
        cpu.backend.close();
      }
    });
  }

  for (const family of FAMILY_NAMES) {
    const fixture = new URL(`../fixtures/tiny-${family}/`, import.meta.url).pathname;
    if (!existsSync(join(fixture, 'reference.json'))) continue;
    test(`${family}: last logits within 2e-2 of transformers, argmax where the margin is >= 2e-2`, async () => {
      const ref = JSON.parse(readFileSync(join(fixture, 'reference.json'), 'utf8'));
      const m = await openModel(fixture, { device: DEVICE, numPages: 32, pageSize: PAGE });
      try {
        for (const c of ref.cases as { prompt_ids: number[]; argmax_per_position: number[]; argmax_margin_per_position: number[]; last_logits: number[] }[]) {
          const n = c.prompt_ids.length;
          const V = m.config.vocabSize;
          const logits = await m.backend.forward({ seqs: [{ tokens: Int32Array.from(c.prompt_ids), startPos: 0, pageTable: pageRange(0, Math.ceil(n / PAGE) + 1) }], logits: 'all' });
          const err = relL2(logits.subarray((n - 1) * V), c.last_logits);
          assert.ok(err <= TOL, `${family}, ${n} tokens: relative L2 ${err}`);
          for (let i = 0; i < n; i++) {
            if (c.argmax_margin_per_position[i] >= 2e-2) assert.is(argmax(logits, i * V, (i + 1) * V), c.argmax_per_position[i], `${family}, position ${i}`);
          }
        }
      } finally {
        m.backend.close();
      }
    });
  }
}

test.run();
