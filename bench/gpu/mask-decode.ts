/**
 * `node-decode.ts --masks`: what structured outputs cost a decode step, through the whole engine
 * path: the grammar worker (actors/engine/grammar/: accept each row's token, compute its next
 * mask with xgrammar/WASM on the host) and the forward with the masks applied by the backend's
 * sampler (`sampling.extras.allowedMask`), at batch 64 (the issue's <= 5% check), against the same
 * decode steps without masks. Every row has a grammar (a JSON array of strings; a row whose array
 * closes opens a new one, as a new request would), so every step pays for 64 masks. Checks that every sampled token is allowed by its
 * row's mask. Where the backend refuses the mask (the CUDA sampler before it applies extras), it
 * says so and measures the host side alone (grammar worker + plain forward).
 */
import { GrammarWorkerClient } from '../../actors/engine/grammar/worker-client.ts';
import { packSampling } from '../../actors/engine/sampler.ts';
import type { GrammarSpec } from '../../actors/messages.ts';
import type { Backend, ForwardSeq } from '../../native/backend.ts';
import type { LoadedModel } from '../../native/index.ts';

export interface MaskBenchOptions {
  batch: number;
  ctx: number;
  steps: number;
  warm: number;
  pageSize: number;
}

const SCHEMA: GrammarSpec = { type: 'json', schema: JSON.stringify({ type: 'array', items: { type: 'string' } }) };
const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];
const isAllowed = (mask: Uint32Array, row: number, words: number, t: number) => ((mask[row * words + (t >> 5)] >>> (t & 31)) & 1) === 1;

/** Pages a sequence needs for the bench (prefill + both modes' steps). */
export function maskBenchPagesPerSeq(o: MaskBenchOptions): number {
  return Math.ceil((o.ctx + 2 * (o.steps + o.warm) + 1) / o.pageSize);
}

export async function runMaskBench(model: LoadedModel, o: MaskBenchOptions): Promise<Record<string, unknown>> {
  const backend: Backend = model.backend;
  const vocab = model.config.vocabSize;
  const words = (vocab + 31) >> 5;
  const pagesPerSeq = maskBenchPagesPerSeq(o);
  const tables = Array.from({ length: o.batch }, (_, s) => Int32Array.from({ length: pagesPerSeq }, (_, i) => s * pagesPerSeq + i));
  for (let s0 = 0; s0 < o.batch; s0 += 8) {
    const seqs = tables.slice(s0, s0 + 8).map((pageTable, i) => ({ tokens: Int32Array.from({ length: o.ctx }, (_, j) => (j * 7919 + (s0 + i) * 104729 + 13) % vocab), startPos: 0, pageTable }));
    await backend.forwardTokens({ seqs, sampling: packSampling(seqs.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 }))) });
  }
  let pos = o.ctx;
  const stepSeqs = (tokens: Int32Array): ForwardSeq[] => tables.map((pageTable, s) => ({ tokens: Int32Array.of(tokens[s]), startPos: pos, pageTable }));
  const sampling = packSampling(tables.map(() => ({ temperature: 0, topP: 1, seed: 0, step: 0 })));
  const out: Record<string, unknown> = { batch: o.batch, ctx: o.ctx, steps: o.steps, vocab };

  // no masks: greedy decode steps
  let tokens: Int32Array = Int32Array.from({ length: o.batch }, (_, s) => (s * 31) % vocab);
  const plain: number[] = [];
  for (let step = 0; step < o.warm + o.steps; step++, pos++) {
    const t0 = performance.now();
    tokens = await backend.forwardTokens({ seqs: stepSeqs(tokens), sampling });
    if (step >= o.warm) plain.push(performance.now() - t0);
  }
  out.noMaskWallMs = median(plain);

  // masks: one grammar per row in a grammar worker, as an engine runs them
  const worker = new GrammarWorkerClient({ tokenizer: { folder: model.folder, isPreset: model.isPreset }, vocabSize: vocab, eosTokenIds: model.config.eosTokenIds });
  const t0 = performance.now();
  const handles = tables.map((_, s) => s + 1);
  let nextHandle = o.batch + 1;
  let numReopened = 0;
  const firsts = await Promise.all(handles.map((h) => worker.open(h, SCHEMA, 'bench', [])));
  out.grammarOpenMs = performance.now() - t0; // the compile (once) and 64 matchers
  const masks = new Uint32Array(o.batch * words);
  firsts.forEach((st, s) => masks.set(st.mask!, s * words));
  const wall: number[] = [];
  const advance: number[] = [];
  let numViolations = 0;
  let isHostOnly = false;
  // the first masked token of each row: `{` (the only one the grammar allows), fed through the forward below
  for (let step = 0; step < o.warm + o.steps; step++, pos++) {
    const t1 = performance.now();
    if (step > 0) {
      const steps = await worker.advance(tables.map((_, s) => ({ handle: handles[s], token: tokens[s] })));
      for (const [s, st] of steps.entries()) {
        if (st.error) throw new Error(`row ${s}: ${st.error.message}`);
        if (st.isComplete) {
          // the row's array closed: it starts a new one (a new request would), a cached compile
          worker.close([handles[s]]);
          handles[s] = nextHandle++;
          st.mask = (await worker.open(handles[s], SCHEMA, 'bench', [])).mask;
          numReopened++;
        }
        masks.set(st.mask!, s * words);
      }
    }
    const t2 = performance.now();
    if (!isHostOnly) {
      try {
        tokens = await backend.forwardTokens({ seqs: stepSeqs(tokens), sampling: { ...sampling, extras: { allowedMask: masks } } });
      } catch (e) {
        isHostOnly = true;
        out.maskForwardError = (e as Error).message;
      }
    }
    if (isHostOnly) {
      await backend.forwardTokens({ seqs: stepSeqs(tokens), sampling });
      // the backend cannot apply the mask: the lowest allowed token keeps the grammars going
      tokens = Int32Array.from({ length: o.batch }, (_, s) => {
        for (let w = 0; w < words; w++) if (masks[s * words + w]) return w * 32 + Math.clz32(masks[s * words + w] & -masks[s * words + w]) ^ 31;
        return 0;
      });
    }
    tokens.forEach((t, s) => (numViolations += isAllowed(masks, s, words, t) ? 0 : 1));
    if (step >= o.warm) wall.push(performance.now() - t1), advance.push(t2 - t1);
  }
  await worker.shutdown();
  out.maskWallMs = median(wall);
  out.grammarWaitMs = median(advance);
  out.maskOverheadPct = (100 * ((out.maskWallMs as number) - (out.noMaskWallMs as number))) / (out.noMaskWallMs as number);
  out.hostOnly = isHostOnly;
  out.maskViolations = numViolations;
  out.grammarsReopened = numReopened;
  return out;
}
